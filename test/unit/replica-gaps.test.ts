// A replica holds only the segments whose ensemble names it (replica mode, allowSegmentGaps), so
// after any outage there are index gaps between the segment files it holds. Those gaps are
// segments held elsewhere, not damage: open (its tail recovery and its full repair) and validate
// must not report them, while gaps or misplaced indices inside a segment still are damage.
// Real store, real temp dirs; tests are named by the state they find on disk.
import { appendFile, cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DamageFoundError, IndexOutOfRangeError, WalStore, type WalOptions, format, validateStore } from '../../src/index.js';

const silent = pino({ level: 'silent' });
const REPLICA: WalOptions = {
  logger: silent,
  allowSegmentGaps: true,
  sealOnClose: false,
  segmentBytesMax: 64 * 1024,
  entryBytesMax: 2048,
  recovery: { backupRetentionCount: 1 },
};
const PLAIN: WalOptions = { ...REPLICA, allowSegmentGaps: false };

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'wal-replica-gaps-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

function payloadOf(index: number): Buffer {
  return Buffer.from(`replica-entry-${index}-${'p'.repeat(60)}`);
}

function framesOf(first: number, last: number): Buffer[] {
  const frames: Buffer[] = [];
  for (let index = first; index <= last; index++) frames.push(format.encodeEntry({ index, timestampMs: 1_000 + index, flags: 0, payload: payloadOf(index) }).frame);
  return frames;
}

const segmentPath = (dir: string, id: number): string => join(dir, 'segments', `${String(id).padStart(20, '0')}.wal`);

/**
 * A replica that holds sealed segment 1 (indices 1..5) and segment 3 (11..15), not segment 2
 * (6..10, held by another ensemble). With `openThird`, segment 3 stays open; the directory is then
 * copied while the store is open (as a crash leaves it, without the lock file).
 */
async function replicaHolding1And3(dir: string, { openThird = false } = {}): Promise<void> {
  const live = openThird ? join(root, `live-${Math.random().toString(36).slice(2)}`) : dir;
  const store = await WalStore.open(live, REPLICA);
  try {
    await store.appendFrames({ segmentId: 1, firstIndex: 1, createdMs: 1 }, framesOf(1, 5));
    await store.sealSegment(1, 5);
    await store.appendFrames({ segmentId: 3, firstIndex: 11, createdMs: 2 }, framesOf(11, 15));
    if (!openThird) await store.sealSegment(3, 15);
    else await cp(live, dir, { recursive: true, filter: (src) => !src.endsWith('/LOCK') });
  } finally {
    await store.close();
  }
}

async function expectHolds1And3(store: WalStore, lastIndex = 15): Promise<void> {
  for (const index of [1, 2, 3, 4, 5, 11, 12, 13, 14, 15]) expect((await store.read(index)).payload.equals(payloadOf(index)), `index ${index}`).toBe(true);
  await expect(store.read(8)).rejects.toBeInstanceOf(IndexOutOfRangeError);
  expect(store.lastIndex).toBe(lastIndex);
}

