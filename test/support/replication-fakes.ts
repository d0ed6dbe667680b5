// Fakes for unit tests of the replication protocol (STYLE rule 2: etcd and the transport sit
// behind SegmentDirectory and PeerResolver, so the protocol logic runs here on real stores in
// temporary directories, without gRPC or etcd). For unit tests only: integration tests use the
// real etcd and real gRPC servers.
//
// - MemoryDirectory: segment records with etcd's compare-and-swap semantics (one revision
//   counter for the whole store, create-only puts, updates conditional on the mod revision,
//   creates guarded by the writer election as in src/sim/directory.ts: `leaderEpoch`, and by the
//   previous segment's record being at a mod revision), snapshots to restore etcd from, and
//   switches that make calls throw as when etcd cannot be reached (optionally after applying).
// - TestNode: one node's real LogStores + PeerHandlers in its own data directory, on a disk whose
//   fdatasyncs can be held (a slow write: the store's queue waits behind it).
// - FakeNetwork: a PeerResolver that hands out the nodes' PeerHandlers. Errors a remote node
//   raises reach the caller as grpc-js would deliver them (a ServiceError-shaped error whose
//   code comes from src/rpc's toStatus); the caller's own node is called directly, as in
//   src/cluster/node.ts. Faults per node and method: refused (UNAVAILABLE), hang until a
//   deadline (DEADLINE_EXCEEDED), delay, request applied but reply lost, held until released.
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import pino from 'pino';
import { type Clock, type Disk, type DiskFile, type DiskLock, type DiskStat, type OpenMode, nodeDisk, systemClock } from '../../src/io/index.js';
import { RecoveryMetrics } from '../../src/recovery/index.js';
import {
  LogStores,
  LogWriter,
  PeerHandlers,
  type LeaderGuard,
  type LogMeta,
  type PeerApi,
  type PeerResolver,
  type SegmentDirectory,
  type SegmentMeta,
  parseSegmentMeta,
} from '../../src/replication/index.js';
import { toStatus } from '../../src/rpc/index.js';
import { type WalStore, format } from '../../src/wal/index.js';

/** Silent unless WAL_TEST_LOG names a pino level (debugging a failing test). */
export const silent = pino({ level: process.env['WAL_TEST_LOG'] ?? 'silent' });

export const GRPC_DEADLINE_EXCEEDED = 4;
export const GRPC_UNAVAILABLE = 14;

/** What grpc-js hands a caller when a call fails (code, details, metadata): the simulator's. */
import { SimServiceError as FakeServiceError } from '../../src/sim/index.js';
export { FakeServiceError };

export class EtcdUnreachableError extends Error {
  override readonly name = 'EtcdUnreachableError';
}

type DirectoryOp = 'list' | 'create' | 'update';

// -------------------------------------------------------------------------------------------
// etcd

export class MemoryDirectory implements SegmentDirectory {
  private revision = 0;
  private readonly records = new Map<string, { value: string; modRevision: number }>();
  private readonly failures: Array<{ op: DirectoryOp; applied: boolean }> = [];
  /** While true, every call throws as when etcd cannot be reached. */
  unreachable = false;
  /**
   * The epoch (create revision) of the election key that holds the writer election now. A create
   * with a leader guard succeeds only while the guard's epoch is this one (etcd: one transaction
   * comparing the election key's create revision), as in src/sim/directory.ts.
   */
  leaderEpoch = 0;
  readonly calls: Record<DirectoryOp, number> = { list: 0, create: 0, update: 0 };

  /** The next call of op throws; with applied, etcd applies it first (the answer is lost). */
  failNext(op: DirectoryOp, options: { applied?: boolean } = {}): void {
    this.failures.push({ op, applied: options.applied ?? false });
  }

  async list(log: string): Promise<Array<{ meta: SegmentMeta; modRevision: number }>> {
    await this.enter('list');
    return this.snapshot(log);
  }

