// Members sealed at different points (a recovery that failed its quorum sealed one at 5, the old
// writer sealed another at its committed index 4): the next writer seals at the lowest point and
// cuts the copy sealed past it to that point (verified against the entries of the member sealed
// there) before it counts it. An adversarial review of the first fix (which counted such a copy
// without cutting it) showed that the copy was then no copy: reads, catch-up's install and repair
// all refused it, and losing the one member sealed at the point (within R - ackQuorum) left
// acknowledged entries 1..4 unreadable for good although a held them intact.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { nodeDisk } from '../../src/io/index.js';
import { LogReader, catchUpLog } from '../../src/replication/index.js';
import { checksumHex } from '../../src/wal/index.js';
import { TestCluster, type WriterUnderTest, acknowledgedBy, payloadOf, silent, startWriter } from '../support/replication-fakes.js';

const LOG = 'orders';
let cluster: TestCluster;
const writers: WriterUnderTest[] = [];

function payloads(from: number, count: number): Buffer[] {
  return Array.from({ length: count }, (_, i) => payloadOf(from + i));
}

/** FetchSegment over the fake network: node b is gone for good in the test. */
const lost = new Set<string>();
async function fetchFile(from: string, segmentId: number, path: string): Promise<void> {
  if (lost.has(from)) throw new Error(`${from} is unreachable`);
  await cluster.fetchFile(from, LOG, segmentId, path);
}

beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'b', 'c']);
});
afterEach(async () => {
  for (const { writer } of writers.splice(0)) writer.stop();
  await cluster.close();
});

describe('members sealed at different points', () => {
  it('the copy sealed past the point is cut to it, so losing the member sealed at the point loses nothing', async () => {
    // Writer A (node a, epoch 5). c never receives segment 1 (its sends are held, then A dies).
    const a = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: 1 << 20, caller: 'A' });
    writers.push(a);
    cluster.network.fail('c', { kind: 'hold' }, ['replicate']);
    expect(await a.writer.append(payloads(1, 4))).toEqual({ firstIndex: 1, lastIndex: 4 }); // acked by a, b
    cluster.network.fail('b', { kind: 'hold' }, ['replicate']);
    void a.writer.append(payloads(5, 1)).catch(() => undefined);
    await acknowledgedBy(a, ['a'], 5);
    cluster.network.kill('A');
    cluster.network.heal('b');
    cluster.network.heal('c');
    expect((await cluster.node('c').store(LOG)).segmentRecord(1)).toBeUndefined();

    cluster.directory.edit(LOG, 1, (meta) => ({ ...meta, state: 'RECOVERING', writerEpoch: 7 }));
    await cluster.node('a').handlers.fence(LOG, 1, 7);
    await cluster.node('c').handlers.fence(LOG, 1, 7);
    await cluster.node('a').handlers.seal(LOG, 1, 7, 5, '');
    await cluster.node('b').handlers.seal(LOG, 1, 5, 4, '');

    // Writer B (epoch 9), c unreachable: sealed at 4 on b, and a cut to 4.
    cluster.network.fail('c', { kind: 'unavailable' });
    const b = startWriter(cluster, { log: LOG, self: 'b', epoch: 9, segmentBytesMax: 1 << 20 });
    writers.push(b);
    await b.writer.whenReady();
    const meta = cluster.directory.segment(LOG, 1);
    expect(meta).toMatchObject({ state: 'SEALED', lastIndex: 4 });
    const aStore = await cluster.node('a').store(LOG);
    expect(aStore.segmentRecord(1)).toMatchObject({ state: 'sealed', lastIndex: 4, indexCount: 4 });
    expect(checksumHex(aStore.segmentRecord(1)?.aggregateChecksum ?? 0n)).toBe(meta.aggregate);
    expect(await readFile(cluster.node('a').segmentPath(LOG, 1))).toEqual(await readFile(cluster.node('b').segmentPath(LOG, 1)));

    // Node b is lost for good (one node of three). c comes back and installs a's copy.
    cluster.network.fail('b', { kind: 'unavailable' });
    cluster.network.markGone('b');
    lost.add('b');
    cluster.network.heal('c');
    const cStore = await cluster.node('c').store(LOG);
    await catchUpLog({
      log: LOG, self: 'c', store: cStore, directory: cluster.directory, peers: cluster.network.resolverFor('c'), logger: silent,
      fetchFile: (from, segmentId, path) => fetchFile(from, segmentId, path), tempDir: cStore.dataDir, disk: nodeDisk,
    });
    expect(cStore.segmentRecord(1)).toMatchObject({ state: 'sealed', lastIndex: 4 });

    // Every acknowledged entry reads back on both nodes left.
    for (const node of ['a', 'c']) {
      const reader = new LogReader({
        log: LOG, self: node, store: await cluster.node(node).store(LOG), directory: cluster.directory, peers: cluster.network.resolverFor(node), logger: silent,
        localCommitted: () => 4, writerCommitted: async () => 4, onDamage: () => undefined,
      });
      reader.setRecords(cluster.directory.snapshot(LOG));
      const got: Buffer[] = [];
      for await (const batch of reader.read(1, 4, 0)) for (const e of batch) got.push(e.payload);
      expect(got.map((p) => p.toString('latin1')), `read of 1..4 on ${node}`).toEqual(payloads(1, 4).map((p) => p.toString('latin1')));
    }
  });

  it('a copy whose entries up to the point do not add up to the record is not cut (the member refuses)', async () => {
    const a = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: 1 << 20, caller: 'A' });
    writers.push(a);
    expect(await a.writer.append(payloads(1, 4))).toEqual({ firstIndex: 1, lastIndex: 4 });
    await acknowledgedBy(a, ['a', 'b', 'c'], 4);
    cluster.network.kill('A');
    await cluster.node('a').handlers.seal(LOG, 1, 7, 4, '');
    await expect(cluster.node('a').handlers.seal(LOG, 1, 7, 3, '0000000000000000')).rejects.toThrow(/do not add up/);
    expect((await cluster.node('a').store(LOG)).segmentRecord(1)).toMatchObject({ state: 'sealed', lastIndex: 4 });
  });
});
