// Torn write versus corruption in the open segment after a crash (src/recovery TORN_WRITE_RULES,
// src/wal/torn.ts). A crash can only damage the last write that was in flight, and the store
// never writes more than groupCommitBytesMax (one frame, when a frame is larger) between two
// fdatasyncs; within that window the page cache may have written pages back out of order, so a
// page never written (zeros) can be followed by intact frames of the same write. Everything from
// the first damaged byte of that write on was never acknowledged and is rolled back (kept in
// quarantine); damage before the window, a flipped bit, or an intact frame out of place at the
// checkpoint is corruption, which open refuses to cut.
// Real store on real temp dirs, and the simulator's disk for crashes in the middle of a write.
import { cp, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Disk, type DiskFile, SeededRandom, nodeDisk } from '../../src/io/index.js';
import { TORN_WRITE_RULES, type TornWriteSignals, isTornWrite, withinLastWrite } from '../../src/recovery/index.js';
import { SimFileSystem } from '../../src/sim/disk.js';
import { SimLoop, type SimProcess } from '../../src/sim/loop.js';
import { decodeCatalog } from '../../src/wal/catalog.js';
import { DamageFoundError, EntryLostError, WalStore, type WalOptions, analyzeSegmentFile, format } from '../../src/index.js';
import { SECTOR_BYTES, endsInZeroSector } from '../../src/wal/torn.js';

const silent = pino({ level: 'silent' });
const GROUP_COMMIT_BYTES_MAX = 8192; // also the window: entryBytesMax 2048 makes frames smaller
const OPTIONS: WalOptions = {
  logger: silent,
  segmentBytesMax: 64 * 1024,
  entryBytesMax: 2048,
  groupCommitBytesMax: GROUP_COMMIT_BYTES_MAX,
  checkpointBytes: 1024 * 1024,
  recovery: { backupRetentionCount: 0 },
};

// Geometry: 21 small entries (frames of 140 bytes) end at 3068; the last group commit, six
// entries of 1000-byte payloads (frames of 1040 bytes), spans 3068..9308: the rest of page 0,
// all of page 1 (4096..8192), part of page 2. Its sixth frame (8268..9308) lies after page 1.
const SMALL_COUNT = 21;
const SMALL_PAYLOAD_BYTES = 100;
const BIG_PAYLOAD_BYTES = 1000;
const BATCH_COUNT = 6;
const LAST_WRITE_START = format.SEGMENT_HEADER_BYTES + SMALL_COUNT * (format.ENTRY_HEADER_BYTES + SMALL_PAYLOAD_BYTES);
const BIG_FRAME_BYTES = format.ENTRY_HEADER_BYTES + BIG_PAYLOAD_BYTES;
const LAST_WRITE_END = LAST_WRITE_START + BATCH_COUNT * BIG_FRAME_BYTES;
const PAGE_BYTES = 4096;

function payloadOf(index: number): Buffer {
  const bytes = index <= SMALL_COUNT ? SMALL_PAYLOAD_BYTES : BIG_PAYLOAD_BYTES;
  const out = Buffer.alloc(bytes);
  out.write(`entry-${index}-`, 'latin1');
  for (let i = 12; i < bytes; i++) out[i] = 0x61 + ((index * 7 + i) % 26); // letters: no zero byte
  return out;
}

const batch = (first: number, count: number): Buffer[] => Array.from({ length: count }, (_, i) => payloadOf(first + i));
const segmentPath = (dir: string, id = 1): string => join(dir, 'segments', `${String(id).padStart(20, '0')}.wal`);

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'wal-torn-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Appends, then copies the directory while the store is open: what a crash leaves (no LOCK). */
async function crashedStore(dir: string, options: WalOptions, appends: (store: WalStore) => Promise<void>): Promise<void> {
  const live = join(root, `live-${Math.random().toString(36).slice(2)}`);
  const store = await WalStore.open(live, options);
  try {
    await appends(store);
    await cp(live, dir, { recursive: true, filter: (src) => !src.endsWith('/LOCK') });
  } finally {
    await store.close();
  }
}

async function smallThenLastGroupCommit(store: WalStore, extraSingles = 0): Promise<void> {
  for (let i = 1; i <= SMALL_COUNT; i++) await store.append(payloadOf(i));
  expect(await store.append(batch(SMALL_COUNT + 1, BATCH_COUNT))).toEqual({ firstIndex: SMALL_COUNT + 1, lastIndex: SMALL_COUNT + BATCH_COUNT });
  for (let i = 1; i <= extraSingles; i++) await store.append(payloadOf(SMALL_COUNT + BATCH_COUNT + i));
}

