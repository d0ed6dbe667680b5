// A real wal-recovery cluster for integration tests: N `node` processes (node dist/cli/main.js
// node) on 127.0.0.1 with free ports, against a real etcd (./etcd.ts). Nodes can be killed
// (SIGKILL or SIGTERM) and restarted with the same id, data dir and port. Helpers append through a
// given node while recording every acknowledged index and payload, read a log back from a node,
// and compare sealed segment files across the replicas etcd names for them.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { AdminClient, INSECURE, PeerClient, type Transport, WalClient } from '../../src/rpc/index.js';
import { segmentFileName } from '../../src/wal/format.js';
import type { ClusterStatus__Output } from '../../src/rpc/generated/walrecovery/v1/ClusterStatus.js';
import type { LogStatus__Output } from '../../src/rpc/generated/walrecovery/v1/LogStatus.js';
import { freePort, killAndWait, sleepMs, trackChild } from './etcd.js';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = join(REPO_ROOT, 'dist/cli/main.js');
const START_TIMEOUT_MS = 30_000;

export interface NodeLine {
  readonly node: string;
  readonly target: string;
  readonly metrics: string;
  readonly pid: number;
}

export interface ClusterOptions {
  readonly size: number;
  readonly etcd: string;
  readonly segmentBytes?: number;
  readonly cluster?: string;
  /** More arguments of each node's command line (TLS files, say). */
  readonly nodeArgs?: (id: string) => readonly string[];
  /** How the test's clients reach every node (default plaintext). */
  readonly clientTransport?: Transport;
}

/** One node process; port and data dir survive restarts. */
export class TestNode {
  child: ChildProcess | undefined;
  line: NodeLine | undefined;
  private wal: WalClient | undefined;
  private admin: AdminClient | undefined;
  private peer: PeerClient | undefined;
  /** How the test's clients reach the node (TLS with an identity, or plaintext). */
  transport: Transport = INSECURE;

  constructor(
    readonly id: string,
    readonly dataDir: string,
    readonly port: number,
    readonly logPath: string,
  ) {}

  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  walClient(): WalClient {
    this.wal ??= new WalClient(this.target, this.transport);
    return this.wal;
  }

  adminClient(): AdminClient {
    this.admin ??= new AdminClient(this.target, this.transport);
    return this.admin;
  }

  peerClient(): PeerClient {
    this.peer ??= new PeerClient(this.target, undefined, this.transport);
    return this.peer;
  }

  /** Clients keep reconnecting to a dead node: close them with it, make new ones after restart. */
  closeClients(): void {
    this.wal?.close();
    this.admin?.close();
    this.peer?.close();
    this.wal = undefined;
    this.admin = undefined;
    this.peer = undefined;
  }

  segmentPath(log: string, segmentId: number): string {
    return join(this.dataDir, 'logs', log, 'segments', segmentFileName(segmentId));
  }
}

export class TestCluster {
  readonly nodes: TestNode[] = [];

  private constructor(
    readonly root: string,
    readonly options: ClusterOptions,
  ) {}

  static async start(options: ClusterOptions): Promise<TestCluster> {
    const root = await mkdtemp(join(tmpdir(), 'wal-cluster-'));
    const cluster = new TestCluster(root, options);
    try {
      for (let i = 1; i <= options.size; i += 1) {
        const id = `n${i}`;
        const dataDir = join(root, id);
        await mkdir(dataDir, { recursive: true });
        const node = new TestNode(id, dataDir, await freePort(), join(root, `${id}.log`));
        if (options.clientTransport) node.transport = options.clientTransport;
        cluster.nodes.push(node);
      }
      // Started one after the other: the first creates nothing, but start-up order is then stable.
      for (const node of cluster.nodes) await cluster.launch(node);
    } catch (error) {
      await cluster.dispose();
      throw error;
    }
    return cluster;
  }

  node(id: string): TestNode {
    const found = this.nodes.find((n) => n.id === id);
    if (!found) throw new Error(`no node ${id}`);
    return found;
  }

