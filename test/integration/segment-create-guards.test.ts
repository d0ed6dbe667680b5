// The guarded create of a segment record on a real etcd (one transaction): it applies only while
// the writer's election key holds its create revision and the record before it is still at the
// mod revision the writer last saw. The second guard is what tells a writer that kept the
// election across an etcd restore that the records it sealed since went back (docs/CLUSTER.md,
// writer failover rule 8; --etcd-restore --pipeline --seed 1304).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterKeys, EtcdMetadata, EtcdSegmentDirectory, connectEtcd } from '../../src/cluster/index.js';
import type { SegmentMeta } from '../../src/replication/index.js';
import { EtcdServer } from '../support/etcd.js';

const LOG = 'guards';
let etcd: EtcdServer;
let metadata: EtcdMetadata;

beforeAll(async () => {
  etcd = await EtcdServer.start();
  metadata = new EtcdMetadata(connectEtcd([etcd.endpoint]), new ClusterKeys('guards-test'));
}, 60_000);

afterAll(async () => {
  metadata?.client.close();
  await etcd?.dispose();
});

function segment(segmentId: number, firstIndex: number, state: SegmentMeta['state'] = 'OPEN'): SegmentMeta {
  return { log: LOG, segmentId, ensemble: ['n1'], ackQuorum: 1, state, writerEpoch: 1, firstIndex, lastIndex: firstIndex - 1, indexCount: 0, byteLength: 0, aggregate: '', createdMs: 0 };
}

describe('EtcdSegmentDirectory.create with the record before it as a guard', () => {
  it('creates only while the election key and the previous record are as the writer knows them', async () => {
    const directory = new EtcdSegmentDirectory(metadata);
    const electionKey = `${metadata.keys.writerPrefix(LOG)}n1`;
    const epoch = await metadata.create(electionKey, { node: 'n1', floor: 0 });
    if (epoch === undefined) throw new Error('no election key');
    const leader = { key: electionKey, epoch };
    const first = await directory.create(segment(1, 1), leader);
    expect(first).toBeGreaterThan(epoch);
    const sealed = await directory.update({ ...segment(1, 1), state: 'SEALED', lastIndex: 3 }, first as number);
    expect(sealed).toBeDefined();
    // The previous record at another revision than the writer saw (rewritten, or etcd went back).
    expect(await directory.create(segment(2, 4), leader, first)).toBeUndefined();
    expect((await directory.list(LOG)).map((r) => r.meta.segmentId)).toEqual([1]);
    // As it is: created.
    const second = await directory.create(segment(2, 4), leader, sealed);
    expect(second).toBeDefined();
    // The previous record gone (etcd restored to a snapshot from before it): not created.
    await metadata.delete(metadata.keys.segment(LOG, 2));
    expect(await directory.create(segment(3, 5), leader, second)).toBeUndefined();
    // The election key gone, the previous record as seen: not created either.
    const again = await directory.create(segment(2, 4), leader, sealed);
    expect(again).toBeDefined();
    await metadata.delete(electionKey);
    expect(await directory.create(segment(3, 5), leader, again)).toBeUndefined();
    expect((await directory.list(LOG)).map((r) => r.meta.segmentId)).toEqual([1, 2]);
  }, 30_000);
});
