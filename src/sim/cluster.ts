// The simulated cluster: N nodes, each a process (killable, pausable, restartable) running the
// real node code for one log on its own simulated disk: LogStores, PeerHandlers and LocalPeer,
// its etcd session (NodeSession: lease, keepalive, registration), the writer Election, and the
// LogRuntime (writer start-up and restart, catch-up, append with forwarding, the read path), all
// connected by the simulated network and sharing the simulated etcd through the cluster layer's
// metadata seam. Writer changes happen as in production: a campaign, a lease that expires (a
// crashed, paused or cut-off node), a resignation.
import pino, { type Logger } from 'pino';
import { type Clock, type Disk, type SeededRandom } from '../io/index.js';
import { RecoveryMetrics } from '../recovery/index.js';
import { type WalStore, format } from '../wal/index.js';
import { type ClusterMetadata, Coordinator, Election, EtcdEpochHolders, EtcdSegmentDirectory, InThreadScrubChecker, LocalPeer, LogRuntime, NodeSession, RepairService, Scrubber, replicaSources, etcdElectionStore, etcdRepairReportExists, etcdRepairReporter, etcdRepairReports, parseMemberInfo } from '../cluster/index.js';
import { type LogMeta, LogStores, NotWriterError, PeerHandlers, type PeerResolver } from '../replication/index.js';
import type { SimEtcd, SimLease } from './directory.js';
import { type CrashMode, SimFileSystem } from './disk.js';
import type { SimLoop, SimProcess } from './loop.js';
import { RPC_DEADLINE_MS, STATUS_DEADLINE_EXCEEDED, STATUS_UNAVAILABLE, SimServiceError, type SimNetwork } from './network.js';

export const SIM_LOG = 'sim';
const DATA_DIR = '/data';

/** The last index of each segment a store holds entries in (its records hold synced state only). */
function lastIndexes(store: WalStore): Map<number, number> {
  return new Map(store.segmentRecords().filter((r) => r.lastIndex >= r.firstIndex).map((r) => [r.segmentId, r.lastIndex]));
}
/** The nodes' lease TTL (production's default --lease-ttl-seconds is 3 as well). */
export const SIM_LEASE_TTL_SECONDS = 3;
const CATCH_UP_INTERVAL_MS = 500;
/** A FetchSegment stream's deadline (PeerClient.fetchSegment's default) and how often the caller notices its source died. */
const FETCH_DEADLINE_MS = 60_000;
const FETCH_WATCH_MS = 50;
/** Scrub passes every 2 s (production's default is 30 s: a simulated run lasts a minute or two). */
export const SIM_SCRUB_INTERVAL_MS = 2_000;
const SCRUB_BYTES_PER_SECOND_MAX = 16 * 1024 * 1024;
/** The coordinator's round interval (production's default). */
const COORDINATOR_INTERVAL_MS = 2_000;
/**
 * A member missing this long is replaced in the ensembles of the sealed segments it held
 * (production's default is 30 s). Above the longest pause or etcd cut the faults inject (8.5 s),
 * so that only a node lost for good (or down through quiescence) is replaced.
 */
const GONE_AFTER_MS = 10_000;
/** Retries of a repair the coordinator makes before it abandons it (node.ts). */
const REPAIR_ATTEMPTS_MAX = 3;

/** Metrics the log runtime sets: counted nowhere (the checker reads the model, not metrics). */
const NO_METRICS = { appendLatency: { observe: () => undefined }, appendedEntries: { inc: () => undefined }, segmentsBehind: { set: () => undefined }, replicationLag: { set: () => undefined } };
const NO_SCRUB_METRICS = { scrubBytes: { inc: () => undefined }, scrubPassSeconds: { set: () => undefined } };
const NO_COORDINATOR_METRICS = { underReplicatedSegments: { set: () => undefined } };

export interface SimNodeRuntime {
  readonly process: SimProcess;
  readonly disk: Disk;
  readonly clock: Clock;
  readonly stores: LogStores;
  readonly handlers: PeerHandlers;
  readonly peers: PeerResolver;
  readonly directory: EtcdSegmentDirectory;
  readonly session: NodeSession<SimLease>;
  /** The log's writer election, once the log runtime created it. */
  election: Election<SimLease> | undefined;
  /** The node's runtime of the log, once its store opened. */
  log: LogRuntime | undefined;
  /** The log's store once open. */
  store?: WalStore;
  /** The node's repairs of its sealed copies from replicas (src/cluster/repairs.ts). */
  readonly repairs: RepairService;
  /** The node's scrubber and its coordinator candidacy, once registered (as node.ts starts them). */
  scrubber?: Scrubber;
  coordinator?: Coordinator;
}

