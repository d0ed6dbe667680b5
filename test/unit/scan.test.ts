// scanFrames over real segment files, one test per injected fault. Every test shares one driver:
// build a segment, apply a `corrupt` hook to its bytes, write it to a temp dir, scan it.
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aggregateOf } from '../../src/wal/aggregate.js';
import { type Checksum64, crc32 } from '../../src/wal/checksum.js';
import {
  FORMAT_VERSION,
  ENTRY_HEADER_BYTES,
  encodeEntry,
  encodeSegmentHeader,
  encodeTrailer,
  logIdOf,
  SEGMENT_HEADER_BYTES,
  TRAILER_BYTES,
} from '../../src/wal/format.js';
import { type ScanItem, type ScanOptions, scanFrames } from '../../src/wal/scan.js';

const ENTRY_BYTES_MAX = 64 * 1024;

interface BuiltFrame {
  readonly index: number;
  readonly offsetBytes: number;
  readonly byteLength: number;
  readonly checksum: Checksum64;
}

interface Segment {
  readonly bytes: Buffer;
  readonly frames: readonly BuiltFrame[];
  /** Offset of the trailer, when sealed. */
  readonly trailerOffsetBytes: number | undefined;
}

/** A payload of lowercase letters: it cannot contain 'WAL', so resync only ever finds real frames. */
function payloadOf(index: number, byteLength: number): Buffer {
  const out = Buffer.alloc(byteLength);
  for (let i = 0; i < byteLength; i++) out[i] = 0x61 + ((index * 7 + i) % 26);
  return out;
}

function buildSegment(payloadByteLengths: readonly number[], sealed: boolean, payloads?: ReadonlyMap<number, Buffer>): Segment {
  const firstIndex = 1001;
  const parts: Buffer[] = [
    encodeSegmentHeader({ segmentId: 1, firstIndex, createdMs: 1_700_000_000_000, logId: logIdOf('test'), logName: 'test' }),
  ];
  const frames: BuiltFrame[] = [];
  let offsetBytes = SEGMENT_HEADER_BYTES;
  payloadByteLengths.forEach((byteLength, i) => {
    const index = firstIndex + i;
    const payload = payloads?.get(i) ?? payloadOf(index, byteLength);
    const { frame, checksum } = encodeEntry({ index, timestampMs: 1_700_000_000_000 + i, flags: 0, payload });
    parts.push(frame);
    frames.push({ index, offsetBytes, byteLength: frame.byteLength, checksum });
    offsetBytes += frame.byteLength;
  });
  const aggregate = aggregateOf(FORMAT_VERSION, frames.map((f) => f.checksum));
  let trailerOffsetBytes: number | undefined;
  if (sealed) {
    trailerOffsetBytes = offsetBytes;
    parts.push(
      encodeTrailer({
        segmentId: 1,
        firstIndex,
        lastIndex: firstIndex + frames.length - 1,
        indexCount: frames.length,
        aggregateChecksum: aggregate,
        entriesByteLength: offsetBytes - SEGMENT_HEADER_BYTES,
      }),
    );
  }
  return { bytes: Buffer.concat(parts), frames, trailerOffsetBytes };
}

/** A scan item with the frame copied out (the scanner's view is valid only during the visit). */
type Seen =
  | { kind: 'entry'; offsetBytes: number; index: number; byteLength: number; bodyOk: boolean; frame: Buffer }
  | { kind: 'trailer'; offsetBytes: number; lastIndex: number }
  | { kind: 'damage'; offsetBytes: number; byteLength: number; reason: string };

function record(item: ScanItem): Seen {
  switch (item.kind) {
    case 'entry':
      return {
        kind: 'entry',
        offsetBytes: item.offsetBytes,
        index: item.header.index,
        byteLength: item.frameByteLength,
        bodyOk: item.bodyOk,
        frame: Buffer.from(item.frame),
      };
    case 'trailer':
      return { kind: 'trailer', offsetBytes: item.offsetBytes, lastIndex: item.trailer.lastIndex };
    case 'damage':
      return { kind: 'damage', offsetBytes: item.offsetBytes, byteLength: item.byteLength, reason: item.reason };
  }
}

let dir = '';
let fileCount = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-scan-test-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface ScanRun {
  readonly items: Seen[];
  readonly endedAt: number;
}

