// A three-node cluster as real processes (node dist/cli/main.js node) against a real etcd, all on
// 127.0.0.1. The tests run in order on one cluster and one log, and every entry any of them gets
// acknowledged is checked at the end of each: it reads back from every live node, in order, with
// its payload. Faults: kill -9 of the writer and of a follower mid-stream, an etcd restart, a
// stale writer, malformed and hostile requests. `npm test` builds dist/ first (pretest).
import { status as Status } from '@grpc/grpc-js';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadProto } from '../../src/rpc/index.js';
import { CHANNEL_OPTIONS } from '../../src/rpc/clients.js';
import { encodeEntry } from '../../src/wal/format.js';
import { APPEND_ENTRIES_MAX } from '../../src/replication/index.js';
import { Appender, TestCluster, type TestNode, compareSealedSegments, missingAcknowledged, payloadFor, pollUntil, readAll } from '../support/cluster.js';
import { EtcdServer, sleepMs } from '../support/etcd.js';

const LOG = 'orders';
const SEGMENT_BYTES = 256 * 1024;
const ENTRIES_MAIN = 20_000;
const CATCH_UP_TIMEOUT_MS = 60_000;

let etcd: EtcdServer | undefined;
let cluster: TestCluster | undefined;
/** Every entry acknowledged to any test: index -> payload. */
const acked = new Map<number, Buffer>();

function theCluster(): TestCluster {
  if (!cluster) throw new Error('the cluster did not start');
  return cluster;
}

function record(appender: Appender): void {
  expect(appender.conflicts).toEqual([]);
  for (const [index, payload] of appender.acked) {
    const earlier = acked.get(index);
    if (earlier && !earlier.equals(payload)) throw new Error(`index ${index} acknowledged with two payloads`);
    acked.set(index, payload);
  }
}

/** Every acknowledged entry reads back from node, in order, with its payload. */
async function expectAllReadBack(node: TestNode): Promise<void> {
  const read = await readAll(node.walClient(), LOG);
  expect(read.problems, `read-back problems on ${node.id}`).toEqual([]);
  const missing = missingAcknowledged(acked, read);
  expect(missing, `acknowledged entries missing on ${node.id}`).toEqual({ count: 0, examples: [] });
}

async function expectSealedIdentical(timeoutMs: number): Promise<number> {
  const c = theCluster();
  let last: { compared: number; differences: string[] } = { compared: 0, differences: [] };
  try {
    await pollUntil('identical sealed segments', timeoutMs, async () => {
      last = await compareSealedSegments(c, LOG);
      return last.differences.length === 0 ? true : undefined;
    }, 500);
  } catch {
    // reported below with the differences
  }
  expect(last.differences).toEqual([]);
  return last.compared;
}

function codeOf(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

async function codeOfCall(call: () => Promise<unknown>): Promise<number | 'ok'> {
  try {
    await call();
    return 'ok';
  } catch (error) {
    const code = codeOf(error);
    if (code === undefined) throw error;
    return code;
  }
}

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) {
    // consume
  }
}

beforeAll(async () => {
  etcd = await EtcdServer.start();
  cluster = await TestCluster.start({ size: 3, etcd: etcd.endpoint, segmentBytes: SEGMENT_BYTES });
  const first = await cluster.node('n1').walClient().append(LOG, [payloadFor('create', 1)], { createIfMissing: true });
  acked.set(first.firstIndex, payloadFor('create', 1));
}, 90_000);

afterAll(async () => {
  await cluster?.dispose();
  await etcd?.dispose();
}, 60_000);