export class SimNode {
  readonly fs: SimFileSystem;
  runtime: SimNodeRuntime | undefined;
  private incarnation = 0;
  crashes = 0;
  /** Lost for good (--lose-nodes): crashed, never restarted. */
  lost = false;
  /** Per segment, the last index the store said was durable when the node crashed. */
  private durableAtCrash: Map<number, number> | undefined;

  constructor(readonly id: string, private readonly sim: SimCluster, private readonly random: SeededRandom) {
    this.fs = new SimFileSystem(id, random.fork());
  }

  /** Sealed segment files this node holds (etcd SEALED, sealed here): candidates for bit rot. */
  sealedFiles(sealedIds: ReadonlySet<number>): Array<{ segmentId: number; path: string; byteLength: number }> {
    const store = this.runtime?.store;
    if (!store) return [];
    const files: Array<{ segmentId: number; path: string; byteLength: number }> = [];
    for (const record of store.segmentRecords()) {
      if (record.state !== 'sealed' || !sealedIds.has(record.segmentId)) continue;
      const path = `${DATA_DIR}/logs/${SIM_LOG}/segments/${format.segmentFileName(record.segmentId)}`;
      const bytes = this.fs.bytesOf(path);
      if (bytes) files.push({ segmentId: record.segmentId, path, byteLength: bytes.byteLength });
    }
    return files;
  }

  get alive(): boolean {
    return this.runtime?.process.alive === true;
  }

  /** Whether this node's log runtime has a writer that is ready and still holds the election. */
  isWriter(): boolean {
    const log = this.runtime?.log;
    return log !== undefined && log.writerStatus().writer === this.id && this.runtime?.election?.isLeader() === true;
  }