  live(): TestNode[] {
    return this.nodes.filter((n) => n.alive);
  }

  private async launch(node: TestNode): Promise<void> {
    const args = ['node', '--id', node.id, '--data-dir', node.dataDir, '--listen', node.target, '--etcd', this.options.etcd];
    if (this.options.segmentBytes !== undefined) args.push('--segment-bytes', String(this.options.segmentBytes));
    if (this.options.cluster !== undefined) args.push('--cluster', this.options.cluster);
    if (this.options.nodeArgs) args.push(...this.options.nodeArgs(node.id));
    await launchNode(node, args);
  }

  /** kill -9 (default) or SIGTERM by pid; waits for the exit. */
  async kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const node = this.node(id);
    node.closeClients();
    if (node.child) await killAndWait(node.child, signal);
  }

  /** Starts the node again with the same id, data dir and port. */
  async restart(id: string): Promise<void> {
    const node = this.node(id);
    if (node.alive) await this.kill(id, 'SIGTERM');
    await this.launch(node);
  }

  /** The log's status as one node sees it. */
  async logStatus(log: string, via?: TestNode): Promise<{ status: ClusterStatus__Output; log: LogStatus__Output }> {
    const node = via ?? this.live()[0];
    if (!node) throw new Error('no live node');
    const status = await node.adminClient().status(log);
    const found = status.logs.find((l) => l.log === log);
    if (!found) throw new Error(`node ${node.id} reports no log ${log}`);
    return { status, log: found };
  }

  /** The log's writer (polls until one live node reports a writer that is live). */
  async writerOf(log: string, timeoutMs = 20_000): Promise<{ writer: TestNode; epoch: number }> {
    return pollUntil(`a live writer of ${log}`, timeoutMs, async () => {
      for (const node of this.live()) {
        const { log: status } = await this.logStatus(log, node).catch(() => ({ log: undefined }));
        if (!status || status.writer === '') continue;
        const writer = this.nodes.find((n) => n.id === status.writer);
        if (writer?.alive) return { writer, epoch: status.writer_epoch };
      }
      return undefined;
    });
  }

  /** Stops every node by pid (SIGKILL: the data dirs are thrown away) and removes the root. */
  async dispose(): Promise<void> {
    for (const node of this.nodes) {
      node.closeClients();
      if (node.child) await killAndWait(node.child, 'SIGKILL');
    }
    if (process.env['WAL_KEEP_TEST_DIRS'] === '1') return;
    await rm(this.root, { recursive: true, force: true });
  }
}

