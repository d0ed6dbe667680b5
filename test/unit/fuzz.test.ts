// Fuzzing scanFrames with hostile segment files: random bytes, random mixes of real and forged
// frames, and valid segments mutated by flips, zeroed ranges, cuts and duplicated ranges.
// Properties: the scan never throws, always ends, its items tile the scanned range in order, it
// never reports a verified entry or trailer that is not byte-for-byte one that was written
// (checked with @noble/hashes, independently of node:crypto), its result does not depend on the
// window size, and its memory is bounded by its window whatever lengths the file claims.
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha3_256 } from '@noble/hashes/sha3.js';
import fc from 'fast-check';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Checksum64, crc32 } from '../../src/wal/checksum.js';
import {
  decodeTrailer,
  ENTRY_HEADER_BYTES,
  encodeEntry,
  encodeSegmentHeader,
  encodeTrailer,
  logIdOf,
  SEGMENT_HEADER_BYTES,
  TRAILER_BYTES,
} from '../../src/wal/format.js';
import { type ScanItem, scanFrames } from '../../src/wal/scan.js';

const NUM_RUNS = 500;
const ENTRY_BYTES_MAX = 1024;

let dir = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-fuzz-test-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function nobleChecksum64(bytes: Uint8Array): Checksum64 {
  const digest = sha3_256(bytes);
  return new DataView(digest.buffer, digest.byteOffset, digest.byteLength).getBigUint64(0, false);
}

const HEADER = encodeSegmentHeader({ segmentId: 1, firstIndex: 1, createdMs: 1, logId: logIdOf('fuzz'), logName: 'fuzz' });

/** A segment file: a valid header, then `body` as the entry area, plus every frame known valid. */
interface Case {
  readonly body: Buffer;
  /** Hex of every frame and trailer that was written whole; a verified item must be one of these. */
  readonly written: ReadonlySet<string>;
}

type Summary =
  | { kind: 'entry'; offsetBytes: number; byteLength: number; bodyOk: boolean; index: number }
  | { kind: 'trailer'; offsetBytes: number; byteLength: number }
  | { kind: 'damage'; offsetBytes: number; byteLength: number; reason: string };

function summarize(item: ScanItem): Summary {
  if (item.kind === 'entry') {
    return { kind: 'entry', offsetBytes: item.offsetBytes, byteLength: item.frameByteLength, bodyOk: item.bodyOk, index: item.header.index };
  }
  if (item.kind === 'trailer') return { kind: 'trailer', offsetBytes: item.offsetBytes, byteLength: TRAILER_BYTES };
  return { kind: 'damage', offsetBytes: item.offsetBytes, byteLength: item.byteLength, reason: item.reason };
}

let fileCount = 0;

/** How often each kind of item was seen, so a test can show that its inputs reached every path. */
const seenCounts = new Map<string, number>();

function countSeen(summary: Summary): void {
  const key =
    summary.kind === 'entry' ? `entry:${summary.bodyOk ? 'ok' : 'bad-body'}` : summary.kind === 'damage' ? `damage:${summary.reason}` : 'trailer';
  seenCounts.set(key, (seenCounts.get(key) ?? 0) + 1);
}

function expectSeen(keys: readonly string[]): void {
  for (const key of keys) expect(seenCounts.get(key) ?? 0, `no '${key}' item was produced`).toBeGreaterThan(0);
}

