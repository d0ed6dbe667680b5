// OpenTelemetry tracing across a real three-node cluster in this process (real etcd, real gRPC on
// 127.0.0.1, real files), with the SDK's in-memory exporter: an append sent to a node that is not
// the writer is one trace (client -> that node -> the writer -> each member's write and fdatasync),
// and a repair of a damaged copy gives its spans (repair -> fetch -> verify -> install).
import { mkdtemp, rm, open as openFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { ClusterNode } from '../../src/cluster/index.js';
import { disableTracing, enableTracing, withSpan } from '../../src/observability/index.js';
import { AdminClient, WalClient } from '../../src/rpc/index.js';
import { format } from '../../src/wal/index.js';
import { EtcdServer } from '../support/etcd.js';
import { cliSchema, validateJson } from '../support/json-schema.js';
import { silent, until } from '../support/replication-fakes.js';

const LOG = 'traced';
const exporter = new InMemorySpanExporter();
let etcd: EtcdServer | undefined;
let root = '';
const nodes: ClusterNode[] = [];

beforeAll(async () => {
  await enableTracing({ sampleRatio: 1, serviceName: 'wal-recovery-test', exporter });
  etcd = await EtcdServer.start();
  root = await mkdtemp(join(tmpdir(), 'wal-tracing-'));
  for (const id of ['n1', 'n2', 'n3']) {
    nodes.push(await ClusterNode.start({ id, dataDir: join(root, id), listen: '127.0.0.1:0', etcd: [(etcd as EtcdServer).endpoint], logger: silent.child({ node: id }), scrubBytesPerSecondMax: 0, segmentBytesMax: 64 * 1024, coordinatorIntervalMs: 500 }));
  }
}, 60_000);

afterAll(async () => {
  for (const node of nodes.splice(0)) await node.stop().catch(() => undefined);
  await disableTracing();
  await etcd?.dispose();
  if (root) await rm(root, { recursive: true, force: true });
});

function childrenOf(spans: readonly ReadableSpan[], parent: ReadableSpan): ReadableSpan[] {
  return spans.filter((s) => s.parentSpanContext?.spanId === parent.spanContext().spanId);
}

const nodeOf = (s: ReadableSpan): unknown => s.attributes['wal.node'];

describe('tracing', () => {
  it('an append through a node that is not the writer is one trace: client, that node, the writer, each member write and fdatasync', async () => {
    const first = nodes[0] as ClusterNode;
    const creator = new WalClient(first.address);
    await creator.append(LOG, [Buffer.from('create')], { createIfMissing: true });
    creator.close();
    const status = await first.clusterStatus(LOG);
    const writer = status.logs[0]?.writer ?? '';
    const entry = nodes.find((n) => n.id !== writer) as ClusterNode;
    await until(() => status.logs[0]?.segments[0]?.ensemble.length === 3);
    exporter.reset();
    const client = new WalClient(entry.address);
    await withSpan('client.append', {}, () => client.append(LOG, [Buffer.from('traced entry')]));
    client.close();
    await until(() => exporter.getFinishedSpans().filter((s) => s.name === 'fdatasync').length >= 3);
    const root = exporter.getFinishedSpans().find((s) => s.name === 'client.append') as ReadableSpan;
    expect(root).toBeDefined();
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === root.spanContext().traceId);
    // The non-writer's Append, a child of the client's span.
    const [onEntry] = childrenOf(spans, root).filter((s) => s.name === 'Append');
    expect(onEntry && nodeOf(onEntry)).toBe(entry.id);
    // Forwarded to the writer: its Append, a child of the entry node's.
    const [onWriter] = childrenOf(spans, onEntry as ReadableSpan).filter((s) => s.name === 'Append');
    expect(onWriter && nodeOf(onWriter)).toBe(writer);
    // The writer sends to every member (itself included): one 'replicate' per member.
    const sends = spans.filter((s) => s.name === 'replicate');
    expect(new Set(sends.map((s) => s.attributes['wal.peer']))).toEqual(new Set(['n1', 'n2', 'n3']));
    for (const send of sends) {
      // Each send is under the writer's Append; remote members answer in a Replicate span of theirs.
      let up: ReadableSpan | undefined = send;
      while (up && up !== onWriter) up = spans.find((s) => s.spanContext().spanId === up?.parentSpanContext?.spanId);
      expect(up).toBe(onWriter);
      const peer = send.attributes['wal.peer'];
      const served = peer === writer ? send : childrenOf(spans, send).find((s) => s.name === 'Replicate');
      if (peer !== writer) expect(served && nodeOf(served)).toBe(peer);
      const write = childrenOf(spans, served as ReadableSpan).find((s) => s.name === 'replica.write');
      expect(write).toBeDefined();
      const syncs = spans.filter((s) => s.name === 'fdatasync' && isUnder(spans, s, write as ReadableSpan));
      expect(syncs.length).toBeGreaterThanOrEqual(1);
    }
    // Spans from three nodes in the one trace.
    expect(new Set(spans.map(nodeOf).filter((n) => n !== undefined))).toEqual(new Set(['n1', 'n2', 'n3']));
  }, 60_000);

  it('a repair of a damaged sealed copy gives repair, fetch, verify and install spans', async () => {
    const first = nodes[0] as ClusterNode;
    const client = new WalClient(first.address);
    // Fill past one segment so that segment 1 is sealed.
    for (let i = 0; i < 20; i += 1) await client.append(LOG, [Buffer.alloc(8 * 1024, i)]);
    client.close();
    let sealed: { segmentId: number; ensemble: readonly string[] } | undefined;
    await until(async () => {
      sealed = (await first.clusterStatus(LOG)).logs[0]?.segments.find((s) => s.state === 'SEALED');
      return sealed !== undefined;
    });
    const victim = nodes.find((n) => sealed?.ensemble.includes(n.id)) as ClusterNode;
    const path = join(root, victim.id, 'logs', LOG, 'segments', format.segmentFileName(sealed?.segmentId ?? 1));
    // A flipped byte in the middle of the copy.
    const file = await openFile(path, 'r+');
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, 4096);
    byte[0] = (byte[0] as number) ^ 0xff;
    await file.write(byte, 0, 1, 4096);
    await file.close();
    exporter.reset();
    const results = await victim.repairSegment(LOG, sealed?.segmentId ?? 1, victim.id, 'partial', false);
    expect(results[0]?.outcome).toBe('done');
    const spans = exporter.getFinishedSpans();
    const repair = spans.find((s) => s.name === 'repair') as ReadableSpan;
    expect(repair).toBeDefined();
    expect(repair.events.map((e) => e.name)).toContain('detected');
    const under = spans.filter((s) => isUnder(spans, s, repair)).map((s) => s.name);
    expect(under).toEqual(expect.arrayContaining(['repair.fetch', 'repair.verify', 'segment.install']));
  }, 60_000);
});

