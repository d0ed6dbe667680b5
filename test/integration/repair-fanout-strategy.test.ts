// The admin repair fan-out on nodes whose --repair-strategy is not the default (review of issue
// 11). A RepairSegment that names no strategy reaches every member's copy through RepairCopy,
// where each member applies its own strategy; the fan-out passed the default ('partial') down to
// its per-member step, which then refused every other member ("partial would reach other
// nodes"), and repaired this node's copy with 'partial' instead of its own strategy. Two real
// nodes and a real etcd on 127.0.0.1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdServer } from '../support/etcd.js';
import { TestCluster, pollUntil } from '../support/cluster.js';

let etcd: EtcdServer;
let cluster: TestCluster;
const LOG = 'fanout';

beforeAll(async () => {
  etcd = await EtcdServer.start();
  cluster = await TestCluster.start({ size: 2, etcd: etcd.endpoint, segmentBytes: 32 * 1024, nodeArgs: () => ['--replication', '2', '--repair-strategy', 'skip', '--scrub-bytes-per-second', '0'] });
  const wal = cluster.nodes[0]?.walClient();
  for (let i = 0; i < 40; i += 1) await wal?.append(LOG, Array.from({ length: 8 }, () => Buffer.alloc(256, i)), { createIfMissing: true });
}, 120_000);

afterAll(async () => {
  await cluster?.dispose();
  await etcd?.dispose();
});

describe('admin repair without a strategy, on nodes with --repair-strategy skip', () => {
  it('reaches every member, each repairing with its own strategy', async () => {
    const via = cluster.nodes[0];
    if (!via) throw new Error('no node');
    const sealed = await pollUntil('a sealed segment on both members', 30_000, async () => {
      const { log } = await cluster.logStatus(LOG, via);
      return log.segments.find((s) => s.state === 'SEALED' && s.ensemble.length === 2);
    });
    const response = await via.adminClient().repairSegment({ log: LOG, segmentId: sealed.segment_id, dryRun: true });
    const failed = response.results.filter((r) => r.outcome === 'failed').map((r) => `${r.node}: ${r.detail}`);
    expect(failed).toEqual([]);
    expect(response.results.map((r) => r.node).sort()).toEqual([...sealed.ensemble].sort());
  }, 60_000);
});
