// Containers for the chaos and compose suites: etcd and wal-recovery nodes as Docker containers
// (images from cluster/build-images.sh) on host networking, every port on 127.0.0.1, each node's
// /data a bind-mounted host directory so a test can damage segment files directly. Faults go
// through the docker CLI (kill, start, pause, unpause); testcontainers starts and removes the
// containers. Every container started here is removed by id in dispose(), even after a failure.
import { execFile } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GenericContainer, type StartedTestContainer, Wait } from 'testcontainers';
import { AdminClient, WalClient } from '../../src/rpc/index.js';
import { pollUntil } from '../support/cluster.js';
import type { ClusterStatus__Output } from '../../src/rpc/generated/walrecovery/v1/ClusterStatus.js';
import type { RecoveryMetricsResponse__Output } from '../../src/rpc/generated/walrecovery/v1/RecoveryMetricsResponse.js';

const run = promisify(execFile);

export const NODE_IMAGE = process.env['WAL_NODE_IMAGE'] ?? 'wal-recovery-node:local';
export const ETCD_IMAGE = process.env['WAL_ETCD_IMAGE'] ?? 'wal-recovery-etcd:local';
export const PROMETHEUS_IMAGE = process.env['WAL_PROMETHEUS_IMAGE'] ?? 'wal-recovery-prometheus:local';
/** uids the scratch images run as (cluster/scratch/*.Dockerfile). */
const NODE_UID = 10001;
const ETCD_UID = 10002;

export function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function docker(args: readonly string[], timeoutMs = 60_000): Promise<string> {
  const { stdout } = await run('docker', [...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

/** Throws a clear error when Docker or an image is missing. */
export async function requireImages(images: readonly string[]): Promise<void> {
  try {
    await docker(['info', '--format', '{{.ServerVersion}}'], 15_000);
  } catch (error) {
    throw new Error('no Docker daemon answers: start dockerd (cluster/ci-containers.sh does)', { cause: error });
  }
  for (const image of images) {
    try {
      await docker(['image', 'inspect', '--format', '{{.Id}}', image], 15_000);
    } catch (error) {
      throw new Error(`image ${image} is missing: run cluster/build-images.sh`, { cause: error });
    }
  }
}

export async function imageExists(image: string): Promise<boolean> {
  return docker(['image', 'inspect', '--format', '{{.Id}}', image], 15_000).then(
    () => true,
    () => false,
  );
}

/** A TCP port free on 127.0.0.1 right now (distinct from the ones handed out before). */
const handedOut = new Set<number>();
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        const p = typeof address === 'object' && address ? address.port : 0;
        server.close(() => resolve(p));
      });
    });
    // etcd's peer port is client + 1 nowhere here, but keep every port distinct anyway
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/** mulberry32: a small seeded PRNG, so that CHAOS_SEED replays the same decisions. */
export class Prng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hiInclusive: number): number {
    return lo + Math.floor(this.next() * (hiInclusive - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from nothing');
    return items[Math.floor(this.next() * items.length)] as T;
  }
  weighted<T extends string>(weights: Readonly<Record<T, number>>): T {
    const entries = Object.entries(weights) as [T, number][];
    const total = entries.reduce((s, [, w]) => s + w, 0);
    let r = this.next() * total;
    for (const [k, w] of entries) {
      if ((r -= w) < 0) return k;
    }
    return (entries[entries.length - 1] as [T, number])[0];
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i += 1) out[i] = Math.floor(this.next() * 256);
    return out;
  }
}

export { pollUntil };

// ---------------------------------------------------------------------------------------------

export interface ContainerNode {
  readonly id: string;
  readonly port: number;
  readonly metricsPort: number;
  /** Host directory bind-mounted at /data. */
  readonly dataDir: string;
  container: StartedTestContainer | undefined;
  /** Killed (or never started) and not started again yet. */
  down: boolean;
  paused: boolean;
  /** Starts so far (the metrics of a node restart from zero at each one). */
  incarnation: number;
  wal: WalClient | undefined;
  admin: AdminClient | undefined;
}

export interface ChaosClusterOptions {
  readonly nodes: number;
  readonly cluster: string;
  readonly segmentBytes: number;
  readonly scrubIntervalMs: number;
  readonly scrubBytesPerSecond?: number;
  readonly label: string;
}

export function target(node: ContainerNode): string {
  return `127.0.0.1:${node.port}`;
}

export function walOf(node: ContainerNode): WalClient {
  node.wal ??= new WalClient(target(node));
  return node.wal;
}

export function adminOf(node: ContainerNode): AdminClient {
  node.admin ??= new AdminClient(target(node));
  return node.admin;
}

