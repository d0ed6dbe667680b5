// The simulated cluster: N nodes, each a process (killable, restartable) running the real
// LogStores, PeerHandlers, LogWriter and catch-up code on its own simulated disk, connected by
// the simulated network and sharing the simulated etcd. The writer election is the simulator's
// (it grants epochs from etcd's revision counter, as the real election's create revision does);
// a deposed writer is told only after a lag, as the etcd3 client learns of a lost lease late.
import pino, { type Logger } from 'pino';
import { type Clock, type Disk, type SeededRandom } from '../io/index.js';
import { RecoveryMetrics } from '../recovery/index.js';
import { type WalStore, format } from '../wal/index.js';
import { RepairService } from '../cluster/index.js';
import { type LogMeta, LogReader, LogStores, LogWriter, PeerHandlers, type PeerResolver, type SegmentDirectory, catchUpLog, expectationOfMeta } from '../replication/index.js';
import type { SimEtcd } from './directory.js';
import { type CrashMode, SimFileSystem } from './disk.js';
import type { SimLoop, SimProcess } from './loop.js';
import type { SimNetwork } from './network.js';

export const SIM_LOG = 'sim';
const DATA_DIR = '/data';

export interface SimNodeRuntime {
  readonly process: SimProcess;
  readonly disk: Disk;
  readonly clock: Clock;
  readonly stores: LogStores;
  readonly handlers: PeerHandlers;
  readonly peers: PeerResolver;
  readonly directory: SegmentDirectory;
  writer: LogWriter | undefined;
  reader: Promise<LogReader> | undefined;
  /** The log's store once open. */
  store?: WalStore;
  /** The node's repairs of its sealed copies from replicas (src/cluster/repairs.ts). */
  readonly repairs: RepairService;
}

export class SimNode {
  readonly fs: SimFileSystem;
  runtime: SimNodeRuntime | undefined;
  private incarnation = 0;
  crashes = 0;
  /** Per segment, the last index the store said was durable when the node crashed. */
  private durableAtCrash: Map<number, number> | undefined;

  constructor(readonly id: string, private readonly sim: SimCluster, private readonly random: SeededRandom) {
    this.fs = new SimFileSystem(id, random.fork());
  }

