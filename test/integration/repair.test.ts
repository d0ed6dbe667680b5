// Repair of sealed segments across real node processes and a real etcd, all on 127.0.0.1. Two
// clusters share one etcd under different --cluster names:
// - "scrubbed" (3 nodes, scrub every 500 ms): damage is found and repaired with no call at all;
// - "explicit" (4 nodes, scrubber off, gone after 3 s): damage is repaired by RepairSegment from a
//   gRPC client, or found by the read path; kill -9 mid-repair, coordinator failover, node loss.
// Every test writes its own log (create_if_missing), keeps a copy of each intact sealed file, then
// damages one or more replicas in place and checks that every replica is byte-identical to that
// copy again, or that the loss is reported exactly with nothing else touched.
import { readdir, readFile, rm } from 'node:fs/promises';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestNode, pollUntil, readAll } from '../support/cluster.js';
import { EtcdServer, sleepMs } from '../support/etcd.js';
import { EventRecorder, RepairCluster, appendEntries, flipByte, flipPayloadByte, framesOf, lieAbout, validateFindings, zeroRange } from '../support/repair-driver.js';
import type { SegmentStatus__Output } from '../../src/rpc/generated/walrecovery/v1/SegmentStatus.js';

const SMALL_SEGMENT_BYTES = 32 * 1024;
const BIG_SEGMENT_BYTES = 4 * 1024 * 1024;
const PAYLOAD_BYTES = 200;
const ENTRIES = 520; // about four sealed segments of 32 KiB
const REPAIR_TIMEOUT_MS = 20_000;

let etcd: EtcdServer | undefined;
let scrubbed: RepairCluster | undefined;
let explicit: RepairCluster | undefined;

beforeAll(async () => {
  etcd = await EtcdServer.start();
  const endpoint = etcd.endpoint;
  const small = ['--segment-bytes', String(SMALL_SEGMENT_BYTES)];
  [scrubbed, explicit] = await Promise.all([
    RepairCluster.start({ etcd: endpoint, cluster: 'scrubbed', nodes: ['n1', 'n2', 'n3'].map((id) => ({ id, args: [...small, '--scrub-interval-ms', '500'] })) }),
    RepairCluster.start({
      etcd: endpoint,
      cluster: 'explicit',
      nodes: [
        ...['n1', 'n2', 'n3'].map((id) => ({ id, args: [...small, '--scrub-bytes-per-second', '0', '--gone-after-ms', '3000'] })),
        // Logs created through n4 have 4 MiB segments: large enough to catch a repair in flight.
        { id: 'n4', args: ['--segment-bytes', String(BIG_SEGMENT_BYTES), '--scrub-bytes-per-second', '0', '--gone-after-ms', '3000'] },
      ],
    }),
  ]);
}, 120_000);

afterAll(async () => {
  await scrubbed?.dispose();
  await explicit?.dispose();
  await etcd?.dispose();
}, 60_000);

function the(cluster: RepairCluster | undefined): RepairCluster {
  if (!cluster) throw new Error('the cluster did not start');
  return cluster;
}

interface Prepared {
  readonly acked: Map<number, Buffer>;
  readonly sealed: SegmentStatus__Output[];
  /** An intact copy of every sealed segment, before any damage. */
  readonly originals: Map<number, Buffer>;
}

/** Writes a fresh log with several sealed segments and waits for identical copies everywhere. */
async function prepare(c: RepairCluster, log: string, via: TestNode, entries = ENTRIES, payloadBytes = PAYLOAD_BYTES): Promise<Prepared> {
  const acked = await appendEntries(via.walClient(), log, entries, payloadBytes, payloadBytes > 1024 ? 64 : 32);
  const sealed = await c.sealed(log, via);
  expect(sealed.length).toBeGreaterThanOrEqual(2);
  const originals = await c.identicalCopies(log, 30_000);
  return { acked, sealed, originals };
}

function segmentOf(p: Prepared, n: number): { segment: SegmentStatus__Output; original: Buffer } {
  const segment = p.sealed[n];
  if (!segment) throw new Error(`no sealed segment #${n}`);
  const original = p.originals.get(segment.segment_id);
  if (!original) throw new Error(`no copy of segment ${segment.segment_id}`);
  return { segment, original };
}

