// Replica mode: open's full repair takes the shape of a sealed segment from the cluster's record
// (etcd's, through a source's recordedSegment) when neither a catalog record nor a trailer
// survives (sim seed 14014: a lost catalog, and misdirected writes over a sealed segment's last
// entries and trailer). Without it the segment's end is unknown, `partial` escalates and the node
// never opens its log. Real stores on real files; the "replica" is a healthy copy of the segment
// file served through GoodCopySource, and the record is a fake of etcd's.
import { copyFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nodeDisk } from '../../src/io/index.js';
import { DamageFoundError } from '../../src/wal/errors.js';
import { type GoodCopySource, type RecordedSegment, type WalOptions, WalStore, analyzeSegmentFile, format } from '../../src/wal/index.js';
import { ENTRIES_PER_SEGMENT, catalogPath, corrupt, fileBytes, frameOffset, makeStore, payloadOf, segmentPath, storeOptions, tempRoot } from '../support/fault-driver.js';

const ENTRY_BYTES_MAX = 1024 * 1024;
const SEGMENT = 2;
const FIRST = ENTRIES_PER_SEGMENT + 1; // segment 2 holds FIRST..LAST
const LAST = 2 * ENTRIES_PER_SEGMENT;
const WRITTEN = 3 * ENTRIES_PER_SEGMENT + 2;

/** A member holding a copy of segment 2 (its frames, re-encoded by `tamper` when given) and etcd's record of it. */
class Member implements GoodCopySource {
  readonly name = 'replicas';
  asked = 0;
  constructor(
    private readonly path: string,
    private readonly record: RecordedSegment | undefined,
    private readonly tamper?: (index: number, frame: Buffer) => Buffer,
  ) {}

  async recordedSegment(segmentId: number): Promise<RecordedSegment | undefined> {
    this.asked += 1;
    return segmentId === this.record?.segmentId ? this.record : undefined;
  }

  async fetchFrames(segmentId: number, first: number, last: number): Promise<Map<number, Buffer>> {
    const frames = new Map<number, Buffer>();
    if (segmentId !== this.record?.segmentId) return frames;
    await analyzeSegmentFile(nodeDisk, this.path, segmentId, {
      entryBytesMax: ENTRY_BYTES_MAX,
      onIntactFrame: (index, frame) => {
        if (index >= first && index <= last) frames.set(index, this.tamper ? this.tamper(index, Buffer.from(frame)) : Buffer.from(frame));
      },
    });
    return frames;
  }

  async fetchSegmentFile(): Promise<string | undefined> {
    return undefined; // entry by entry only: the rebuilt copy is what is checked against the record
  }
}

const roots: string[] = [];
afterEach(async () => {
  for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
});

/** etcd's record of a sealed segment, as the healthy copy at path says. */
async function recordOfCopy(path: string, segmentId: number): Promise<RecordedSegment> {
  const analysis = await analyzeSegmentFile(nodeDisk, path, segmentId, { entryBytesMax: ENTRY_BYTES_MAX });
  const header = analysis.header;
  if (!header || analysis.trailer === undefined || analysis.firstIndex === undefined) throw new Error(`segment ${segmentId} is not a sealed segment`);
  return { segmentId, firstIndex: analysis.firstIndex, lastIndex: analysis.lastIndex, indexCount: analysis.indexCount, aggregateChecksum: analysis.aggregate, byteLength: analysis.fileByteLength, createdMs: header.createdMs };
}

/**
 * A replica's store of three sealed segments and an open one: CATALOG lost (empty after its
 * rename), segment 2's last two entries and its trailer overwritten (0xa5). A healthy copy of
 * segment 2 is kept beside it, with the record etcd would hold of it.
 */
async function lostCatalogAndEnd(): Promise<{ dir: string; original: Buffer; healthy: string; record: RecordedSegment }> {
  const root = await tempRoot();
  roots.push(root);
  const dir = join(root, 'store');
  await makeStore(dir, { entries: WRITTEN, backupRetentionCount: 0 });
  const original = await fileBytes(segmentPath(dir, SEGMENT));
  const healthy = join(root, 'replica-2.wal');
  await copyFile(segmentPath(dir, SEGMENT), healthy);
  const record = await recordOfCopy(healthy, SEGMENT);
  expect(record).toMatchObject({ firstIndex: FIRST, lastIndex: LAST });
  await writeFile(catalogPath(dir), Buffer.alloc(0));
  await corrupt(segmentPath(dir, SEGMENT), frameOffset(LAST - 1), (bytes) => bytes.fill(0xa5), 1 << 20);
  return { dir, original, healthy, record };
}

function replicaOptions(member: GoodCopySource): WalOptions {
  return { ...storeOptions({ backupRetentionCount: 0 }, { repairStrategy: 'partial' }), allowSegmentGaps: true, sources: [member] };
}

async function expectAllEntries(store: WalStore): Promise<void> {
  for (let index = 1; index <= WRITTEN; index += 1) expect((await store.read(index)).payload.equals(payloadOf(index)), `entry ${index}`).toBe(true);
}