  async create(meta: SegmentMeta, leader?: LeaderGuard, previousModRevision?: number): Promise<number | undefined> {
    const failure = await this.enter('create');
    const key = keyOf(meta.log, meta.segmentId);
    const deposed = leader !== undefined && leader.epoch !== this.leaderEpoch;
    const previousMoved = previousModRevision !== undefined && this.records.get(keyOf(meta.log, meta.segmentId - 1))?.modRevision !== previousModRevision;
    const result = this.records.has(key) || deposed || previousMoved ? undefined : this.put(key, meta);
    if (failure) throw new EtcdUnreachableError('etcd: create applied, answer lost');
    return result;
  }

  async update(meta: SegmentMeta, modRevision: number): Promise<number | undefined> {
    const failure = await this.enter('update');
    const key = keyOf(meta.log, meta.segmentId);
    const result = this.records.get(key)?.modRevision === modRevision ? this.put(key, meta) : undefined;
    if (failure) throw new EtcdUnreachableError('etcd: update applied, answer lost');
    return result;
  }

  /** The records of a log as etcd holds them now (synchronous, for assertions). */
  snapshot(log: string): Array<{ meta: SegmentMeta; modRevision: number }> {
    return [...this.records.entries()]
      .filter(([key]) => key.startsWith(`${log}/`))
      .map(([, r]) => ({ meta: parseSegmentMeta(JSON.parse(r.value)), modRevision: r.modRevision }))
      .sort((a, b) => a.meta.segmentId - b.meta.segmentId);
  }

  segment(log: string, segmentId: number): SegmentMeta {
    const found = this.snapshot(log).find((r) => r.meta.segmentId === segmentId);
    if (!found) throw new Error(`no record of segment ${segmentId} of ${log}`);
    return found.meta;
  }

  /** Rewrites a record as another etcd client would (the coordinator changing an ensemble). */
  edit(log: string, segmentId: number, change: (meta: SegmentMeta) => SegmentMeta): void {
    const key = keyOf(log, segmentId);
    const record = this.records.get(key);
    if (!record) throw new Error(`no record of segment ${segmentId} of ${log}`);
    this.put(key, change(parseSegmentMeta(JSON.parse(record.value))));
  }

  /** Drops a record, as etcd restored from a snapshot taken before the record was created. */
  forget(log: string, segmentId: number): void {
    if (!this.records.delete(keyOf(log, segmentId))) throw new Error(`no record of segment ${segmentId} of ${log}`);
  }

  /** Every record and the revision counter now, for restore() (an etcd snapshot). */
  takeSnapshot(): { readonly revision: number; readonly records: ReadonlyMap<string, { value: string; modRevision: number }> } {
    return { revision: this.revision, records: new Map(this.records) };
  }

  /** etcd restored from an older snapshot: records and revisions go back. */
  restore(snapshot: ReturnType<MemoryDirectory['takeSnapshot']>): void {
    this.revision = snapshot.revision;
    this.records.clear();
    for (const [key, record] of snapshot.records) this.records.set(key, record);
  }

  private put(key: string, meta: SegmentMeta): number {
    this.revision += 1;
    this.records.set(key, { value: JSON.stringify(meta), modRevision: this.revision });
    return this.revision;
  }

  /** Counts the call; throws when etcd is unreachable; returns whether to fail after applying. */
  private async enter(op: DirectoryOp): Promise<boolean> {
    this.calls[op] += 1;
    await Promise.resolve(); // answers are asynchronous, as over the network
    if (this.unreachable) throw new EtcdUnreachableError(`etcd: ${op} failed: unreachable`);
    const at = this.failures.findIndex((f) => f.op === op);
    if (at < 0) return false;
    const [failure] = this.failures.splice(at, 1);
    if (!failure?.applied) throw new EtcdUnreachableError(`etcd: ${op} failed: unreachable`);
    return true;
  }
}

function keyOf(log: string, segmentId: number): string {
  return `${log}/${String(segmentId).padStart(20, '0')}`;
}