async function zeroRange(path: string, from: number, to: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(Buffer.alloc(to - from), 0, to - from, from);
  } finally {
    await handle.close();
  }
}

async function openError(dir: string, options: WalOptions): Promise<unknown> {
  return WalStore.open(dir, options).then(
    async (store) => {
      await store.close();
      return undefined;
    },
    (e: unknown) => e,
  );
}

async function expectReadsBack(store: WalStore, first: number, last: number): Promise<void> {
  for (let index = first; index <= last; index++) expect((await store.read(index)).payload.equals(payloadOf(index)), `index ${index}`).toBe(true);
}

describe('torn write or corruption in the open segment after a crash', () => {
  it('out-of-order write-back of the last group commit is rolled back as a torn tail, intact frames after it included', async () => {
    const dir = join(root, 'd');
    await crashedStore(dir, OPTIONS, (store) => smallThenLastGroupCommit(store));
    const original = await readFile(segmentPath(dir));
    expect(original.byteLength).toBe(LAST_WRITE_END);
    // Page 1 never reached the disk; pages 0 and 2 did: the last frame of the write is intact.
    await zeroRange(segmentPath(dir), PAGE_BYTES, 2 * PAGE_BYTES);
    const crashed = await analyzeSegmentFile(nodeDisk, segmentPath(dir), 1, { entryBytesMax: 2048 });
    expect(crashed.lastIndex).toBe(SMALL_COUNT + BATCH_COUNT); // an intact frame follows the damage

    const store = await WalStore.open(dir, OPTIONS);
    try {
      expect(store.openReport.state).toBe('recovered-tail');
      const torn = LAST_WRITE_END - LAST_WRITE_START;
      expect(store.openReport.tornTails).toEqual([{ segment: 1, offsetBytes: LAST_WRITE_START, byteLength: torn, quarantinedAs: expect.any(String) }]);
      expect(store.openReport.findings).toEqual([expect.objectContaining({ kind: 'torn', segment: 1, entryIndex: SMALL_COUNT + 1, offsetBytes: LAST_WRITE_START })]);
      const kept = await readFile(join(dir, 'quarantine', store.openReport.tornTails[0]?.quarantinedAs ?? '?'));
      expect(kept.equals((await readFileBefore(original)).subarray(LAST_WRITE_START))).toBe(true);
      expect(store.lastIndex).toBe(SMALL_COUNT);
      await expectReadsBack(store, 1, SMALL_COUNT);
      expect(await store.append(payloadOf(SMALL_COUNT + 1))).toEqual({ firstIndex: SMALL_COUNT + 1, lastIndex: SMALL_COUNT + 1 });
    } finally {
      await store.close();
    }

    async function readFileBefore(bytes: Buffer): Promise<Buffer> {
      const copy = Buffer.from(bytes);
      copy.fill(0, PAGE_BYTES, 2 * PAGE_BYTES);
      return copy;
    }
  });

  it('out-of-order write-back of the last group commit found by validate is a torn write, and repair cuts it', async () => {
    const dir = join(root, 'd');
    await crashedStore(dir, OPTIONS, (store) => smallThenLastGroupCommit(store));
    await zeroRange(segmentPath(dir), PAGE_BYTES, 2 * PAGE_BYTES);
    await rm(join(dir, 'CATALOG')); // open runs the full repair, through inspect
    const store = await WalStore.open(dir, OPTIONS);
    try {
      expect(store.openReport.state).toBe('repaired');
      expect(store.openReport.repair?.remaining).toEqual([]);
      expect(store.openReport.repair?.actions).toEqual([expect.objectContaining({ segment: 1, decision: 'truncate-torn-tail', outcome: 'done' })]);
      expect(store.lastIndex).toBe(SMALL_COUNT);
      await expectReadsBack(store, 1, SMALL_COUNT);
    } finally {
      await store.close();
    }
  });

  it('damage before the last write\'s window is still corruption: open refuses, SkipCorrupted keeps what follows', async () => {
    const dir = join(root, 'd');
    // Twelve more entries after the group commit: the same zeroed page now lies before the window.
    await crashedStore(dir, OPTIONS, (store) => smallThenLastGroupCommit(store, 12));
    const size = (await readFile(segmentPath(dir))).byteLength;
    expect(size - GROUP_COMMIT_BYTES_MAX).toBeGreaterThan(LAST_WRITE_START);
    await zeroRange(segmentPath(dir), PAGE_BYTES, 2 * PAGE_BYTES);
    const before = await readFile(segmentPath(dir));

    const error = await openError(dir, OPTIONS);
    expect(error).toBeInstanceOf(DamageFoundError);
    expect((error as DamageFoundError).findings.map((f) => f.kind)).not.toContain('torn');
    expect((await readFile(segmentPath(dir))).equals(before)).toBe(true);

    const last = SMALL_COUNT + BATCH_COUNT + 12;
    const store = await WalStore.open(dir, { ...OPTIONS, recovery: { backupRetentionCount: 0, repairStrategy: 'skip' } });
    try {
      expect(store.lastIndex).toBe(last);
      await expect(store.read(SMALL_COUNT + 2)).rejects.toBeInstanceOf(EntryLostError);
      await expectReadsBack(store, SMALL_COUNT + BATCH_COUNT, last);
    } finally {
      await store.close();
    }
  });

  it('a flipped bit inside the last write\'s window, followed by intact frames, is still corruption', async () => {
    const dir = join(root, 'd');
    await crashedStore(dir, OPTIONS, (store) => smallThenLastGroupCommit(store));
    const handle = await open(segmentPath(dir), 'r+');
    try {
      const at = LAST_WRITE_START + BIG_FRAME_BYTES + format.ENTRY_HEADER_BYTES + 100; // entry 23's payload
      const byte = Buffer.alloc(1);
      await handle.read(byte, 0, 1, at);
      byte[0] = (byte[0] as number) ^ 0x10;
      await handle.write(byte, 0, 1, at);
    } finally {
      await handle.close();
    }
    const error = await openError(dir, OPTIONS);
    expect(error).toBeInstanceOf(DamageFoundError);
    expect((error as DamageFoundError).findings).toEqual([expect.objectContaining({ kind: 'checksum-mismatch', segment: 1, entryIndex: SMALL_COUNT + 2 })]);
  });

  it('an intact frame out of place at the resume point (the checkpoint) is corruption, never a torn tail to cut', async () => {
    const dir = join(root, 'd');
    const options: WalOptions = { ...OPTIONS, checkpointBytes: 4096 };
    // Four 1040-byte frames pass checkpointBytes: the catalog records the open segment at 4288
    // (index 4); entry 5 is written after that checkpoint.
    await crashedStore(dir, options, async (store) => {
      for (let i = 1; i <= 5; i++) await store.append(Buffer.alloc(BIG_PAYLOAD_BYTES, 0x61 + i));
    });
    const catalog = decodeCatalog(await readFile(join(dir, 'CATALOG')));
    if (!catalog.ok) throw new Error(catalog.reason);
    const checkpoint = format.SEGMENT_HEADER_BYTES + 4 * BIG_FRAME_BYTES;
    expect(catalog.catalog.segments).toEqual([expect.objectContaining({ segmentId: 1, state: 'open', byteLength: checkpoint, lastIndex: 4 })]);
    // Entry 4's intact frame where entry 5 belongs, right at the checkpoint, and nothing after it.
    const bytes = await readFile(segmentPath(dir));
    bytes.copy(bytes, checkpoint, checkpoint - BIG_FRAME_BYTES, checkpoint);
    await writeFile(segmentPath(dir), bytes);

    const error = await openError(dir, options);
    expect(error).toBeInstanceOf(DamageFoundError);
    expect((error as DamageFoundError).findings).toEqual([expect.objectContaining({ kind: 'misplaced-entry', segment: 1, entryIndex: 4, offsetBytes: checkpoint })]);
    expect((await readFile(segmentPath(dir))).equals(bytes)).toBe(true);
  });
});