function isUnder(spans: readonly ReadableSpan[], span: ReadableSpan, ancestor: ReadableSpan): boolean {
  for (let up: ReadableSpan | undefined = span; up; up = spans.find((s) => s.spanContext().spanId === up?.parentSpanContext?.spanId)) {
    if (up !== span && up.spanContext().spanId === ancestor.spanContext().spanId) return true;
  }
  return false;
}

describe('scrub scores', () => {
  it('show in the node status (admin API: GetClusterStatus) and in /metrics', async () => {
    const first = nodes[0] as ClusterNode;
    const status = await first.clusterStatus(LOG);
    expect(status.scrub?.riskRatio).toBeGreaterThan(0);
    // The damaged copy repaired above is a repair the victim's model counted.
    const repairs = await Promise.all(nodes.map(async (n) => (await n.clusterStatus(LOG)).scrub?.repairs ?? 0));
    expect(repairs.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1);
    const admin = new AdminClient(first.address);
    const wire = await admin.status(LOG);
    admin.close();
    expect(wire.scrub?.risk_ratio).toBeCloseTo(status.scrub?.riskRatio ?? -1, 3);
    // Every node publishes its score to etcd every coordinatorIntervalMs (500 ms here).
    await until(async () => (await first.clusterStatus(LOG)).scrubScores?.length === 3);
    // The throttle share and the pass deficit beside the scores: this node's (share 0 only during
    // a baseline pause, which ends within probeMs) and every node's as published.
    await until(async () => ((await first.clusterStatus(LOG)).scrub?.throttleShare ?? 0) > 0);
    const pacedAdmin = new AdminClient(first.address);
    const paced = await pacedAdmin.status(LOG);
    pacedAdmin.close();
    expect(validateJson(JSON.parse(JSON.stringify(paced)) as unknown, cliSchema('status'))).toEqual([]);
    expect(paced.scrub?.throttle_share).toBeGreaterThan(0);
    expect(paced.scrub?.throttle_share).toBeLessThanOrEqual(1);
    expect(paced.scrub?.deficit_seconds).toBeGreaterThanOrEqual(0);
    expect(paced.scrub_scores.map((s) => s.node).sort()).toEqual(nodes.map((n) => n.id).sort());
    for (const s of paced.scrub_scores) {
      expect(s.throttle_share, s.node).toBeGreaterThanOrEqual(0);
      expect(s.throttle_share, s.node).toBeLessThanOrEqual(1);
      expect(s.deficit_seconds, s.node).toBeGreaterThanOrEqual(0);
    }
    const text = await first.metrics.registry.metrics();
    expect(text).toMatch(/^wal_recovery_scrub_risk_ratio\{[^}]*\} [0-9.e+-]+$/m);
    expect(text).toMatch(/^wal_recovery_scrub_throttle_share\{[^}]*\} (0|1|0\.[0-9e+-]+)$/m);
    expect(text).toMatch(/^wal_recovery_scrub_deficit_seconds\{[^}]*\} [0-9.e+-]+$/m);
    expect(text).toMatch(/^wal_recovery_disk_latency_seconds_count\{[^}]*op="fdatasync"[^}]*\} [1-9]/m);
  }, 30_000);
});