async function scanBytes(
  bytes: Buffer,
  options: Partial<ScanOptions> = {},
  stopWhen: (item: ScanItem, count: number) => boolean = () => false,
): Promise<ScanRun> {
  const path = join(dir, `${String(fileCount++).padStart(6, '0')}.wal`);
  await writeFile(path, bytes);
  const file = await open(path, 'r');
  try {
    const items: Seen[] = [];
    const endedAt = await scanFrames(
      file,
      { startOffsetBytes: SEGMENT_HEADER_BYTES, endOffsetBytes: bytes.byteLength, entryBytesMax: ENTRY_BYTES_MAX, ...options },
      (item) => {
        items.push(record(item));
        return stopWhen(item, items.length) ? 'stop' : undefined;
      },
    );
    return { items, endedAt };
  } finally {
    await file.close();
    await rm(path);
  }
}

async function scanWithFault(segment: Segment, corrupt: (bytes: Buffer) => Buffer, options: Partial<ScanOptions> = {}): Promise<ScanRun> {
  return scanBytes(corrupt(Buffer.from(segment.bytes)), options);
}

function intactEntry(segment: Segment, i: number): Seen {
  const built = segment.frames[i];
  if (!built) throw new Error(`no frame ${i}`);
  return {
    kind: 'entry',
    offsetBytes: built.offsetBytes,
    index: built.index,
    byteLength: built.byteLength,
    bodyOk: true,
    frame: segment.bytes.subarray(built.offsetBytes, built.offsetBytes + built.byteLength),
  };
}

function intactEntries(segment: Segment, from = 0, to = segment.frames.length): Seen[] {
  const out: Seen[] = [];
  for (let i = from; i < to; i++) out.push(intactEntry(segment, i));
  return out;
}

function frameAt(segment: Segment, i: number): BuiltFrame {
  const built = segment.frames[i];
  if (!built) throw new Error(`no frame ${i}`);
  return built;
}

function flipBitAt(bytes: Buffer, offsetBytes: number, bit: number): Buffer {
  bytes[offsetBytes]! ^= 1 << bit;
  return bytes;
}

/** Items must tile [start, end) with no gap and no overlap. */
function expectTiled(items: readonly Seen[], start: number, end: number): void {
  let at = start;
  for (const item of items) {
    expect(item.offsetBytes).toBe(at);
    at += item.kind === 'trailer' ? TRAILER_BYTES : item.byteLength;
  }
  expect(at).toBe(end);
}

const SIZES = [10, 300, 0, 1000, 57, 2048, 5, 777, 64, 1500];

describe('scanFrames on intact segments', () => {
  it('reports every entry of an unsealed segment and ends at the file end', async () => {
    const segment = buildSegment(SIZES, false);
    const { items, endedAt } = await scanBytes(segment.bytes);
    expect(items).toEqual(intactEntries(segment));
    expect(endedAt).toBe(segment.bytes.byteLength);
  });

  it('reports every entry then the trailer of a sealed segment', async () => {
    const segment = buildSegment(SIZES, true);
    const { items, endedAt } = await scanBytes(segment.bytes);
    expect(items).toEqual([...intactEntries(segment), { kind: 'trailer', offsetBytes: segment.trailerOffsetBytes, lastIndex: 1010 }]);
    expect(endedAt).toBe(segment.bytes.byteLength);
  });

  it('reports nothing for a header-only segment and only the trailer for a sealed empty one', async () => {
    expect((await scanBytes(buildSegment([], false).bytes)).items).toEqual([]);
    const sealed = buildSegment([], true);
    expect((await scanBytes(sealed.bytes)).items).toEqual([
      { kind: 'trailer', offsetBytes: SEGMENT_HEADER_BYTES, lastIndex: 1000 },
    ]);
  });

  it('keeps frame views valid until an async visitor settles', async () => {
    const segment = buildSegment(SIZES, false);
    const path = join(dir, 'async-visitor.wal');
    await writeFile(path, segment.bytes);
    const file = await open(path, 'r');
    try {
      const frames: Buffer[] = [];
      await scanFrames(
        file,
        { startOffsetBytes: SEGMENT_HEADER_BYTES, endOffsetBytes: segment.bytes.byteLength, entryBytesMax: 4096, chunkBytes: 64 },
        async (item) => {
          if (item.kind !== 'entry') return;
          await new Promise((resolve) => setImmediate(resolve));
          frames.push(Buffer.from(item.frame));
        },
      );
      expect(frames).toEqual(intactEntries(segment).map((seen) => (seen.kind === 'entry' ? seen.frame : Buffer.alloc(0))));
    } finally {
      await file.close();
    }
  });
});

