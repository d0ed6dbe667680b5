// One simulation run: a seed decides the workload (clients appending and reading), the faults
// (crashes with each crash mode, writer changes, partitions, lossy and slow networks, etcd
// outages) and every latency, so one seed always gives one trace. After the faulty phase every
// fault is healed, a fresh writer takes over, the nodes catch up, and the model checks the log
// the cluster holds against everything clients were told.
import { createHash } from 'node:crypto';
import { SeededRandom } from '../io/index.js';
import type { SessionRef } from '../replication/sessions.js';
import type { SegmentMeta } from '../replication/metadata.js';
import { format } from '../wal/index.js';
import { SIM_LOG, SimCluster, type SimNode, describe } from './cluster.js';
import { SimEtcd, type SimEtcdSnapshot } from './directory.js';
import { CRASH_MODES, type CrashMode, DEFAULT_DISK_LATENCY, HEALTHY_DISK } from './disk.js';
import { DISK_FAULT_KINDS, type DiskFaultKind, type DiskFaultTarget, injectDiskFault } from './disk-faults.js';
import { SimLoop } from './loop.js';
import { Model, type Violation } from './model.js';
import { SimNetwork } from './network.js';
import { startStoreWorkload } from './store-run.js';

export interface SimOptions {
  readonly seed: number;
  /** Virtual duration of the faulty phase. */
  readonly durationMs?: number;
  readonly clients?: number;
  readonly readers?: number;
  readonly nodes?: number;
  readonly segmentBytesMax?: number;
  /** Mean virtual time between two faults. */
  readonly faultEveryMs?: number;
  /** Restore etcd from an older snapshot, or wipe it, now and then (issue 8 #9). */
  readonly etcdRestore?: boolean;
  /**
   * Lose one node for good during the faulty phase (it crashes and never returns): the
   * coordinator must restore replication away from it (issue 9, node loss).
   */
  readonly loseNodes?: boolean;
  /** Writers pipeline batches 4 deep whenever one waits (production default: 1 batch in flight). */
  readonly pipeline?: boolean;
  /** Keep the last lines of the trace for the report of a failing seed. */
  readonly traceLinesMax?: number;
}

export interface SimResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly operations: number;
  readonly faults: Readonly<Record<string, number>>;
  readonly violations: readonly Violation[];
  readonly traceHash: string;
  readonly steps: number;
  readonly virtualMs: number;
  readonly trace: readonly string[];
}

export const SIM_DEFAULTS = Object.freeze({ durationMs: 20_000, clients: 4, readers: 2, nodes: 3, segmentBytesMax: 8 * 1024, faultEveryMs: 700, traceLinesMax: 60, etcdRestore: false, loseNodes: false });

const QUIESCE_MS_MAX = 60_000;
const EMPTY_ETCD: SimEtcdSnapshot = { revision: 0, kv: new Map(), leases: new Map() };
/** Bit rot hits a segment again (on any node) only this long after the last time. */
const DAMAGE_SPACING_MS = 15_000;
const HEADER_BYTES = format.SEGMENT_HEADER_BYTES;
const CLIENT_DEADLINE_MS = 5_000;
/** Attempts of one session batch (the first and its retries) before a session client moves on. */
const SESSION_ATTEMPTS_MAX = 4;
/** After the final append: catch-up, scrub passes, repairs and the coordinator's retries. */
const SETTLE_MS = 16_000;