describe('a three-node cluster', () => {
  // A test that failed half-way may leave a node down: the next one starts with all three up.
  beforeEach(async () => {
    for (const node of cluster?.nodes ?? []) if (!node.alive) await cluster?.restart(node.id);
  }, 60_000);

  it('keeps every acknowledged append, forwarded through a non-writer, across kill -9 of the writer', async () => {
    const c = theCluster();
    const { writer } = await c.writerOf(LOG);
    const through = c.nodes.find((n) => n !== writer) as TestNode;
    const appender = new Appender(through.walClient(), { log: LOG, tag: 'main', entries: ENTRIES_MAIN, concurrency: 32, batch: 4 }).start();
    try {
      await appender.until(ENTRIES_MAIN * 0.3, 90_000);
      await c.kill(writer.id, 'SIGKILL');
      const killedAt = appender.ackedCount;
      await appender.until(killedAt + 200, 30_000); // a new writer took over
      await appender.done;
    } finally {
      await appender.stop();
    }
    record(appender);
    expect(appender.ackedCount).toBeGreaterThanOrEqual(ENTRIES_MAIN);
    const { writer: successor } = await c.writerOf(LOG);
    expect(successor.id).not.toBe(writer.id);
    for (const node of c.live()) await expectAllReadBack(node);

    await c.restart(writer.id);
    await pollUntil(`${writer.id} caught up`, CATCH_UP_TIMEOUT_MS, async () => ((await compareSealedSegments(c, LOG)).differences.length === 0 ? true : undefined), 500);
    await expectAllReadBack(writer);
  }, 200_000);

  it('brings a follower killed with kill -9 back: it catches up and holds new segments again', async () => {
    const c = theCluster();
    const { writer } = await c.writerOf(LOG);
    const follower = c.nodes.find((n) => n !== writer && n.alive) as TestNode;
    const before = (await c.logStatus(LOG, writer)).log.segments.length;
    const appender = new Appender(writer.walClient(), { log: LOG, tag: 'follower', entries: 6_000, concurrency: 16, batch: 4 }).start();
    try {
      await appender.until(500, 30_000);
      await c.kill(follower.id, 'SIGKILL');
      await appender.until(3_000, 60_000);
      await c.restart(follower.id);
      await appender.done;
    } finally {
      await appender.stop();
    }
    record(appender);
    await expectSealedIdentical(CATCH_UP_TIMEOUT_MS);
    await expectAllReadBack(follower);
    // The rejoined node is a member again: some segment opened after its restart includes it.
    // A segment opens only when one fills, so keep appending (256 KiB segments) until one does.
    const client = writer.walClient();
    const later = await pollUntil('a segment opened after the restart that includes the follower', 60_000, async () => {
      const { log: status } = await c.logStatus(LOG, writer);
      const opened = status.segments.slice(before);
      if (opened.some((s) => s.ensemble.includes(follower.id))) return opened;
      await client.append(LOG, Array.from({ length: 256 }, () => Buffer.alloc(256, 7)));
      return undefined;
    }, 100);
    expect(later.some((s) => s.ensemble.includes(follower.id))).toBe(true);
    // Not asserted (see the report): while a member is down or refusing, the writer seals and
    // opens a segment per failed batch until the member's lease ends, so this count varies.
    console.info(`follower test: ${later.length} segments opened, ${appender.errorCount} append errors`);
  }, 120_000);

  it('keeps or regains service and membership across an etcd restart during appends', async () => {
    const c = theCluster();
    const server = etcd as EtcdServer;
    const through = c.nodes[0] as TestNode;
    const appender = new Appender(through.walClient(), { log: LOG, tag: 'etcd', entries: 1_000_000, concurrency: 8, batch: 4, deadlineMs: 10_000 }).start();
    let recoveredMs = 0;
    try {
      await appender.until(500, 30_000);
      await server.stop('SIGKILL');
      await sleepMs(2_000);
      await server.restart();
      const backAt = Date.now();
      const count = appender.ackedCount;
      await appender.until(count + 200, 30_000);
      recoveredMs = Date.now() - backAt;
    } finally {
      await appender.stop();
    }
    record(appender);
    expect(recoveredMs).toBeLessThan(30_000);
    const members = await pollUntil('every member registered again', 30_000, async () => {
      const { status } = await c.logStatus(LOG, through);
      return status.members.length === c.nodes.length ? status.members.map((m) => m.id).sort() : undefined;
    });
    expect(members).toEqual(c.nodes.map((n) => n.id).sort());
    // A fresh append through every node succeeds.
    for (const node of c.nodes) {
      const payload = payloadFor(`after-etcd-${node.id}`, 1);
      const outcome = await node.walClient().append(LOG, [payload], { deadlineMs: 20_000 });
      acked.set(outcome.firstIndex, payload);
    }
    for (const node of c.live()) await expectAllReadBack(node);
  }, 120_000);

  it('refuses a stale writer: Replicate with an older epoch is ABORTED and writes nothing', async () => {
    const c = theCluster();
    const { writer, epoch } = await c.writerOf(LOG);
    expect(epoch).toBeGreaterThan(1);
    const { log: status } = await c.logStatus(LOG, writer);
    const open = status.segments.find((s) => s.state === 'OPEN');
    const segment = open ?? status.segments[status.segments.length - 1];
    if (!segment) throw new Error('no segment');
    const victims = c.nodes.filter((n) => n !== writer && n.alive);
    for (const victim of victims) {
      const infoBefore = await pollUntil('segment info', 5_000, () => victim.peerClient().segmentInfo(LOG, segment.segment_id, false));
      const next = Math.max(infoBefore.lastIndex, segment.first_index - 1) + 1;
      const { frame } = encodeEntry({ index: next, timestampMs: Date.now(), flags: 0, payload: payloadFor('stale', next) });
      for (const staleEpoch of [epoch - 1, 1]) {
        const code = await codeOfCall(() => victim.peerClient().replicate(LOG, staleEpoch, { segmentId: segment.segment_id, firstIndex: segment.first_index, createdMs: 0 }, [frame], 0));
        expect(code, `Replicate at epoch ${staleEpoch} on ${victim.id}`).toBe(Status.ABORTED);
        // Fence and Seal with the old epoch are refused the same way.
        expect(await codeOfCall(() => victim.peerClient().seal(LOG, segment.segment_id, staleEpoch, next, ''))).toBe(Status.ABORTED);
        expect(await codeOfCall(() => victim.peerClient().fence(LOG, segment.segment_id, staleEpoch))).toBe(Status.ABORTED);
      }
      const infoAfter = await victim.peerClient().segmentInfo(LOG, segment.segment_id, false);
      expect({ lastIndex: infoAfter.lastIndex, sealed: infoAfter.sealed }).toEqual({ lastIndex: infoBefore.lastIndex, sealed: infoBefore.sealed });
    }
    // The log still takes appends from its real writer, and nothing stale reads back.
    const payload = payloadFor('after-stale', 1);
    const outcome = await c.nodes[0]!.walClient().append(LOG, [payload], { deadlineMs: 20_000 });
    acked.set(outcome.firstIndex, payload);
    const read = await readAll(writer.walClient(), LOG);
    expect(read.payloads.filter((p) => p.toString('latin1').startsWith('stale-')).length).toBe(0);
  }, 60_000);

  it('answers malformed and hostile requests with clean errors and keeps serving', async () => {
    const c = theCluster();
    const { writer, epoch } = await c.writerOf(LOG);
    const node = c.nodes.find((n) => n !== writer && n.alive) as TestNode;
    const wal = node.walClient();
    const tooBig = Buffer.alloc(1024 * 1024 + 1, 0x61);
    const expectations: Array<[string, () => Promise<unknown>, readonly number[]]> = [
      ['append to an unknown log', () => wal.append('no-such-log', [Buffer.from('x')]), [Status.NOT_FOUND]],
      ['read an unknown log', () => drain(wal.read('no-such-log', 1, 0)), [Status.NOT_FOUND]],
      ['status of an unknown log', () => node.adminClient().status('no-such-log'), [Status.NOT_FOUND]],
      ["append to log '../x'", () => wal.append('../x', [Buffer.from('x')], { createIfMissing: true }), [Status.INVALID_ARGUMENT]],
      ["append to log ''", () => wal.append('', [Buffer.from('x')], { createIfMissing: true }), [Status.INVALID_ARGUMENT]],
      ['append to a 200-character log name', () => wal.append('a'.repeat(200), [Buffer.from('x')], { createIfMissing: true }), [Status.INVALID_ARGUMENT]],
      ["read log '../x'", () => drain(wal.read('../x', 1, 0)), [Status.INVALID_ARGUMENT]],
      ['read from index 0', () => drain(wal.read(LOG, 0, 0)), [Status.INVALID_ARGUMENT]],
      ['read beyond the committed end', () => drain(wal.read(LOG, 1, 10_000_000)), [Status.OUT_OF_RANGE]],
      ['append with no payloads', () => wal.append(LOG, []), [Status.INVALID_ARGUMENT]],
      [`append of ${APPEND_ENTRIES_MAX + 1} entries in one call`, () => wal.append(LOG, Array.from({ length: APPEND_ENTRIES_MAX + 1 }, () => Buffer.from('x'))), [Status.INVALID_ARGUMENT]],
      ['append a payload over 1 MiB', () => wal.append(LOG, [tooBig]), [Status.INVALID_ARGUMENT]],
      ['append a payload over 1 MiB to the writer', () => writer.walClient().append(LOG, [tooBig]), [Status.INVALID_ARGUMENT]],
    ];
    const { log: status } = await c.logStatus(LOG, writer);
    const open = status.segments.find((s) => s.state === 'OPEN');
    const last = status.segments[status.segments.length - 1];
    if (!last) throw new Error('no segment');
    const peer = node.peerClient();
    const garbage = [Buffer.from('certainly not a frame'), Buffer.alloc(64)];
    const segmentId = (open ?? last).segment_id;
    const firstIndex = (open ?? last).first_index;
    expectations.push(
      ['Replicate garbage frames', () => peer.replicate(LOG, epoch, { segmentId, firstIndex, createdMs: 0 }, garbage, 0), [Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION]],
      ['Replicate to a segment that does not exist', () => peer.replicate(LOG, epoch, { segmentId: last.segment_id + 1000, firstIndex: 1, createdMs: 0 }, garbage, 0), [Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION]],
      ['Replicate segment 0', () => peer.replicate(LOG, epoch, { segmentId: 0, firstIndex: 1, createdMs: 0 }, garbage, 0), [Status.INVALID_ARGUMENT]],
      ['Replicate no frames', () => peer.replicate(LOG, epoch, { segmentId, firstIndex, createdMs: 0 }, [], 0), [Status.INVALID_ARGUMENT]],
      ['Replicate to an unknown log', () => peer.replicate('../etc', epoch, { segmentId, firstIndex, createdMs: 0 }, garbage, 0), [Status.INVALID_ARGUMENT]],
      ['Seal a segment not held', () => peer.seal(LOG, last.segment_id + 1000, epoch, 5, ''), [Status.FAILED_PRECONDITION]],
      ['ReadFrames of segment 0', () => peer.readFrames(LOG, 0, 1, 10, 0), [Status.INVALID_ARGUMENT]],
      ['ReadFrames to an index past 2^53', () => peer.readFrames(LOG, 1, 1, 2 ** 60, 0), [Status.INVALID_ARGUMENT]],
      ['FetchSegment of a segment not held', () => drain(peer.fetchSegment(LOG, last.segment_id + 1000, 0)), [Status.INVALID_ARGUMENT, Status.NOT_FOUND, Status.FAILED_PRECONDITION]],
    );
    // A refused request to a log the node has never held leaves no segment behind; a log etcd
    // does not have is not found (a writer call without an identity creates only a known log).
    const fresh = 'hostile-fresh-log';
    expectations.push(['Replicate garbage to a fresh log', () => peer.replicate(fresh, 1, { segmentId: 1, firstIndex: 1, createdMs: 0 }, garbage, 0), [Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION, Status.NOT_FOUND]]);
    const { frame: misplaced } = encodeEntry({ index: 7, timestampMs: 0, flags: 0, payload: Buffer.from('x') });
    expectations.push(['Replicate a frame at the wrong index to a fresh log', () => peer.replicate(fresh, 1, { segmentId: 1, firstIndex: 1, createdMs: 0 }, [misplaced], 0), [Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION, Status.NOT_FOUND]]);
    const outcomes: Array<{ what: string; code: number | 'ok' }> = [];
    for (const [what, call] of expectations) outcomes.push({ what, code: await codeOfCall(call) });
    expect(outcomes).toEqual(expectations.map(([what, , codes]) => ({ what, code: outcomes.find((o) => o.what === what && codes.includes(o.code as number))?.code ?? codes[0] })));

    const present = await peer.segmentInfo(fresh, 1, false).then(
      (h) => h.present,
      (error: { code?: number }) => (expect(error.code).toBe(Status.NOT_FOUND), false),
    );
    expect(present, 'a refused Replicate created a segment').toBe(false);

    // Requests with fields left out, sent through the raw generated client.
    const { proto } = loadProto();
    const raw = new proto.walrecovery.v1.PeerService(node.target, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    try {
      const unary = (method: 'Replicate' | 'Fence' | 'Seal' | 'ReadFrames' | 'SegmentInfo', request: object): Promise<number | 'ok'> =>
        new Promise((resolve) => {
          const client = raw as unknown as Record<string, (r: object, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void>;
          client[method]!.call(raw, request, { deadline: Date.now() + 5_000 }, (error) => resolve(error ? error.code : 'ok'));
        });
      expect(await unary('Replicate', { log: LOG, epoch, frames: garbage })).toBe(Status.INVALID_ARGUMENT);
      expect(await unary('Fence', { epoch })).toBe(Status.INVALID_ARGUMENT);
      expect(await unary('Seal', { epoch, last_index: 1 })).toBe(Status.INVALID_ARGUMENT);
      expect(await unary('ReadFrames', { from_index: 1, to_index: 2 })).toBe(Status.INVALID_ARGUMENT);
      expect(await unary('SegmentInfo', {})).toBe(Status.INVALID_ARGUMENT);
    } finally {
      raw.close();
    }

    // Absurd ranges give bounded answers: at most READ_FRAMES_BYTES_MAX (4 MiB) plus one frame.
    for (const [from, to, bytesMax] of [[1, Number.MAX_SAFE_INTEGER, 0], [1, Number.MAX_SAFE_INTEGER, 2 ** 32 - 1], [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 1], [50, 10, 0]] as const) {
      for (const segment of status.segments.slice(0, 3)) {
        const result = await peer.readFrames(LOG, segment.segment_id, from, to, bytesMax);
        const bytes = result.frames.reduce((sum, f) => sum + f.byteLength, 0);
        expect(bytes).toBeLessThanOrEqual(4 * 1024 * 1024 + 1024);
        if (from > to) expect(result.frames.length).toBe(0);
      }
    }
    // A read with an absurd batch size is still bounded per message and complete.
    // (Up to the last acknowledged index, at most 100: run alone, this test has one entry.)
    let messages = 0;
    const readTo = Math.min(100, Math.max(...acked.keys()));
    for await (const response of wal.read(LOG, 1, readTo, { batchMax: 2 ** 32 - 1 })) {
      messages += 1;
      expect(response.entries.length).toBeLessThanOrEqual(4096);
    }
    expect(messages).toBeGreaterThan(0);

    // Every node is still up and serving.
    for (const n of c.nodes) expect(n.alive, `${n.id} is alive`).toBe(true);
    const payload = payloadFor('after-hostile', 1);
    const outcome = await wal.append(LOG, [payload], { deadlineMs: 20_000 });
    acked.set(outcome.firstIndex, payload);
    await expectAllReadBack(node);
  }, 90_000);

  it('ends with byte-identical sealed segments on all their replicas and every entry on every node', async () => {
    const c = theCluster();
    for (const node of c.nodes) expect(node.alive, `${node.id} is alive`).toBe(true);
    const compared = await expectSealedIdentical(CATCH_UP_TIMEOUT_MS);
    expect(compared).toBeGreaterThan(10);
    // A node holds the segments of its ensembles (a member left out of one while it was down is
    // not in it); every node still serves every entry, reading the others from their members.
    for (const node of c.nodes) await expectAllReadBack(node);
  }, 120_000);
});