describe('open in replica mode: a sealed segment with no record and no trailer here', () => {
  it('is rebuilt to the shape of the cluster\'s record, from a replica copy that matches it (regression, sim seed 14014)', async () => {
    const { dir, original, healthy, record } = await lostCatalogAndEnd();
    const member = new Member(healthy, record);
    const store = await WalStore.open(dir, replicaOptions(member));
    try {
      expect(store.openReport.state).toBe('repaired');
      expect(store.segmentRecord(SEGMENT)).toMatchObject({ state: 'sealed', firstIndex: FIRST, lastIndex: LAST, aggregateChecksum: record.aggregateChecksum });
      await expectAllEntries(store);
    } finally {
      await store.close();
    }
    expect((await fileBytes(segmentPath(dir, SEGMENT))).equals(original)).toBe(true);
    // The next open is a plain one: nothing left to repair.
    const again = await WalStore.open(dir, replicaOptions(new Member(healthy, record)));
    expect(again.openReport.state).not.toBe('repaired');
    await again.close();
  });

  it('also when the header is destroyed too: the scan starts at the recorded first index', async () => {
    const { dir, original, healthy, record } = await lostCatalogAndEnd();
    // Segment 1 is held elsewhere (replica mode), so no neighbour tells where segment 2 starts.
    await rm(segmentPath(dir, 1));
    await corrupt(segmentPath(dir, SEGMENT), 0, (bytes) => bytes.fill(0), format.SEGMENT_HEADER_BYTES);
    const store = await WalStore.open(dir, replicaOptions(new Member(healthy, record)));
    try {
      for (let index = FIRST; index <= WRITTEN; index += 1) expect((await store.read(index)).payload.equals(payloadOf(index)), `entry ${index}`).toBe(true);
    } finally {
      await store.close();
    }
    expect((await fileBytes(segmentPath(dir, SEGMENT))).equals(original)).toBe(true);
  });

  it('an open copy short of the seal point, its header and first entries destroyed, is rebuilt sealed as the record says', async () => {
    // As the fault matrix's cell "open segment, node killed before its repair x zeroed 4 KiB
    // block": the node was killed while segment 3 was open here (no catalog record of it yet),
    // its header and first entries were zeroed, and the writer sealed it on the other members,
    // past the last entry this copy holds. The copy ends cleanly (no damage at its end).
    const root = await tempRoot();
    roots.push(root);
    const dir = join(root, 'store');
    await makeStore(dir, { entries: WRITTEN, backupRetentionCount: 0 });
    const original = await fileBytes(segmentPath(dir, 3));
    const healthy = join(root, 'replica-3.wal');
    await copyFile(segmentPath(dir, 3), healthy);
    const record = await recordOfCopy(healthy, 3);
    await writeFile(catalogPath(dir), Buffer.alloc(0));
    await rm(segmentPath(dir, 4)); // not in segment 4's ensemble: segment 3 is this node's last
    await truncate(segmentPath(dir, 3), frameOffset(record.lastIndex - 2)); // the last 3 entries never arrived
    await corrupt(segmentPath(dir, 3), 0, (bytes) => bytes.fill(0), frameOffset(record.firstIndex + 2)); // header and 2 entries
    const store = await WalStore.open(dir, replicaOptions(new Member(healthy, record)));
    try {
      expect(store.segmentRecord(3)).toMatchObject({ state: 'sealed', lastIndex: record.lastIndex, aggregateChecksum: record.aggregateChecksum });
      for (let index = 1; index <= record.lastIndex; index += 1) expect((await store.read(index)).payload.equals(payloadOf(index)), `entry ${index}`).toBe(true);
    } finally {
      await store.close();
    }
    expect((await fileBytes(segmentPath(dir, 3))).equals(original)).toBe(true);
  });

  it('refuses to open rather than take replica entries that disagree with the record', async () => {
    const { dir, record, healthy } = await lostCatalogAndEnd();
    // Frames that verify on their own (checksums right) but are not the entries the record sealed.
    const liar = new Member(healthy, record, (index, frame) => (index >= LAST - 1 ? format.encodeEntry({ index, timestampMs: 1, flags: 0, payload: Buffer.from(`other-${index}`) }).frame : frame));
    await expect(WalStore.open(dir, replicaOptions(liar))).rejects.toBeInstanceOf(DamageFoundError);
    expect(liar.asked).toBeGreaterThan(0);
  });

  it('refuses to open when the record does not fit the file (it starts elsewhere), as without a record', async () => {
    const { dir, record, healthy } = await lostCatalogAndEnd();
    const elsewhere = new Member(healthy, { ...record, firstIndex: FIRST + 1, indexCount: record.indexCount - 1 });
    await expect(WalStore.open(dir, replicaOptions(elsewhere))).rejects.toBeInstanceOf(DamageFoundError);
    expect(elsewhere.asked).toBeGreaterThan(0);
  });

  it('refuses to open with no sealed record (an OPEN one, or etcd unreachable): the end is unknown', async () => {
    const { dir, healthy } = await lostCatalogAndEnd();
    await expect(WalStore.open(dir, replicaOptions(new Member(healthy, undefined)))).rejects.toBeInstanceOf(DamageFoundError);
  });
});
