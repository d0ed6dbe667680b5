// What a flood of whole-cluster GetClusterStatus calls costs etcd (review of issue 11). The call
// is open to the `client` role, and `status` without a log lists every log and each log's
// segments from etcd: one caller holding the 1024 status slots in flight made etcd serve ~(2 +
// logs) range reads per call, without bound. Concurrent whole-cluster calls now share one read of
// etcd, and a view at most STATUS_ALL_REUSE_MS old is answered again. A real node and a real etcd
// on 127.0.0.1; the reads counted are etcd's own (etcd_debugging_mvcc_range_total).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdServer } from '../support/etcd.js';
import { TestCluster } from '../support/cluster.js';

let etcd: EtcdServer;
let cluster: TestCluster;
const LOGS = 20;
const CLUSTER = 'statuscost';

/** Writes raw bytes under a key (etcd's v3 HTTP gateway), as anyone with write access to etcd could. */
async function putRaw(key: string, value: string): Promise<void> {
  const b64 = (text: string): string => Buffer.from(text).toString('base64');
  const response = await fetch(`${etcd.endpoint}/v3/kv/put`, { method: 'POST', body: JSON.stringify({ key: b64(key), value: b64(value) }) });
  if (!response.ok) throw new Error(`etcd put: ${response.status}`);
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(cluster.nodes[0]?.line?.metrics ?? '')).text();
  // The node's default labels (node, cluster) follow the name.
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

async function etcdRanges(): Promise<number> {
  const text = await (await fetch(`${etcd.endpoint}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('etcd_debugging_mvcc_range_total '));
  if (!line) throw new Error('etcd has no etcd_debugging_mvcc_range_total');
  return Number(line.split(' ')[1]);
}

beforeAll(async () => {
  etcd = await EtcdServer.start();
  cluster = await TestCluster.start({ size: 1, etcd: etcd.endpoint, cluster: CLUSTER, nodeArgs: () => ['--replication', '1', '--scrub-bytes-per-second', '0', '--metrics-listen', '127.0.0.1:0'] });
  const wal = cluster.nodes[0]?.walClient();
  for (let i = 0; i < LOGS; i += 1) await wal?.append(`log-${i}`, [Buffer.from('x')], { createIfMissing: true });
}, 120_000);

afterAll(async () => {
  await cluster?.dispose();
  await etcd?.dispose();
});

describe('whole-cluster status under a flood', () => {
  it('200 concurrent calls cost etcd about one scan, not 200', async () => {
    const admin = cluster.nodes[0]?.adminClient();
    const one = await admin?.status('');
    expect(one?.logs.length).toBe(LOGS);
    const before = await etcdRanges();
    const answers = await Promise.all(Array.from({ length: 200 }, () => admin?.status('')));
    const ranges = (await etcdRanges()) - before;
    expect(answers.every((a) => a?.logs.length === LOGS)).toBe(true);
    // One scan is 2 + LOGS reads (the logs, each log's segments, the coordinator); the node's own
    // background reads in the same moment are a few more.
    expect(ranges).toBeLessThan(4 * (2 + LOGS));
  }, 60_000);
});

describe('per-log status under a flood', () => {
  it('200 concurrent calls for one log share the etcd reads in flight; each answer still reads the committed index after its call arrived', async () => {
    const admin = cluster.nodes[0]?.adminClient();
    const wal = cluster.nodes[0]?.walClient();
    await admin?.status('log-1');
    const before = await etcdRanges();
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 200 }, () => admin?.status('log-1')));
    const ms = Date.now() - started;
    const ranges = (await etcdRanges()) - before;
    console.log(`per-log status: 200 concurrent calls, ${ranges} etcd range reads in ${ms} ms (${(ranges / 200).toFixed(2)} per call)`);
    expect(answers.every((a) => a?.logs[0]?.log === 'log-1')).toBe(true);
    // Unshared, each call reads the log's record, its segments, the coordinator and the scores:
    // ~4 reads a call, 800 for the flood. Shared, the calls that arrive while a read is in flight
    // take its answer.
    expect(ranges).toBeLessThan(200);
    // Not cached past the read in flight: an entry acknowledged before a call is in its answer.
    const appended = await wal?.append('log-1', [Buffer.from('y')]);
    const after = await admin?.status('log-1');
    expect(after?.logs[0]?.committed_index).toBeGreaterThanOrEqual(appended?.lastIndex ?? Infinity);
  }, 60_000);
});

describe('a value under the scrub scores prefix that is not JSON', () => {
  it('is left out, counted and logged; the other scores are still answered (regression: one garbled key emptied every status)', async () => {
    const admin = cluster.nodes[0]?.adminClient();
    const node = cluster.nodes[0]?.id ?? '';
    // The node's own score, published every coordinator interval.
    await expect.poll(async () => (await admin?.status('log-0'))?.scrub_scores.map((s) => s.node), { timeout: 15_000 }).toEqual([node]);
    await putRaw(`/wal-recovery/${CLUSTER}/scrub/scores/aaa-garbled`, '{not json');
    const before = await metric('wal_recovery_etcd_malformed_values_total');
    const status = await admin?.status('log-0');
    expect(status?.scrub_scores.map((s) => s.node)).toEqual([node]);
    expect(await metric('wal_recovery_etcd_malformed_values_total')).toBeGreaterThan(before);
  }, 60_000);
});
