// One wal-recovery node: its logs on local disk, a gRPC server (WalService, PeerService,
// AdminService, health, reflection), its etcd session, and a LogRuntime per log.
//
// This is the production edge of the io seams: the node picks node:fs (nodeDisk), the system
// clock and Math.random here and hands them to everything it builds; nothing below it reaches
// time, randomness or files any other way (the simulator builds the same parts on its own).
import type { Server as HttpServer } from 'node:http';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { type Clock, type Disk, type Random, nodeDisk, systemClock, systemRandom } from '../io/index.js';
import { RecoveryMetrics } from '../recovery/index.js';
import type { AppendResult } from '../wal/index.js';
import { type LogMeta, type PeerApi, type PeerResolver, type SegmentMeta, type SessionRef, BadRequestError, LogQuotaError, LogStores, PeerHandlers, UnknownLogError, UnknownSegmentError, isValidLogName } from '../replication/index.js';
import { NodeMetrics, createLogger } from '../observability/index.js';
import { AdminClient, INSECURE, type RevocationList, checkNodeCertificate, PeerClient, type Transport, WalClient, loadTransport, type ClusterStatusView, type NodeApi, type ReadEntryView, type RecoveryEventMessage, type RpcServer, type ValidateMessageView, repairResultFromWire, startRpcServer, validateMessageFromWire } from '../rpc/index.js';
import type { RecoveryMetricsSnapshot, RepairStrategy, SegmentRepair } from '../recovery/index.js';
import { RepairService, expectationOf } from './repairs.js';
import { Scrubber } from './scrubber.js';
import { ScrubModel, type NodeScrubScore } from './scrub-model.js';
import { ScrubScorePublisher, etcdScrubBudgets } from './scrub-budget.js';
import { observedDisk } from '../io/observed-disk.js';
import { InThreadScrubChecker, type ScrubChecker, ScrubWorkerPool, scrubWorkerScriptPath } from './scrub-pool.js';
import { ScrubThrottle } from './scrub-throttle.js';
import type { ScrubWorkerData } from './scrub-worker.js';
import { newRateCell, pacedDisk, startRateCellUpdates } from './scrub-pace.js';
import { Coordinator, etcdRepairReportExists, etcdRepairReporter, etcdRepairReports } from './coordinator.js';
import { Election, currentLeader, etcdElectionStore, parseEpochFloor } from './election.js';
import { Backoff } from './backoff.js';
import { EtcdSegmentDirectory } from './directory.js';
import { fetchSegmentFile } from './fetch-segment.js';
import { type ReplicaSourceFor, removeLeftoverFetches, replicaSources } from './replica-sources.js';
import { ClusterKeys, EtcdMetadata, connectEtcd, loadEtcdCredentials } from './etcd.js';
import { EtcdEpochHolders } from './epoch-holders.js';
import { LocalPeer } from './local-peer.js';
import { LogRuntime } from './log-runtime.js';
import { type MemberInfo, NodeSession, parseMemberInfo } from './session.js';
import { type NodeOptions, type ResolvedNodeOptions, resolveNodeOptions } from './options.js';

export const VERSION = '0.1.0';
/** How long a whole-cluster status is answered again after it was read from etcd. */
export const STATUS_ALL_REUSE_MS = 250;

/** What the node's parts reach the world through (src/io). */
interface NodeIo {
  readonly disk: Disk;
  readonly clock: Clock;
  readonly random: Random;
}

/** What a status reads from etcd (shared by the calls that arrive while it is read). */
interface StatusRecords {
  readonly logs: ReadonlyArray<{ readonly meta: LogMeta; readonly segments: readonly SegmentMeta[] }>;
  readonly coordinator: string;
  readonly scrubScores: NonNullable<ClusterStatusView['scrubScores']>;
}

/** How often the scrub worker's rate cell is rewritten (the throttle's windows are 500 ms). */
const SCRUB_RATE_UPDATE_MS = 50;
const PRODUCTION_IO: NodeIo = Object.freeze({ disk: nodeDisk, clock: systemClock, random: systemRandom });

export class ClusterNode implements NodeApi {
  private readonly runtimes = new Map<string, Promise<LogRuntime>>();
  private readonly members = new Map<string, MemberInfo>();
  private readonly peerClients = new Map<string, PeerClient>();
  private readonly walClients = new Map<string, WalClient>();
  private readonly adminClients = new Map<string, AdminClient>();
  private readonly unwatchers: Array<() => Promise<void>> = [];
  private session: NodeSession | undefined;
  private etcd: EtcdMetadata | undefined;
  private directory: EtcdSegmentDirectory | undefined;
  /** TLS with this node's identity (role peer), or plaintext: for its listener and its calls. */
  private transport: Transport = INSECURE;
  private rpc: RpcServer | undefined;
  private metricsServer: HttpServer | undefined;
  private repairs: RepairService | undefined;
  private scrubber: Scrubber | undefined;
  private coordinator: Coordinator | undefined;
  private scrubPublisher: ScrubScorePublisher | undefined;
  /** The damage model predictive scrubbing orders its work by (docs/SCRUBBING.md). */
  readonly scrubModel = new ScrubModel();
  /** Scrubbing yields to appends (scrub-throttle.ts): fed every fdatasync latency on this disk. */
  readonly scrubThrottle: ScrubThrottle;
  /** The scrub rate allowed now, shared with the scrub worker thread (scrub-pace.ts). */
  private readonly scrubRateCell = newRateCell();
  private stopScrubRateCell: (() => void) | undefined;
  /** Aborted when the node stops: the scrub reads in this thread stop being paced. */
  private readonly scrubPaceStop = new AbortController();
  private readonly io: NodeIo;
  private cancelReopen: (() => void) | undefined;
  private stopped = false;
  readonly recovery = new RecoveryMetrics();
  readonly metrics: NodeMetrics;
  readonly logs: LogStores;
  readonly handlers: PeerHandlers;
  /** This node's own store as a peer, with the remote peers' deadline (src/cluster/local-peer.ts). */
  private readonly localPeer: LocalPeer;
  /** The one builder of this node's sources of verified copies (stores and repairs alike). */
  private readonly replicaSource: ReplicaSourceFor;
  address = '';
  metricsUrl = '';

