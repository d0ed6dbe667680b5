// LogReader (src/replication/reader.ts) on real nodes (LogStores + PeerHandlers in temporary
// directories) with a fake etcd and transport. Member states are built with the peer handlers a
// writer would call (Replicate, Seal), so each test names the copy it plants: a member that
// missed a failover and holds a cut entry, a stale cached record list, a lying remote copy, a
// lying local copy, entries past the committed index.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LogReader, READ_BATCH_BYTES_MAX, READ_BATCH_MAX, type ReadEntry, type SegmentHolding, type SegmentMeta } from '../../src/replication/index.js';
import { IndexOutOfRangeError, type SegmentStart, format } from '../../src/wal/index.js';
import { TestCluster, payloadOf, silent } from '../support/replication-fakes.js';

const LOG = 'events';
const CREATED_MS = 1_700_000_000_000;

let cluster: TestCluster;

beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'b', 'c']);
});

afterEach(async () => {
  await cluster.close();
});

/** Frames first..first+count-1 with payloads made by payload (the acknowledged ones: payloadOf). */
function frames(first: number, count: number, payload: (n: number) => Buffer = (n) => payloadOf(n)): Buffer[] {
  return Array.from({ length: count }, (_, i) => format.encodeEntry({ index: first + i, timestampMs: CREATED_MS + first + i, flags: 0, payload: payload(first + i) }).frame);
}

function startOf(segmentId: number, firstIndex: number): SegmentStart {
  return { segmentId, firstIndex, createdMs: CREATED_MS + segmentId };
}

async function replicate(nodes: readonly string[], epoch: number, start: SegmentStart, batch: readonly Buffer[]): Promise<void> {
  for (const node of nodes) await cluster.node(node).handlers.replicate(LOG, epoch, start, batch, 0);
}

async function seal(nodes: readonly string[], epoch: number, segmentId: number, lastIndex: number): Promise<SegmentHolding> {
  let holding: SegmentHolding | undefined;
  for (const node of nodes) holding = await cluster.node(node).handlers.seal(LOG, segmentId, epoch, lastIndex, '');
  return holding as SegmentHolding;
}

function openRecord(segmentId: number, ensemble: readonly string[], firstIndex: number, writerEpoch: number): SegmentMeta {
  return { log: LOG, segmentId, ensemble: [...ensemble], ackQuorum: 2, state: 'OPEN', writerEpoch, firstIndex, lastIndex: firstIndex - 1, indexCount: 0, byteLength: 0, aggregate: '', createdMs: CREATED_MS + segmentId };
}

function sealedRecord(open: SegmentMeta, holding: SegmentHolding): SegmentMeta {
  return { ...open, state: 'SEALED', lastIndex: holding.lastIndex, indexCount: holding.indexCount, byteLength: holding.byteLength, aggregate: holding.aggregate };
}

interface ReaderUnderTest {
  readonly reader: LogReader;
  /** onDamage calls: [segmentId, detail]. */
  readonly damage: Array<[number, string]>;
}

async function readerOn(self: string, committed: { local: number; writer?: number }): Promise<ReaderUnderTest> {
  const damage: Array<[number, string]> = [];
  const reader = new LogReader({
    log: LOG,
    self,
    store: await cluster.node(self).store(LOG),
    directory: cluster.directory,
    peers: cluster.network.resolverFor(self),
    logger: silent,
    localCommitted: () => committed.local,
    writerCommitted: async () => committed.writer,
    onDamage: (segmentId, detail) => damage.push([segmentId, detail]),
  });
  reader.setRecords(cluster.directory.snapshot(LOG)); // as LogRuntime's catch-up shares them
  return { reader, damage };
}

async function readAll(reader: LogReader, from: number, to: number): Promise<ReadEntry[]> {
  const entries: ReadEntry[] = [];
  for await (const batch of reader.read(from, to, 0)) entries.push(...batch);
  return entries;
}

function payloadsOf(entries: readonly ReadEntry[]): string[] {
  return entries.map((e) => e.payload.toString('latin1'));
}

function expected(first: number, last: number, payload: (n: number) => Buffer = (n) => payloadOf(n)): string[] {
  return Array.from({ length: last - first + 1 }, (_, i) => payload(first + i).toString('latin1'));
}

const afterFailover = (n: number): Buffer => Buffer.from(`after-failover-${n}`);
const cut = (n: number): Buffer => Buffer.from(`cut-never-acknowledged-${n}`);

/**
 * Segment 1 (a, b, c) holds 1..10 everywhere; c also got 11 from the old writer (never
 * acknowledged) and missed the failover: the new writer (epoch 2) sealed 1 at 10 on a and b and
 * recorded it, then wrote 11..12 (other payloads) in segment 2 (a, b), committed up to 12.
 * Returns the record list c had cached before the failover (segment 1 OPEN).
 */
async function memberMissedAFailover(): Promise<Array<{ meta: SegmentMeta }>> {
  const first = openRecord(1, ['a', 'b', 'c'], 1, 1);
  await cluster.directory.create(first);
  await replicate(['a', 'b', 'c'], 1, startOf(1, 1), frames(1, 10));
  await replicate(['c'], 1, startOf(1, 1), frames(11, 1, cut));
  const stale = cluster.directory.snapshot(LOG).map(({ meta }) => ({ meta }));
  const holding = await seal(['a', 'b'], 2, 1, 10);
  cluster.directory.edit(LOG, 1, () => sealedRecord(first, holding));
  await cluster.directory.create(openRecord(2, ['a', 'b'], 11, 2));
  await replicate(['a', 'b'], 2, startOf(2, 11), frames(11, 2, afterFailover));
  expect((await cluster.node('c').store(LOG)).segmentRecord(1)).toMatchObject({ state: 'open', lastIndex: 11 });
  return stale;
}