// -------------------------------------------------------------------------------------------
// Nodes

export const ENTRY_BYTES_MAX = 64 * 1024;

export class TestNode {
  private constructor(
    readonly id: string,
    readonly dataDir: string,
    readonly logs: LogStores,
    readonly handlers: PeerHandlers,
    /** The node's disk: holdDatasyncs() makes its writes slow. */
    readonly disk: HoldableSyncDisk,
  ) {}

  static async start(id: string, root: string): Promise<TestNode> {
    const dataDir = await mkdtemp(join(root, `${id}-`));
    const disk = new HoldableSyncDisk(nodeDisk);
    const logs = new LogStores({ dataDir, backupRetentionCount: 0, entryBytesMax: ENTRY_BYTES_MAX, logger: silent, metrics: new RecoveryMetrics(), disk, clock: systemClock });
    return new TestNode(id, dataDir, logs, new PeerHandlers(logs, silent), disk);
  }

  store(log: string): Promise<WalStore> {
    return this.logs.store(log);
  }

  segmentPath(log: string, segmentId: number): string {
    return join(this.logs.logDir(log), 'segments', format.segmentFileName(segmentId));
  }

  close(): Promise<void> {
    this.disk.releaseDatasyncs();
    return this.logs.closeAll();
  }
}

/**
 * node:fs, except that while held every fdatasync (the store's append: write, then fdatasync,
 * then the entries count) waits until released. Renames and fsyncs (EPOCH, catalogs, new
 * segment headers) are never held, so only the appends in flight are slow.
 */
export class HoldableSyncDisk implements Disk {
  private held: Array<() => void> | undefined;

  constructor(private readonly inner: Disk) {}

  /** From now on, fdatasyncs wait until releaseDatasyncs(). */
  holdDatasyncs(): void {
    this.held ??= [];
  }

  releaseDatasyncs(): void {
    const waiting = this.held ?? [];
    this.held = undefined;
    for (const release of waiting) release();
  }

  /** fdatasyncs waiting now. */
  get datasyncsWaiting(): number {
    return this.held?.length ?? 0;
  }

  async open(path: string, mode: OpenMode): Promise<DiskFile> {
    const file = await this.inner.open(path, mode);
    return {
      read: (buf, offset, byteLength, position) => file.read(buf, offset, byteLength, position),
      write: (buf, offset, byteLength, position) => file.write(buf, offset, byteLength, position),
      truncate: (byteLength) => file.truncate(byteLength),
      datasync: async () => {
        const held = this.held;
        if (held) await new Promise<void>((resolve) => held.push(resolve));
        return file.datasync();
      },
      sync: () => file.sync(),
      byteLength: () => file.byteLength(),
      close: () => file.close(),
    };
  }
  stat(path: string): Promise<DiskStat | undefined> {
    return this.inner.stat(path);
  }
  readFile(path: string): Promise<Buffer> {
    return this.inner.readFile(path);
  }
  rename(from: string, to: string): Promise<void> {
    return this.inner.rename(from, to);
  }
  link(from: string, to: string): Promise<void> {
    return this.inner.link(from, to);
  }
  unlink(path: string): Promise<void> {
    return this.inner.unlink(path);
  }
  remove(path: string): Promise<void> {
    return this.inner.remove(path);
  }
  mkdirp(dir: string): Promise<void> {
    return this.inner.mkdirp(dir);
  }
  readdir(dir: string): Promise<string[]> {
    return this.inner.readdir(dir);
  }
  fsyncDir(dir: string): Promise<void> {
    return this.inner.fsyncDir(dir);
  }
  copyFile(from: string, to: string): Promise<void> {
    return this.inner.copyFile(from, to);
  }
  mkdtemp(prefix: string): Promise<string> {
    return this.inner.mkdtemp(prefix);
  }
  lock(dir: string): Promise<DiskLock> {
    return this.inner.lock(dir);
  }
  readChunks(path: string, chunkBytes: number): AsyncIterable<Buffer> {
    return this.inner.readChunks(path, chunkBytes);
  }
}