describe('scanFrames on damaged segments', () => {
  it('flipped bit in a payload: the entry is reported with bodyOk false, following entries intact', async () => {
    const segment = buildSegment(SIZES, true);
    const victim = frameAt(segment, 3);
    const { items } = await scanWithFault(segment, (b) => flipBitAt(b, victim.offsetBytes + ENTRY_HEADER_BYTES + 500, 2));
    const expected = intactEntries(segment);
    const damaged = items[3];
    if (damaged?.kind !== 'entry') throw new Error('expected an entry at position 3');
    expect(damaged.bodyOk).toBe(false);
    expect(damaged.index).toBe(victim.index);
    expect(damaged.offsetBytes).toBe(victim.offsetBytes);
    expect(items.slice(0, 3)).toEqual(expected.slice(0, 3));
    expect(items.slice(4, 10)).toEqual(expected.slice(4));
    expect(items[10]?.kind).toBe('trailer');
    expect(items).toHaveLength(11);
  });

  it('flipped bit in an entry header, at every bit: one damage item over that frame, then resync to the next entry', async () => {
    const segment = buildSegment([20, 30, 40, 50], false);
    const victim = frameAt(segment, 1);
    for (let bit = 0; bit < ENTRY_HEADER_BYTES * 8; bit++) {
      const { items } = await scanWithFault(segment, (b) => flipBitAt(b, victim.offsetBytes + (bit >> 3), bit & 7));
      expect(items, `bit ${bit}`).toEqual([
        intactEntry(segment, 0),
        { kind: 'damage', offsetBytes: victim.offsetBytes, byteLength: victim.byteLength, reason: 'bad-entry-header' },
        intactEntry(segment, 2),
        intactEntry(segment, 3),
      ]);
    }
  });

  it('zeroed 4 KiB block spanning several entries: one damage range with exact offsets, later entries intact', async () => {
    const segment = buildSegment([700, 900, 800, 1200, 600, 1000, 500, 900, 700, 300, 800, 400], true);
    const blockStart = 4096;
    const blockEnd = blockStart + 4096;
    // Frames whose header lies before the block but whose payload reaches into it keep a trusted
    // header: they are reported with bodyOk false. The damage begins at the first frame whose
    // header the block touches and ends at the first frame starting at or after the block's end.
    const firstHit = segment.frames.findIndex((f) => f.offsetBytes + ENTRY_HEADER_BYTES > blockStart);
    const firstAfter = segment.frames.findIndex((f) => f.offsetBytes >= blockEnd);
    expect(firstAfter - firstHit).toBeGreaterThanOrEqual(2); // the block really spans several frames
    const damageStart = frameAt(segment, firstHit).offsetBytes;
    const damageEnd = frameAt(segment, firstAfter).offsetBytes;

    const { items } = await scanWithFault(segment, (b) => b.fill(0, blockStart, blockEnd));
    const before = intactEntries(segment, 0, firstHit);
    const partial = before.map((seen) => {
      if (seen.kind !== 'entry' || seen.offsetBytes + seen.byteLength <= blockStart) return seen;
      const frame = Buffer.from(seen.frame);
      frame.fill(0, blockStart - seen.offsetBytes);
      return { ...seen, bodyOk: false, frame };
    });
    expect(partial.some((seen) => seen.kind === 'entry' && !seen.bodyOk)).toBe(true);
    expect(items).toEqual([
      ...partial,
      { kind: 'damage', offsetBytes: damageStart, byteLength: damageEnd - damageStart, reason: 'bad-entry-header' },
      ...intactEntries(segment, firstAfter),
      { kind: 'trailer', offsetBytes: segment.trailerOffsetBytes, lastIndex: 1012 },
    ]);
  });

  it('file truncated at every offset of the last entry: truncated damage or a clean end, never a bogus entry', async () => {
    const segment = buildSegment([100, 200, 150], false);
    const last = frameAt(segment, 2);
    for (let cut = last.offsetBytes; cut < last.offsetBytes + last.byteLength; cut++) {
      const { items, endedAt } = await scanWithFault(segment, (b) => b.subarray(0, cut));
      const expected: Seen[] = intactEntries(segment, 0, 2);
      if (cut > last.offsetBytes) expected.push({ kind: 'damage', offsetBytes: last.offsetBytes, byteLength: cut - last.offsetBytes, reason: 'truncated' });
      expect(items, `cut at ${cut}`).toEqual(expected);
      expect(endedAt).toBe(cut);
    }
  });

  it('file truncated at every offset of the trailer: truncated damage after intact entries', async () => {
    const segment = buildSegment([100, 200], true);
    const trailerAt = segment.trailerOffsetBytes ?? 0;
    for (let cut = trailerAt + 1; cut < trailerAt + TRAILER_BYTES; cut++) {
      const { items } = await scanWithFault(segment, (b) => b.subarray(0, cut));
      expect(items, `cut at ${cut}`).toEqual([
        ...intactEntries(segment),
        { kind: 'damage', offsetBytes: trailerAt, byteLength: cut - trailerAt, reason: 'truncated' },
      ]);
    }
  });

  it("garbage appended after a trailer: one 'after-trailer' damage to the end", async () => {
    const segment = buildSegment(SIZES, true);
    const garbage = Buffer.concat([encodeEntry({ index: 5000, timestampMs: 1, flags: 0, payload: Buffer.from('late') }).frame, Buffer.alloc(333, 0x42)]);
    const { items } = await scanWithFault(segment, (b) => Buffer.concat([b, garbage]));
    expect(items).toEqual([
      ...intactEntries(segment),
      { kind: 'trailer', offsetBytes: segment.trailerOffsetBytes, lastIndex: 1010 },
      { kind: 'damage', offsetBytes: segment.bytes.byteLength, byteLength: garbage.byteLength, reason: 'after-trailer' },
    ]);
  });

  it('garbage appended to an unsealed segment: one damage item to the end', async () => {
    const segment = buildSegment(SIZES, false);
    const end = segment.bytes.byteLength;
    const cases: Array<[Buffer, string]> = [
      [Buffer.alloc(1000, 0x33), 'bad-entry-header'],
      [Buffer.concat([Buffer.from('WALE', 'latin1'), Buffer.alloc(200, 0x01)]), 'bad-entry-header'],
      [Buffer.from('xxWALxWALEWALT____', 'latin1'), 'bad-entry-header'],
      // A trailer marker whose checksum fails is reported by what it claims to be.
      [Buffer.concat([Buffer.from('WALT', 'latin1'), Buffer.alloc(200, 0x01)]), 'bad-trailer'],
    ];
    for (const [garbage, reason] of cases) {
      const { items } = await scanWithFault(segment, (b) => Buffer.concat([b, garbage]));
      expect(items).toEqual([...intactEntries(segment), { kind: 'damage', offsetBytes: end, byteLength: garbage.byteLength, reason }]);
    }
  });

  it('fewer than four garbage bytes appended: reported as a truncated frame', async () => {
    const segment = buildSegment([10, 20], false);
    const { items } = await scanWithFault(segment, (b) => Buffer.concat([b, Buffer.from([1, 2, 3])]));
    expect(items).toEqual([
      ...intactEntries(segment),
      { kind: 'damage', offsetBytes: segment.bytes.byteLength, byteLength: 3, reason: 'truncated' },
    ]);
  });

  it("bad trailer checksum: a 'bad-trailer' damage over the trailer", async () => {
    const segment = buildSegment(SIZES, true);
    const trailerAt = segment.trailerOffsetBytes ?? 0;
    const { items } = await scanWithFault(segment, (b) => flipBitAt(b, trailerAt + 60, 0));
    expect(items).toEqual([
      ...intactEntries(segment),
      { kind: 'damage', offsetBytes: trailerAt, byteLength: TRAILER_BYTES, reason: 'bad-trailer' },
    ]);
  });

  it('bad trailer field (segment id) with garbage after it: one bad-trailer damage to the end', async () => {
    const segment = buildSegment([10], true);
    const trailerAt = segment.trailerOffsetBytes ?? 0;
    const { items } = await scanWithFault(segment, (b) => Buffer.concat([flipBitAt(b, trailerAt + 8, 5), Buffer.alloc(50, 0x7a)]));
    expect(items).toEqual([
      intactEntry(segment, 0),
      { kind: 'damage', offsetBytes: trailerAt, byteLength: TRAILER_BYTES + 50, reason: 'bad-trailer' },
    ]);
  });

  it("frame markers 'WALE'/'WALT' embedded in a payload do not confuse resync after damage", async () => {
    // A fake header: the right magic, a plausible length, a wrong crc32.
    const fakeHeader = Buffer.alloc(ENTRY_HEADER_BYTES);
    fakeHeader.write('WALE', 0, 'latin1');
    fakeHeader.writeUInt32LE(10, 32);
    const payload = Buffer.concat([
      Buffer.from('abcWALEWALTWAL', 'latin1'),
      fakeHeader,
      Buffer.from('WALT', 'latin1'),
      Buffer.alloc(80, 0x01),
      Buffer.from('WALE', 'latin1'),
    ]);
    const segment = buildSegment([50, payload.byteLength, 60, 70], false, new Map([[1, payload]]));
    const victim = frameAt(segment, 1);
    // Damage the header of the frame that carries the markers, so resync must walk its payload.
    const { items } = await scanWithFault(segment, (b) => flipBitAt(b, victim.offsetBytes + 20, 1));
    expect(items).toEqual([
      intactEntry(segment, 0),
      { kind: 'damage', offsetBytes: victim.offsetBytes, byteLength: victim.byteLength, reason: 'bad-entry-header' },
      intactEntry(segment, 2),
      intactEntry(segment, 3),
    ]);
  });

  it('a complete frame embedded in a payload is found by resync after damage (analyser must check index order)', async () => {
    // Documents a limit of the format: a payload that carries a whole valid frame (a WAL shipping
    // WAL frames) is indistinguishable from a real one once the outer header is lost.
    const inner = encodeEntry({ index: 77, timestampMs: 1, flags: 0, payload: Buffer.from('inner') }).frame;
    const payload = Buffer.concat([Buffer.alloc(16, 0x61), inner, Buffer.alloc(16, 0x62)]);
    const segment = buildSegment([50, payload.byteLength, 60], false, new Map([[1, payload]]));
    const victim = frameAt(segment, 1);
    const innerAt = victim.offsetBytes + ENTRY_HEADER_BYTES + 16;
    const { items } = await scanWithFault(segment, (b) => flipBitAt(b, victim.offsetBytes + 36, 0));
    expect(items).toEqual([
      intactEntry(segment, 0),
      { kind: 'damage', offsetBytes: victim.offsetBytes, byteLength: innerAt - victim.offsetBytes, reason: 'bad-entry-header' },
      { kind: 'entry', offsetBytes: innerAt, index: 77, byteLength: inner.byteLength, bodyOk: true, frame: inner },
      { kind: 'damage', offsetBytes: innerAt + inner.byteLength, byteLength: 16, reason: 'bad-entry-header' },
      intactEntry(segment, 2),
    ]);
  });

  it('entry whose length exceeds entryBytesMax: damage over it, resync to the next entry', async () => {
    const segment = buildSegment([10, 5000, 10], false);
    const big = frameAt(segment, 1);
    const { items } = await scanBytes(segment.bytes, { entryBytesMax: 4096 });
    expect(items).toEqual([
      intactEntry(segment, 0),
      { kind: 'damage', offsetBytes: big.offsetBytes, byteLength: big.byteLength, reason: 'bad-entry-header' },
      intactEntry(segment, 2),
    ]);
  });

  it('file shorter than endOffsetBytes (stat raced a truncate): ends with truncated damage instead of spinning', async () => {
    const segment = buildSegment([10, 20], false);
    const claimedEnd = segment.bytes.byteLength + 500;
    const outcome = await Promise.race([
      scanBytes(segment.bytes, { endOffsetBytes: claimedEnd }),
      new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 5000).unref()),
    ]);
    if (outcome === 'timeout') throw new Error('scanFrames did not terminate');
    expect(outcome.items).toEqual([
      ...intactEntries(segment),
      { kind: 'damage', offsetBytes: segment.bytes.byteLength, byteLength: 500, reason: 'truncated' },
    ]);
    expect(outcome.endedAt).toBe(claimedEnd);
  });

  it('file shorter than endOffsetBytes during resync: terminates with a damage to the claimed end', async () => {
    const segment = buildSegment([10, 20], false);
    const bytes = flipBitAt(Buffer.from(segment.bytes), frameAt(segment, 1).offsetBytes + 1, 0);
    const claimedEnd = bytes.byteLength + 500;
    const outcome = await Promise.race([
      scanBytes(bytes, { endOffsetBytes: claimedEnd, chunkBytes: 64, entryBytesMax: 64 }),
      new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 5000).unref()),
    ]);
    if (outcome === 'timeout') throw new Error('scanFrames did not terminate');
    expect(outcome.items[0]).toEqual(intactEntry(segment, 0));
    expect(outcome.items[1]).toMatchObject({ kind: 'damage', offsetBytes: frameAt(segment, 1).offsetBytes, reason: 'bad-entry-header' });
    expectTiled(outcome.items, SEGMENT_HEADER_BYTES, claimedEnd);
  });
});