  /** Keys whose malformed value was logged at warn already (each once; every one is counted). */
  private readonly malformedKeysLogged = new Set<string>();

  /** A value under the scrub prefixes that does not decode: left out, counted, logged once per key. */
  private readonly onMalformedValue = (key: string, error: Error): void => {
    this.metrics.etcdMalformedValues.inc();
    const first = !this.malformedKeysLogged.has(key) && this.malformedKeysLogged.size < 1_000;
    if (first) this.malformedKeysLogged.add(key);
    this.logger[first ? 'warn' : 'debug']({ key, reason: error.message }, 'left out a malformed value read from etcd');
  };

  private constructor(
    readonly options: ResolvedNodeOptions,
    readonly logger: Logger,
    rawIo: NodeIo,
  ) {
    this.metrics = new NodeMetrics(this.recovery, { node: options.id, cluster: options.cluster });
    this.metrics.observeScrub(() => this.scrubView());
    this.scrubThrottle = new ScrubThrottle(rawIo.clock.monotonicMs());
    const throttled = options.scrubThrottle && options.scrubBytesPerSecondMax > 0;
    // Every disk call's latency and device error feeds the scrub model (src/io/observed-disk.ts).
    const io = (this.io = {
      ...rawIo,
      disk: observedDisk(
        rawIo.disk,
        {
          latency: (kind, ms) => {
            this.scrubModel.latencySample(kind, ms);
            if (kind === 'fdatasync' && throttled) this.scrubThrottle.sample(ms, rawIo.clock.monotonicMs());
            this.metrics.diskLatency?.observe({ op: kind }, ms / 1000);
          },
          ioError: () => this.scrubModel.ioError(rawIo.clock.nowMs()),
        },
        rawIo.clock,
      ),
    });
    this.replicaSource = replicaSources({
      self: options.id,
      peers: this.peers,
      directory: () => this.directory,
      fetchFile: (node, log, segmentId, path) => this.fetchSegmentFrom(node, log, segmentId, path),
      logs: { logDir: (log) => this.logs.logDir(log) },
      disk: io.disk,
      logger,
      entryBytesMax: options.entryBytesMax,
    });
    this.logs = new LogStores({
      dataDir: options.dataDir,
      backupRetentionCount: options.backupRetentionCount,
      entryBytesMax: options.entryBytesMax,
      logger,
      metrics: this.recovery,
      disk: io.disk,
      clock: io.clock,
      sourcesFor: (log) => [this.replicaSource(log)],
      // A lost (or older) EPOCH is restored to the highest epoch that can have fenced this node.
      fenceFloor: (log) => this.fenceFloorOf(log),
      // A writer call without an identity (--insecure) creates only a log the cluster has.
      mayCreate: async (log) => {
        if (!this.directory) throw new Error('etcd is not connected yet');
        return (await this.directory.logMeta(log)) !== undefined;
      },
    });
    // Writer calls naming their caller (TLS) are accepted only from the epoch's holder in etcd.
    this.handlers = new PeerHandlers(this.logs, logger, {
      // A caller past its rate of etcd reads is answered RESOURCE_EXHAUSTED, counted as 'EpochLookup'.
      epochHolders: new EtcdEpochHolders(() => this.etcd, { onLookup: (result) => result === 'limited' && this.metrics.rpcLimited.inc({ method: 'EpochLookup' }) }),
      onWriterRefused: (method) => this.metrics.rpcRefused.inc({ method, code: 'PERMISSION_DENIED' }),
    });
    this.localPeer = new LocalPeer(this.handlers, { deadlineMs: options.rpcDeadlineMs, clock: io.clock });
  }

  get id(): string {
    return this.options.id;
  }

  /**
   * The highest epoch that can have fenced this node's copy of a log: the current writer's epoch
   * (writers are elected in rising epochs, and only a leader fences, so no earlier one fenced
   * higher), the epochs the segment records carry, and the election's floor. The records alone
   * are not enough: a writer fences every member at its start (CLUSTER.md rule 8) before any
   * record carries its epoch. With no writer elected, the floor and the records are the bound
   * (a writer whose key is gone and that recorded nothing is not covered; CLUSTER.md, Limits).
   */
  private async fenceFloorOf(log: string): Promise<number> {
    const etcd = this.etcd;
    if (!etcd || !this.directory) throw new Error('etcd is not connected yet');
    const [records, leader, floor] = await Promise.all([
      this.directory.list(log),
      currentLeader(etcd, etcd.keys.writerPrefix(log)),
      etcd.get(etcd.keys.writerEpochFloor(log), parseEpochFloor),
    ]);
    return Math.max(0, leader?.epoch ?? 0, floor?.value ?? 0, ...records.map((s) => s.meta.writerEpoch));
  }