// -----------------------------------------------------------------------------------------------

/** A Disk that records, per file, the most bytes written between two syncs. */
function recordingDisk(inner: Disk): { disk: Disk; stepBytesMax: () => number } {
  let max = 0;
  const wrap = (file: DiskFile): DiskFile => {
    let unsynced = 0;
    return {
      read: (...args) => file.read(...args),
      write: async (buf, offset, byteLength, position) => {
        const result = await file.write(buf, offset, byteLength, position);
        unsynced += result.bytesWritten;
        max = Math.max(max, unsynced);
        return result;
      },
      truncate: (n) => file.truncate(n),
      datasync: async () => {
        await file.datasync();
        unsynced = 0;
      },
      sync: async () => {
        await file.sync();
        unsynced = 0;
      },
      byteLength: () => file.byteLength(),
      close: () => file.close(),
    };
  };
  const disk: Disk = Object.create(inner) as Disk;
  disk.open = async (path, mode) => wrap(await inner.open(path, mode));
  return { disk, stepBytesMax: () => max };
}

describe('the window is real: never more than groupCommitBytesMax between two fdatasyncs', () => {
  it('a single append request far over groupCommitBytesMax is written in several write + fdatasync steps', async () => {
    const { disk, stepBytesMax } = recordingDisk(nodeDisk);
    const store = await WalStore.open(join(root, 's'), { ...OPTIONS, disk, groupCommitBytesMax: 4096 });
    try {
      const payloads = Array.from({ length: 20 }, (_, i) => Buffer.alloc(1000, 0x61 + i));
      expect(await store.append(payloads)).toEqual({ firstIndex: 1, lastIndex: 20 });
      expect(stepBytesMax()).toBeGreaterThan(0);
      expect(stepBytesMax()).toBeLessThanOrEqual(4096);
      for (let i = 1; i <= 20; i++) expect((await store.read(i)).payload.equals(payloads[i - 1] as Buffer)).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('a frame larger than groupCommitBytesMax is written alone, never split across fdatasyncs', async () => {
    const { disk, stepBytesMax } = recordingDisk(nodeDisk);
    const store = await WalStore.open(join(root, 's'), { ...OPTIONS, disk, entryBytesMax: 8000, groupCommitBytesMax: 4096 });
    try {
      await store.append([Buffer.alloc(100, 0x61), Buffer.alloc(6000, 0x62), Buffer.alloc(100, 0x63)]);
      expect(stepBytesMax()).toBe(format.ENTRY_HEADER_BYTES + 6000);
    } finally {
      await store.close();
    }
  });

  it('replicated frames far over groupCommitBytesMax are written in several write + fdatasync steps', async () => {
    const { disk, stepBytesMax } = recordingDisk(nodeDisk);
    const store = await WalStore.open(join(root, 's'), { ...OPTIONS, disk, groupCommitBytesMax: 4096, allowSegmentGaps: true, sealOnClose: false });
    try {
      const frames = Array.from({ length: 20 }, (_, i) => format.encodeEntry({ index: i + 1, timestampMs: 1, flags: 0, payload: Buffer.alloc(1000, 0x61 + i) }).frame);
      expect(await store.appendFrames({ segmentId: 1, firstIndex: 1, createdMs: 1 }, frames)).toEqual({ firstIndex: 1, lastIndex: 20 });
      expect(stepBytesMax()).toBeLessThanOrEqual(4096);
    } finally {
      await store.close();
    }
  });
});

// -----------------------------------------------------------------------------------------------

/** Runs the loop until work settles. */
async function drive<T>(loop: SimLoop, work: Promise<T>): Promise<T> {
  let done = false;
  const result = work.finally(() => (done = true));
  result.catch(() => undefined);
  while (!done) await loop.run(loop.nowMs + 100, () => done);
  return result;
}

interface CrashOutcome {
  readonly intactAfterDamage: boolean;
  readonly lastIndex: number;
}

/**
 * The small entries acknowledged, then the group commit of six big ones written to the page cache
 * and the machine crashing before its fdatasync returns, with pages written back out of order.
 */
async function crashDuringLastGroupCommit(seed: number): Promise<CrashOutcome> {
  const loop = new SimLoop();
  const fs = new SimFileSystem('n', new SeededRandom(seed));
  const first: SimProcess = { name: 'store#1', incarnation: 1, alive: true };
  const options = (process: SimProcess): WalOptions => ({ ...OPTIONS, disk: fs.diskFor(loop, process), clock: loop.clockFor(process) });
  const store = await drive(loop, WalStore.open('/s', options(first)));
  for (let i = 1; i <= SMALL_COUNT; i++) await drive(loop, store.append(payloadOf(i)));
  const path = '/s/segments/00000000000000000001.wal';
  const synced = fs.bytesOf(path)?.byteLength ?? 0;
  store.append(batch(SMALL_COUNT + 1, BATCH_COUNT)).catch(() => undefined); // never acknowledged
  await loop.run(loop.nowMs + 1_000, () => (fs.bytesOf(path)?.byteLength ?? 0) > synced);
  expect(fs.bytesOf(path)?.byteLength).toBe(LAST_WRITE_END); // written, its fdatasync not returned
  first.alive = false;
  fs.crash('out-of-order-pages');

  const second: SimProcess = { name: 'store#2', incarnation: 2, alive: true };
  const disk = fs.diskFor(loop, second);
  const crashed = await drive(loop, analyzeSegmentFile(disk, path, 1, { entryBytesMax: 2048 }));
  const reopened = await drive(loop, WalStore.open('/s', options(second)));
  for (let index = 1; index <= reopened.lastIndex; index++) {
    const entry = await drive(loop, reopened.read(index));
    expect(entry.payload.equals(payloadOf(index)), `seed ${seed} index ${index}`).toBe(true);
  }
  return { intactAfterDamage: crashed.ranges.some((r) => r.nextIndex !== undefined), lastIndex: reopened.lastIndex };
}

describe('crash during an unsynced group commit, on the simulated disk', () => {
  it('out-of-order write-back of the last group commit, whatever pages reach the disk, never makes open refuse nor loses an acknowledged entry', async () => {
    const outcomes: CrashOutcome[] = [];
    for (let seed = 1; seed <= 24; seed++) outcomes.push(await crashDuringLastGroupCommit(seed));
    for (const outcome of outcomes) expect(outcome.lastIndex).toBeGreaterThanOrEqual(SMALL_COUNT);
    // The fault this test is about happened: damage followed by intact frames of the same write.
    expect(outcomes.filter((o) => o.intactAfterDamage).length).toBeGreaterThan(0);
  });
});

// -----------------------------------------------------------------------------------------------

const BOOLEANS = [false, true] as const;

function everyTornCombination(): TornWriteSignals[] {
  const out: TornWriteSignals[] = [];
  for (const inOpenSegment of BOOLEANS)
    for (const crashShaped of BOOLEANS)
      for (const withinLastWrite of BOOLEANS)
        for (const intactAfter of BOOLEANS)
          for (const unwrittenSector of BOOLEANS) out.push({ inOpenSegment, crashShaped, withinLastWrite, intactAfter, unwrittenSector });
  return out;
}

describe('torn-write rule: every combination of its inputs', () => {
  const all = everyTornCombination();

  it('enumerates 32 combinations, each decided by the first matching rule', () => {
    expect(new Set(all.map((s) => JSON.stringify(s))).size).toBe(32);
    for (const s of all) expect(TORN_WRITE_RULES.find((rule) => rule.when(s))?.torn).toBe(isTornWrite(s));
  });

  it('is torn only in the open segment, within the last write, for bytes a crash can leave', () => {
    for (const s of all) if (isTornWrite(s)) expect(s.inOpenSegment && s.withinLastWrite && s.crashShaped, JSON.stringify(s)).toBe(true);
  });

  it('cuts intact frames only after sectors never written back', () => {
    for (const s of all) if (isTornWrite(s) && s.intactAfter) expect(s.unwrittenSector, JSON.stringify(s)).toBe(true);
  });

  it('always rolls back a last write cut short (nothing intact after it), whatever its bytes', () => {
    for (const s of all) if (s.inOpenSegment && s.crashShaped && s.withinLastWrite && !s.intactAfter) expect(isTornWrite(s), JSON.stringify(s)).toBe(true);
  });

  it('places the window after the checkpoint and within tornWindowBytes of the end', () => {
    expect(withinLastWrite(1000, 9000, 128, 8192)).toBe(true);
    expect(withinLastWrite(807, 9000, 128, 8192)).toBe(false);
    expect(withinLastWrite(808, 9000, 128, 8192)).toBe(true);
    expect(withinLastWrite(1000, 9000, 2000, 8192)).toBe(false); // before the checkpoint: synced
  });

  it('sees an unwritten sector only in zeros that run to a sector boundary', () => {
    const zeros = Buffer.alloc(SECTOR_BYTES);
    expect(endsInZeroSector(zeros, 0)).toBe(true);
    const shortRun = Buffer.alloc(100, 0x61).fill(0, 0, 20); // zeros 1000..1020, then letters past 1024
    expect(endsInZeroSector(shortRun, 1000)).toBe(false);
    expect(endsInZeroSector(zeros.subarray(0, 24), 1000)).toBe(true); // 1000..1024: the rest of a sector
    const frame = Buffer.alloc(2 * SECTOR_BYTES, 0x61);
    frame.write('WALE', 0, 'latin1');
    frame.fill(0, 4, 40); // zero bytes in a header, not up to a sector's end
    expect(endsInZeroSector(frame, SECTOR_BYTES - 10)).toBe(false);
    frame.fill(0, 10, SECTOR_BYTES + 10); // file offsets 512..1024: a whole zero sector inside
    expect(endsInZeroSector(frame, SECTOR_BYTES - 10)).toBe(true);
  });
});