/** Scans `file` bytes and checks every per-item property against the file's own bytes. */
async function scanAndCheck(file: Buffer, written: ReadonlySet<string>, chunkBytes: number | undefined): Promise<Summary[]> {
  const path = join(dir, `${String(fileCount++ % 4)}.wal`);
  await writeFile(path, file);
  const handle = await open(path, 'r');
  const end = file.byteLength;
  // Every item covers at least one byte, so more items than bytes means the scan is not advancing.
  const itemCountMax = end - SEGMENT_HEADER_BYTES + 1;
  const items: Summary[] = [];
  let runaway = false;
  try {
    const endedAt = await scanFrames(
      handle,
      {
        startOffsetBytes: SEGMENT_HEADER_BYTES,
        endOffsetBytes: end,
        entryBytesMax: ENTRY_BYTES_MAX,
        ...(chunkBytes === undefined ? {} : { chunkBytes }),
      },
      (item) => {
        const summary = summarize(item);
        items.push(summary);
        countSeen(summary);
        if (item.kind === 'entry') {
          const at = item.offsetBytes;
          const onDisk = file.subarray(at, at + item.frameByteLength);
          expect(Buffer.compare(item.frame, onDisk)).toBe(0);
          expect(item.frameByteLength).toBe(ENTRY_HEADER_BYTES + item.header.payloadByteLength);
          expect(item.header.payloadByteLength).toBeLessThanOrEqual(ENTRY_BYTES_MAX);
          expect(item.header.index).toBeGreaterThanOrEqual(1);
          // The header was trusted only after its crc32 passed.
          expect(onDisk.readUInt32LE(4)).toBe(crc32(onDisk.subarray(8, ENTRY_HEADER_BYTES)));
          const recomputed = nobleChecksum64(onDisk.subarray(16));
          expect(item.actualChecksum).toBe(recomputed);
          expect(item.bodyOk).toBe(recomputed === item.header.checksum);
          if (item.bodyOk) expect(written.has(onDisk.toString('hex'))).toBe(true);
        } else if (item.kind === 'trailer') {
          const onDisk = file.subarray(item.offsetBytes, item.offsetBytes + TRAILER_BYTES);
          expect(decodeTrailer(onDisk)).toEqual({ ok: true, trailer: item.trailer });
          expect(nobleChecksum64(onDisk.subarray(0, 56))).toBe(onDisk.readBigUInt64BE(56));
          expect(written.has(onDisk.toString('hex'))).toBe(true);
        } else {
          expect(item.byteLength).toBeGreaterThanOrEqual(1);
        }
        if (items.length > itemCountMax) {
          runaway = true;
          return 'stop';
        }
        return undefined;
      },
    );
    expect(runaway).toBe(false);
    expect(endedAt).toBe(end);
  } finally {
    await handle.close();
  }
  // Items tile [start, end): increasing offsets, no gap, no overlap.
  let at = SEGMENT_HEADER_BYTES;
  for (const item of items) {
    expect(item.offsetBytes).toBe(at);
    at += item.byteLength;
  }
  expect(at).toBe(end);
  // Nothing follows a trailer but one 'after-trailer' damage.
  const trailerAt = items.findIndex((item) => item.kind === 'trailer');
  if (trailerAt >= 0) {
    const rest = items.slice(trailerAt + 1);
    expect(rest.length).toBeLessThanOrEqual(1);
    if (rest[0]) expect(rest[0]).toMatchObject({ kind: 'damage', reason: 'after-trailer' });
  }
  return items;
}

/** Scans with a 64-byte chunk and with the default window: both must see the same items. */
async function checkCase(c: Case): Promise<void> {
  const file = Buffer.concat([HEADER, c.body]);
  const small = await scanAndCheck(file, c.written, 64);
  const large = await scanAndCheck(file, c.written, undefined);
  expect(small).toEqual(large);
}

// ---------------------------------------------------------------------------------------------
// Generators

const entryArb = fc.record({
  index: fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })),
  timestampMs: fc.nat(),
  payload: fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.uint8Array({ minLength: ENTRY_BYTES_MAX - 8, maxLength: ENTRY_BYTES_MAX + 8 }),
  ),
});

const trailerArb = fc.record({
  segmentId: fc.nat(),
  firstIndex: fc.nat(),
  lastIndex: fc.nat(),
  indexCount: fc.nat(),
  aggregateChecksum: fc.bigInt({ min: 0n, max: 0xffffffffffffffffn }),
  entriesByteLength: fc.nat(),
});

type Chunk = { bytes: Buffer; whole: boolean };

/** Pieces that look like frames to a different degree: real ones, forged ones, markers, noise. */
const chunkArb: fc.Arbitrary<Chunk> = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map((bytes) => ({ bytes: Buffer.from(bytes), whole: false })),
  entryArb.map((e) => ({ bytes: encodeEntry({ ...e, flags: 0 }).frame, whole: true })),
  trailerArb.map((t) => ({ bytes: encodeTrailer(t), whole: true })),
  fc.tuple(fc.constantFrom('WALE', 'WALT', 'WAL', 'WA'), fc.uint8Array({ maxLength: 80 })).map(([marker, rest]) => ({
    bytes: Buffer.concat([Buffer.from(marker, 'latin1'), rest]),
    whole: false,
  })),
  // A header whose crc32 passes but whose fields are random: lengths up to 4 GiB, odd flags.
  fc.uint8Array({ minLength: 32, maxLength: 32 }).map((fields) => {
    const header = Buffer.alloc(ENTRY_HEADER_BYTES);
    header.write('WALE', 0, 'latin1');
    header.set(fields, 8);
    header.writeUInt32LE(crc32(header.subarray(8, ENTRY_HEADER_BYTES)), 4);
    return { bytes: header, whole: false };
  }),
  // A plausible header with a valid crc32 and a wrong body checksum: its length is trusted, so
  // the scanner must report an entry with bodyOk false (or a truncation, or a too-long frame).
  fc
    .record({
      index: fc.integer({ min: 1, max: 1000 }),
      payloadByteLength: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.constantFrom(ENTRY_BYTES_MAX, ENTRY_BYTES_MAX + 1, 0xffffffff)),
      flags: fc.constantFrom(0, 1),
      checksum: fc.bigInt({ min: 0n, max: 0xffffffffffffffffn }),
    })
    .map(({ index, payloadByteLength, flags, checksum }) => {
      const header = Buffer.alloc(ENTRY_HEADER_BYTES);
      header.write('WALE', 0, 'latin1');
      header.writeBigUInt64BE(checksum, 8);
      header.writeBigUInt64LE(BigInt(index), 16);
      header.writeUInt32LE(payloadByteLength, 32);
      header.writeUInt16LE(flags, 36);
      header.writeUInt32LE(crc32(header.subarray(8, ENTRY_HEADER_BYTES)), 4);
      return { bytes: header, whole: false };
    }),
);