  static async start(nodeOptions: NodeOptions): Promise<ClusterNode> {
    const options = resolveNodeOptions(nodeOptions);
    const logger = nodeOptions.logger ?? createLogger({ base: { node: options.id } });
    const node = new ClusterNode(options, logger, PRODUCTION_IO);
    try {
      await node.startServing();
      return node;
    } catch (error) {
      await node.stop().catch(() => undefined);
      throw error;
    }
  }

  private async startServing(): Promise<void> {
    const { options } = this;
    // Before anything is served or opened: no fetch of this node is in flight yet.
    await removeLeftoverFetches(this.io.disk, join(options.dataDir, 'logs'), this.logger);
    if (options.tls) {
      this.transport = await loadTransport(options.tls);
      checkNodeCertificate(this.transport, options.id); // its writer calls are bound to this name
      const { revoked } = this.transport as { revoked?: RevocationList };
      if (revoked) {
        this.logger.info({ path: revoked.path, entries: revoked.size }, 'revoked certificates loaded');
        revoked.onReload = (event) => ('error' in event ? this.logger.error({ path: revoked.path, err: event.error }, 'failed to re-read the revoked certificates; the last list stays in force') : this.logger.info({ path: revoked.path, entries: event.entries }, 'revoked certificates re-read'));
      }
    }
    else this.logger.warn({ listen: `${options.listen.host}:${options.listen.port}` }, 'INSECURE: no TLS; any process that reaches this port may append, read, fence, seal and repair (start with --tls-ca, --tls-cert and --tls-key)');
    this.rpc = await startRpcServer(this, options.listen, { transport: this.transport, onRefused: (method, code) => this.metrics.rpcRefused.inc({ method, code }) }, { limits: this.options.rpcLimits, onLimited: (method) => this.metrics.rpcLimited.inc({ method }) });
    this.address = `${options.listen.host}:${this.rpc.port}`;
    if (options.metricsListen) {
      const { server, port } = await this.metrics.listen(options.metricsListen.host, options.metricsListen.port);
      this.metricsServer = server;
      this.metricsUrl = `http://${options.metricsListen.host}:${port}/metrics`;
    }
    const etcdCredentials = options.etcdTls ? await loadEtcdCredentials(options.etcdTls) : undefined;
    this.etcd = new EtcdMetadata(connectEtcd(options.etcd, etcdCredentials), new ClusterKeys(options.cluster));
    this.directory = new EtcdSegmentDirectory(this.etcd);
    const { disk, clock, random } = this.io;
    const member: MemberInfo = { id: options.id, address: this.address, startedMs: clock.nowMs(), version: VERSION, metricsUrl: this.metricsUrl };
    this.session = new NodeSession(this.etcd, member, options.leaseTtlSeconds, this.logger, clock, random);
    this.repairs = new RepairService({
      self: options.id,
      logs: this.logs,
      directory: this.directory,
      replicaSource: this.replicaSource,
      strategy: options.repairStrategy,
      roundsMax: 3,
      logger: this.logger,
      clock,
      random,
      disk,
      onUnavailable: (seconds) => this.metrics.segmentUnavailable.observe(seconds),
      checkPeer: (node, log, segmentId) => {
        void this.repairSegment(log, segmentId, node, options.repairStrategy, false).catch((error: unknown) =>
          this.logger.warn({ log, segment: segmentId, peer: node, err: error }, 'failed to have a distrusted replica check its copy'),
        );
      },
      report: etcdRepairReporter(this.etcd, options.id, clock),
      reportExists: etcdRepairReportExists(this.etcd, options.id),
    });
    this.handlers.onDamage = (log, segmentId, detail) => this.repairs?.schedule(log, segmentId, 'read', detail);
    this.repairs.onEvent((event) => {
      const key = { log: event.log, segmentId: event.segment };
      // Scrub findings reach the model from the scrubber; requests and retries are no new evidence.
      if (event.kind === 'detected' && (event.source === 'read' || event.source === 'open')) this.scrubModel.detected(key, event.source, event.timeMs);
      else if (event.kind === 'repaired' || event.kind === 'repair-failed') this.scrubModel.repairEnded(key, event.kind === 'repaired', event.timeMs);
    });
    await this.watchMembers();
    // Catch up on every known log before registering, so that a writer rarely puts this node in
    // a new ensemble while its copy is behind; each log waits for it at most
    // STARTUP_CATCH_UP_WAIT_MS (log-runtime.ts), so a hung fetch never keeps the node unregistered.
    await this.watchLogs();
    await this.session.start();
    this.scrubber = new Scrubber({
      self: options.id,
      logs: this.logs,
      directory: this.directory,
      repairs: this.repairs,
      bytesPerSecondMax: options.scrubBytesPerSecondMax,
      passIntervalMs: options.scrubIntervalMs,
      entryBytesMax: options.entryBytesMax,
      metrics: this.metrics,
      logger: this.logger,
      checker: await this.scrubChecker(),
      clock,
      random,
      model: this.scrubModel,
      rateMultiplier: () => this.scrubPublisher?.rateMultiplier() ?? 1,
    });
    if (options.scrubBytesPerSecondMax > 0) this.stopScrubRateCell = startRateCellUpdates(this.scrubRateCell, () => this.scrubRateNow(), clock.setTimer.bind(clock), SCRUB_RATE_UPDATE_MS);
    this.scrubber.start();
    this.scrubPublisher = new ScrubScorePublisher({
      node: options.id,
      store: etcdScrubBudgets(this.etcd, this.onMalformedValue),
      score: () => {
        const v = this.scrubView();
        return { riskRatio: v.riskRatio, latencyFactor: v.latencyFactor, segmentScoreMax: v.segmentScoreMax, throttleShare: v.throttleShare, deficitSeconds: v.deficitSeconds };
      },
      intervalMs: options.coordinatorIntervalMs,
      clock,
      onError: (error) => this.logger.debug({ err: error }, 'failed to publish the scrub score; the next round retries'),
    });
    this.scrubPublisher.start();
    this.coordinator = new Coordinator({
      self: options.id,
      election: new Election({ store: etcdElectionStore(this.etcd), prefix: this.etcd.keys.coordinatorPrefix(), session: this.session, logger: this.logger.child({ role: 'coordinator' }), clock, random }),
      directory: this.directory,
      reports: etcdRepairReports(this.etcd),
      liveMembers: () => this.liveMembers(),
      repairOn: (node, log, segmentId, deadlineMs) => this.repairOnFor(node, log, segmentId, deadlineMs),
      metrics: this.metrics,
      logger: this.logger.child({ role: 'coordinator' }),
      goneAfterMs: options.goneAfterMs,
      intervalMs: options.coordinatorIntervalMs,
      maxRecoveryAttempts: 3,
      clock,
      scrubBudgets: etcdScrubBudgets(this.etcd, this.onMalformedValue),
    });
    await this.coordinator.start();
    this.rpc.setServing(true);
    this.logger.info({ address: this.address, metrics: this.metricsUrl, cluster: options.cluster }, 'node serving');
  }