function member(c: RepairCluster, segment: SegmentStatus__Output, n: number): TestNode {
  const id = segment.ensemble[n];
  if (id === undefined) throw new Error(`segment ${segment.segment_id} has no member #${n}`);
  return c.node(id);
}

/** The index in the middle of a segment. */
function middleIndex(segment: SegmentStatus__Output, offset = 0): number {
  return Math.floor((segment.first_index + segment.last_index) / 2) + offset;
}

/** Waits until every live member's copy of the segment equals original. */
async function expectRestored(c: RepairCluster, log: string, segment: SegmentStatus__Output, original: Buffer, timeoutMs = REPAIR_TIMEOUT_MS): Promise<void> {
  let state = '';
  try {
    await pollUntil('restored copies', timeoutMs, async () => {
      const states: string[] = [];
      for (const id of segment.ensemble) {
        const node = c.node(id);
        if (!node.alive) continue;
        const bytes = await readFile(node.segmentPath(log, segment.segment_id)).catch(() => undefined);
        if (!bytes?.equals(original)) states.push(`${id}: ${bytes ? 'differs' : 'missing'}`);
      }
      state = states.join(', ');
      return states.length === 0 ? true : undefined;
    }, 100);
  } catch {
    // reported below
  }
  expect(state, `segment ${segment.segment_id} of ${log} byte-identical to its original on every member`).toBe('');
}

/**
 * Every acknowledged entry reads back from node with its payload. A node that is not the writer
 * serves up to the committed index it knows; right after a writer was killed that may trail the
 * last acknowledgements until a new writer recovers the open segment, so the read is retried.
 */
async function expectReadBack(node: TestNode, log: string, acked: ReadonlyMap<number, Buffer>): Promise<void> {
  let read = await readAll(node.walClient(), log);
  let wrong = Number.POSITIVE_INFINITY;
  for (const until = Date.now() + 20_000; ; ) {
    expect(read.problems).toEqual([]); // never an out-of-order or lost entry, whatever the timing
    wrong = 0;
    for (const [index, payload] of acked) {
      const got = read.payloads[index - 1];
      // Bytes other than acknowledged are a failure at once; only missing ones may come later.
      if (got !== undefined) expect(got.equals(payload), `entry ${index} of ${log} from ${node.id}`).toBe(true);
      else wrong += 1;
    }
    if (wrong === 0 || Date.now() > until) break;
    await new Promise((r) => setTimeout(r, 250));
    read = await readAll(node.walClient(), log);
  }
  expect(wrong, `entries of ${log} that read back wrong from ${node.id}`).toBe(0);
}

async function readOne(node: TestNode, log: string, index: number): Promise<Buffer> {
  for await (const response of node.walClient().read(log, index, index, { deadlineMs: 20_000 })) {
    const entry = response.entries[0];
    if (entry) return entry.payload;
  }
  throw new Error(`no entry ${index}`);
}

// ---------------------------------------------------------------------------------------------
// Damage kinds, each applied to a prepared log; returns the segment touched and its original.

interface Damage {
  readonly name: string;
  /** Damages some members' copies; returns the segment and the node ids damaged. */
  readonly apply: (c: RepairCluster, log: string, p: Prepared) => Promise<{ segment: SegmentStatus__Output; original: Buffer; damaged: string[] }>;
}

const DAMAGES: readonly Damage[] = [
  {
    name: 'a flipped payload byte on one replica',
    apply: async (c, log, p) => {
      const { segment, original } = segmentOf(p, 1);
      const victim = member(c, segment, 1);
      await flipPayloadByte(victim.segmentPath(log, segment.segment_id), middleIndex(segment));
      return { segment, original, damaged: [victim.id] };
    },
  },
  {
    name: 'a zeroed 4 KiB block on one replica',
    apply: async (c, log, p) => {
      const { segment, original } = segmentOf(p, 0);
      const victim = member(c, segment, 2);
      await zeroRange(victim.segmentPath(log, segment.segment_id), 8192, 4096);
      return { segment, original, damaged: [victim.id] };
    },
  },
  {
    name: 'a deleted segment file on one replica',
    apply: async (c, log, p) => {
      const { segment, original } = segmentOf(p, 1);
      const victim = member(c, segment, 0);
      await rm(victim.segmentPath(log, segment.segment_id));
      return { segment, original, damaged: [victim.id] };
    },
  },
  {
    name: 'a corrupt segment header on one replica',
    apply: async (c, log, p) => {
      const { segment, original } = segmentOf(p, 0);
      const victim = member(c, segment, 1);
      await flipByte(victim.segmentPath(log, segment.segment_id), 17); // inside the first index field
      return { segment, original, damaged: [victim.id] };
    },
  },
  {
    name: 'different entries corrupted on two replicas',
    apply: async (c, log, p) => {
      const { segment, original } = segmentOf(p, 1);
      const a = member(c, segment, 0);
      const b = member(c, segment, 2);
      await flipPayloadByte(a.segmentPath(log, segment.segment_id), middleIndex(segment, -5));
      await flipPayloadByte(b.segmentPath(log, segment.segment_id), middleIndex(segment, 7));
      return { segment, original, damaged: [a.id, b.id] };
    },
  },
];