export async function runSeed(options: SimOptions): Promise<SimResult> {
  const o = { ...SIM_DEFAULTS, ...options };
  const random = new SeededRandom(o.seed);
  const loop = new SimLoop();
  const hash = createHash('sha3-256');
  const lines: string[] = [];
  // WAL_SIM_TRACE=all: every trace line to stderr as it happens, and etcd's segment records after
  // each restore and at the end (not part of the trace hash); with WAL_SIM_LOG, sort by time.
  const traceAll = process.env['WAL_SIM_TRACE'] === 'all';
  const trace = (line: string): void => {
    const text = `${loop.nowMs.toFixed(3)} ${line}`;
    hash.update(text).update('\n');
    lines.push(text);
    if (traceAll) process.stderr.write(`${text}\n`);
    if (lines.length > o.traceLinesMax) lines.shift();
  };
  const network = new SimNetwork(loop, random.fork());
  const etcd = new SimEtcd(loop, random.fork());
  const showRecords = (): void => {
    if (!traceAll) return;
    const records = etcd.segmentRecords(SIM_LOG).map((r) => `${r.meta.segmentId}:${r.meta.state}:${r.meta.firstIndex}..${r.meta.lastIndex}:e${r.meta.writerEpoch}:[${r.meta.ensemble.join(',')}]@${r.modRevision}`);
    process.stderr.write(`${loop.nowMs.toFixed(3)} etcd records ${records.join(' ')}\n`);
  };
  // With node loss, 3 or 4 nodes: with 4 the coordinator has a node to re-replicate to.
  const nodeCount = o.loseNodes && options.nodes === undefined ? 3 + random.fork().int(2) : o.nodes;
  const cluster = new SimCluster(loop, network, etcd, random.fork(), nodeCount, o.segmentBytesMax, trace);
  cluster.pipeline = options.pipeline === true;
  const model = new Model(() => loop.nowMs);
  cluster.violate = (invariant, detail) => model.violate(invariant, detail);
  const faults: Record<string, number> = {};
  const countFault = (kind: string): void => {
    faults[kind] = (faults[kind] ?? 0) + 1;
  };
  let faulty = true;
  const damagedAt = new Map<number, number>();

  etcd.seed(etcd.keys.logMeta(SIM_LOG), cluster.logMeta);
  for (const node of cluster.nodes) node.start();
  const standalone = startStoreWorkload(loop, random.fork(), trace, countFault, () => !faulty);

  // --- clients ----------------------------------------------------------------------------
  const workload = random.fork();
  let sequence = 0;
  /** One attempt of a batch: true once acknowledged. With a session, a retry sends the same id and sequence. */
  const appendOnce = (payloads: readonly string[], session: SessionRef | undefined): Promise<boolean> => {
    // A client calls any node; a node that is not the writer forwards to the writer (WalService).
    const live = cluster.nodes.filter((n) => n.alive);
    const target = live.length > 0 ? workload.pick(live) : undefined;
    return new Promise<boolean>((resolve) => {
      let done = false;
      const finish = (acked: boolean, what: () => void): void => {
        if (done) return;
        done = true;
        what();
        resolve(acked);
      };
      loop.schedule(CLIENT_DEADLINE_MS, () => finish(false, () => (model.appendsFailed += 1)));
      const log = target?.runtime?.log;
      if (!log) {
        loop.schedule(5 + workload.next() * 20, () => finish(false, () => (model.appendsFailed += 1)));
        return;
      }
      log.append(payloads.map((p) => Buffer.from(p)), false, CLIENT_DEADLINE_MS, session).then(
        (result) =>
          finish(true, () => {
            trace(`ack ${result.firstIndex}..${result.lastIndex} ${payloads.map((p) => p.split('-', 2).join('-')).join(',')}${session ? ` session ${session.sessionId.slice(0, 6)}/${session.sequence}` : ''}`);
            model.ack(result.firstIndex, result.lastIndex, payloads);
          }),
        () => finish(false, () => (model.appendsFailed += 1)),
      );
    });
  };
  // Each client's loop ends after the batch it has going when the faulty phase ends, retries
  // included: the final append waits for them all (below), so that it is the last append and
  // its index bounds everything acknowledged (the final check reads open segments up to it).
  let clientsRunning = 0;
  for (let client = 0; client < o.clients; client += 1) {
    // Odd clients append through a session (exactly-once appends): a batch that fails is retried
    // with the same session id and sequence, on any live node, up to SESSION_ATTEMPTS_MAX times;
    // the model checks that no session batch is in the log twice, nor in part.
    const sessionId = client % 2 === 1 ? Array.from({ length: 32 }, () => workload.int(16).toString(16)).join('') : undefined;
    let batches = 0;
    const run = async (): Promise<void> => {
      while (faulty) {
        const count = 1 + workload.int(3);
        const payloads = Array.from({ length: count }, () => `c${client}-${(sequence += 1)}-${'x'.repeat(workload.int(200))}`);
        const session = sessionId === undefined ? undefined : { sessionId, sequence: (batches += 1) };
        if (session) model.sessionBatch(`${sessionId}/${session.sequence}`, payloads);
        for (let attempt = 1; attempt <= (session ? SESSION_ATTEMPTS_MAX : 1); attempt += 1) {
          if (await appendOnce(payloads, session)) break;
          if (session) await loop.sleep(workload.next() * 50);
        }
        await loop.sleep(workload.next() * 10);
      }
    };
    clientsRunning += 1;
    void run().finally(() => (clientsRunning -= 1));
  }

  // --- readers: the read path a node serves, up to the committed index it knows ----------
  // A read is a Read call to a node: the node's LogReader decides what it may serve.
  const readOnce = async (): Promise<void> => {
    const live = cluster.nodes.filter((n) => n.alive);
    if (live.length === 0) return;
    const node = workload.pick(live);
    const runtime = node.runtime;
    const reader = runtime?.log;
    if (!runtime || !reader) return;
    try {
      const committed = await reader.knownCommitted(0);
      if (committed < 1) return;
      const from = 1 + workload.int(committed);
      const to = workload.chance(0.5) ? 0 : Math.min(committed, from + workload.int(8));
      for await (const batch of reader.read(from, to, 16)) {
        if (!runtime.process.alive) return;
        for (const entry of batch) {
          if (entry.lost) continue;
          const payload = entry.payload.toString();
          trace(`read ${node.id} ${entry.index} ${payload.split('-', 2).join('-')}`);
          model.read(entry.index, payload, node.id);
        }
      }
    } catch {
      model.readsFailed += 1;
    }
  };
  for (let reader = 0; reader < o.readers; reader += 1) {
    const run = async (): Promise<void> => {
      while (faulty) {
        await readOnce();
        await loop.sleep(1 + workload.next() * 15);
      }
    };
    void run();
  }

  // --- faults -----------------------------------------------------------------------------
  const chaos = random.fork();
  const ids = cluster.nodes.map((n) => n.id);
  const injectFault = (): void => {
    if (o.etcdRestore && chaos.chance(0.05)) return restoreEtcd();
    const roll = chaos.int(120);
    const down = cluster.nodes.filter((n) => !n.alive && !n.lost);
    if (roll < 27) {
      // Crash a node (at most R - AQ at a time besides a node lost for good), restart it later.
      if (down.length >= 1) return;
      const node = chaos.pick(cluster.nodes.filter((n) => !n.lost));
      const mode: CrashMode = chaos.pick(CRASH_MODES);
      countFault(`crash:${mode}`);
      trace(`crash ${node.id} ${mode}`);
      node.crash(mode);
      loop.schedule(50 + chaos.next() * 3_000, () => {
        if (node.alive || node.lost) return;
        trace(`restart ${node.id}`);
        node.start();
      });
    } else if (roll < 45) {
      writerChange();
    } else if (roll < 55) {
      const node = chaos.pick(ids);
      countFault('partition');
      trace(`isolate ${node}`);
      network.isolate(node, ids);
      loop.schedule(100 + chaos.next() * 3_000, () => {
        trace(`heal partitions`);
        network.healAll();
      });
    } else if (roll < 62) {
      const from = chaos.pick(ids);
      const to = chaos.pick(ids.filter((id) => id !== from));
      countFault('one-way-cut');
      trace(`cut ${from}>${to}`);
      network.cut(from, to);
      loop.schedule(100 + chaos.next() * 3_000, () => network.healAll());
    } else if (roll < 71) {
      countFault('lossy-network');
      network.faults = { ...network.faults, dropProbability: chaos.next() * 0.2, delayMsMin: 0.05, delayMsMax: 1 + chaos.next() * 30, slowProbability: 0.1, slowMsMax: 6_000 };
      trace(`network lossy drop=${network.faults.dropProbability.toFixed(3)}`);
      loop.schedule(100 + chaos.next() * 2_000, () => network.healAll());
    } else if (roll < 78) {
      if (chaos.chance(0.35)) {
        // The space quota alarm: nothing new can be written (campaigns, segment records, leases)
        // while keepalives pass, so no lease runs out to move the election (issue 9 #4).
        countFault('etcd-nospace');
        trace('etcd NOSPACE');
        etcd.noSpace = true;
        loop.schedule(100 + chaos.next() * 3_000, () => {
          trace('etcd NOSPACE cleared');
          etcd.noSpace = false;
        });
        return;
      }
      countFault('etcd-outage');
      trace('etcd down');
      etcd.down = true;
      loop.schedule(100 + chaos.next() * 2_000, () => {
        trace('etcd up');
        etcd.down = false;
      });
    } else if (roll < 83) {
      // One node's disk turns slow: fdatasync takes up to a second for a while.
      const node = chaos.pick(cluster.nodes);
      countFault('slow-disk');
      trace(`slow disk ${node.id}`);
      node.fs.latency = { opMsMax: 2, syncMsMin: 5, syncMsMax: 50 + chaos.next() * 1_000 };
      loop.schedule(100 + chaos.next() * 3_000, () => (node.fs.latency = DEFAULT_DISK_LATENCY));
    } else if (roll < 97) {
      // Bit rot or a lost write in a sealed segment file on one node: never on a segment damaged
      // recently anywhere (one intact copy of every entry must remain: losing every copy is out
      // of scope), at most once per 15 s per segment.
      const node = chaos.pick(cluster.nodes);
      const sealed = damageableSegments(cluster);
      const files = node.sealedFiles(sealed).filter((f) => loop.nowMs - (damagedAt.get(f.segmentId) ?? -Infinity) > DAMAGE_SPACING_MS);
      if (files.length === 0) return;
      const file = chaos.pick(files);
      const offset = HEADER_BYTES + chaos.int(Math.max(1, file.byteLength - HEADER_BYTES));
      damagedAt.set(file.segmentId, loop.nowMs);
      if (chaos.chance(0.5)) {
        countFault('bit-flip');
        node.fs.flipBit(file.path, offset, chaos.int(8));
        trace(`bit flip ${node.id} segment ${file.segmentId} at ${offset}`);
      } else {
        countFault('zeroed-sector');
        node.fs.zeroSector(file.path, offset);
        trace(`zeroed sector ${node.id} segment ${file.segmentId} at ${offset}`);
      }
    } else if (roll < 100) {
      countFault('etcd-lost-answers');
      etcd.lostAnswerProbability = 0.3;
      loop.schedule(100 + chaos.next() * 2_000, () => (etcd.lostAnswerProbability = 0));
    } else if (roll < 104) {
      // Requests delivered twice, the copy late (after newer ones): duplication and reordering.
      countFault('duplicating-network');
      network.faults = { ...network.faults, duplicateProbability: 0.05 + chaos.next() * 0.3, duplicateMsMax: chaos.next() * 2_000 };
      trace(`network duplicates p=${network.faults.duplicateProbability.toFixed(3)}`);
      loop.schedule(100 + chaos.next() * 2_000, () => network.healAll());
    } else {
      const node = chaos.pick(cluster.nodes);
      injectDiskFault(DISK_FAULT_KINDS[(roll - 104) % DISK_FAULT_KINDS.length] as DiskFaultKind, diskFaultTarget(node, cluster, damagedAt, loop), { loop, random: chaos, trace, countFault });
    }
  };
  // The election moves by the means it has in production: the writer resigns, a node's process
  // pauses (its lease expires while it still believes it leads), a node is cut from etcd.
  const writerChange = (): void => {
    const live = cluster.nodes.filter((n) => n.alive);
    if (live.length === 0) return;
    const writer = cluster.writerNode();
    const kind = chaos.int(3);
    const node = writer && chaos.chance(0.7) ? writer : chaos.pick(live);
    const forMs = 500 + chaos.next() * 8_000;
    if (kind === 0) {
      const election = node.runtime?.election;
      if (!election) return;
      countFault('resign');
      trace(`resign ${node.id}`);
      void election.resign();
      loop.schedule(forMs, () => {
        if (node.runtime?.election === election) election.rejoin();
      });
    } else if (kind === 1) {
      countFault('pause');
      trace(`pause ${node.id} ${forMs.toFixed(0)} ms`);
      node.pause(forMs);
    } else {
      countFault('etcd-cut');
      trace(`cut ${node.id} from etcd ${forMs.toFixed(0)} ms`);
      etcd.unreachable.add(node.id);
      loop.schedule(forMs, () => etcd.unreachable.delete(node.id));
    }
  };
  // etcd restored from a backup taken a while ago, or wiped (issue 8 #9).
  const snapshots: Array<{ atMs: number; snapshot: SimEtcdSnapshot }> = [{ atMs: 0, snapshot: etcd.takeSnapshot() }];
  const restoreEtcd = (): void => {
    const wipe = chaos.chance(0.2);
    const chosen = wipe ? undefined : chaos.pick(snapshots);
    countFault(wipe ? 'etcd-wiped' : 'etcd-restored');
    trace(wipe ? 'etcd wiped' : `etcd restored to its snapshot of ${chosen?.atMs.toFixed(0)} ms (revision ${chosen?.snapshot.revision})`);
    etcd.restore(chosen?.snapshot ?? EMPTY_ETCD);
    // An operator restoring etcd puts the log's metadata back if it was lost.
    if (etcd.peek(etcd.keys.logMeta(SIM_LOG)) === undefined) etcd.seed(etcd.keys.logMeta(SIM_LOG), cluster.logMeta);
    showRecords();
  };
  const snapshotLoop = (): void => {
    loop.schedule(1_000 + chaos.next() * 4_000, () => {
      snapshots.push({ atMs: loop.nowMs, snapshot: etcd.takeSnapshot() });
      if (snapshots.length > 4) snapshots.shift();
      if (faulty) snapshotLoop();
    });
  };
  if (o.etcdRestore) snapshotLoop();
  const scheduleFaults = (): void => {
    loop.schedule(chaos.next() * 2 * o.faultEveryMs, () => {
      if (!faulty) return;
      injectFault();
      scheduleFaults();
    });
  };
  scheduleFaults();
  // A node lost for good: it crashes at some point of the faulty phase and never comes back,
  // whatever else is down then (its synced data is gone with it). Its loss is damage to every
  // segment it holds: for DAMAGE_SPACING_MS before it, no other copy of those is damaged (that
  // could lose every copy, out of scope), and none is damaged within DAMAGE_SPACING_MS after.
  if (o.loseNodes) {
    const node = chaos.pick(cluster.nodes);
    const loseAtMs = o.durationMs * (0.2 + 0.6 * chaos.next());
    loop.schedule(Math.max(0, loseAtMs - DAMAGE_SPACING_MS), () => (cluster.losing = node.id));
    loop.schedule(loseAtMs, () => {
      countFault('node-lost');
      trace(`lose ${node.id} for good`);
      for (const r of etcd.segmentRecords(SIM_LOG)) if (r.meta.ensemble.includes(node.id)) damagedAt.set(r.meta.segmentId, loop.nowMs);
      cluster.losing = undefined;
      node.lose();
    });
  }

  // Online checks after every step are the model's (ack and read); run the faulty phase.
  const anyViolation = (): boolean => model.violations.length > 0 || standalone.model.violations.length > 0;
  await loop.run(o.durationMs, anyViolation);

  // --- quiescence -------------------------------------------------------------------------
  faulty = false;
  network.healAll();
  for (const node of cluster.nodes) {
    node.fs.latency = DEFAULT_DISK_LATENCY;
    node.fs.faults = HEALTHY_DISK;
  }
  etcd.down = false;
  etcd.noSpace = false;
  etcd.unreachable.clear();
  etcd.lostAnswerProbability = 0;
  for (const node of cluster.nodes) if (!node.alive && !node.lost) node.start();
  trace('quiesce');
  await standalone.finish();
  await loop.run(loop.nowMs + 6_000, () => model.violations.length > 0);
  // A session batch's retries may go on past that (a writer not ready yet: up to
  // SESSION_ATTEMPTS_MAX deadlines): one acknowledged after the final append would lie past the
  // index the final check reads an open segment to (seed 306 with --lose-nodes, 1088..1090
  // acknowledged after the final append at 1087). Each attempt ends by its deadline.
  const clientsDeadline = loop.nowMs + SESSION_ATTEMPTS_MAX * (CLIENT_DEADLINE_MS + 100);
  while (clientsRunning > 0 && loop.nowMs < clientsDeadline && model.violations.length === 0) {
    await loop.run(Math.min(clientsDeadline, loop.nowMs + 500), () => clientsRunning === 0 || model.violations.length > 0);
  }
  if (clientsRunning > 0) trace(`final append: ${clientsRunning} clients still appending`);
  const deadline = loop.nowMs + QUIESCE_MS_MAX;
  let finalAppend: { firstIndex: number; lastIndex: number } | undefined;
  while (loop.nowMs < deadline && model.violations.length === 0 && !finalAppend) {
    await loop.run(loop.nowMs + 500);
    const log = chaos.pick(cluster.nodes).runtime?.log;
    if (!log) continue;
    let settled = false;
    void log.append([Buffer.from('final')], false, 2_000).then((r) => (finalAppend = r), () => undefined).finally(() => (settled = true));
    // An append that does not answer by its deadline is not waited for here (its promise may be
    // stuck behind a writer that never gets ready; the client's own deadline ends its call).
    await loop.run(loop.nowMs + 3_000, () => settled);
    if (!settled) trace('final append: no answer within its deadline');
  }
  if (!finalAppend) {
    // What a reader of the trace needs first: who is registered, who campaigns, which runtimes run.
    const under = (prefix: string): string => etcd.keysUnder(prefix).map((k) => k.slice(prefix.length)).join(',');
    trace(`members ${under(etcd.keys.membersPrefix())}; writer candidates ${under(etcd.keys.writerPrefix(SIM_LOG))}; nodes ${cluster.nodes.map((n) => `${n.id}:${n.lost ? 'lost' : !n.alive ? 'down' : n.runtime?.log ? 'running' : 'no-runtime'}`).join(',')}`);
    model.violate('log-accepts-appends', `no append succeeded within ${QUIESCE_MS_MAX} ms after every fault was healed`);
  }
  else model.ack(finalAppend.firstIndex, finalAppend.lastIndex, ['final']);
  // Let every node catch up on the sealed segments (its log runtime does, every 500 ms), its
  // scrubber find damaged copies (every 2 s) and its repair service rebuild them, and the
  // coordinator retry the repairs nodes gave up on.
  // The coordinator replaces a lost node in the ensembles it was in once it has been gone
  // goneAfterMs (a new coordinator starts its own clocks).
  await loop.run(loop.nowMs + SETTLE_MS + (o.loseNodes ? cluster.goneAfterMs : 0));

  if (finalAppend && model.violations.length === 0) checkCampaigns(cluster, model);
  if (finalAppend && model.violations.length === 0) await checkFinal(cluster, model, finalAppend.lastIndex);
  const violations = [...standalone.model.violations.map((v) => ({ ...v, invariant: `store:${v.invariant}` })), ...model.violations];
  const operations = [model, standalone.model].reduce((sum, m) => sum + m.appendsAcked + m.appendsFailed + m.readsServed + m.readsFailed, 0);
  showRecords();
  trace(`end acked=${model.appendsAcked} reads=${model.readsServed} violations=${violations.length}`);
  return {
    seed: o.seed,
    ok: violations.length === 0,
    operations,
    faults,
    violations,
    traceHash: hash.digest('hex').slice(0, 16),
    steps: loop.steps,
    virtualMs: Math.round(loop.nowMs),
    trace: lines,
  };
}

