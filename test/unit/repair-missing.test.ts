// A sealed segment whose local file is missing, while every other copy of it is damaged
// somewhere: repair must gather it entry by entry (as for a damaged file) instead of giving up
// because no whole copy verifies. Real stores in temp dirs; the "replicas" are damaged copies of
// the segment file served through the GoodCopySource interface.
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EntryLostError, type RepairStrategy, WalStore } from '../../src/index.js';
import { nodeDisk } from '../../src/io/index.js';
import { type GoodCopySource, type SegmentExpectation, analyzeSegmentFile, isClean } from '../../src/wal/index.js';
import { ENTRIES_PER_SEGMENT, fileBytes, flipBit, makeStore, payloadOf, payloadOffset, segmentPath, storeOptions, tempRoot } from '../support/fault-driver.js';

const ENTRY_BYTES_MAX = 1024 * 1024;
const SEGMENT = 2;
const FIRST = ENTRIES_PER_SEGMENT + 1; // segment 2 holds FIRST..LAST
const LAST = 2 * ENTRIES_PER_SEGMENT;
const WRITTEN = 3 * ENTRIES_PER_SEGMENT;

/** A member's copy of one segment file: serves its intact frames, and the file only if it verifies. */
class CopyOnReplica implements GoodCopySource {
  constructor(
    readonly name: string,
    private readonly path: string,
  ) {}

  async fetchFrames(segmentId: number, first: number, last: number): Promise<Map<number, Buffer>> {
    const frames = new Map<number, Buffer>();
    await analyzeSegmentFile(nodeDisk, this.path, segmentId, {
      entryBytesMax: ENTRY_BYTES_MAX,
      onIntactFrame: (index, frame) => {
        if (index >= first && index <= last) frames.set(index, Buffer.from(frame));
      },
    });
    return frames;
  }

  async fetchSegmentFile(segmentId: number, expected: SegmentExpectation): Promise<string | undefined> {
    const a = await analyzeSegmentFile(nodeDisk, this.path, segmentId, { entryBytesMax: ENTRY_BYTES_MAX });
    const matches = a.firstIndex === expected.firstIndex && a.lastIndex === expected.lastIndex && a.aggregate === expected.aggregateChecksum;
    return isClean(a) && a.trailer !== undefined && matches ? this.path : undefined;
  }
}

const roots: string[] = [];
afterEach(async () => {
  for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
});

/**
 * A store of three sealed segments (no local backups) whose segment 2 file is deleted, and two
 * replicas holding copies of it, each damaged at the given indices.
 */
async function missingWithReplicas(damagedOnB: readonly number[], damagedOnC: readonly number[]): Promise<{ dir: string; original: Buffer; replicas: GoodCopySource[] }> {
  const root = await tempRoot();
  roots.push(root);
  const dir = join(root, 'store');
  await makeStore(dir, { entries: WRITTEN, backupRetentionCount: 0 });
  const original = await fileBytes(segmentPath(dir, SEGMENT));
  await mkdir(join(root, 'b'));
  await mkdir(join(root, 'c'));
  const replicas: GoodCopySource[] = [];
  for (const [name, damaged] of [['b', damagedOnB], ['c', damagedOnC]] as const) {
    const path = join(root, name, `${SEGMENT}.wal`);
    await copyFile(segmentPath(dir, SEGMENT), path);
    for (const index of damaged) await flipBit(path, payloadOffset(index) + 9);
    replicas.push(new CopyOnReplica(`replica-${name}`, path));
  }
  await rm(segmentPath(dir, SEGMENT));
  return { dir, original, replicas };
}

async function repairOnline(dir: string, strategy: RepairStrategy, sources: GoodCopySource[], heldElsewhere?: (segmentId: number, first: number, last: number) => boolean) {
  const store = await WalStore.open(dir, storeOptions({ backupRetentionCount: 0 }));
  try {
    const report = await store.repairSealedSegment(SEGMENT, { strategy, dryRun: false, sources, ...(heldElsewhere ? { heldElsewhere } : {}) });
    const reads = new Map<number, Buffer | 'lost' | 'error'>();
    for (let i = store.firstIndex; i <= store.lastIndex; i += 1) {
      try {
        reads.set(i, (await store.read(i)).payload);
      } catch (error) {
        reads.set(i, error instanceof EntryLostError ? 'lost' : 'error');
      }
    }
    return { report, reads, lastIndex: store.lastIndex };
  } finally {
    await store.close();
  }
}