describe('scanFrames windows shared between scans', () => {
  it('a frame stays intact while its visitor runs whole other scans (their windows come from the same pool) and across its own refills', async () => {
    const outer = buildSegment(SIZES, true);
    const inner = buildSegment(SIZES.map((n) => n + 3), true);
    const [outerPath, innerPath] = [join(dir, 'outer.wal'), join(dir, 'inner.wal')];
    await writeFile(outerPath, outer.bytes);
    await writeFile(innerPath, inner.bytes);
    const [outerFile, innerFile] = [await open(outerPath, 'r'), await open(innerPath, 'r')];
    try {
      const options = (bytes: Buffer): ScanOptions => ({ startOffsetBytes: SEGMENT_HEADER_BYTES, endOffsetBytes: bytes.byteLength, entryBytesMax: 4096, chunkBytes: 64 });
      const seenOuter: Buffer[] = [];
      const seenInner: Buffer[] = [];
      await scanFrames(outerFile, options(outer.bytes), async (item) => {
        if (item.kind !== 'entry') return;
        const before = Buffer.from(item.frame);
        // Two scans at once, each refilling its window many times, while this frame is held.
        await Promise.all([0, 1].map(() => scanFrames(innerFile, options(inner.bytes), (x) => void (x.kind === 'entry' && seenInner.push(Buffer.from(x.frame))))));
        expect(item.frame.equals(before)).toBe(true);
        seenOuter.push(Buffer.from(item.frame));
      });
      const frames = (segment: Segment): Buffer[] => intactEntries(segment).map((seen) => (seen.kind === 'entry' ? seen.frame : Buffer.alloc(0)));
      expect(seenOuter).toEqual(frames(outer));
      expect(seenInner.length).toBe(2 * SIZES.length * SIZES.length);
      expect(new Set(seenInner.map((b) => b.toString('hex')))).toEqual(new Set(frames(inner).map((b) => b.toString('hex'))));
    } finally {
      await outerFile.close();
      await innerFile.close();
    }
  });
});