function closeClients(node: ContainerNode): void {
  node.wal?.close();
  node.admin?.close();
  node.wal = undefined;
  node.admin = undefined;
}

/** etcd + N nodes as containers on host networking. */
export class ChaosCluster {
  readonly nodes: ContainerNode[] = [];
  etcd: StartedTestContainer | undefined;
  etcdDown = false;
  etcdClientPort = 0;
  etcdPeerPort = 0;
  /** Ids of every container ever started (removed in dispose). */
  readonly containerIds = new Set<string>();
  /** Called after each successful (re)start of a node. */
  onNodeStarted: (node: ContainerNode) => void = () => undefined;

  private constructor(
    readonly root: string,
    readonly options: ChaosClusterOptions,
  ) {}

  static async create(options: ChaosClusterOptions): Promise<ChaosCluster> {
    const root = await mkdtemp(join(tmpdir(), 'wal-chaos-'));
    await chmod(root, 0o755);
    const cluster = new ChaosCluster(root, options);
    cluster.etcdClientPort = await freePort();
    cluster.etcdPeerPort = await freePort();
    for (let i = 1; i <= options.nodes; i += 1) {
      const dataDir = join(root, `n${i}`);
      await ownedDir(dataDir, NODE_UID);
      cluster.nodes.push({ id: `n${i}`, port: await freePort(), metricsPort: await freePort(), dataDir, container: undefined, down: true, paused: false, incarnation: 0, wal: undefined, admin: undefined });
    }
    return cluster;
  }

  get etcdUrl(): string {
    return `http://127.0.0.1:${this.etcdClientPort}`;
  }

  node(id: string): ContainerNode {
    const found = this.nodes.find((n) => n.id === id);
    if (!found) throw new Error(`no node ${id}`);
    return found;
  }

  /** Nodes neither killed nor paused. */
  up(): ContainerNode[] {
    return this.nodes.filter((n) => !n.down && !n.paused);
  }

  async startEtcd(): Promise<void> {
    const dir = join(this.root, 'etcd');
    await ownedDir(dir, ETCD_UID);
    const peer = `http://127.0.0.1:${this.etcdPeerPort}`;
    const container = await new GenericContainer(ETCD_IMAGE)
      .withNetworkMode('host')
      .withLabels({ 'org.wal-recovery.test': this.options.label })
      .withBindMounts([{ source: dir, target: '/etcd-data', mode: 'rw' }])
      .withCommand([
        '--name=chaos',
        '--data-dir=/etcd-data',
        `--listen-client-urls=${this.etcdUrl}`,
        `--advertise-client-urls=${this.etcdUrl}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=chaos=${peer}`,
      ])
      .withWaitStrategy(Wait.forLogMessage(/ready to serve client requests/))
      .withStartupTimeout(30_000)
      .start();
    this.containerIds.add(container.getId());
    this.etcd = container;
    this.etcdDown = false;
  }

  async startNode(node: ContainerNode): Promise<void> {
    const o = this.options;
    const args = ['node', '--id', node.id, '--data-dir', '/data', '--listen', target(node), '--metrics-listen', `127.0.0.1:${node.metricsPort}`, '--etcd', this.etcdUrl, '--cluster', o.cluster, '--segment-bytes', String(o.segmentBytes), '--scrub-interval-ms', String(o.scrubIntervalMs), '--insecure'];
    if (o.scrubBytesPerSecond !== undefined) args.push('--scrub-bytes-per-second', String(o.scrubBytesPerSecond));
    const container = await new GenericContainer(NODE_IMAGE)
      .withNetworkMode('host')
      .withName(`${o.label}-${node.id}`)
      .withLabels({ 'org.wal-recovery.test': o.label, 'org.wal-recovery.node': node.id })
      .withBindMounts([{ source: node.dataDir, target: '/data', mode: 'rw' }])
      .withEnvironment({ WAL_RECOVERY_LOG_LEVEL: process.env['WAL_RECOVERY_LOG_LEVEL'] ?? 'info' })
      .withCommand(args)
      .withWaitStrategy(Wait.forLogMessage(/"target":/))
      .withStartupTimeout(60_000)
      .start();
    this.containerIds.add(container.getId());
    node.container = container;
    await this.afterStart(node);
  }

  private async afterStart(node: ContainerNode): Promise<void> {
    node.down = false;
    node.paused = false;
    node.incarnation += 1;
    closeClients(node);
    await walOf(node).waitForReady(20_000);
    this.onNodeStarted(node);
  }

  /** docker kill (SIGKILL) of a node's container. */
  async killNode(node: ContainerNode): Promise<void> {
    if (!node.container) return;
    if (node.paused) await this.unpauseNode(node);
    node.down = true;
    closeClients(node);
    await docker(['kill', node.container.getId()]);
  }