/**
 * Sealed segments (etcd SEALED) that bit rot may hit: those with at least two members not lost
 * for good, and none about to be (damage to the last copy of an entry is out of scope).
 */
function damageableSegments(cluster: SimCluster): Set<number> {
  const kept = (node: string): boolean => !cluster.node(node).lost;
  const damageable = (ensemble: readonly string[]): boolean => ensemble.filter(kept).length >= 2 && (cluster.losing === undefined || !ensemble.includes(cluster.losing));
  return new Set(cluster.etcd.segmentRecords(SIM_LOG).filter((r) => r.meta.state === 'SEALED' && damageable(r.meta.ensemble)).map((r) => r.meta.segmentId));
}

/**
 * Where silent disk faults may hit a node: its catalog (always rebuildable from the segment
 * files) and its copies of sealed segments (etcd SEALED) not damaged anywhere within
 * DAMAGE_SPACING_MS, as bit rot. Never the open segment: a lost write there takes an acknowledged
 * entry from one member of its ack quorum, and with another member down that is every copy.
 */
function diskFaultTarget(node: SimNode, cluster: SimCluster, damagedAt: Map<number, number>, loop: SimLoop): DiskFaultTarget {
  const segmentOf = (path: string): number | undefined => {
    const match = /\/segments\/(\d{20})\.wal(\.tmp)?$/.exec(path);
    return match?.[1] === undefined ? undefined : Number(match[1]);
  };
  const sealedIds = (): Set<number> => damageableSegments(cluster);
  const spaced = (segmentId: number): boolean => loop.nowMs - (damagedAt.get(segmentId) ?? -Infinity) > DAMAGE_SPACING_MS;
  return {
    label: node.id,
    fs: node.fs,
    silentWritePaths: (path) => {
      if (path.endsWith('/CATALOG') || path.endsWith('/CATALOG.tmp')) return true;
      const segmentId = segmentOf(path);
      if (segmentId === undefined || !spaced(segmentId) || !sealedIds().has(segmentId)) return false;
      const local = node.runtime?.store?.segmentRecord(segmentId);
      return local === undefined || local.state === 'sealed';
    },
    latentErrorFiles: () => node.sealedFiles(sealedIds()).filter((f) => spaced(f.segmentId)),
    damaged: (path) => {
      const segmentId = segmentOf(path);
      if (segmentId !== undefined) damagedAt.set(segmentId, loop.nowMs);
    },
    // A store that failed a write it could not roll back refuses writes until reopened; the
    // node's supervisor restarts the process (no power loss: unsynced writes stay in the cache).
    healed: () => {
      if (!node.runtime?.store?.failed) return;
      cluster.trace(`restart ${node.id}: its store failed`);
      node.crash('keep-all');
      node.start();
    },
  };
}