  /**
   * One scrub pass (as the node's Scrubber does): every sealed copy it holds is checked against
   * etcd's record; a damaged one goes to the repair service. With source 'coordinator' it
   * stands for the coordinator retrying a repair the node gave up on (no hold-off).
   */
  async scrub(source: 'scrub' | 'coordinator' = 'scrub'): Promise<void> {
    const runtime = this.runtime;
    if (!runtime?.store) return;
    const store = runtime.store;
    for (const { meta } of await runtime.directory.list(SIM_LOG)) {
      if (meta.state !== 'SEALED' || !meta.ensemble.includes(this.id) || store.segmentRecord(meta.segmentId)?.state !== 'sealed') continue;
      const inspection = await store.checkSealedSegment(meta.segmentId, expectationOfMeta(meta));
      if (inspection.findings.length === 0) continue;
      if (source === 'coordinator') await runtime.repairs.repairNow(SIM_LOG, meta.segmentId, { strategy: 'partial', dryRun: false, source }).catch(() => undefined);
      else runtime.repairs.schedule(SIM_LOG, meta.segmentId, source, inspection.findings[0]?.detail ?? 'damaged');
    }
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

  start(): SimNodeRuntime {
    const process: SimProcess = { name: `${this.id}#${(this.incarnation += 1)}`, incarnation: this.incarnation, alive: true };
    const disk = this.fs.diskFor(this.sim.loop, process);
    const clock = this.sim.loop.clockFor(process);
    const stores = new LogStores({
      dataDir: DATA_DIR,
      backupRetentionCount: 0,
      entryBytesMax: this.sim.logMeta.segmentBytesMax,
      logger: this.sim.logger,
      metrics: this.sim.metrics,
      disk,
      clock,
    });
    const handlers = new PeerHandlers(stores, this.sim.logger);
    const peers = this.sim.network.resolverFor(this.id, process, (node) => this.sim.isLive(node));
    const directory = this.sim.etcd.directoryFor(process);
    const repairs = new RepairService({
      self: this.id,
      logs: stores,
      directory,
      peers,
      fetchFile: (node, _log, segmentId, path) => this.sim.fetchFile(runtime, node, segmentId, path),
      tempDir: DATA_DIR,
      entryBytesMax: this.sim.logMeta.segmentBytesMax,
      strategy: 'partial',
      roundsMax: 3,
      logger: this.sim.logger,
      report: async () => undefined,
      clock,
      random: this.random.fork(),
      disk,
    });
    const runtime: SimNodeRuntime = { process, disk, clock, stores, handlers, peers, directory, writer: undefined, reader: undefined, repairs };
    this.runtime = runtime;
    this.sim.network.attach(this.id, { process, handlers, committed: () => (runtime.writer?.isReady ? runtime.writer.committedIndex : undefined) });
    // A node opens (and recovers) its logs at start, as src/cluster/node.ts does.
    const expected = this.durableAtCrash;
    this.durableAtCrash = undefined;
    stores.store(SIM_LOG).then(
      (store) => {
        runtime.store = store;
        if (expected) this.checkDurable(store, expected);
      },
      (error: unknown) => this.sim.trace(`${this.id} failed to open its log: ${describe(error)}`),
    );
    return runtime;
  }

  /** kill -9, and the machine loses power with it: unsynced state goes per the crash mode. */
  crash(mode: CrashMode): void {
    const runtime = this.runtime;
    if (!runtime) return;
    // What the store has said is durable (its records hold synced state only) must survive.
    // (A segment with no entry yet is not data: one created just before the crash may be gone.)
    if (runtime.store) this.durableAtCrash = new Map(runtime.store.segmentRecords().filter((r) => r.lastIndex >= r.firstIndex).map((r) => [r.segmentId, r.lastIndex]));
    runtime.process.alive = false;
    this.runtime = undefined;
    this.sim.network.attach(this.id, undefined);
    this.fs.crash(mode);
    this.crashes += 1;
  }

  /** After a restart: every segment holds at least what was durable before the crash. */
  private checkDurable(store: WalStore, expected: ReadonlyMap<number, number>): void {
    for (const [segmentId, lastIndex] of expected) {
      const now = store.segmentRecord(segmentId);
      if (!now || now.lastIndex < lastIndex) {
        this.sim.violate('durable-entries-survive-a-crash', `${this.id}: segment ${segmentId} held ${lastIndex} durably before the crash, ${now ? now.lastIndex : 'nothing'} after it`);
      }
    }
  }

  /** The node's read path (src/replication/reader.ts), as its LogRuntime builds it. */
  readerOf(runtime: SimNodeRuntime): Promise<LogReader> {
    runtime.reader ??= runtime.stores.store(SIM_LOG).then(
      (store) =>
        new LogReader({
          log: SIM_LOG,
          self: this.id,
          store,
          directory: runtime.directory,
          peers: runtime.peers,
          logger: this.sim.logger,
          localCommitted: () => {
            const writer = runtime.writer;
            const own = writer?.isReady && this.sim.writerNode === this ? writer.committedIndex : 0;
            return Math.max(own, runtime.handlers.committedIndex(SIM_LOG));
          },
          writerCommitted: async () => {
            const writer = this.sim.writerNode;
            if (!writer || writer === this) return undefined;
            return this.sim.network.askCommitted(this.id, writer.id, runtime.process);
          },
          onDamage: (segmentId, detail) => runtime.repairs.schedule(SIM_LOG, segmentId, 'read', detail),
        }),
    );
    runtime.reader.catch(() => (runtime.reader = undefined));
    return runtime.reader;
  }

  /** Runs one catch-up pass (as the node's background loop does). */
  async catchUp(): Promise<void> {
    const runtime = this.runtime;
    if (!runtime) return;
    const store = await runtime.stores.store(SIM_LOG);
    const reader = await this.readerOf(runtime);
    reader.setRecords(await runtime.directory.list(SIM_LOG));
    await catchUpLog({
      log: SIM_LOG,
      self: this.id,
      store,
      directory: runtime.directory,
      peers: runtime.peers,
      logger: this.sim.logger,
      fetchFile: (node, segmentId, path) => this.sim.fetchFile(runtime, node, segmentId, path),
      tempDir: store.dataDir,
      disk: runtime.disk,
    });
  }
}

export class SimCluster {
  readonly nodes: SimNode[];
  readonly metrics = new RecoveryMetrics();
  readonly logger: Logger = pino({ level: process.env['WAL_SIM_LOG'] ?? 'silent' });
  readonly logMeta: LogMeta;
  /** The node the (simulated) election names writer, and its epoch. */
  writerNode: SimNode | undefined;
  writerEpoch = 0;
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
    this.logMeta = { log: SIM_LOG, replicationFactor: 3, ackQuorum: 2, segmentBytesMax, createdMs: 0 };
    this.nodes = Array.from({ length: nodeCount }, (_, i) => new SimNode(`n${i + 1}`, this, random.fork()));
  }