describe('scanFrames window refills', () => {
  const sizes = Array.from({ length: 60 }, (_, i) => (i * 37) % 257);

  it('small chunkBytes (64) with entries larger than the chunk gives the same items as the default window', async () => {
    const segment = buildSegment(sizes, true);
    const small = await scanBytes(segment.bytes, { chunkBytes: 64, entryBytesMax: 256 });
    const large = await scanBytes(segment.bytes, { entryBytesMax: 256 });
    expect(small.items).toEqual([...intactEntries(segment), { kind: 'trailer', offsetBytes: segment.trailerOffsetBytes, lastIndex: 1060 }]);
    expect(small.items).toEqual(large.items);
  });

  it('small chunkBytes: damage and resync across window boundaries match the default window', async () => {
    const segment = buildSegment(sizes, true);
    const faults: Array<(b: Buffer) => Buffer> = [
      (b) => b.fill(0, 1000, 1900),
      (b) => flipBitAt(flipBitAt(b, frameAt(segment, 10).offsetBytes + 5, 3), frameAt(segment, 30).offsetBytes + 45, 0),
      (b) => Buffer.concat([b.subarray(0, 3000), b.subarray(2500)]), // a duplicated range
      (b) => b.subarray(0, b.byteLength - 100),
      (b) => b.fill(0x57, 2000, 2400), // a run of 'W'
    ];
    for (const [i, fault] of faults.entries()) {
      const small = await scanWithFault(segment, fault, { chunkBytes: 64, entryBytesMax: 256 });
      const large = await scanWithFault(segment, fault, { entryBytesMax: 256 });
      expect(small.items, `fault ${i}`).toEqual(large.items);
      expect(small.items.some((item) => item.kind === 'damage' || (item.kind === 'entry' && !item.bodyOk)), `fault ${i}`).toBe(true);
      expectTiled(small.items, SEGMENT_HEADER_BYTES, fault(Buffer.from(segment.bytes)).byteLength);
    }
  });

  it('a marker straddling a window edge is still found by resync', async () => {
    // With a 104-byte window (entryBytesMax 0) every 'WALE' of the zero-payload frames that
    // follow the damage lands at a different phase relative to the window's end.
    const segment = buildSegment(Array.from({ length: 12 }, () => 0), false);
    for (let shift = 1; shift <= 8; shift++) {
      const noise = Buffer.alloc(100 + shift, 0x2e);
      const bytes = Buffer.concat([segment.bytes.subarray(0, SEGMENT_HEADER_BYTES), noise, segment.bytes.subarray(SEGMENT_HEADER_BYTES)]);
      const { items } = await scanBytes(bytes, { chunkBytes: 1, entryBytesMax: 0 });
      expect(items[0], `shift ${shift}`).toEqual({ kind: 'damage', offsetBytes: SEGMENT_HEADER_BYTES, byteLength: noise.byteLength, reason: 'bad-entry-header' });
      expect(items.slice(1).map((item) => (item.kind === 'entry' ? item.index : -1))).toEqual(segment.frames.map((f) => f.index));
    }
  });
});