/** Calls probe until it returns a value (not undefined) or the time is up. */
export async function pollUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, intervalMs = 250): Promise<T> {
  const until = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError });
    await sleepMs(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Appending with a record of every acknowledgement

/** A payload unique to (tag, sequence number), padded to bytes. */
export function payloadFor(tag: string, seq: number, bytes = 64): Buffer {
  const head = `${tag}-${seq}-`;
  const out = Buffer.alloc(Math.max(bytes, head.length), 0x2e);
  out.write(head, 0, 'latin1');
  return out;
}

export interface AppenderOptions {
  readonly log: string;
  readonly tag: string;
  /** Stop once this many entries are acknowledged (in flight batches still finish). */
  readonly entries: number;
  readonly concurrency: number;
  readonly batch: number;
  readonly payloadBytes?: number;
  readonly deadlineMs?: number;
  readonly createIfMissing?: boolean;
}

/**
 * Concurrent appenders through one client. Every acknowledged range is recorded, with its
 * payloads; failures are counted by gRPC code and retried with fresh payloads (a failed append
 * may or may not have been written, so its payloads are never reused).
 */
export class Appender {
  readonly acked = new Map<number, Buffer>();
  readonly errors = new Map<number | string, number>();
  readonly conflicts: string[] = [];
  private seq = 0;
  private stopped = false;
  private client: WalClient;
  done: Promise<void> = Promise.resolve();

  constructor(
    client: WalClient,
    readonly options: AppenderOptions,
  ) {
    this.client = client;
  }

  get ackedCount(): number {
    return this.acked.size;
  }

  get errorCount(): number {
    let n = 0;
    for (const count of this.errors.values()) n += count;
    return n;
  }

  /** Sends the next appends through another node. */
  retarget(client: WalClient): void {
    this.client = client;
  }

  start(): this {
    this.done = Promise.all(Array.from({ length: this.options.concurrency }, () => this.worker())).then(() => undefined);
    return this;
  }

  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }

  /** Resolves once at least count entries are acknowledged. */
  async until(count: number, timeoutMs: number): Promise<void> {
    await pollUntil(`${count} acknowledged entries (have ${this.ackedCount})`, timeoutMs, async () => (this.ackedCount >= count ? true : undefined), 50);
  }

  private async worker(): Promise<void> {
    const { log, batch, entries } = this.options;
    while (!this.stopped && this.ackedCount < entries) {
      const payloads: Buffer[] = [];
      for (let i = 0; i < batch; i += 1) payloads.push(payloadFor(this.options.tag, (this.seq += 1), this.options.payloadBytes));
      try {
        const outcome = await this.client.append(log, payloads, { deadlineMs: this.options.deadlineMs ?? 15_000, createIfMissing: this.options.createIfMissing ?? false });
        if (outcome.lastIndex - outcome.firstIndex + 1 !== payloads.length) this.conflicts.push(`range ${outcome.firstIndex}..${outcome.lastIndex} for ${payloads.length} payloads`);
        payloads.forEach((payload, i) => {
          const index = outcome.firstIndex + i;
          if (this.acked.has(index)) this.conflicts.push(`index ${index} acknowledged twice`);
          this.acked.set(index, payload);
        });
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        const key = typeof code === 'number' ? code : String(error);
        this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
        await sleepMs(50);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Reading back

export interface ReadBack {
  /** payloads[i] is the payload of index i + 1. */
  readonly payloads: Buffer[];
  readonly problems: string[];
}

/** Reads the whole committed log from a node, checking that indices run 1, 2, 3 ... */
export async function readAll(client: WalClient, log: string): Promise<ReadBack> {
  const payloads: Buffer[] = [];
  const problems: string[] = [];
  for await (const response of client.read(log, 1, 0, { deadlineMs: 60_000, batchMax: 1024 })) {
    for (const entry of response.entries) {
      if (entry.index !== payloads.length + 1) problems.push(`index ${entry.index} arrived after ${payloads.length}`);
      if (entry.lost) problems.push(`index ${entry.index} is lost: ${entry.lost_reason}`);
      payloads.push(entry.payload);
    }
  }
  return { payloads, problems };
}

/** Acknowledged entries that a read-back lacks or returns with other bytes (at most 10 listed). */
export function missingAcknowledged(acked: ReadonlyMap<number, Buffer>, read: ReadBack): { count: number; examples: string[] } {
  let count = 0;
  const examples: string[] = [];
  for (const [index, payload] of acked) {
    const got = read.payloads[index - 1];
    if (got !== undefined && got.equals(payload)) continue;
    count += 1;
    if (examples.length < 10) examples.push(`${index}: want ${payload.toString('latin1').replace(/\.+$/, '')}, got ${got === undefined ? 'nothing' : got.toString('latin1').replace(/\.+$/, '')}`);
  }
  return { count, examples };
}

// ---------------------------------------------------------------------------------------------
// Sealed segment files

export interface SegmentComparison {
  /** Sealed, non-empty segments compared. */
  readonly compared: number;
  /** Human-readable differences (missing files, other sizes or bytes). */
  readonly differences: string[];
}

/**
 * Compares the files of every SEALED non-empty segment (per the status of `via`) on each live
 * member of its ensemble (or on every live node): all must exist and be byte-identical, with the length etcd records.
 */
export async function compareSealedSegments(cluster: TestCluster, log: string, via?: TestNode, options: { allLiveNodes?: boolean } = {}): Promise<SegmentComparison> {
  const { log: status } = await cluster.logStatus(log, via);
  const differences: string[] = [];
  let compared = 0;
  for (const segment of status.segments) {
    if (segment.state !== 'SEALED' || segment.index_count === 0) continue;
    compared += 1;
    let reference: { node: string; bytes: Buffer } | undefined;
    const holders = options.allLiveNodes ? cluster.live().map((n) => n.id) : segment.ensemble;
    for (const member of holders) {
      const node = cluster.nodes.find((n) => n.id === member);
      if (!node?.alive) continue;
      const bytes = await readFile(node.segmentPath(log, segment.segment_id)).catch(() => undefined);
      if (!bytes) {
        differences.push(`segment ${segment.segment_id}: no file on ${member}`);
        continue;
      }
      if (bytes.byteLength !== segment.byte_length) differences.push(`segment ${segment.segment_id}: ${bytes.byteLength} bytes on ${member}, etcd records ${segment.byte_length}`);
      if (!reference) reference = { node: member, bytes };
      else if (!reference.bytes.equals(bytes)) differences.push(`segment ${segment.segment_id}: ${member} differs from ${reference.node}`);
    }
  }
  return { compared, differences };
}

/** TLS flags given: as they are; none: plaintext, which the node verb wants asked for (--insecure). */
export function withTransport(args: readonly string[]): string[] {
  const chosen = args.some((a) => a === '--insecure' || a.startsWith('--tls-'));
  if (!chosen) return [...args, '--insecure'];
  // TLS to the nodes over the tests' plaintext etcd, unless etcd's TLS is given too.
  const etcdChosen = args.some((a) => a === '--etcd-insecure' || a.startsWith('--etcd-ca'));
  return args.includes('--insecure') || etcdChosen ? [...args] : [...args, '--etcd-insecure'];
}

/**
 * Starts `wal-recovery node` with args (plaintext unless they hold TLS flags) (after the script) for node, stderr appended to its log,
 * and waits for its JSON line and its gRPC channel. Shared by the test clusters.
 */
export async function launchNode(node: TestNode, args: readonly string[]): Promise<void> {
  const log = openSync(node.logPath, 'a');
  const env: NodeJS.ProcessEnv = { ...process.env, WAL_RECOVERY_LOG_LEVEL: process.env['WAL_RECOVERY_LOG_LEVEL'] ?? 'info' };
  const child = spawn(process.execPath, [CLI, ...withTransport(args)], { stdio: ['ignore', 'pipe', log], env });
  closeSync(log);
  trackChild(child);
  node.child = child;
  node.line = await new Promise<NodeLine>((resolveLine, reject) => {
    const stdout = child.stdout;
    if (!stdout) return reject(new Error('no stdout'));
    const lines = createInterface({ input: stdout });
    const timer = setTimeout(() => reject(new Error(`node ${node.id} printed no JSON line within ${START_TIMEOUT_MS} ms (log: ${node.logPath})`)), START_TIMEOUT_MS);
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      void readFile(node.logPath, 'utf8').then((text) => reject(new Error(`node ${node.id} exited (${String(code ?? signal)}) before serving:\n${text.slice(-3000)}`)));
    };
    child.once('exit', onExit);
    lines.once('line', (text) => {
      clearTimeout(timer);
      child.off('exit', onExit);
      try {
        resolveLine(JSON.parse(text) as NodeLine);
      } catch (error) {
        reject(new Error(`node ${node.id} printed a line that is not JSON: ${text}`, { cause: error }));
      }
    });
  }).catch(async (error: unknown) => {
    await killAndWait(child, 'SIGKILL');
    throw error;
  });  if (node.line.target !== node.target) throw new Error(`node ${node.id} serves on ${node.line.target}, not ${node.target}`);
  await node.walClient().waitForReady(10_000);
}
