// A caller with the client role may create logs (an Append with create_if_missing), but not
// without end: a node refuses to create a log once the cluster holds --logs-max of them
// (RESOURCE_EXHAUSTED), and the logs that exist keep taking appends. Real etcd, one real node.
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../support/cluster.js';
import { EtcdServer } from '../support/etcd.js';

let etcd: EtcdServer | undefined;
let cluster: TestCluster | undefined;

beforeAll(async () => {
  etcd = await EtcdServer.start();
  cluster = await TestCluster.start({ size: 1, etcd: etcd.endpoint, segmentBytes: 64 * 1024, nodeArgs: () => ['--replication', '1', '--scrub-bytes-per-second', '0', '--logs-max', '2'] });
}, 90_000);

afterAll(async () => {
  await cluster?.dispose();
  await etcd?.dispose();
}, 60_000);

describe('--logs-max', () => {
  it('creates logs up to the bound, then answers RESOURCE_EXHAUSTED and creates nothing; existing logs keep taking appends', async () => {
    const wal = (cluster as TestCluster).nodes[0]?.walClient();
    if (!wal) throw new Error('no node');
    expect((await wal.append('first', [Buffer.from('a')], { createIfMissing: true })).firstIndex).toBe(1);
    expect((await wal.append('second', [Buffer.from('b')], { createIfMissing: true })).firstIndex).toBe(1);
    const refused = await wal.append('third', [Buffer.from('c')], { createIfMissing: true }).then(
      () => undefined,
      (error: grpc.ServiceError) => error,
    );
    expect(refused && grpc.status[refused.code]).toBe('RESOURCE_EXHAUSTED');
    expect(refused?.details).toMatch(/--logs-max/);
    const unknown = await wal.append('third', [Buffer.from('c')]).then(
      () => undefined,
      (error: grpc.ServiceError) => error,
    );
    expect(unknown && grpc.status[unknown.code], 'the refused log was not created').toBe('NOT_FOUND');
    expect((await wal.append('first', [Buffer.from('a2')])).firstIndex).toBe(2);
  }, 60_000);
});