function caseFromChunks(chunks: readonly Chunk[]): Case {
  const written = new Set<string>();
  for (const chunk of chunks) if (chunk.whole) written.add(chunk.bytes.toString('hex'));
  return { body: Buffer.concat(chunks.map((chunk) => chunk.bytes)), written };
}

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'zero'; at: number; byteLength: number }
  | { kind: 'cut'; at: number }
  | { kind: 'duplicate'; from: number; byteLength: number; to: number }
  | { kind: 'overwrite'; at: number; bytes: Uint8Array };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('zero' as const), at: fc.nat(), byteLength: fc.integer({ min: 1, max: 4096 }) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('duplicate' as const), from: fc.nat(), byteLength: fc.integer({ min: 1, max: 2048 }), to: fc.nat() }),
  fc.record({ kind: fc.constant('overwrite' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
);

function mutate(body: Buffer, mutation: Mutation): Buffer {
  const length = body.byteLength;
  const at = (n: number): number => n % (length + 1);
  switch (mutation.kind) {
    case 'flip': {
      if (length === 0) return body;
      const copy = Buffer.from(body);
      copy[mutation.at % length]! ^= 1 << mutation.bit;
      return copy;
    }
    case 'zero':
      return Buffer.from(body).fill(0, at(mutation.at), Math.min(length, at(mutation.at) + mutation.byteLength));
    case 'cut':
      return body.subarray(0, at(mutation.at));
    case 'duplicate': {
      const from = at(mutation.from);
      const copied = body.subarray(from, Math.min(length, from + mutation.byteLength));
      const to = at(mutation.to);
      return Buffer.concat([body.subarray(0, to), copied, body.subarray(to)]);
    }
    case 'overwrite': {
      const copy = Buffer.from(body);
      copy.set(mutation.bytes.subarray(0, Math.max(0, length - at(mutation.at))), at(mutation.at));
      return copy;
    }
  }
}

const validSegmentArb = fc
  .tuple(fc.array(fc.uint8Array({ maxLength: 400 }), { maxLength: 16 }), fc.boolean())
  .map(([payloads, sealed]) => {
    const written = new Set<string>();
    const frames = payloads.map((payload, i) => encodeEntry({ index: 100 + i, timestampMs: i, flags: 0, payload }).frame);
    for (const frame of frames) written.add(frame.toString('hex'));
    const entriesByteLength = frames.reduce((sum, frame) => sum + frame.byteLength, 0);
    if (sealed) {
      const trailer = encodeTrailer({
        segmentId: 1,
        firstIndex: 100,
        lastIndex: 99 + frames.length,
        indexCount: frames.length,
        aggregateChecksum: 0n,
        entriesByteLength,
      });
      written.add(trailer.toString('hex'));
      frames.push(trailer);
    }
    return { body: Buffer.concat(frames), written, frameCount: payloads.length, sealed };
  });

// ---------------------------------------------------------------------------------------------

describe('scanFrames fuzz', () => {
  beforeEach(() => {
    seenCounts.clear();
  });

  it('random bytes: never throws, ends, tiles the range and verifies nothing', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), async (bytes) => {
        await checkCase({ body: Buffer.from(bytes), written: new Set() });
      }),
      { numRuns: NUM_RUNS },
    );
    expectSeen(['damage:bad-entry-header', 'damage:truncated']);
  });

  it('random mixes of real frames, trailers, forged headers and markers', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(chunkArb, { maxLength: 24 }), async (chunks) => {
        await checkCase(caseFromChunks(chunks));
      }),
      { numRuns: NUM_RUNS },
    );
    expectSeen(['entry:ok', 'entry:bad-body', 'trailer', 'damage:bad-trailer', 'damage:after-trailer']);
  });

  it('valid segments mutated by flips, zeroed ranges, cuts, duplicated ranges and overwrites', async () => {
    await fc.assert(
      fc.asyncProperty(validSegmentArb, fc.array(mutationArb, { minLength: 1, maxLength: 6 }), async (segment, mutations) => {
        const body = mutations.reduce(mutate, segment.body);
        await checkCase({ body, written: segment.written });
      }),
      { numRuns: NUM_RUNS },
    );
    expectSeen(['entry:ok', 'entry:bad-body', 'trailer', 'damage:bad-entry-header', 'damage:bad-trailer', 'damage:truncated', 'damage:after-trailer']);
  });

  it('valid segments without mutation: exactly the written entries (and trailer), nothing else', async () => {
    await fc.assert(
      fc.asyncProperty(validSegmentArb, async (segment) => {
        const file = Buffer.concat([HEADER, segment.body]);
        const items = await scanAndCheck(file, segment.written, 64);
        expect(items.map((item) => item.kind)).toEqual([
          ...Array.from({ length: segment.frameCount }, () => 'entry'),
          ...(segment.sealed ? ['trailer'] : []),
        ]);
        expect(items.every((item) => item.kind !== 'entry' || item.bodyOk)).toBe(true);
        expect(items.flatMap((item) => (item.kind === 'entry' ? [item.index] : []))).toEqual(
          Array.from({ length: segment.frameCount }, (_, i) => 100 + i),
        );
      }),
      { numRuns: 100 },
    );
  });
});