  isLive(node: string): boolean {
    return this.nodes.find((n) => n.id === node)?.alive === true;
  }

  liveIds(): string[] {
    return this.nodes.filter((n) => n.alive).map((n) => n.id);
  }

  node(id: string): SimNode {
    const node = this.nodes.find((n) => n.id === id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }

  /**
   * The election moves to node with a new, higher epoch. The previous writer is told it lost
   * only after lagMs (it may keep writing meanwhile: the members' fences must stop it).
   */
  elect(node: SimNode, lagMs: number): void {
    const previous = this.writerNode?.runtime?.writer;
    const previousRuntime = this.writerNode?.runtime;
    if (previous && previousRuntime) this.loop.schedule(lagMs, () => previous.stop(), previousRuntime.process);
    this.writerEpoch = this.etcd.nextEpoch();
    this.writerNode = node;
    this.trace(`elect ${node.id} epoch ${this.writerEpoch}`);
    this.startWriter(node, this.writerEpoch);
  }

  /** Starts a writer on node for epoch, as src/cluster/log-runtime.ts does while elected. */
  startWriter(node: SimNode, epoch: number): void {
    const runtime = node.runtime;
    if (!runtime) return;
    const writer = new LogWriter({
      log: SIM_LOG,
      self: node.id,
      epoch,
      logMeta: this.logMeta,
      directory: runtime.directory,
      leader: { key: `election/${epoch}`, epoch },
      peers: runtime.peers,
      liveMembers: () => this.liveIds(),
      logger: this.logger,
      clock: runtime.clock,
      onCommitted: (index) => runtime.handlers.noteCommitted(SIM_LOG, index),
      onFailed: () => {
        // A writer that fails while its node is still elected comes back after a backoff.
        if (runtime.writer !== writer) return;
        runtime.writer = undefined;
        this.loop.schedule(200, () => {
          if (this.writerNode === node && this.writerEpoch === epoch && node.runtime === runtime && !runtime.writer) this.startWriter(node, epoch);
        }, runtime.process);
      },
      groupCommitBytesMax: 64 * 1024,
      entryBytesMax: 4096,
    });
    runtime.writer = writer;
    writer.whenReady().then(
      () => this.trace(`${node.id} writer ready epoch ${epoch} committed ${writer.committedIndex}`),
      (error: unknown) => {
        this.trace(`${node.id} writer epoch ${epoch} failed to start: ${describe(error)}`);
        if (runtime.writer === writer) runtime.writer = undefined;
        this.loop.schedule(300, () => {
          if (this.writerNode === node && this.writerEpoch === epoch && node.runtime === runtime && !runtime.writer) this.startWriter(node, epoch);
        }, runtime.process);
      },
    );
  }

  /** FetchSegment from node into path on the caller's disk, over the simulated network. */
  async fetchFile(caller: SimNodeRuntime, node: string, segmentId: number, path: string): Promise<void> {
    const source = this.nodes.find((n) => n.id === node)?.runtime;
    if (!source) throw new Error(`${node} is unavailable`);
    await this.loop.sleep(0.5, caller.process);
    const opened = await source.handlers.openSegmentFile(SIM_LOG, segmentId, 64 * 1024);
    if (!opened) throw new Error(`${node} does not hold segment ${segmentId} sealed`);
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