describe('scanFrames early stop', () => {
  it("stops after the visitor returns 'stop' on an entry and returns the offset after it", async () => {
    const segment = buildSegment(SIZES, true);
    const { items, endedAt } = await scanBytes(segment.bytes, {}, (_item, count) => count === 3);
    expect(items).toEqual(intactEntries(segment, 0, 3));
    const third = frameAt(segment, 2);
    expect(endedAt).toBe(third.offsetBytes + third.byteLength);
  });

  it("stops after the visitor returns 'stop' on a damage item and returns the resync offset", async () => {
    const segment = buildSegment(SIZES, false);
    const victim = frameAt(segment, 1);
    const bytes = flipBitAt(Buffer.from(segment.bytes), victim.offsetBytes + 9, 4);
    const { items, endedAt } = await scanBytes(bytes, {}, (item) => item.kind === 'damage');
    expect(items).toEqual([
      intactEntry(segment, 0),
      { kind: 'damage', offsetBytes: victim.offsetBytes, byteLength: victim.byteLength, reason: 'bad-entry-header' },
    ]);
    expect(endedAt).toBe(frameAt(segment, 2).offsetBytes);
  });

  it("does not report 'after-trailer' once the visitor stopped on the trailer", async () => {
    const segment = buildSegment([10], true);
    const { items } = await scanBytes(Buffer.concat([segment.bytes, Buffer.alloc(10, 1)]), {}, (item) => item.kind === 'trailer');
    expect(items.map((item) => item.kind)).toEqual(['entry', 'trailer']);
  });
});

describe('scanFrames trusts a length only after the header crc passed', () => {
  it('a header with a valid crc32 claiming 4 GiB is damage, not a wait for more bytes', async () => {
    const segment = buildSegment([10, 10], false);
    const forged = Buffer.from(encodeEntry({ index: 5, timestampMs: 1, flags: 0, payload: Buffer.alloc(0) }).frame);
    forged.writeUInt32LE(0xffffffff, 32);
    forged.writeUInt32LE(crc32(forged.subarray(8, ENTRY_HEADER_BYTES)), 4);
    const first = frameAt(segment, 0);
    const bytes = Buffer.concat([
      segment.bytes.subarray(0, first.offsetBytes + first.byteLength),
      forged,
      segment.bytes.subarray(first.offsetBytes + first.byteLength),
    ]);
    const { items } = await scanBytes(bytes);
    expect(items).toEqual([
      intactEntry(segment, 0),
      { kind: 'damage', offsetBytes: first.offsetBytes + first.byteLength, byteLength: ENTRY_HEADER_BYTES, reason: 'bad-entry-header' },
      { ...intactEntry(segment, 1), offsetBytes: frameAt(segment, 1).offsetBytes + ENTRY_HEADER_BYTES },
    ]);
  });
});