function expectIntact(reads: Map<number, Buffer | 'lost' | 'error'>, first: number, last: number, except: readonly number[] = []): void {
  for (let i = first; i <= last; i += 1) {
    if (except.includes(i)) continue;
    expect(reads.get(i), `entry ${i}`).toEqual(payloadOf(i));
  }
}

describe('missing sealed segment, every copy damaged somewhere', () => {
  const B_DAMAGE = [FIRST + 2]; // entry 3 of the segment
  const C_DAMAGE = [FIRST + 6]; // entry 7 of the segment

  it('a missing sealed file is rebuilt entry by entry from two replicas damaged in different places', async () => {
    const { dir, original, replicas } = await missingWithReplicas(B_DAMAGE, C_DAMAGE);
    const { report, reads } = await repairOnline(dir, 'partial', replicas);
    expect(report).toMatchObject({ segment: SEGMENT, decision: 'reconstruct', outcome: 'done', repaired: [{ first: FIRST, last: LAST }], lost: [], truncated: [] });
    expect((await fileBytes(segmentPath(dir, SEGMENT))).equals(original)).toBe(true);
    expectIntact(reads, 1, WRITTEN);
  });

  it('a missing sealed file with replicas damaged in different places loses nothing under skip', async () => {
    const { dir, original, replicas } = await missingWithReplicas(B_DAMAGE, C_DAMAGE);
    const { report, reads } = await repairOnline(dir, 'skip', replicas);
    expect(report).toMatchObject({ outcome: 'done', lost: [], truncated: [] });
    expect((await fileBytes(segmentPath(dir, SEGMENT))).equals(original)).toBe(true);
    expectIntact(reads, 1, WRITTEN);
  });

  it('a missing file with an entry no replica holds intact: partial refuses, skip records only that entry as lost', async () => {
    const unheld = FIRST + 2;
    const partial = await missingWithReplicas([unheld], [unheld, ...C_DAMAGE]);
    const refused = await repairOnline(partial.dir, 'partial', partial.replicas);
    expect(refused.report).toMatchObject({ decision: 'escalate', outcome: 'failed', lost: [], truncated: [] });
    await expect(fileBytes(segmentPath(partial.dir, SEGMENT))).rejects.toMatchObject({ code: 'ENOENT' });

    const skip = await missingWithReplicas([unheld], [unheld, ...C_DAMAGE]);
    const skipped = await repairOnline(skip.dir, 'skip', skip.replicas);
    expect(skipped.report).toMatchObject({ decision: 'skip', outcome: 'done', lost: [{ first: unheld, last: unheld }], truncated: [] });
    expect(skipped.reads.get(unheld)).toBe('lost');
    expectIntact(skipped.reads, 1, WRITTEN, [unheld]);
  });

  it('a missing file with an entry only an unreachable member may hold: skip gives up nothing', async () => {
    const unheld = FIRST + 2;
    const { dir, replicas } = await missingWithReplicas([unheld], [unheld]);
    const mayHold = (segmentId: number, first: number, last: number): boolean => segmentId === SEGMENT && first <= unheld && unheld <= last;
    const { report } = await repairOnline(dir, 'skip', replicas, mayHold);
    expect(report).toMatchObject({ decision: 'escalate', outcome: 'failed', lost: [] });
    await expect(fileBytes(segmentPath(dir, SEGMENT))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a missing file with an entry no replica holds intact, Rollback: the entries before it are kept', async () => {
    const unheld = FIRST + 6;
    const { dir, replicas } = await missingWithReplicas([FIRST + 2, unheld], [unheld]);
    const { report, reads } = await repairOnline(dir, 'rollback', replicas);
    expect(report).toMatchObject({ decision: 'rollback', outcome: 'done', truncated: [{ first: unheld, last: LAST }] });
    expectIntact(reads, 1, unheld - 1);
  });

  it('a missing sealed file with nothing fetchable, Rollback: reported truncated, no exception', async () => {
    const { dir } = await missingWithReplicas([], []);
    const { report, reads } = await repairOnline(dir, 'rollback', []);
    expect(report).toMatchObject({ decision: 'rollback', outcome: 'done', truncated: [{ first: FIRST, last: LAST }] });
    expectIntact(reads, 1, FIRST - 1);
  });
});