  start(): SimNodeRuntime {
    const { sim } = this;
    if (this.lost) throw new Error(`${this.id} is lost for good and never starts again`);
    const process: SimProcess = { name: `${this.id}#${(this.incarnation += 1)}`, incarnation: this.incarnation, alive: true };
    const disk = this.fs.diskFor(sim.loop, process);
    const clock = sim.loop.clockFor(process);
    const random = this.random.fork();
    const logger = sim.logger.child({ node: this.id });
    // The one builder of this node's replica sources, for its stores (repair at open) and its
    // repair service alike, as node.ts wires them.
    const replicaSource = replicaSources({
      self: this.id,
      peers: (node) => peers(node),
      directory: () => directory,
      fetchFile: (node, _log, segmentId, path) => sim.fetchFile(runtime, node, segmentId, path),
      logs: { logDir: (log) => stores.logDir(log) },
      disk,
      logger,
      entryBytesMax: sim.logMeta.segmentBytesMax,
    });
    // What open kept, taken before any call can use the store: a writer's Seal may cut unacknowledged
    // entries a moment later (the protocol's right), which is not open losing durable ones.
    let keptAtOpen: ReadonlyMap<number, number> | undefined;
    const stores = new LogStores({
      dataDir: DATA_DIR,
      backupRetentionCount: 0,
      entryBytesMax: sim.logMeta.segmentBytesMax,
      logger,
      metrics: sim.metrics,
      disk,
      clock,
      sourcesFor: (log) => [replicaSource(log)],
      onOpened: (_log, store) => (keptAtOpen = lastIndexes(store)),
    });
    const meta = sim.etcd.metadataFor(this.id, process);
    // Writer calls from other nodes are checked against the epoch's holder in (simulated) etcd.
    const handlers = new PeerHandlers(stores, logger, { epochHolders: new EtcdEpochHolders(() => meta, { monotonicMs: () => clock.monotonicMs() }) });
    // This node's own store is called through LocalPeer (deadlines, failing-store health), as in node.ts.
    const remote = sim.network.resolverFor(this.id, process, (node) => sim.isLive(node));
    const own = sim.network.resolverFor(this.id, process, () => true)(this.id);
    if (!own) throw new Error('the network resolves a node to itself');
    const localPeer = new LocalPeer(own, { deadlineMs: RPC_DEADLINE_MS, clock });
    const peers: PeerResolver = (node) => (node === this.id ? localPeer : remote(node));
    const directory = new EtcdSegmentDirectory(meta);
    const member = { id: this.id, address: this.id, startedMs: clock.nowMs(), version: 'sim', metricsUrl: '' };
    const session = new NodeSession(meta, member, SIM_LEASE_TTL_SECONDS, logger, clock, random.fork());
    const repairs = new RepairService({
      self: this.id,
      logs: stores,
      directory,
      replicaSource,
      strategy: 'partial',
      roundsMax: 3,
      logger,
      report: etcdRepairReporter(meta, this.id, clock),
      reportExists: etcdRepairReportExists(meta, this.id),
      // A member that served bytes failing verification is asked to check its copy (node.ts).
      checkPeer: (node, _log, segmentId) => void sim.network.repairOn(this.id, node, process, segmentId, 'request', RPC_DEADLINE_MS).catch(() => undefined),
      clock,
      random: random.fork(),
      disk,
    });
    const runtime: SimNodeRuntime = { process, disk, clock, stores, handlers, peers, directory, session, election: undefined, log: undefined, repairs };
    this.runtime = runtime;
    sim.network.attach(this.id, {
      process,
      handlers,
      committed: () => runtime.log?.committedIndex(),
      append: (payloads, deadlineMs, session) => (runtime.log ? runtime.log.append(payloads, true, deadlineMs, session) : Promise.reject(new NotWriterError(SIM_LOG, undefined))),
      repair: async (segmentId, source) => (await repairs.repairNow(SIM_LOG, segmentId, { strategy: 'partial', dryRun: false, source })).outcome === 'done',
    });
    // A node opens (and recovers) its logs, starts their runtimes, then registers (node.ts).
    const expected = this.durableAtCrash;
    this.durableAtCrash = undefined;
    void (async () => {
      // A log that failed to open (disk full, a read error) is tried again (node.ts watchLogs).
      let store: WalStore | undefined;
      while (!store) {
        try {
          store = await stores.store(SIM_LOG);
        } catch (error) {
          sim.trace(`${this.id} failed to open its log: ${describe(error)}`);
          await clock.sleep(CATCH_UP_INTERVAL_MS * 5);
        }
      }
      runtime.store = store;
      if (expected) this.checkDurable(keptAtOpen ?? lastIndexes(store), expected);
      const newLogRuntime = (): LogRuntime => new LogRuntime(
        {
          self: this.id,
          watchSegments: (name, onChange) => meta.watchPrefix(meta.keys.segmentsPrefix(name), () => onChange()),
          writerElection: (name, electionLogger) => {
            const election = new Election({ store: etcdElectionStore(meta), prefix: meta.keys.writerPrefix(name), floorKey: meta.keys.writerEpochFloor(name), session, logger: electionLogger, clock, random: random.fork() });
            election.onChange((state, isSelf) => sim.trace(`${this.id} sees writer ${state?.leader ?? 'none'} epoch ${state?.epoch ?? 0}${isSelf ? ' (self)' : ''}`));
            runtime.election = election;
            return election;
          },
          directory,
          localStore: localPeer,
          handlers,
          peers,
          liveMembers: () => sim.registeredMembers(),
          forwardAppend: (address, _log, payloads, deadlineMs, session) => sim.network.forwardAppend(this.id, address, process, payloads, deadlineMs, session),
          remoteCommitted: async (address) => (await sim.network.askCommitted(this.id, address, process)) ?? 0,
          addressOf: (node) => (sim.registeredMembers().includes(node) ? node : undefined),
          memberStartedMs: (node) => sim.memberStartedMs(node),
          metrics: NO_METRICS,
          logger,
          groupCommitBytesMax: 64 * 1024,
          entryBytesMax: 4096,
          // A recovery copies a tail in chunks of a few entries, as it does 4 MiB at a time with
          // real sizes: a member may then hold only the first part of a session batch.
          copyBytesMax: 600,
          // --pipeline: pipeline whenever a batch waits, 4 deep (production: 1 batch in flight; its
          // 64 KiB backlog gate is never reached by the simulator's appends).
          ...(sim.pipeline ? { pipelineBacklogBytesMin: 0, pipelineBatchesMax: 4 } : {}),
          catchUpIntervalMs: CATCH_UP_INTERVAL_MS,
          fetchFile: (node, _log, segmentId, path) => sim.fetchFile(runtime, node, segmentId, path),
          onDamage: (_log, segmentId, detail) => repairs.schedule(SIM_LOG, segmentId, 'read', detail),
          clock,
          random: random.fork(),
          disk,
        },
        sim.logMeta,
        store,
      );
      // A runtime that failed to start (etcd unreachable) is stopped and tried again later (node.ts).
      const startLog = async (): Promise<void> => {
        const log = newLogRuntime();
        try {
          await log.start();
          runtime.log = log;
        } catch (error) {
          await log.stop().catch(() => undefined);
          sim.trace(`${this.id} failed to start its log runtime: ${describe(error)}`);
          clock.setTimer(CATCH_UP_INTERVAL_MS * 5, () => void startLog());
        }
      };
      await startLog();
      await session.start();
      await this.startBackgroundDuties(runtime, meta, logger, random);
    })().catch((error: unknown) => sim.trace(`${this.id} failed to start: ${describe(error)}`));
    return runtime;
  }