/** Three (or more) nodes in one temporary root, removed by close(). */
export class TestCluster {
  readonly network: FakeNetwork;
  private constructor(
    readonly root: string,
    readonly nodes: Map<string, TestNode>,
    readonly directory: MemoryDirectory,
  ) {
    this.network = new FakeNetwork(nodes);
  }

  static async start(ids: readonly string[]): Promise<TestCluster> {
    const root = await mkdtemp(join(tmpdir(), 'wal-replication-'));
    const nodes = new Map<string, TestNode>();
    for (const id of ids) nodes.set(id, await TestNode.start(id, root));
    return new TestCluster(root, nodes, new MemoryDirectory());
  }

  node(id: string): TestNode {
    const node = this.nodes.get(id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }

  async addNode(id: string): Promise<TestNode> {
    const node = await TestNode.start(id, this.root);
    this.nodes.set(id, node);
    return node;
  }

  /** Copies a member's sealed segment file to path, as PeerService.FetchSegment does. */
  async fetchFile(from: string, log: string, segmentId: number, path: string): Promise<void> {
    const file = await this.node(from).handlers.openSegmentFile(log, segmentId, 64 * 1024);
    if (!file) throw new FakeServiceError(5, `segment ${segmentId} is not sealed on ${from}`);
    await pipeline(file.chunks, createWriteStream(path));
  }

  async close(): Promise<void> {
    this.network.healAll();
    for (const node of this.nodes.values()) await node.close().catch(() => undefined);
    await rm(this.root, { recursive: true, force: true });
  }
}

export function logMetaOf(log: string, segmentBytesMax: number, replicationFactor = 3, ackQuorum = 2): LogMeta {
  return { log, replicationFactor, ackQuorum, segmentBytesMax, createdMs: 1 };
}

export interface WriterUnderTest {
  readonly writer: LogWriter;
  /** Every onCommitted call, in order. */
  readonly committed: number[];
  /** onFailed calls (the writer stopped by itself). */
  readonly failures: Error[];
  /** The highest index each member acknowledged to this writer (onReplicated). */
  readonly replicated: Map<string, number>;
  /** The writer's clock (advance() it to move past time windows). */
  readonly clock: SteppingClock;
}

export interface StartWriterOptions {
  readonly log: string;
  readonly self: string;
  readonly epoch: number;
  readonly segmentBytesMax: number;
  /** The process name for FakeNetwork.kill (default: self). */
  readonly caller?: string;
  readonly live?: () => readonly string[];
  readonly groupCommitBytesMax?: number;
  /** The log's replication factor and ack quorum (default 3 and 2). */
  readonly replicationFactor?: number;
  readonly ackQuorum?: number;
  /**
   * Creates segment records only while the writer election is still this epoch's
   * (MemoryDirectory.leaderEpoch), as LogRuntime's writers do. Default: no guard.
   */
  readonly guarded?: boolean;
  /** Batches in flight (default 4: the pipelining mechanism stays under test; production's default is 1). */
  readonly pipelineBatchesMax?: number;
}

/** A LogWriter on cluster node self, wired to the fake directory and network. */
export function startWriter(cluster: TestCluster, o: StartWriterOptions): WriterUnderTest {
  const committed: number[] = [];
  const failures: Error[] = [];
  const replicated = new Map<string, number>();
  const clock = new SteppingClock();
  const writer = new LogWriter({
    log: o.log,
    self: o.self,
    epoch: o.epoch,
    logMeta: logMetaOf(o.log, o.segmentBytesMax, o.replicationFactor, o.ackQuorum),
    directory: cluster.directory,
    ...(o.guarded ? { leader: { key: `writer/${o.self}-${o.epoch}`, epoch: o.epoch } } : {}),
    peers: cluster.network.resolverFor(o.self, o.caller ?? o.self),
    liveMembers: o.live ?? (() => [...cluster.nodes.keys()].sort()),
    logger: silent,
    clock,
    onCommitted: (index) => committed.push(index),
    onFailed: (reason) => failures.push(reason),
    onReplicated: (node, lastIndex) => replicated.set(node, Math.max(lastIndex, replicated.get(node) ?? 0)),
    groupCommitBytesMax: o.groupCommitBytesMax ?? 256 * 1024,
    entryBytesMax: ENTRY_BYTES_MAX,
    pipelineBatchesMax: o.pipelineBatchesMax ?? 4,
  });
  return { writer, committed, failures, replicated, clock };
}

/** Resolves once each of nodes has acknowledged index to the writer (its send chain settled). */
export function acknowledgedBy(handle: WriterUnderTest, nodes: readonly string[], index: number): Promise<void> {
  return until(() => nodes.every((node) => (handle.replicated.get(node) ?? 0) >= index));
}

// -------------------------------------------------------------------------------------------
// Transport

export type PeerMethod = 'replicate' | 'fence' | 'seal' | 'readFrames';

export type Fault =
  /** Refused at once; the request never reaches the node (UNAVAILABLE). */
  | { readonly kind: 'unavailable' }
  /** The request never reaches the node; the call fails at the deadline (DEADLINE_EXCEEDED). */
  | { readonly kind: 'hang'; readonly deadlineMs: number }
  /** The request reaches the node ms late. */
  | { readonly kind: 'delay'; readonly ms: number }
  /** The node applies the request; its answer is lost (UNAVAILABLE). */
  | { readonly kind: 'lose-reply' }
  /** The request waits until heal(node), then reaches the node. */
  | { readonly kind: 'hold' };

interface Installed {
  readonly fault: Fault;
  readonly methods: readonly PeerMethod[] | undefined;
}

export class FakeNetwork {
  private readonly faults = new Map<string, Installed>();
  private readonly held = new Map<string, Array<{ readonly caller: string; readonly deliver: () => void }>>();
  private readonly notLive = new Set<string>();
  private readonly dead = new Set<string>();
  /** Calls that reached the fake per node and method ("b.replicate"), faulty or not. */
  readonly calls = new Map<string, number>();