  /** The scrub model's view of this node now (metrics, status, the score published to etcd). */
  scrubView(): NodeScrubScore & { segmentScoreMax: number; rateMultiplier: number; suspectBytes: number; throttleShare: number; throttleProbes: number; throttleDecreases: number; deficitSeconds: number; topSegments: ReturnType<ScrubModel['topSegments']> } {
    const now = this.io.clock.nowMs();
    const topSegments = this.scrubModel.topSegments(now, 5);
    return {
      ...this.scrubModel.nodeScore(now),
      segmentScoreMax: topSegments[0]?.score ?? 0,
      topSegments,
      rateMultiplier: this.scrubPublisher?.rateMultiplier() ?? 1,
      suspectBytes: this.scrubber?.suspectBytes ?? 0,
      throttleShare: this.options.scrubThrottle ? this.scrubThrottle.shareNow(this.io.clock.monotonicMs()) : 1,
      throttleProbes: this.scrubThrottle.probes,
      throttleDecreases: this.scrubThrottle.decreases,
      deficitSeconds: this.scrubber?.deficitSeconds ?? 0,
    };
  }

  /** The scrub read rate allowed now: the configured rate, the coordinator's multiplier, the throttle's share. */
  private scrubRateNow(): number {
    const multiplier = Math.max(1, this.scrubPublisher?.rateMultiplier() ?? 1);
    const share = this.options.scrubThrottle ? this.scrubThrottle.shareNow(this.io.clock.monotonicMs()) : 1;
    return this.options.scrubBytesPerSecondMax * multiplier * share;
  }

  /** Scrub checks in a worker thread, or in this thread when running from TypeScript sources (tests). */
  private async scrubChecker(): Promise<ScrubChecker> {
    const { clock } = this.io;
    // Once the node stops, a check in this thread reads at disk speed (its pause ends at once): its
    // paced reads, at 1/64 of the rate under load, would hold stop() until the segment is read.
    const stopping = this.scrubPaceStop.signal;
    const paced = pacedDisk(this.io.disk, {
      bytesPerSecond: () => (stopping.aborted ? Number.POSITIVE_INFINITY : this.scrubRateNow()),
      sleep: (ms) => clock.sleep(ms, stopping),
      monotonicMs: () => clock.monotonicMs(),
    });
    const inThread = new InThreadScrubChecker(paced);
    const script = scrubWorkerScriptPath();
    if (!(await nodeDisk.stat(script))) return inThread; // the program's own files are on node:fs
    const workerData: ScrubWorkerData = { rateCell: this.scrubRateCell };
    return new ScrubWorkerPool({ spawn: () => new Worker(script, { workerData }), fallback: inThread, logger: this.logger });
  }

  // -------------------------------------------------------------------------------------------
  // Membership and peers