const LIE: Damage = {
  name: 'a lying replica (rewritten entry with valid checksums)',
  apply: async (c, log, p) => {
    const { segment, original } = segmentOf(p, 1);
    const victim = member(c, segment, 2);
    await lieAbout(victim.segmentPath(log, segment.segment_id), middleIndex(segment));
    return { segment, original, damaged: [victim.id] };
  },
};

let logSeq = 0;
function freshLog(prefix: string): string {
  logSeq += 1;
  return `${prefix}-${logSeq}-${Date.now().toString(36)}`;
}

// ---------------------------------------------------------------------------------------------

describe('found by the scrubber, with no call, and rebuilt from replicas', () => {
  it('a flipped payload byte: detected and repaired events, metrics count it', async () => {
    const c = the(scrubbed);
    const log = freshLog('scrub-flip');
    const p = await prepare(c, log, c.node('n1'));
    const { segment, original } = segmentOf(p, 1);
    const victim = member(c, segment, 1);
    const before = await victim.adminClient().recoveryMetrics();
    const recorder = new EventRecorder(victim.adminClient(), log);
    try {
      await sleepMs(200); // the watch is registered before the damage
      await flipPayloadByte(victim.segmentPath(log, segment.segment_id), middleIndex(segment));
      const detected = await recorder.waitFor('a detected event', REPAIR_TIMEOUT_MS, (e) => e.kind === 'detected' && e.segment_id === segment.segment_id);
      expect(detected.source).toBe('scrub');
      expect(detected.node).toBe(victim.id);
      await recorder.waitFor('a repaired event', REPAIR_TIMEOUT_MS, (e) => e.kind === 'repaired' && e.segment_id === segment.segment_id);
    } finally {
      recorder.stop();
    }
    await expectRestored(c, log, segment, original);
    const after = await victim.adminClient().recoveryMetrics();
    expect(after.corrupted_segments).toBeGreaterThan(before.corrupted_segments);
    expect(after.successful_recoveries).toBeGreaterThan(before.successful_recoveries);
    expect(after.recovery_attempts).toBeGreaterThan(before.recovery_attempts);
    expect(after.entries_repaired).toBeGreaterThan(before.entries_repaired);
    expect(await validateFindings(victim.adminClient(), log, victim.id)).toEqual([]);
    await expectReadBack(victim, log, p.acked);
  }, 60_000);

  for (const damage of [...DAMAGES.slice(1), LIE]) {
    it(`${damage.name}`, async () => {
      const c = the(scrubbed);
      const log = freshLog('scrub');
      const p = await prepare(c, log, c.node('n2'));
      const recorders = new Map(c.nodes.map((n) => [n.id, new EventRecorder(n.adminClient(), log)]));
      let damaged: string[] = [];
      try {
        await sleepMs(200); // the watches are registered before the damage
        const applied = await damage.apply(c, log, p);
        damaged = applied.damaged;
        await expectRestored(c, log, applied.segment, applied.original);
        for (const id of damaged) {
          const detected = await (recorders.get(id) as EventRecorder).waitFor(`${id} detected the damage`, 5_000, (e) => e.kind === 'detected' && e.segment_id === applied.segment.segment_id);
          expect(detected.source).toBe('scrub');
        }
      } finally {
        for (const recorder of recorders.values()) recorder.stop();
      }
      for (const id of damaged) {
        expect(await validateFindings(c.node(id).adminClient(), log, id)).toEqual([]);
        await expectReadBack(c.node(id), log, p.acked);
      }
    }, 60_000);
  }

  it('the same entry corrupted on all three replicas: reported as lost, nothing else touched', async () => {
    const c = the(scrubbed);
    const log = freshLog('scrub-lost');
    const p = await prepare(c, log, c.node('n3'));
    const { segment } = segmentOf(p, 1);
    const index = middleIndex(segment);
    const recorders = c.nodes.map((n) => new EventRecorder(n.adminClient(), log));
    const damaged = new Map<string, Buffer>();
    try {
      await sleepMs(200);
      for (const node of c.nodes) {
        const path = node.segmentPath(log, segment.segment_id);
        await flipPayloadByte(path, index);
        damaged.set(node.id, await readFile(path));
      }
      for (const recorder of recorders) {
        const failed = await recorder.waitFor('a repair-failed event', REPAIR_TIMEOUT_MS, (e) => e.kind === 'repair-failed' && e.segment_id === segment.segment_id);
        expect(failed.detail).toContain(String(index));
      }
    } finally {
      for (const recorder of recorders) recorder.stop();
    }
    for (const node of c.nodes) {
      const findings = await validateFindings(node.adminClient(), log, node.id);
      expect(findings.map((f) => ({ segment: f.segment_id, kind: f.kind, entry: f.entry_index }))).toEqual([{ segment: segment.segment_id, kind: 'checksum-mismatch', entry: index }]);
      expect((await readFile(node.segmentPath(log, segment.segment_id))).equals(damaged.get(node.id) as Buffer), `${node.id}'s damaged copy left as it was`).toBe(true);
      // The entry is never served with wrong bytes: the read fails.
      await expect(readOne(node, log, index)).rejects.toThrow();
      // Its neighbours still read.
      expect((await readOne(node, log, index - 1)).equals(p.acked.get(index - 1) as Buffer)).toBe(true);
      expect((await readOne(node, log, index + 1)).equals(p.acked.get(index + 1) as Buffer)).toBe(true);
    }
    // Other segments are untouched.
    for (const other of p.sealed.filter((s) => s.segment_id !== segment.segment_id)) {
      for (const node of c.nodes) expect((await readFile(node.segmentPath(log, other.segment_id))).equals(p.originals.get(other.segment_id) as Buffer)).toBe(true);
    }
  }, 60_000);
});