  constructor(private readonly nodes: ReadonlyMap<string, TestNode>) {}

  /**
   * The resolver a process on node self uses: itself directly, others as remote peers. caller
   * names the process (two writers on one node are two callers) for kill().
   */
  resolverFor(self: string, caller = self): PeerResolver {
    return (id) => {
      const node = this.nodes.get(id);
      if (!node || this.notLive.has(id)) return undefined;
      return this.wrap(node, id !== self, caller);
    };
  }

  /**
   * The caller's process dies: its requests held anywhere are never delivered, and its calls
   * from now on never reach a node nor settle.
   */
  kill(caller: string): void {
    this.dead.add(caller);
    for (const list of this.held.values()) list.splice(0, list.length, ...list.filter((h) => h.caller !== caller));
  }

  fail(node: string, fault: Fault, methods?: readonly PeerMethod[]): void {
    this.releaseHeld(node);
    this.faults.set(node, { fault, methods });
  }

  /** Removes the node's fault; requests held for it go through. */
  heal(node: string): void {
    this.faults.delete(node);
    this.notLive.delete(node);
    this.releaseHeld(node);
  }

  healAll(): void {
    for (const node of [...this.faults.keys(), ...this.notLive, ...this.held.keys()]) this.heal(node);
  }

  /** The resolver says the node is not a live member (its etcd registration is gone). */
  markGone(node: string): void {
    this.notLive.add(node);
  }

  /** Requests waiting on a hold fault for node. */
  heldCount(node: string): number {
    return this.held.get(node)?.length ?? 0;
  }

  callCount(node: string, method: PeerMethod): number {
    return this.calls.get(`${node}.${method}`) ?? 0;
  }