  /**
   * Starts a killed node's container again (same id, port, data) and waits until it serves.
   * Returns what the node logged since the start. clearStaleLocks removes the LOCK files of its
   * logs first (a workaround: the killed node's LOCK names pid 1, which the restarted node is too).
   */
  async restartNode(node: ContainerNode, options: { clearStaleLocks?: boolean } = {}): Promise<string> {
    if (!node.container) {
      await this.startNode(node);
      return '';
    }
    if (options.clearStaleLocks) {
      const logsDir = join(node.dataDir, 'logs');
      for (const log of await readdir(logsDir).catch(() => [] as string[])) await rm(join(logsDir, log, 'LOCK'), { force: true });
    }
    const startedBefore = Date.now();
    let output = '';
    await docker(['start', node.container.getId()]);
    // The container's old log holds an earlier serving line: wait for one printed after the start.
    await pollUntil(`${node.id} serving again`, 60_000, async () => {
      const since = Math.floor(startedBefore / 1000) - 1;
      const { stdout, stderr } = await run('docker', ['logs', '--since', String(since), node.container!.getId()], { maxBuffer: 64 * 1024 * 1024 });
      output = stdout + stderr;
      if (!output.includes('"target":')) return undefined;
      const status = await adminOf(node).status('', 2_000);
      return status.members.some((m) => m.id === node.id) ? true : undefined;
    }, 300);
    await this.afterStart(node);
    return output;
  }

  async pauseNode(node: ContainerNode): Promise<void> {
    if (!node.container || node.down) return;
    await docker(['pause', node.container.getId()]);
    node.paused = true;
  }

  async unpauseNode(node: ContainerNode): Promise<void> {
    if (!node.container || !node.paused) return;
    await docker(['unpause', node.container.getId()]);
    node.paused = false;
  }

  async killEtcd(): Promise<void> {
    if (!this.etcd) return;
    this.etcdDown = true;
    await docker(['kill', this.etcd.getId()]);
  }

  async restartEtcd(): Promise<void> {
    if (!this.etcd) return;
    await docker(['start', this.etcd.getId()]);
    await pollUntil('etcd serving again', 30_000, async () => {
      const res = await fetch(`${this.etcdUrl}/health`, { signal: AbortSignal.timeout(1_000) });
      return res.ok ? true : undefined;
    }, 200);
    this.etcdDown = false;
  }

  /** The cluster status from the first node that answers. */
  async status(log: string): Promise<ClusterStatus__Output> {
    let lastError: unknown;
    for (const node of this.up()) {
      try {
        return await adminOf(node).status(log, 3_000);
      } catch (error) {
        lastError = error;
      }
    }
    throw new Error('no node answers GetClusterStatus', { cause: lastError });
  }

  async recoveryMetrics(node: ContainerNode): Promise<RecoveryMetricsResponse__Output> {
    return adminOf(node).recoveryMetrics(2_000);
  }

  /** Saves every container's logs under root/logs (for a failed run). */
  async saveLogs(): Promise<string> {
    const dir = join(this.root, 'container-logs');
    await mkdir(dir, { recursive: true });
    const named: [string, StartedTestContainer | undefined][] = [['etcd', this.etcd], ...this.nodes.map((n) => [n.id, n.container] as [string, StartedTestContainer | undefined])];
    for (const [name, container] of named) {
      if (!container) continue;
      try {
        const { stdout, stderr } = await run('docker', ['logs', container.getId()], { maxBuffer: 256 * 1024 * 1024 });
        await writeFile(join(dir, `${name}.log`), stdout + stderr);
      } catch {
        // the container may be gone
      }
    }
    return dir;
  }

  /** Removes every container this cluster started (by id), then (unless kept) its directories. */
  async dispose(keepDirs: boolean): Promise<void> {
    for (const node of this.nodes) closeClients(node);
    for (const node of this.nodes) {
      if (node.paused && node.container) await docker(['unpause', node.container.getId()]).catch(() => undefined);
    }
    const ids = [...this.containerIds];
    if (ids.length > 0) await docker(['rm', '-f', '-v', ...ids], 120_000).catch(() => undefined);
    this.containerIds.clear();
    if (!keepDirs) await rm(this.root, { recursive: true, force: true }).catch(() => undefined);
  }
}

async function ownedDir(dir: string, uid: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  // The images run as non-root users; as root, hand the directory over; otherwise open it up.
  if (process.getuid?.() === 0) await chown(dir, uid, uid);
  else await chmod(dir, 0o777);
}