  /** The scrubber and the coordinator candidacy, wired and started as node.ts does after registering. */
  private async startBackgroundDuties(runtime: SimNodeRuntime, meta: ClusterMetadata<SimLease>, logger: Logger, random: SeededRandom): Promise<void> {
    const { clock, process, stores, directory, repairs, session } = runtime;
    const scrubber = new Scrubber({
      self: this.id,
      logs: stores,
      directory,
      repairs,
      bytesPerSecondMax: SCRUB_BYTES_PER_SECOND_MAX,
      passIntervalMs: SIM_SCRUB_INTERVAL_MS,
      entryBytesMax: this.sim.logMeta.segmentBytesMax,
      metrics: NO_SCRUB_METRICS,
      logger,
      checker: new InThreadScrubChecker(runtime.disk),
      clock,
      random: random.fork(),
    });
    runtime.scrubber = scrubber;
    scrubber.start();
    const coordinatorLogger = logger.child({ role: 'coordinator' });
    const coordinator = new Coordinator({
      self: this.id,
      election: new Election({ store: etcdElectionStore(meta), prefix: meta.keys.coordinatorPrefix(), session, logger: coordinatorLogger, clock, random: random.fork() }),
      directory,
      reports: etcdRepairReports(meta),
      liveMembers: () => this.sim.registeredMembers(),
      repairOn: async (node, _log, segmentId, deadlineMs) =>
        node === this.id ? (await repairs.repairNow(SIM_LOG, segmentId, { strategy: 'partial', dryRun: false, source: 'coordinator' })).outcome === 'done' : this.sim.network.repairOn(this.id, node, process, segmentId, 'coordinator', deadlineMs),
      metrics: NO_COORDINATOR_METRICS,
      logger: coordinatorLogger,
      goneAfterMs: this.sim.goneAfterMs,
      intervalMs: COORDINATOR_INTERVAL_MS,
      maxRecoveryAttempts: REPAIR_ATTEMPTS_MAX,
      clock,
    });
    runtime.coordinator = coordinator;
    await coordinator.start();
  }

  /** kill -9, and the machine loses power with it: unsynced state goes per the crash mode. */
  crash(mode: CrashMode): void {
    const runtime = this.runtime;
    if (!runtime) return;
    // What the store has said is durable (its records hold synced state only) must survive.
    // (A segment with no entry yet is not data: one created just before the crash may be gone.)
    if (runtime.store) this.durableAtCrash = lastIndexes(runtime.store);
    runtime.process.alive = false;
    this.runtime = undefined;
    this.sim.network.attach(this.id, undefined);
    this.fs.crash(mode);
    this.crashes += 1;
  }

  /** The node is gone for good: its process dies and its disk with it. */
  lose(): void {
    this.lost = true;
    this.crash('lose-unsynced');
    this.durableAtCrash = undefined;
  }

  /** The process stops for ms (a long GC pause, SIGSTOP): nothing it does runs meanwhile. */
  pause(ms: number): void {
    const runtime = this.runtime;
    if (runtime) runtime.process.pausedUntilMs = this.sim.loop.nowMs + ms;
  }

  /** After a restart: every segment holds at least what was durable before the crash. */
  private checkDurable(kept: ReadonlyMap<number, number>, expected: ReadonlyMap<number, number>): void {
    for (const [segmentId, lastIndex] of expected) {
      const now = kept.get(segmentId);
      if (now === undefined || now < lastIndex) {
        this.sim.violate('durable-entries-survive-a-crash', `${this.id}: segment ${segmentId} held ${lastIndex} durably before the crash, ${now ?? 'nothing'} after it`);
      }
    }
  }
}