  private releaseHeld(node: string): void {
    for (const held of this.held.get(node)?.splice(0) ?? []) held.deliver();
  }

  private wrap(node: TestNode, remote: boolean, caller: string): PeerApi {
    const h = node.handlers;
    const via = <T>(method: PeerMethod, call: () => Promise<T>): Promise<T> => this.call(node.id, method, remote, caller, call);
    return {
      replicate: (log, epoch, segment, frames, committedIndex) => via('replicate', () => h.replicate(log, epoch, segment, frames, committedIndex)),
      fence: (log, segmentId, epoch) => via('fence', () => h.fence(log, segmentId, epoch)),
      seal: (log, segmentId, epoch, lastIndex, expected) => via('seal', () => h.seal(log, segmentId, epoch, lastIndex, expected)),
      readFrames: (log, segmentId, from, to, bytesMax) => via('readFrames', () => h.readFrames(log, segmentId, from, to, bytesMax)),
    };
  }

  private async call<T>(node: string, method: PeerMethod, remote: boolean, caller: string, call: () => Promise<T>): Promise<T> {
    const key = `${node}.${method}`;
    this.calls.set(key, (this.calls.get(key) ?? 0) + 1);
    if (this.dead.has(caller)) return new Promise<T>(() => undefined);
    const installed = this.faults.get(node);
    const fault = installed && (!installed.methods || installed.methods.includes(method)) ? installed.fault : undefined;
    const run = async (): Promise<T> => {
      try {
        return await call();
      } catch (error) {
        if (!remote) throw error;
        const status = toStatus(error);
        throw new FakeServiceError(status.code, status.details);
      }
    };
    switch (fault?.kind) {
      case undefined:
        return run();
      case 'unavailable':
        throw new FakeServiceError(GRPC_UNAVAILABLE, `${node} is unavailable`);
      case 'hang':
        await sleep(fault.deadlineMs);
        throw new FakeServiceError(GRPC_DEADLINE_EXCEEDED, `${method} to ${node}: deadline exceeded`);
      case 'delay':
        await sleep(fault.ms);
        return run();
      case 'lose-reply':
        await run().catch(() => undefined);
        throw new FakeServiceError(GRPC_UNAVAILABLE, `${method} to ${node}: connection reset`);
      case 'hold': {
        let list = this.held.get(node);
        if (!list) {
          list = [];
          this.held.set(node, list);
        }
        const waiting = list;
        await new Promise<void>((resolve) => waiting.push({ caller, deliver: resolve }));
        return run();
      }
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls cond every few milliseconds until it holds (or fails after timeoutMs). */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(5);
  }
}

/**
 * A clock whose wall time (entry timestamps, createdMs, suspect times) moves on by 1 ms per
 * reading, and jumps with advance(). Waits and timers are real (systemClock): the fake network's
 * delays and deadlines take real time.
 */
export class SteppingClock implements Clock {
  private wallMs: number;
  private aheadMs = 0;
  constructor(startMs = 1_700_000_000_000) {
    this.wallMs = startMs;
  }
  nowMs(): number {
    return this.wallMs++;
  }
  monotonicMs(): number {
    return systemClock.monotonicMs() + this.aheadMs;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return systemClock.sleep(ms, signal);
  }
  setTimer(ms: number, fn: () => void): () => void {
    return systemClock.setTimer(ms, fn);
  }
  /** Moves both clocks on by ms at once (waits already running are not shortened). */
  advance(ms: number): void {
    this.wallMs += ms;
    this.aheadMs += ms;
  }
}

/** A payload that names its number, so a misplaced entry shows in a failure message. */
export function payloadOf(n: number, byteLength = 48): Buffer {
  const head = Buffer.from(`entry-${n}:`);
  const out = Buffer.alloc(Math.max(byteLength, head.byteLength));
  head.copy(out);
  for (let i = head.byteLength; i < out.byteLength; i++) out[i] = (n * 31 + i) & 0xff;
  return out;
}
