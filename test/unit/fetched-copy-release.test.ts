// A whole segment fetched from a replica lands in a temporary directory (ReplicaSource, fetch-*)
// and is copied into the store from there. The store's source lives as long as the node, so the
// directory must go once the copy is in place (or not used): before, each restore left a whole
// segment behind until the node restarted (review of issues 10/14). Real stores and files; the
// "replica" is a copy of the segment file served through FetchSegment's stand-in.
import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { WalStore } from '../../src/index.js';
import { nodeDisk } from '../../src/io/index.js';
import { ReplicaSource, type SegmentMeta } from '../../src/replication/index.js';
import { analyzeSegmentFile, checksumHex } from '../../src/wal/index.js';
import { ENTRIES_PER_SEGMENT, fileBytes, makeStore, segmentPath, storeOptions, tempRoot } from '../support/fault-driver.js';

const ENTRY_BYTES_MAX = 1024 * 1024;
const SEGMENT = 2;
const WRITTEN = 3 * ENTRIES_PER_SEGMENT;

const roots: string[] = [];
afterEach(async () => {
  for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
});

/** A store whose sealed segment 2 is missing, a replica's intact copy of it, and a ReplicaSource. */
async function missingSegment(): Promise<{ dir: string; tempDir: string; original: Buffer; source: ReplicaSource; fetches: () => number }> {
  const root = await tempRoot();
  roots.push(root);
  const dir = join(root, 'store');
  await makeStore(dir, { entries: WRITTEN, backupRetentionCount: 0 });
  const replicaPath = join(root, 'replica.wal');
  await copyFile(segmentPath(dir, SEGMENT), replicaPath);
  const original = await fileBytes(replicaPath);
  const a = await analyzeSegmentFile(nodeDisk, replicaPath, SEGMENT, { entryBytesMax: ENTRY_BYTES_MAX });
  const meta: SegmentMeta = {
    log: 'l',
    segmentId: SEGMENT,
    ensemble: ['self', 'b'],
    ackQuorum: 2,
    state: 'SEALED',
    writerEpoch: 1,
    firstIndex: a.firstIndex as number,
    lastIndex: a.lastIndex,
    indexCount: a.indexCount,
    byteLength: original.byteLength,
    aggregate: checksumHex(a.aggregate),
    createdMs: 0,
  };
  await rm(segmentPath(dir, SEGMENT));
  const tempDir = join(root, 'tmp');
  await mkdir(tempDir);
  let fetched = 0;
  const source = new ReplicaSource({
    log: 'l',
    self: 'self',
    peers: () => undefined,
    segmentMeta: async () => meta,
    fetchFile: async (_node, _segmentId, path) => {
      fetched += 1;
      await copyFile(replicaPath, path);
    },
    tempDir,
    disk: nodeDisk,
    logger: pino({ level: 'silent' }),
    entryBytesMax: ENTRY_BYTES_MAX,
  });
  return { dir, tempDir, original, source, fetches: () => fetched };
}

describe('a whole segment fetched from a replica', () => {
  it('is restored, and its temporary directory is gone once the copy is in place', async () => {
    const { dir, tempDir, original, source, fetches } = await missingSegment();
    const store = await WalStore.open(dir, storeOptions({ backupRetentionCount: 0 }));
    try {
      const report = await store.repairSealedSegment(SEGMENT, { strategy: 'partial', dryRun: false, sources: [source] });
      expect(report).toMatchObject({ segment: SEGMENT, outcome: 'done', lost: [], truncated: [] });
    } finally {
      await store.close();
    }
    expect(fetches()).toBeGreaterThan(0);
    expect((await fileBytes(segmentPath(dir, SEGMENT))).equals(original)).toBe(true);
    expect(await readdir(tempDir)).toEqual([]);
  });

  it('a dry run leaves no fetched copy behind either', async () => {
    const { dir, tempDir, source, fetches } = await missingSegment();
    const store = await WalStore.open(dir, storeOptions({ backupRetentionCount: 0 }));
    try {
      const report = await store.repairSealedSegment(SEGMENT, { strategy: 'partial', dryRun: true, sources: [source] });
      expect(report).toMatchObject({ segment: SEGMENT, outcome: 'planned' });
    } finally {
      await store.close();
    }
    expect(fetches()).toBeGreaterThan(0);
    expect(await readdir(tempDir)).toEqual([]);
  });
});