describe('replica holding segments 1 and 3 only', () => {
  it('open of a replica holding segments 1 and 3 only is not damage: a lost catalog is rebuilt, the gap kept', async () => {
    const dir = join(root, 'r');
    await replicaHolding1And3(dir);
    await rm(join(dir, 'CATALOG'));
    const store = await WalStore.open(dir, REPLICA);
    try {
      expect(store.openReport.state).toBe('repaired');
      expect(store.openReport.repair?.remaining).toEqual([]);
      expect(store.openReport.findings.map((f) => f.kind)).not.toContain('index-gap');
      expect(store.segmentRecords().map((r) => [r.segmentId, r.firstIndex, r.lastIndex, r.state])).toEqual([
        [1, 1, 5, 'sealed'],
        [3, 11, 15, 'sealed'],
      ]);
      await expectHolds1And3(store);
    } finally {
      await store.close();
    }
    // The rebuilt catalog opens clean.
    const again = await WalStore.open(dir, REPLICA);
    expect(again.openReport.state).toBe('clean');
    await again.close();
  });

  it('open after a crash of a replica whose open segment starts after a gap recovers the tail, without a full repair', async () => {
    const dir = join(root, 'r');
    await replicaHolding1And3(dir, { openThird: true });
    const store = await WalStore.open(dir, REPLICA);
    try {
      expect(store.openReport.state).toBe('recovered-tail');
      expect(store.openReport.findings).toEqual([]);
      await expectHolds1And3(store);
      expect(await store.appendFrames({ segmentId: 3, firstIndex: 11, createdMs: 2 }, framesOf(16, 17))).toEqual({ firstIndex: 16, lastIndex: 17 });
    } finally {
      await store.close();
    }
  });

  it('a torn write in the open segment after a gap, with the catalog lost: the full repair cuts the tear and keeps the gap', async () => {
    const dir = join(root, 'r');
    await replicaHolding1And3(dir, { openThird: true });
    const sizeBefore = (await readFile(segmentPath(dir, 3))).byteLength;
    await appendFile(segmentPath(dir, 3), Buffer.alloc(100, 0x5a));
    await rm(join(dir, 'CATALOG'));
    const store = await WalStore.open(dir, REPLICA);
    try {
      expect(store.openReport.state).toBe('repaired');
      expect(store.openReport.repair?.remaining).toEqual([]);
      expect(store.openReport.findings.map((f) => f.kind).sort()).toEqual(['bad-catalog', 'torn']);
      expect(store.openReport.findings).toContainEqual(expect.objectContaining({ kind: 'torn', segment: 3, offsetBytes: sizeBefore }));
      await expectHolds1And3(store);
    } finally {
      await store.close();
    }
  });

  it('a plain store (not a replica) holding segments 1 and 3 only still refuses: the gap is damage there', async () => {
    const dir = join(root, 'r');
    await replicaHolding1And3(dir);
    await rm(join(dir, 'CATALOG'));
    const error = await WalStore.open(dir, PLAIN).then(
      async (store) => {
        await store.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DamageFoundError);
    expect((error as DamageFoundError).findings).toEqual([expect.objectContaining({ kind: 'index-gap', segment: 3, entryIndex: 6, indexCount: 5 })]);
  });

  it('validate of a replica data dir with segment gaps reports nothing when told it is a replica, the gap otherwise', async () => {
    const dir = join(root, 'r');
    await replicaHolding1And3(dir);
    const asReplica = await validateStore(dir, { allowSegmentGaps: true });
    expect(asReplica.findings).toEqual([]);
    expect(asReplica.ok).toBe(true);
    const asPlain = await validateStore(dir);
    expect(asPlain.findings.map((f) => [f.kind, f.segment])).toEqual([['index-gap', 3]]);
  });

  it('a gap inside a segment of a replica is still damage', async () => {
    const dir = join(root, 'r');
    await replicaHolding1And3(dir);
    // Cut entry 3's frame out of segment 1: entries 2 and 4 now stand next to each other.
    const bytes = await readFile(segmentPath(dir, 1));
    const frameBytes = (framesOf(1, 1)[0] as Buffer).byteLength;
    const at = format.SEGMENT_HEADER_BYTES + 2 * frameBytes;
    await writeFile(segmentPath(dir, 1), Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + frameBytes)]));
    const report = await validateStore(dir, { allowSegmentGaps: true });
    expect(report.findings).toContainEqual(expect.objectContaining({ kind: 'index-gap', segment: 1, entryIndex: 3 }));
    await rm(join(dir, 'CATALOG'));
    await expect(WalStore.open(dir, { ...REPLICA, recovery: { backupRetentionCount: 0 } })).rejects.toBeInstanceOf(DamageFoundError);
  });
});