/**
 * Issue 9 #4: once faults heal, every live node holds a candidacy for the log's writer and for
 * the coordinator role (a campaign that failed is retried), so losing any one node never leaves
 * a role without a candidate.
 */
function checkCampaigns(cluster: SimCluster, model: Model): void {
  const { etcd } = cluster;
  for (const node of cluster.nodes) {
    if (!node.alive) continue;
    for (const [role, prefix] of [['writer', etcd.keys.writerPrefix(SIM_LOG)], ['coordinator', etcd.keys.coordinatorPrefix()]] as const) {
      if (!etcd.keysUnder(prefix).some((key) => key.slice(prefix.length).startsWith(`${node.id}-`))) {
        model.violate('live-nodes-campaign', `${node.id} is live and holds no candidacy for the ${role} role after every fault was healed`);
      }
    }
  }
}

/**
 * Reads the whole log back from the segments' members and checks it against the model; every
 * sealed segment must have as many live intact copies as the log's replication factor allows
 * with the nodes still there (replication-restored: the coordinator re-replicates away from a
 * node lost for good and completes ensembles created short while a node was down).
 */
async function checkFinal(cluster: SimCluster, model: Model, committedIndex: number): Promise<void> {
  const records = cluster.etcd.segmentRecords(SIM_LOG);
  // The records chain: segment n + 1 starts right after segment n ends (an index in two segments
  // was committed twice; seed 719 before the fix re-derived an unacknowledged tail beside it).
  const chain = records.map((r) => r.meta).sort((x, y) => x.segmentId - y.segmentId);
  for (let i = 1; i < chain.length; i += 1) {
    const before = chain[i - 1] as SegmentMeta;
    const after = chain[i] as SegmentMeta;
    if (before.state === 'SEALED' && after.segmentId === before.segmentId + 1 && after.firstIndex !== before.lastIndex + 1) {
      model.violate('segments-chain', `segment ${after.segmentId} starts at ${after.firstIndex}, segment ${before.segmentId} ends at ${before.lastIndex}`);
    }
  }
  const finalLog = new Map<number, string>();
  const intactCopies = new Map<number, number>();
  const pending: Array<Promise<void>> = [];
  for (const { meta } of records) {
    if (meta.state === 'SEALED' && meta.lastIndex < meta.firstIndex) continue;
    for (const member of meta.ensemble) {
      const runtime = cluster.node(member).runtime;
      if (!runtime) continue;
      pending.push(
        (async () => {
          const store = await runtime.stores.store(SIM_LOG);
          const local = store.segmentRecord(meta.segmentId);
          if (meta.state === 'SEALED') {
            if (!local || local.state !== 'sealed') {
              model.violate('sealed-replicas-converge', `${member} does not hold segment ${meta.segmentId} sealed after catch-up (${local ? `open at ${local.lastIndex}` : 'absent'})`);
              return;
            }
            if (local.lastIndex !== meta.lastIndex) {
              model.violate('sealed-replicas-converge', `${member} sealed segment ${meta.segmentId} at ${local.lastIndex}, etcd says ${meta.lastIndex}`);
              return;
            }
          }
          const last = meta.state === 'SEALED' ? meta.lastIndex : Math.min(committedIndex, local?.lastIndex ?? 0);
          for (let index = meta.firstIndex; index <= last; index += 1) {
            try {
              const { frame } = await store.readFrame(index);
              const payload = format.entryPayloadOf(frame).toString();
              const seen = finalLog.get(index);
              if (seen !== undefined && seen !== payload) model.violate('sealed-replicas-converge', `members disagree at index ${index}: ${seen} and ${payload} (${member})`);
              finalLog.set(index, payload);
            } catch (error) {
              model.violate('sealed-replicas-converge', `${member} cannot serve index ${index} of segment ${meta.segmentId}: ${describe(error)}`);
              return;
            }
          }
          intactCopies.set(meta.segmentId, (intactCopies.get(meta.segmentId) ?? 0) + 1);
        })(),
      );
    }
  }
  while (pending.length > 0) {
    const all = Promise.all(pending.splice(0));
    let finished = false;
    void all.then(
      () => (finished = true),
      (error: unknown) => {
        finished = true;
        model.violate('nodes-reopen-their-logs', `a member cannot open its log after every fault was healed: ${describe(error)}`);
      },
    );
    while (!finished) await cluster.loop.run(cluster.loop.nowMs + 1_000, () => finished);
  }
  model.checkFinal(finalLog, committedIndex);
  const nodesLeft = cluster.nodes.filter((n) => !n.lost).length;
  const copiesNeeded = Math.min(cluster.logMeta.replicationFactor, nodesLeft);
  for (const { meta } of records) {
    if (meta.state !== 'SEALED' || meta.lastIndex < meta.firstIndex) continue;
    const copies = intactCopies.get(meta.segmentId) ?? 0;
    if (copies < copiesNeeded) model.violate('replication-restored', `segment ${meta.segmentId} has ${copies} live intact copies after every fault was healed (ensemble ${meta.ensemble.join(',')}), ${copiesNeeded} needed`);
  }
  // Every node serves the whole log through its read path once every fault is healed.
  const readBack = Promise.all(
    cluster.nodes.map(async (node) => {
      const reader = node.runtime?.log;
      if (!reader) return;
      let next = 1;
      try {
        for await (const batch of reader.read(1, committedIndex, 256)) {
          for (const entry of batch) {
            const held = finalLog.get(entry.index);
            if (!entry.lost && held !== entry.payload.toString()) model.violate('reads-return-acknowledged-entries', `${node.id} read ${entry.index} after quiescence as something other than the log holds`);
            next = entry.index + 1;
          }
        }
      } catch (error) {
        model.violate('log-readable-after-faults', `${node.id} cannot read the log from index ${next} after every fault was healed: ${describe(error)}`);
      }
    }),
  );
  let read = false;
  void readBack.finally(() => (read = true));
  while (!read) await cluster.loop.run(cluster.loop.nowMs + 1_000, () => read);
}