describe('LogReader', () => {
  it('a member holding a cut entry at 11 in a segment etcd sealed at 10 never serves it: 11 comes from the next segment\'s members', async () => {
    await memberMissedAFailover();
    const { reader } = await readerOn('c', { local: 0, writer: 12 });
    const entries = await readAll(reader, 9, 12);
    expect(entries.map((e) => e.index)).toEqual([9, 10, 11, 12]);
    expect(payloadsOf(entries)).toEqual([...expected(9, 10), ...expected(11, 12, afterFailover)]);
  });

  it('a stale cached record list (segment 1 OPEN) is re-read from etcd before serving past the last sealed segment', async () => {
    const stale = await memberMissedAFailover();
    const { reader } = await readerOn('c', { local: 0, writer: 12 });
    reader.setRecords(stale); // what c saw before the failover: its local copy of 1 looks servable up to 12
    const listsBefore = cluster.directory.calls.list;
    const entries = await readAll(reader, 11, 11);
    expect(cluster.directory.calls.list).toBeGreaterThan(listsBefore);
    expect(payloadsOf(entries)).toEqual(expected(11, 11, afterFailover));
  });

  it('a remote sealed copy whose aggregate differs from the record is skipped; a member whose copy matches serves', async () => {
    // Segment 1 (a, b), sealed at 10 on both: b holds what the writer wrote, a holds other bytes
    // at the same indices (every frame verifies on its own; only the aggregate tells).
    const first = openRecord(1, ['a', 'b'], 1, 1);
    await cluster.directory.create(first);
    await replicate(['a'], 1, startOf(1, 1), frames(1, 10, (n) => Buffer.from(`lying-${n}`)));
    await replicate(['b'], 1, startOf(1, 1), frames(1, 10));
    const lying = await seal(['a'], 1, 1, 10);
    const good = await seal(['b'], 1, 1, 10);
    expect(lying.aggregate).not.toBe(good.aggregate);
    cluster.directory.edit(LOG, 1, () => sealedRecord(first, good));

    const { reader } = await readerOn('c', { local: 0 }); // c holds nothing of segment 1: every read is remote, a first
    expect(payloadsOf(await readAll(reader, 3, 7))).toEqual(expected(3, 7));
    expect(cluster.network.callCount('a', 'readFrames')).toBeGreaterThan(0);
  });

  it('reading past the committed index fails with IndexOutOfRangeError, although the local copy holds more', async () => {
    await cluster.directory.create(openRecord(1, ['a', 'b', 'c'], 1, 1));
    await replicate(['a', 'b', 'c'], 1, startOf(1, 1), frames(1, 12));
    const { reader } = await readerOn('a', { local: 10, writer: 10 });
    await expect(readAll(reader, 1, 12)).rejects.toBeInstanceOf(IndexOutOfRangeError);
    await expect(readAll(reader, 11, 11)).rejects.toBeInstanceOf(IndexOutOfRangeError);
    const upToCommitted = await readAll(reader, 1, 0);
    expect(upToCommitted.map((e) => e.index)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
  });

  it('a batch ends near READ_BATCH_BYTES_MAX bytes of payload, whatever the entry count asked for', async () => {
    const big = 60 * 1024;
    const count = Math.ceil((2.5 * READ_BATCH_BYTES_MAX) / big);
    await cluster.directory.create(openRecord(1, ['a', 'b', 'c'], 1, 1));
    await replicate(['a', 'b', 'c'], 1, startOf(1, 1), frames(1, count, (n) => Buffer.alloc(big, n & 0xff)));
    const { reader } = await readerOn('a', { local: count, writer: count });
    const sizes: number[] = [];
    let read = 0;
    for await (const batch of reader.read(1, 0, READ_BATCH_MAX)) {
      sizes.push(batch.reduce((sum, e) => sum + e.payload.byteLength, 0));
      read += batch.length;
    }
    expect(read).toBe(count);
    expect(sizes.length).toBe(3);
    for (const bytes of sizes) expect(bytes).toBeLessThan(READ_BATCH_BYTES_MAX + big);
  });

  it('a local sealed copy that disagrees with its record calls onDamage and is not served', async () => {
    // c sealed its own copy of segment 1 with other bytes at the same indices (a stale or lying
    // copy whose frames all verify); a and b hold the recorded contents.
    const first = openRecord(1, ['a', 'b', 'c'], 1, 1);
    await cluster.directory.create(first);
    await replicate(['a', 'b'], 1, startOf(1, 1), frames(1, 10));
    await replicate(['c'], 1, startOf(1, 1), frames(1, 10, (n) => Buffer.from(`stale-${n}`)));
    const good = await seal(['a', 'b'], 1, 1, 10);
    await seal(['c'], 1, 1, 10);
    cluster.directory.edit(LOG, 1, () => sealedRecord(first, good));

    const { reader, damage } = await readerOn('c', { local: 10 });
    expect(payloadsOf(await readAll(reader, 4, 6))).toEqual(expected(4, 6));
    expect(damage.length).toBeGreaterThan(0);
    expect(damage.every(([segmentId]) => segmentId === 1)).toBe(true);
  });
});