describe('repaired by RepairSegment from a gRPC client (scrubber off)', () => {
  for (const damage of [...DAMAGES, LIE]) {
    it(`${damage.name}`, async () => {
      const c = the(explicit);
      const log = freshLog('rpc');
      const p = await prepare(c, log, c.node('n1'));
      const { segment, original, damaged } = await damage.apply(c, log, p);
      // Validate names every damaged member of the segment, and only those.
      const findings = await validateFindings(c.node('n1').adminClient(), log);
      expect([...new Set(findings.map((f) => f.node))].sort()).toEqual([...damaged].sort());
      expect(new Set(findings.map((f) => f.segment_id))).toEqual(new Set([segment.segment_id]));
      // (No read of the damaged copy here: the read path would queue a repair of its own.)
      if (damage === LIE) expect(findings.map((f) => f.kind)).toContain('bad-catalog');
      const response = await c.node('n1').adminClient().repairSegment({ log, segmentId: segment.segment_id });
      const outcomes = response.results.map((r) => ({ node: r.node, outcome: r.outcome }));
      expect(outcomes.sort((a, b) => a.node.localeCompare(b.node))).toEqual([...segment.ensemble].sort().map((node) => ({ node, outcome: 'done' })));
      for (const r of response.results) {
        if (damaged.includes(r.node)) expect(r.decision, JSON.stringify(r)).not.toBe('keep');
        else expect(r.decision, JSON.stringify(r)).toBe('keep');
        expect(r.lost).toEqual([]);
      }
      await expectRestored(c, log, segment, original, 1_000);
      expect(await validateFindings(c.node('n1').adminClient(), log)).toEqual([]);
      for (const id of damaged) await expectReadBack(c.node(id), log, p.acked);
    }, 60_000);
  }

  it('the same entry corrupted on all three replicas: results fail naming the entry, nothing touched', async () => {
    const c = the(explicit);
    const log = freshLog('rpc-lost');
    const p = await prepare(c, log, c.node('n2'));
    const { segment } = segmentOf(p, 1);
    const index = middleIndex(segment);
    const damaged = new Map<string, Buffer>();
    for (const id of segment.ensemble) {
      const path = c.node(id).segmentPath(log, segment.segment_id);
      await flipPayloadByte(path, index);
      damaged.set(id, await readFile(path));
    }
    const before = await Promise.all(segment.ensemble.map((id) => c.node(id).adminClient().recoveryMetrics()));
    const response = await c.node('n2').adminClient().repairSegment({ log, segmentId: segment.segment_id });
    expect(response.results.length).toBe(3);
    for (const r of response.results) {
      expect(r.outcome, JSON.stringify(r)).toBe('failed');
      expect(['escalate', 'reconstruct', 'halt'], JSON.stringify(r)).toContain(r.decision);
      expect(r.repaired).toEqual([]);
      const named = r.lost.some((l) => l.first <= index && index <= l.last) || r.detail.includes(String(index));
      expect(named, `result names entry ${index}: ${JSON.stringify(r)}`).toBe(true);
    }
    const after = await Promise.all(segment.ensemble.map((id) => c.node(id).adminClient().recoveryMetrics()));
    after.forEach((m, i) => expect(m.failed_recoveries).toBeGreaterThan(before[i]?.failed_recoveries ?? Infinity));
    for (const id of segment.ensemble) {
      const node = c.node(id);
      expect((await readFile(node.segmentPath(log, segment.segment_id))).equals(damaged.get(id) as Buffer), `${id}'s copy left as it was`).toBe(true);
      await expect(readOne(node, log, index)).rejects.toThrow();
    }
    for (const other of p.sealed.filter((s) => s.segment_id !== segment.segment_id)) {
      for (const id of other.ensemble) expect((await readFile(c.node(id).segmentPath(log, other.segment_id))).equals(p.originals.get(other.segment_id) as Buffer)).toBe(true);
    }
  }, 60_000);

  it('a lying replica whose segment was read before the lie never serves the rewritten entry', async () => {
    const c = the(explicit);
    const log = freshLog('lie-warm');
    const p = await prepare(c, log, c.node('n1'));
    const { segment, original } = segmentOf(p, 1);
    const liar = member(c, segment, 1);
    const index = middleIndex(segment);
    // A read through the liar first: its store now has the segment open and indexed.
    expect((await readOne(liar, log, index)).equals(p.acked.get(index) as Buffer)).toBe(true);
    const lie = await lieAbout(liar.segmentPath(log, segment.segment_id), index);
    const served = await readOne(liar, log, index);
    expect(served.equals(lie), 'the liar served its rewritten payload to a client').toBe(false);
    expect(served.equals(p.acked.get(index) as Buffer)).toBe(true);
    const response = await c.node('n1').adminClient().repairSegment({ log, segmentId: segment.segment_id });
    expect(response.results.map((r) => r.outcome)).toEqual(['done', 'done', 'done']);
    await expectRestored(c, log, segment, original, 1_000);
  }, 60_000);

  it('a damaged entry found by a read is served from a replica and repaired with no call', async () => {
    const c = the(explicit);
    const log = freshLog('read');
    const p = await prepare(c, log, c.node('n3'));
    const { segment, original } = segmentOf(p, 0);
    const victim = member(c, segment, 1);
    const index = middleIndex(segment);
    await flipPayloadByte(victim.segmentPath(log, segment.segment_id), index);
    expect((await readOne(victim, log, index)).equals(p.acked.get(index) as Buffer)).toBe(true);
    await expectRestored(c, log, segment, original);
  }, 60_000);
});

