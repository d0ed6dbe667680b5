// One wal-recovery node: its logs on local disk, a gRPC server (WalService, PeerService,
// AdminService, health, reflection), its etcd session, and a LogRuntime per log.
import type { Server as HttpServer } from 'node:http';
import type { Logger } from 'pino';
import { RecoveryMetrics } from '../recovery/index.js';
import type { AppendResult } from '../wal/index.js';
import { type LogMeta, type PeerApi, type PeerResolver, BadRequestError, LogStores, PeerHandlers, UnknownLogError, isValidLogName } from '../replication/index.js';
import { NodeMetrics, createLogger } from '../observability/index.js';
import { AdminClient, PeerClient, WalClient, type ClusterStatusView, type NodeApi, type RpcServer, startRpcServer } from '../rpc/index.js';
import { Backoff, sleep } from './backoff.js';
import { EtcdSegmentDirectory } from './directory.js';
import { ClusterKeys, EtcdMetadata, connectEtcd } from './etcd.js';
import { LogRuntime } from './log-runtime.js';
import { type MemberInfo, NodeSession, parseMemberInfo } from './session.js';
import { type NodeOptions, type ResolvedNodeOptions, resolveNodeOptions } from './options.js';

export const VERSION = '0.1.0';

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
  private rpc: RpcServer | undefined;
  private metricsServer: HttpServer | undefined;
  private stopped = false;
  readonly recovery = new RecoveryMetrics();
  readonly metrics: NodeMetrics;
  readonly logs: LogStores;
  readonly handlers: PeerHandlers;
  address = '';
  metricsUrl = '';

  private constructor(
    readonly options: ResolvedNodeOptions,
    readonly logger: Logger,
  ) {
    this.metrics = new NodeMetrics(this.recovery, { node: options.id, cluster: options.cluster });
    this.logs = new LogStores({ dataDir: options.dataDir, backupRetentionCount: options.backupRetentionCount, entryBytesMax: options.entryBytesMax, logger, metrics: this.recovery });
    this.handlers = new PeerHandlers(this.logs, logger);
  }

  get id(): string {
    return this.options.id;
  }

  static async start(nodeOptions: NodeOptions): Promise<ClusterNode> {
    const options = resolveNodeOptions(nodeOptions);
    const logger = nodeOptions.logger ?? createLogger({ base: { node: options.id } });
    const node = new ClusterNode(options, logger);
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
    this.rpc = await startRpcServer(this, options.listen);
    this.address = `${options.listen.host}:${this.rpc.port}`;
    if (options.metricsListen) {
      const { server, port } = await this.metrics.listen(options.metricsListen.host, options.metricsListen.port);
      this.metricsServer = server;
      this.metricsUrl = `http://${options.metricsListen.host}:${port}/metrics`;
    }
    this.etcd = new EtcdMetadata(connectEtcd(options.etcd), new ClusterKeys(options.cluster));
    this.directory = new EtcdSegmentDirectory(this.etcd);
    const member: MemberInfo = { id: options.id, address: this.address, startedMs: Date.now(), version: VERSION, metricsUrl: this.metricsUrl };
    this.session = new NodeSession(this.etcd, member, options.leaseTtlSeconds, this.logger);
    await this.watchMembers();
    // Catch up on every known log before registering, so that a writer never puts this node
    // in a new ensemble while its copy is behind.
    await this.watchLogs();
    await this.session.start();
    this.rpc.setServing(true);
    this.logger.info({ address: this.address, metrics: this.metricsUrl, cluster: options.cluster }, 'node serving');
  }

  // -------------------------------------------------------------------------------------------
  // Membership and peers

  private async watchMembers(): Promise<void> {
    const etcd = this.etcd as EtcdMetadata;
    const refresh = async (): Promise<void> => {
      const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
      while (!this.stopped) {
        try {
          const list = await etcd.list(etcd.keys.membersPrefix(), parseMemberInfo);
          this.members.clear();
          for (const record of list) this.members.set(record.value.id, record.value);
          return;
        } catch (error) {
          this.logger.debug({ err: error }, 'failed to list members; retrying');
          await sleep(backoff.next());
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
    if (nodeId === this.options.id) return this.handlers;
    const address = this.members.get(nodeId)?.address;
    if (!address) return undefined;
    let client = this.peerClients.get(address);
    if (!client) {
      client = new PeerClient(address, this.options.rpcDeadlineMs);
      this.peerClients.set(address, client);
    }
    return client;
  };

  private walClient(address: string): WalClient {
    let client = this.walClients.get(address);
    if (!client) {
      client = new WalClient(address);
      this.walClients.set(address, client);
    }
    return client;
  }

  private adminClient(address: string): AdminClient {
    let client = this.adminClients.get(address);
    if (!client) {
      client = new AdminClient(address);
      this.adminClients.set(address, client);
    }
    return client;
  }

  // -------------------------------------------------------------------------------------------
  // Logs

  private async watchLogs(): Promise<void> {
    const etcd = this.etcd as EtcdMetadata;
    const directory = this.directory as EtcdSegmentDirectory;
    const openAll = async (): Promise<void> => {
      const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
      while (!this.stopped) {
        try {
          for (const meta of await directory.listLogs()) void this.runtime(meta).catch((error: unknown) => this.logger.error({ log: meta.log, err: error }, 'failed to open log'));
          return;
        } catch (error) {
          this.logger.debug({ err: error }, 'failed to list logs; retrying');
          await sleep(backoff.next());
        }
      }
    };
    await openAll();
    await Promise.allSettled([...this.runtimes.values()]);
    this.unwatchers.push(await etcd.watchPrefix(etcd.keys.logsPrefix(), (key) => {
      if (key.endsWith('/meta')) void openAll();
    }));
  }

  private runtime(meta: LogMeta): Promise<LogRuntime> {
    let pending = this.runtimes.get(meta.log);
    if (!pending) {
      pending = (async () => {
        const store = await this.logs.store(meta.log);
        const runtime = new LogRuntime(
          {
            self: this.options.id,
            etcd: this.etcd as EtcdMetadata,
            session: this.session as NodeSession,
            directory: this.directory as EtcdSegmentDirectory,
            handlers: this.handlers,
            peers: this.peers,
            liveMembers: () => this.liveMembers(),
            forwardAppend: (address, log, payloads, deadlineMs) => this.walClient(address).append(log, payloads, { forwarded: true, deadlineMs }),
            remoteCommitted: async (address, log) => (await this.adminClient(address).status(log)).logs.find((l) => l.log === log)?.committed_index ?? 0,
            addressOf: (nodeId) => this.members.get(nodeId)?.address,
            metrics: this.metrics,
            logger: this.logger,
            groupCommitBytesMax: this.options.groupCommitBytesMax,
            entryBytesMax: this.options.entryBytesMax,
            catchUpIntervalMs: this.options.catchUpIntervalMs,
          },
          meta,
          store,
        );
        await runtime.start();
        return runtime;
      })();
      this.runtimes.set(meta.log, pending);
      pending.catch(() => this.runtimes.delete(meta.log));
    }
    return pending;
  }

  private async runtimeOf(log: string, createIfMissing: boolean, deadlineMs: number): Promise<LogRuntime> {
    if (!isValidLogName(log)) throw new BadRequestError('log', `invalid log name '${log.slice(0, 80)}': 1 to 63 characters of A-Z a-z 0-9 . _ -`);
    const known = this.runtimes.get(log);
    if (known) return known;
    const directory = this.directory as EtcdSegmentDirectory;
    let meta = (await directory.logMeta(log))?.value;
    if (!meta && createIfMissing) {
      const created: LogMeta = { log, replicationFactor: this.options.replicationFactor, ackQuorum: this.options.ackQuorum, segmentBytesMax: this.options.segmentBytesMax, createdMs: Date.now() };
      await directory.createLog(created);
      meta = (await directory.logMeta(log))?.value;
      this.logger.info({ log, replicationFactor: created.replicationFactor, ackQuorum: created.ackQuorum }, 'created log');
    }
    if (!meta) throw new UnknownLogError(log);
    void deadlineMs;
    return this.runtime(meta);
  }

  // -------------------------------------------------------------------------------------------
  // NodeApi (what the gRPC services call)

  async append(log: string, payloads: readonly Uint8Array[], options: { createIfMissing: boolean; forwarded: boolean; deadlineMs: number }): Promise<AppendResult> {
    const runtime = await this.runtimeOf(log, options.createIfMissing, options.deadlineMs);
    return runtime.append(payloads, options.forwarded, options.deadlineMs);
  }

  async *read(log: string, from: number, to: number, batchMax: number): AsyncGenerator<Array<{ index: number; timestampMs: number; payload: Buffer; checksum: string; lost: boolean; lostReason: string }>> {
    const runtime = await this.runtimeOf(log, false, 0);
    yield* runtime.read(from, to, batchMax);
  }

  async clusterStatus(log: string): Promise<ClusterStatusView> {
    const directory = this.directory as EtcdSegmentDirectory;
    const metas = log === '' ? await directory.listLogs() : [(await directory.logMeta(log))?.value].filter((m): m is LogMeta => m !== undefined);
    if (log !== '' && metas.length === 0) throw new UnknownLogError(log);
    const logs = [];
    for (const meta of metas) {
      const runtime = await this.runtimes.get(meta.log)?.catch(() => undefined);
      const segments = await directory.list(meta.log);
      const writer = runtime?.writerStatus() ?? { writer: '', epoch: 0 };
      logs.push({ meta, writer: writer.writer, writerEpoch: writer.epoch, committedIndex: runtime?.committedIndex() ?? 0, segments: segments.map((s) => s.meta) });
    }
    return { cluster: this.options.cluster, node: this.options.id, members: [...this.members.values()], logs };
  }

  // -------------------------------------------------------------------------------------------

  /** Revokes the lease (others see this node gone at once), stops serving, closes the logs. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
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