  private async watchMembers(): Promise<void> {
    const etcd = this.etcd as EtcdMetadata;
    const refresh = async (): Promise<void> => {
      const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 }, this.io.random);
      while (!this.stopped) {
        try {
          const list = await etcd.list(etcd.keys.membersPrefix(), parseMemberInfo);
          this.members.clear();
          for (const record of list) this.members.set(record.value.id, record.value);
          return;
        } catch (error) {
          this.logger.debug({ err: error }, 'failed to list members; retrying');
          await this.io.clock.sleep(backoff.next());
        }
      }
    };
    await refresh();
    this.unwatchers.push(await etcd.watchPrefix(etcd.keys.membersPrefix(), () => void refresh()));
  }

  liveMembers(): string[] {
    return [...this.members.keys()].sort();
  }

  private readonly peers: PeerResolver = (nodeId: string): PeerApi | undefined => {
    if (nodeId === this.options.id) return this.localPeer;
    const address = this.members.get(nodeId)?.address;
    return address === undefined ? undefined : cached(this.peerClients, address, () => new PeerClient(address, this.options.rpcDeadlineMs, this.transport));
  };

  private walClient(address: string): WalClient {
    return cached(this.walClients, address, () => new WalClient(address, this.transport));
  }

  private adminClient(address: string): AdminClient {
    return cached(this.adminClients, address, () => new AdminClient(address, this.transport));
  }

  // -------------------------------------------------------------------------------------------
  // Logs

  private async watchLogs(): Promise<void> {
    const etcd = this.etcd as EtcdMetadata;
    const directory = this.directory as EtcdSegmentDirectory;
    const openAll = async (): Promise<void> => {
      const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 }, this.io.random);
      while (!this.stopped) {
        try {
          for (const meta of await directory.listLogs()) void this.runtime(meta).catch((error: unknown) => this.logger.error({ log: meta.log, err: error }, 'failed to open log'));
          return;
        } catch (error) {
          this.logger.debug({ err: error }, 'failed to list logs; retrying');
          await this.io.clock.sleep(backoff.next());
        }
      }
    };
    await openAll();
    await Promise.allSettled([...this.runtimes.values()]);
    this.unwatchers.push(await etcd.watchPrefix(etcd.keys.logsPrefix(), (key) => {
      if (key.endsWith('/meta')) void openAll();
    }));
    // A log that failed to open (its store locked or damaged for now) is tried again.
    const reopenEvery = (): void => {
      if (this.stopped) return;
      this.cancelReopen = this.io.clock.setTimer(this.options.catchUpIntervalMs * 5, () => {
        void openAll();
        reopenEvery();
      });
    };
    reopenEvery();
  }

  private runtime(meta: LogMeta): Promise<LogRuntime> {
    let pending = this.runtimes.get(meta.log);
    if (!pending) {
      pending = (async () => {
        const store = await this.logs.store(meta.log);
        const runtime = new LogRuntime(
          {
            self: this.options.id,
            watchSegments: (log, onChange) => (this.etcd as EtcdMetadata).watchPrefix((this.etcd as EtcdMetadata).keys.segmentsPrefix(log), () => onChange()),
            writerElection: (log, logger) => {
              const etcd = this.etcd as EtcdMetadata;
              return new Election({ store: etcdElectionStore(etcd), prefix: etcd.keys.writerPrefix(log), floorKey: etcd.keys.writerEpochFloor(log), session: this.session as NodeSession, logger, clock: this.io.clock, random: this.io.random });
            },
            directory: this.directory as EtcdSegmentDirectory,
            localStore: this.localPeer,
            handlers: this.handlers,
            peers: this.peers,
            liveMembers: () => this.liveMembers(),
            forwardAppend: (address, log, payloads, deadlineMs, session) => this.walClient(address).append(log, payloads, { forwarded: true, deadlineMs, session }),
            remoteCommitted: async (address, log) => (await this.adminClient(address).status(log)).logs.find((l) => l.log === log)?.committed_index ?? 0,
            addressOf: (nodeId) => this.members.get(nodeId)?.address,
            memberStartedMs: (nodeId) => this.members.get(nodeId)?.startedMs,
            metrics: this.metrics,
            logger: this.logger,
            groupCommitBytesMax: this.options.groupCommitBytesMax,
            entryBytesMax: this.options.entryBytesMax,
            catchUpIntervalMs: this.options.catchUpIntervalMs,
            onDamage: (log, segmentId, detail) => this.repairs?.schedule(log, segmentId, 'read', detail),
            fetchFile: (node, log, segmentId, path) => this.fetchSegmentFrom(node, log, segmentId, path),
            clock: this.io.clock,
            random: this.io.random,
            disk: this.io.disk,
          },
          meta,
          store,
        );
        // A runtime that failed to start is stopped: its catch-up timer must not outlive it.
        await runtime.start().catch(async (error: unknown) => {
          await runtime.stop().catch(() => undefined);
          throw error;
        });
        return runtime;
      })();
      this.runtimes.set(meta.log, pending);
      pending.catch(() => this.runtimes.delete(meta.log));
    }
    return pending;
  }

  private async runtimeOf(log: string, createIfMissing: boolean): Promise<LogRuntime> {
    if (!isValidLogName(log)) throw new BadRequestError('log', `invalid log name '${log.slice(0, 80)}': 1 to 63 characters of A-Z a-z 0-9 . _ -`);
    const known = this.runtimes.get(log);
    if (known) return known;
    const directory = this.directory as EtcdSegmentDirectory;
    let meta = (await directory.logMeta(log))?.value;
    if (!meta && createIfMissing) {
      const logs = (await directory.listLogs()).length;
      if (logs >= this.options.logsMax) throw new LogQuotaError(log, this.options.logsMax);
      const created: LogMeta = { log, replicationFactor: this.options.replicationFactor, ackQuorum: this.options.ackQuorum, segmentBytesMax: this.options.segmentBytesMax, createdMs: this.io.clock.nowMs() };
      await directory.createLog(created);
      meta = (await directory.logMeta(log))?.value;
      this.logger.info({ log, replicationFactor: created.replicationFactor, ackQuorum: created.ackQuorum }, 'created log');
    }
    if (!meta) throw new UnknownLogError(log);
    return this.runtime(meta);
  }

  // -------------------------------------------------------------------------------------------
  // NodeApi (what the gRPC services call)

  async append(log: string, payloads: readonly Uint8Array[], options: { createIfMissing: boolean; forwarded: boolean; deadlineMs: number; session?: SessionRef | undefined }): Promise<AppendResult> {
    const runtime = await this.runtimeOf(log, options.createIfMissing);
    return runtime.append(payloads, options.forwarded, options.deadlineMs, options.session);
  }

  async *read(log: string, from: number, to: number, batchMax: number): AsyncGenerator<ReadEntryView[]> {
    const runtime = await this.runtimeOf(log, false);
    yield* runtime.read(from, to, batchMax);
  }

  /**
   * GetClusterStatus. The whole-cluster form (no log) reads every log's record and segments from
   * etcd, and any `client` may call it: calls that arrive while one is reading share its answer,
   * and an answer is given again for STATUS_ALL_REUSE_MS after it was read, so a flood of them
   * costs etcd a few scans a second, not one per call (review of issue 11: 200 at once timed the
   * node's etcd reads out). The per-log form (a follower asks the writer's committed index with
   * it on each Read) shares only an etcd read of the same log that begins after the call arrived
   * (sharedStatusRecords: calls arriving while one runs share the next; nothing is kept after it
   * ends), and reads the writer and the committed index from this node's memory for each call once
   * those records are in, so a log created or an entry acknowledged before a call is in its answer.
   */
  async clusterStatus(log: string): Promise<ClusterStatusView> {
    if (log !== '') {
      if (!isValidLogName(log)) throw new BadRequestError('log', 'invalid log name');
      return this.assembleStatus(await this.sharedStatusRecords(log));
    }
    const now = this.io.clock.monotonicMs();
    const last = this.statusAll;
    if (last && (last.readAtMs === undefined || now - last.readAtMs < STATUS_ALL_REUSE_MS)) return last.view;
    const view = this.readStatusRecords('').then((records) => this.assembleStatus(records));
    const entry: { view: Promise<ClusterStatusView>; readAtMs: number | undefined } = { view, readAtMs: undefined };
    this.statusAll = entry;
    view.then(
      () => (entry.readAtMs = this.io.clock.monotonicMs()),
      () => this.statusAll === entry && (this.statusAll = undefined), // a failure is not answered again
    );
    return view;
  }

  /** The last whole-cluster status: reading (readAtMs undefined) or read then. */
  private statusAll: { readonly view: Promise<ClusterStatusView>; readAtMs: number | undefined } | undefined;

  /**
   * The per-log status reads of etcd, by log: the newest, running or waiting for the one before it
   * to end (at most one of each a log; removed when it ends).
   */
  private readonly statusReads = new Map<string, { readonly started: boolean; readonly records: Promise<StatusRecords> }>();

  /**
   * A read of the log's records that begins after this call arrived: a call joins a read that has
   * not begun yet (waiting for the running one), never a running one, which may have read etcd
   * before something the caller saw done (a log created, a segment opened). So a flood costs at
   * most two reads in flight a log, and no answer is older than its call.
   */
  private sharedStatusRecords(log: string): Promise<StatusRecords> {
    const newest = this.statusReads.get(log);
    if (newest && !newest.started) return newest.records;
    const before = newest?.records;
    const state = { started: false };
    const records = (async () => {
      if (before) await before.catch(() => undefined); // its callers see its failure, not this one's
      state.started = true;
      return this.readStatusRecords(log);
    })().finally(() => {
      if (this.statusReads.get(log)?.records === records) this.statusReads.delete(log);
    });
    this.statusReads.set(log, { get started() { return state.started; }, records });
    return records;
  }

  /** What a status holds from etcd: the logs' records and segments, the coordinator, the scores. */
  private async readStatusRecords(log: string): Promise<StatusRecords> {
    const directory = this.directory as EtcdSegmentDirectory;
    const metas = log === '' ? await directory.listLogs() : [(await directory.logMeta(log))?.value].filter((m): m is LogMeta => m !== undefined);
    if (log !== '' && metas.length === 0) throw new UnknownLogError(log);
    const logs = [];
    for (const meta of metas) logs.push({ meta, segments: (await directory.list(meta.log)).map((s) => s.meta) });
    const coordinator = (await currentLeader(this.etcd as EtcdMetadata, (this.etcd as EtcdMetadata).keys.coordinatorPrefix()).catch(() => undefined))?.leader ?? '';
    const scrubScores = this.etcd ? await etcdScrubBudgets(this.etcd, this.onMalformedValue).listScores().catch(() => []) : [];
    return { logs, coordinator, scrubScores };
  }

  /** A status from etcd's records and, read now, this node's writer and committed index of each log. */
  private async assembleStatus(records: StatusRecords): Promise<ClusterStatusView> {
    const logs = [];
    for (const { meta, segments } of records.logs) {
      const runtime = await this.runtimes.get(meta.log)?.catch(() => undefined);
      const writer = runtime?.writerStatus() ?? { writer: '', epoch: 0 };
      logs.push({ meta, writer: writer.writer, writerEpoch: writer.epoch, committedIndex: runtime?.committedIndex() ?? 0, segments });
    }
    return { cluster: this.options.cluster, node: this.options.id, coordinator: records.coordinator, members: [...this.members.values()], logs, scrub: this.scrubView(), scrubScores: records.scrubScores };
  }

  // -------------------------------------------------------------------------------------------
  // Repair and validation (AdminService)

  private async fetchSegmentFrom(node: string, log: string, segmentId: number, path: string): Promise<void> {
    const address = this.members.get(node)?.address;
    if (!address) throw new Error(`member ${node} is not live`);
    // The segment's record bounds what the member may send: a copy is fetched only once sealed.
    await fetchSegmentFile(this.peers(node) as PeerClient, this.io.disk, await this.segmentMeta(log, segmentId), path);
  }

  private async segmentMeta(log: string, segmentId: number): Promise<SegmentMeta> {
    const meta = (await (this.directory as EtcdSegmentDirectory).list(log)).find((s) => s.meta.segmentId === segmentId)?.meta;
    if (!meta) throw new UnknownSegmentError(log, segmentId);
    return meta;
  }

  /**
   * The coordinator's retry of a repair a node gave up on: that node's copy only, the remote call
   * bounded by deadlineMs (the coordinator stops waiting for a local one at the same deadline).
   */
  private async repairOnFor(node: string, log: string, segmentId: number, deadlineMs: number): Promise<boolean> {
    const strategy = this.options.repairStrategy;
    if (node === this.options.id) return (await (this.repairs as RepairService).repairNow(log, segmentId, { strategy, dryRun: false, source: 'coordinator' })).outcome === 'done';
    const address = this.members.get(node)?.address;
    if (!address) return false;
    const response = await (this.peers(node) as PeerClient).repairCopy(log, segmentId, false, deadlineMs);
    return response.results.every((r) => r.outcome === 'done');
  }

  /** PeerService.RepairCopy: this node's copy only, with this node's own strategy. */
  async repairCopy(log: string, segmentId: number, dryRun: boolean): Promise<Array<SegmentRepair & { node: string }>> {
    if (!isValidLogName(log)) throw new BadRequestError('log', 'invalid log name');
    const result = await (this.repairs as RepairService).repairNow(log, segmentId, { strategy: this.options.repairStrategy, dryRun, source: 'request' });
    return [{ ...result, node: this.options.id }];
  }

  /**
   * AdminService.RepairSegment (admin role). Another node's part goes through its peer-only
   * RepairCopy, which applies that node's own --repair-strategy: a strategy the admin names that
   * differs from this node's is applied only here, and a request that would reach another node
   * with it is refused (call that node's AdminService instead).
   */
  async repairSegment(log: string, segmentId: number, node: string, strategy: RepairStrategy | undefined, dryRun: boolean): Promise<Array<SegmentRepair & { node: string }>> {
    // Not set: this node's own --repair-strategy (as every other member uses its own).
    const chosen = strategy ?? this.options.repairStrategy;
    if (!isValidLogName(log)) throw new BadRequestError('log', 'invalid log name');
    if (node !== this.options.id && strategy !== undefined && chosen !== this.options.repairStrategy) {
      throw new BadRequestError('strategy', `${chosen} would reach other nodes, which repair with their own --repair-strategy (this node's: ${this.options.repairStrategy}); call each node's address with node=<its id> to use ${chosen}`);
    }
    if (node !== '' && node !== this.options.id) {
      const address = this.members.get(node)?.address;
      if (!address) throw new BadRequestError('node', `${node.slice(0, 80)} is not a live member`);
      const response = await (this.peers(node) as PeerClient).repairCopy(log, segmentId, dryRun);
      return response.results.map((r) => repairResultFromWire(r, segmentId));
    }
    if (node === this.options.id) {
      const result = await (this.repairs as RepairService).repairNow(log, segmentId, { strategy: chosen, dryRun, source: 'request' });
      return [{ ...result, node: this.options.id }];
    }
    // Every member, one after the other: a copy repaired first serves the ones after it.
    const meta = await this.segmentMeta(log, segmentId);
    const results: Array<SegmentRepair & { node: string }> = [];
    for (const member of meta.ensemble) {
      if (member === this.options.id || this.members.has(member)) {
        try {
          // The strategy as asked ('' stays ''): another member's part applies its own strategy.
          results.push(...(await this.repairSegment(log, segmentId, member, strategy, dryRun)));
        } catch (error) {
          results.push({ node: member, segment: segmentId, decision: 'escalate', outcome: 'failed', repaired: [], lost: [], truncated: [], bytesWritten: 0, detail: `failed to repair: ${error instanceof Error ? error.message : String(error)}` });
        }
      } else {
        results.push({ node: member, segment: segmentId, decision: 'escalate', outcome: 'failed', repaired: [], lost: [], truncated: [], bytesWritten: 0, detail: `${member} is not a live member` });
      }
    }
    return results;
  }

  async *validate(log: string, node: string): AsyncGenerator<ValidateMessageView> {
    if (log !== '' && !isValidLogName(log)) throw new BadRequestError('log', 'invalid log name');
    if (node === this.options.id) {
      yield* this.validateLocal(log);
      return;
    }
    const nodes = node === '' ? this.liveMembers() : [node];
    let segmentsChecked = 0;
    let bytesChecked = 0;
    for (const member of nodes) {
      const messages = member === this.options.id ? this.validateLocal(log) : this.validateRemote(member, log);
      for await (const m of messages) {
        if (m.done) {
          segmentsChecked += m.segmentsChecked;
          bytesChecked += m.bytesChecked;
        } else {
          yield m;
        }
      }
    }
    yield { ...EMPTY_VALIDATE, node: node || '*', log, done: true, segmentsChecked, bytesChecked };
  }

  private async *validateRemote(member: string, log: string): AsyncGenerator<ValidateMessageView> {
    const address = this.members.get(member)?.address;
    if (!address) throw new BadRequestError('node', `${member.slice(0, 80)} is not a live member`);
    for await (const m of (this.peers(member) as PeerClient).validateCopies(log)) {
      yield validateMessageFromWire(m);
    }
  }

  /** PeerService.ValidateCopies: this node's part of an admin Validate. */
  // A generator, so that a refusal ends the stream with its status (a throw before the stream
  // starts left the handler with an exception: UNKNOWN; found by the fuzz run).
  async *validateCopies(log: string): AsyncGenerator<ValidateMessageView> {
    if (log !== '' && !isValidLogName(log)) throw new BadRequestError('log', 'invalid log name');
    yield* this.validateLocal(log);
  }

  /** Every sealed segment this node should hold, checked against etcd's record. */
  private async *validateLocal(log: string): AsyncGenerator<ValidateMessageView> {
    const directory = this.directory as EtcdSegmentDirectory;
    const logs = log === '' ? (await directory.listLogs()).map((m) => m.log) : [log];
    let segmentsChecked = 0;
    let bytesChecked = 0;
    for (const name of logs) {
      // A log the cluster does not have is not found, and nothing is created for it (finding 8).
      if (log !== '' && (await directory.logMeta(name)) === undefined) throw new UnknownLogError(name);
      const store = await this.logs.store(name);
      for (const { meta } of await directory.list(name)) {
        if (meta.state !== 'SEALED' || !meta.ensemble.includes(this.options.id) || meta.lastIndex < meta.firstIndex) continue;
        segmentsChecked += 1;
        const base = { ...EMPTY_VALIDATE, node: this.options.id, log: name, segment: meta.segmentId };
        if (!store.segmentRecord(meta.segmentId)) {
          yield { ...base, kind: 'missing-segment', entryIndex: meta.firstIndex, indexCount: meta.indexCount, detail: 'this member does not hold the segment (catch-up pending)' };
          continue;
        }
        const inspection = await store.checkSealedSegment(meta.segmentId, expectationOf(meta));
        bytesChecked += inspection.analysis?.fileByteLength ?? 0;
        for (const f of inspection.findings) {
          yield { ...base, kind: f.kind, entryIndex: f.entryIndex ?? 0, indexCount: f.indexCount ?? 0, offsetBytes: f.offsetBytes ?? 0, expectedChecksum: f.expectedChecksum ?? '', actualChecksum: f.actualChecksum ?? '', detail: f.detail };
        }
      }
    }
    yield { ...EMPTY_VALIDATE, node: this.options.id, log, done: true, segmentsChecked, bytesChecked };
  }

  recoveryMetrics(): RecoveryMetricsSnapshot & { node: string } {
    return { ...this.recovery.snapshot(), node: this.options.id };
  }

  watchEvents(log: string, listener: (event: RecoveryEventMessage) => void): () => void {
    // A name no log can have would be watched for nothing until the caller gives up.
    if (log !== '' && !isValidLogName(log)) throw new BadRequestError('log', 'invalid log name');
    return (this.repairs as RepairService).onEvent((e) => {
      if (log === '' || e.log === log) listener(e);
    });
  }

  // -------------------------------------------------------------------------------------------

  /** Revokes the lease (others see this node gone at once), stops serving, closes the logs. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    (this.transport as { revoked?: RevocationList }).revoked?.close();
    this.cancelReopen?.();
    this.repairs?.stop();
    this.scrubPaceStop.abort();
    await this.scrubber?.stop();
    this.stopScrubRateCell?.();
    await this.scrubPublisher?.stop();
    await this.coordinator?.stop();
    this.rpc?.setServing(false);
    for (const pending of this.runtimes.values()) {
      const runtime = await pending.catch(() => undefined);
      await runtime?.stop().catch(() => undefined);
    }
    await this.session?.stop().catch(() => undefined);
    for (const unwatch of this.unwatchers) await unwatch().catch(() => undefined);
    await this.rpc?.stop();
    for (const client of [...this.peerClients.values(), ...this.walClients.values(), ...this.adminClients.values()]) client.close();
    await this.logs.closeAll();
    await this.etcd?.close();
    await new Promise<void>((resolve) => (this.metricsServer ? this.metricsServer.close(() => resolve()) : resolve()));
    this.logger.info('node stopped');
  }
}

const EMPTY_VALIDATE: ValidateMessageView = { node: '', log: '', segment: 0, kind: '', entryIndex: 0, indexCount: 0, offsetBytes: 0, expectedChecksum: '', actualChecksum: '', detail: '', done: false, segmentsChecked: 0, bytesChecked: 0 };

/** One client per address, made on first use (channels are reused for every call). */
function cached<T>(clients: Map<string, T>, address: string, make: () => T): T {
  let client = clients.get(address);
  if (client === undefined) {
    client = make();
    clients.set(address, client);
  }
  return client;
}