export class SimCluster {
  readonly nodes: SimNode[];
  readonly metrics = new RecoveryMetrics();
  readonly logger: Logger;
  readonly logMeta: LogMeta;
  readonly goneAfterMs = GONE_AFTER_MS;
  /** The node about to be lost for good (--lose-nodes): no other copy of its segments is damaged meanwhile. */
  losing: string | undefined;
  /** The writers pipeline batches 4 deep whenever one waits (sim --pipeline). */
  pipeline = false;
  /** Where violations found by the cluster itself go (the run's model). */
  violate: (invariant: string, detail: string) => void = () => undefined;

  constructor(
    readonly loop: SimLoop,
    readonly network: SimNetwork,
    readonly etcd: SimEtcd,
    random: SeededRandom,
    nodeCount: number,
    segmentBytesMax: number,
    readonly trace: (line: string) => void,
  ) {
    // WAL_SIM_LOG lines carry the virtual time (`vt`, ms), to line them up with the trace.
    this.logger = pino({ level: process.env['WAL_SIM_LOG'] ?? 'silent', base: null, timestamp: () => `,"vt":${loop.nowMs.toFixed(3)}` });
    this.logMeta = { log: SIM_LOG, replicationFactor: 3, ackQuorum: 2, segmentBytesMax, createdMs: 0 };
    this.nodes = Array.from({ length: nodeCount }, (_, i) => new SimNode(`n${i + 1}`, this, random.fork()));
  }

  isLive(node: string): boolean {
    return this.nodes.find((n) => n.id === node)?.alive === true;
  }

  /** The members registered in etcd now (what a node's member watch shows). */
  registeredMembers(): string[] {
    const prefix = this.etcd.keys.membersPrefix();
    return this.etcd.keysUnder(prefix).map((key) => key.slice(prefix.length));
  }

  memberStartedMs(node: string): number | undefined {
    const raw = this.etcd.peek(this.etcd.keys.member(node));
    return raw === undefined ? undefined : parseMemberInfo(raw).startedMs;
  }

  node(id: string): SimNode {
    const node = this.nodes.find((n) => n.id === id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }

  /** The node whose writer holds the election now, if any (as etcd and the node itself see it). */
  writerNode(): SimNode | undefined {
    return this.nodes.find((n) => n.isWriter());
  }

  /**
   * FetchSegment from node into path on the caller's disk. As over gRPC, the stream breaks
   * (UNAVAILABLE) when the source's process dies, and gives up at the call's deadline (60 s, the
   * client's): a copy from a node that crashed mid-stream used to wait forever, and with it the
   * catch-up of a log runtime starting, so the node never registered (seed 50023).
   */
  fetchFile(caller: SimNodeRuntime, node: string, segmentId: number, path: string): Promise<void> {
    const source = this.nodes.find((n) => n.id === node)?.runtime;
    if (!source) return Promise.reject(new Error(`${node} is unavailable`));
    const copy = this.copySegmentFile(caller, source, segmentId, path);
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        fn();
      };
      const startedMs = this.loop.nowMs;
      const watch = (): void => {
        if (settled) return;
        if (!source.process.alive) return settle(() => reject(new SimServiceError(STATUS_UNAVAILABLE, `${node} went away during FetchSegment`)));
        if (this.loop.nowMs - startedMs >= FETCH_DEADLINE_MS) return settle(() => reject(new SimServiceError(STATUS_DEADLINE_EXCEEDED, `FetchSegment from ${node}: deadline exceeded`)));
        this.loop.schedule(FETCH_WATCH_MS, watch, caller.process);
      };
      watch();
      copy.then(
        () => settle(resolve),
        (error: unknown) => settle(() => reject(error)),
      );
    });
  }

  private async copySegmentFile(caller: SimNodeRuntime, source: SimNodeRuntime, segmentId: number, path: string): Promise<void> {
    await this.loop.sleep(0.5, caller.process);
    const opened = await source.handlers.openSegmentFile(SIM_LOG, segmentId, 64 * 1024);
    if (!opened) throw new Error(`the source does not hold segment ${segmentId} sealed`);
    const file = await caller.disk.open(path, 'w');
    try {
      let offset = 0;
      for await (const chunk of opened.chunks) {
        await file.write(chunk, 0, chunk.byteLength, offset);
        offset += chunk.byteLength;
      }
    } finally {
      await file.close();
    }
  }
}

export function describe(error: unknown): string {
  const findings = (error as { findings?: ReadonlyArray<{ kind: string; segment?: number; detail?: string }> } | undefined)?.findings;
  const first = findings?.[0];
  if (error instanceof Error && first) return `${error.name}: ${first.kind} in segment ${first.segment ?? '?'}: ${first.detail ?? ''}`.slice(0, 300);
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 300);
  return String(error).slice(0, 300);
}