describe('scanFrames memory is bounded by its window', () => {
  it('headers with valid crc32 claiming 4 GiB payloads are rejected without allocating', async () => {
    const entryBytesMax = 1024 * 1024;
    const forged = Buffer.alloc(ENTRY_HEADER_BYTES);
    forged.write('WALE', 0, 'latin1');
    forged.writeBigUInt64LE(1n, 16);
    forged.writeUInt32LE(0xffffffff, 32);
    forged.writeUInt32LE(crc32(forged.subarray(8, ENTRY_HEADER_BYTES)), 4);
    // Also one claiming exactly entryBytesMax with the file ending right after its header.
    const atLimit = Buffer.from(forged);
    atLimit.writeUInt32LE(entryBytesMax, 32);
    atLimit.writeUInt32LE(crc32(atLimit.subarray(8, ENTRY_HEADER_BYTES)), 4);
    const real = encodeEntry({ index: 2, timestampMs: 1, flags: 0, payload: Buffer.from('after') }).frame;
    const copies = 2000;
    const file = Buffer.concat([HEADER, ...Array.from({ length: copies }, () => forged), real, atLimit]);
    const path = join(dir, 'claims-4gib.wal');
    await writeFile(path, file);

    const before = process.memoryUsage();
    let arrayBuffersMax = before.arrayBuffers;
    let rssMax = before.rss;
    const kinds: string[] = [];
    const handle = await open(path, 'r');
    try {
      await scanFrames(handle, { startOffsetBytes: SEGMENT_HEADER_BYTES, endOffsetBytes: file.byteLength, entryBytesMax }, (item) => {
        kinds.push(item.kind === 'damage' ? `${item.kind}:${item.reason}:${item.byteLength}` : item.kind);
        const now = process.memoryUsage();
        arrayBuffersMax = Math.max(arrayBuffersMax, now.arrayBuffers);
        rssMax = Math.max(rssMax, now.rss);
      });
    } finally {
      await handle.close();
    }
    // Each forged header is refused on its length, resync refuses them too: one damage range.
    expect(kinds).toEqual([
      `damage:bad-entry-header:${copies * ENTRY_HEADER_BYTES}`,
      'entry',
      `damage:truncated:${ENTRY_HEADER_BYTES}`,
    ]);
    // The window is about 1 MiB (entryBytesMax plus a header and a trailer); allow a few MiB of
    // noise. A 4 GiB allocation, or one per forged header, would blow far past these.
    const mib = 1024 * 1024;
    if (process.env['WAL_FUZZ_VERBOSE']) {
      console.log({ arrayBuffersDelta: arrayBuffersMax - before.arrayBuffers, rssDelta: rssMax - before.rss });
    }
    expect(arrayBuffersMax - before.arrayBuffers).toBeLessThan(4 * mib);
    expect(rssMax - before.rss).toBeLessThan(32 * mib);
  });
});