describe('large segments, crashes and node loss (scrubber off)', () => {
  let big: { log: string; p: Prepared; victim: TestNode; segment: SegmentStatus__Output; original: Buffer; other: SegmentStatus__Output } | undefined;

  async function bigLog(): Promise<NonNullable<typeof big>> {
    if (big) return big;
    const c = the(explicit);
    const log = freshLog('big');
    // About 2.3 segments of 4 MiB, in 4 KiB entries.
    const p = await prepare(c, log, c.node('n4'), 2_300, 4096);
    const writer = (await c.node('n4').adminClient().status(log)).logs[0]?.writer ?? '';
    const { segment, original } = segmentOf(p, 0);
    const victimId = segment.ensemble.find((id) => id !== writer && id !== 'n4') ?? segment.ensemble.find((id) => id !== writer);
    if (victimId === undefined) throw new Error('no victim');
    const other = p.sealed[1] as SegmentStatus__Output;
    big = { log, p, victim: c.node(victimId), segment, original, other };
    return big;
  }

  /** Zeroes 1 MiB of 4 KiB blocks spread over the segment: hundreds of entries to fetch. */
  async function damageWidely(path: string, original: Buffer): Promise<void> {
    const frames = framesOf(original);
    for (let i = 5; i < frames.length - 5; i += 4) {
      const f = frames[i];
      if (f) await zeroRange(path, f.offsetBytes, Math.min(4096, f.byteLength));
    }
  }

  it('reads of another segment keep succeeding while a large segment is repaired', async () => {
    const c = the(explicit);
    const { log, p, victim, segment, original, other } = await bigLog();
    await damageWidely(victim.segmentPath(log, segment.segment_id), original);
    let repairing = true;
    let reads = 0;
    let readsDuring = 0;
    const reader = (async () => {
      while (repairing) {
        const from = other.first_index + (reads % 50) * 10;
        const got = await readRange(victim, log, from, from + 9);
        for (const [i, payload] of got.entries()) expect(payload.equals(p.acked.get(from + i) as Buffer)).toBe(true);
        reads += 1;
        if (repairing) readsDuring += 1;
      }
    })();
    const started = performance.now();
    const response = await victim.adminClient().repairSegment({ log, segmentId: segment.segment_id, node: victim.id }).finally(() => (repairing = false));
    const tookMs = performance.now() - started;
    await reader;
    expect(response.results.map((r) => r.outcome)).toEqual(['done']);
    expect(readsDuring, `reads completed during a ${tookMs.toFixed(0)} ms repair`).toBeGreaterThan(0);
    console.info(`large repair: ${tookMs.toFixed(0)} ms, ${readsDuring} reads of another segment meanwhile, ${response.results[0]?.bytes_written ?? 0} bytes written`);
    await expectRestored(c, log, segment, original, 1_000);
  }, 90_000);

  it('two repairs of the same copy at once leave one intact copy', async () => {
    const c = the(explicit);
    const { log, victim, segment, original } = await bigLog();
    await damageWidely(victim.segmentPath(log, segment.segment_id), original);
    const ask = (): Promise<string[]> => victim.adminClient().repairSegment({ log, segmentId: segment.segment_id, node: victim.id }).then((r) => r.results.map((x) => `${x.decision}/${x.outcome}`));
    const outcomes = await Promise.all([ask(), ask(), ask()]);
    console.info(`concurrent repairs: ${JSON.stringify(outcomes)}`);
    await expectRestored(c, log, segment, original, 5_000);
    expect(await validateFindings(victim.adminClient(), log, victim.id)).toEqual([]);
  }, 90_000);

  it('kill -9 of the repairing node mid-repair: the segment is old or new, and a new repair finishes it', async () => {
    const c = the(explicit);
    const { log, p, victim, segment, original } = await bigLog();
    const path = victim.segmentPath(log, segment.segment_id);
    await damageWidely(path, original);
    const damagedCopy = await readFile(path);
    const pending = victim.adminClient().repairSegment({ log, segmentId: segment.segment_id, node: victim.id }).then(
      () => 'finished',
      () => 'cut off',
    );
    let finishedFirst = false;
    void pending.then((s) => (finishedFirst = s === 'finished'));
    // Kill as soon as the rebuilt copy is being written (its temp file exists).
    const seen = await pollUntil('the repair temp file', 20_000, async () => {
      if (finishedFirst) return 'finished';
      const names = await readdir(path.slice(0, path.lastIndexOf('/'))).catch(() => [] as string[]);
      return names.some((n) => n.endsWith('.tmp')) ? 'temp' : undefined;
    }, 2);
    await c.kill(victim.id, 'SIGKILL');
    expect(await pending).toBe('cut off');
    expect(seen, 'the node was killed while its repair ran').toBe('temp');
    const onDisk = await readFile(path);
    expect(onDisk.equals(damagedCopy) || onDisk.equals(original), 'the segment is the old or the new version').toBe(true);
    await c.restart(victim.id);
    const response = await victim.adminClient().repairSegment({ log, segmentId: segment.segment_id, node: victim.id });
    expect(response.results.map((r) => r.outcome)).toEqual(['done']);
    await expectRestored(c, log, segment, original, 1_000);
    await expectReadBack(victim, log, p.acked);
  }, 90_000);

  it('kill -9 of the coordinator: another node takes over and finishes a pending repair report', async () => {
    const c = the(explicit);
    const log = freshLog('coord');
    const p = await prepare(c, log, c.node('n1'));
    const coordinator = (await c.node('n1').adminClient().status(log)).coordinator;
    expect(coordinator).not.toBe('');
    const { segment, original } = segmentOf(p, 1);
    const victimId = segment.ensemble.find((id) => id !== coordinator);
    if (victimId === undefined) throw new Error('no victim');
    const victim = c.node(victimId);
    await zeroRange(victim.segmentPath(log, segment.segment_id), 4096, 4096);
    // What a node records after giving up on a repair (RepairService.report), left for the coordinator.
    const client = new Etcd3({ hosts: (etcd as EtcdServer).endpoint });
    const key = `/wal-recovery/explicit/reports/${log}/${String(segment.segment_id).padStart(20, '0')}/${victimId}`;
    try {
      // Planted once the coordinator is gone, so that only its successor can finish it.
      await c.kill(coordinator, 'SIGKILL');
      await client.put(key).value(JSON.stringify({ log, segmentId: segment.segment_id, node: victimId, state: 'failed', detail: 'planted by the test', attempts: 0, updatedMs: 0 }));
      const successor = await pollUntil('a new coordinator', 30_000, async () => {
        const now = (await victim.adminClient().status(log).catch(() => undefined))?.coordinator;
        return now !== undefined && now !== '' && now !== coordinator ? now : undefined;
      });
      expect(c.node(successor).alive).toBe(true);
      await pollUntil('the report finished (deleted)', 30_000, async () => ((await client.get(key).string()) === null ? true : undefined));
      const successorLog = await readFile(c.node(successor).logPath, 'utf8');
      expect(successorLog.includes(log) && successorLog.includes('coordinator finished a repair a node had given up on'), 'the new coordinator finished the report').toBe(true);
      await expectRestored(c, log, segment, original, 1_000);
      await expectReadBack(victim, log, p.acked);
    } finally {
      client.close();
      await c.restart(coordinator);
    }
  }, 90_000);

  it('a node gone for good: its sealed segments return to full replication on the others', async () => {
    const c = the(explicit);
    const log = freshLog('gone');
    const p = await prepare(c, log, c.node('n1'));
    // The member of most sealed segments, not the writer (its loss is the writer tests' business).
    const writer = (await c.node('n1').adminClient().status(log)).logs[0]?.writer ?? '';
    const counts = new Map<string, number>();
    for (const s of p.sealed) for (const id of s.ensemble) counts.set(id, (counts.get(id) ?? 0) + 1);
    const gone = [...counts.entries()].filter(([id]) => id !== writer).sort((a, b) => b[1] - a[1])[0]?.[0];
    if (gone === undefined) throw new Error('no node to lose');
    const affected = p.sealed.filter((s) => s.ensemble.includes(gone)).map((s) => s.segment_id);
    expect(affected.length).toBeGreaterThan(0);
    await c.kill(gone, 'SIGKILL');
    const via = c.node(writer === '' ? 'n1' : writer);
    const moved = await pollUntil('ensembles without the lost node', 60_000, async () => {
      const sealed = await c.sealed(log, via);
      const now = sealed.filter((s) => affected.includes(s.segment_id));
      return now.length === affected.length && now.every((s) => !s.ensemble.includes(gone) && s.ensemble.length === 3) ? now : undefined;
    });
    for (const s of moved) expect(new Set(s.ensemble).size).toBe(3);
    const copies = await c.identicalCopies(log, 60_000, affected);
    for (const id of affected) expect(copies.get(id)?.equals(p.originals.get(id) as Buffer), `segment ${id}`).toBe(true);
    // Every live member of each moved segment holds the original bytes.
    for (const s of moved) {
      for (const id of s.ensemble) expect((await readFile(c.node(id).segmentPath(log, s.segment_id))).equals(p.originals.get(s.segment_id) as Buffer), `segment ${s.segment_id} on ${id}`).toBe(true);
    }
  }, 120_000);
});

/** Payloads from..to read from node. */
async function readRange(node: TestNode, log: string, from: number, to: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const response of node.walClient().read(log, from, to, { deadlineMs: 20_000 })) for (const e of response.entries) out.push(e.payload);
  if (out.length !== to - from + 1) throw new Error(`read ${out.length} entries of ${from}..${to}`);
  return out;
}

