// `wal-recovery playground`: a local cluster on loopback (etcd from PATH plus N node processes),
// for trying things out and for the README's main job. Runs until SIGINT or SIGTERM, then stops
// everything it started, by pid. Node logs go to <dir>/<node>.log, etcd's to <dir>/etcd.log.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { EXIT_OK, type ExitCode, UsageError } from './exit.js';
import { untilSignal } from './server.js';

export interface PlaygroundOptions {
  readonly nodes: number;
  readonly dir?: string;
  readonly segmentBytes?: number;
  readonly json: boolean;
}

export interface PlaygroundNode {
  readonly id: string;
  readonly target: string;
  readonly pid: number;
  readonly dataDir: string;
  readonly metrics: string;
}

const START_TIMEOUT_MS = 30_000;
/** Set once shutdown starts: exits after it are expected, not worth a warning. */
let stopping = false;

export class EtcdMissingError extends UsageError {
  constructor() {
    super('etcd was not found on PATH: install it (Debian/Ubuntu: apt-get install etcd-server) and try again');
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

function cliPath(): string {
  return join(dirname(fileURLToPath(import.meta.url)), 'main.js');
}

function logTo(child: ChildProcess, path: string): void {
  const out = createWriteStream(path, { flags: 'a' });
  child.stderr?.pipe(out);
}

async function startEtcd(dir: string, children: ChildProcess[]): Promise<string> {
  if (spawnSync('etcd', ['--version'], { stdio: 'ignore' }).error) throw new EtcdMissingError();
  const clientPort = await freePort();
  const peerPort = await freePort();
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const etcd = spawn('etcd', [
    '--name', 'playground',
    '--data-dir', join(dir, 'etcd'),
    '--listen-client-urls', client,
    '--advertise-client-urls', client,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `playground=${peer}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(etcd);
  logTo(etcd, join(dir, 'etcd.log'));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (etcd.exitCode !== null) throw new UsageError(`etcd exited at start (code ${etcd.exitCode}); see ${join(dir, 'etcd.log')}`);
    try {
      const response = await fetch(`${client}/health`);
      if (response.ok) return client;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new UsageError(`etcd did not become healthy within ${START_TIMEOUT_MS} ms; see ${join(dir, 'etcd.log')}`);
}

async function startNode(id: string, dir: string, etcd: string, segmentBytes: number | undefined, children: ChildProcess[]): Promise<PlaygroundNode> {
  const dataDir = join(dir, id);
  mkdirSync(dataDir, { recursive: true });
  const args = [cliPath(), 'node', '--id', id, '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--etcd', etcd, '--insecure'];
  if (segmentBytes !== undefined) args.push('--segment-bytes', String(segmentBytes));
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  logTo(child, join(dir, `${id}.log`));
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const line = await new Promise<string>((resolveLine, reject) => {
    const timer = setTimeout(() => reject(new UsageError(`node ${id} did not start within ${START_TIMEOUT_MS} ms; see ${join(dir, `${id}.log`)}`)), START_TIMEOUT_MS);
    lines.once('line', (l) => {
      clearTimeout(timer);
      resolveLine(l);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new UsageError(`node ${id} exited at start (code ${String(code)}); see ${join(dir, `${id}.log`)}`));
    });
  });
  const info = JSON.parse(line) as { target: string; metrics: string; pid: number };
  return { id, target: info.target, pid: info.pid, dataDir, metrics: info.metrics };
}

async function stopAll(children: readonly ChildProcess[]): Promise<void> {
  // Nodes first (they revoke their leases), etcd last.
  for (const child of [...children].reverse()) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

export async function runPlayground(o: PlaygroundOptions, print: (text: string) => Promise<void>): Promise<ExitCode> {
  const dir = resolve(o.dir ?? (await mkdtemp(join(tmpdir(), 'wal-recovery-playground-'))));
  mkdirSync(dir, { recursive: true });
  const children: ChildProcess[] = [];
  const signal = untilSignal();
  try {
    const etcd = await startEtcd(dir, children);
    const nodes: PlaygroundNode[] = [];
    for (let i = 1; i <= o.nodes; i += 1) nodes.push(await startNode(`n${i}`, dir, etcd, o.segmentBytes, children));
    if (o.json) {
      await print(JSON.stringify({ etcd, nodes }) + '\n');
    } else {
      const lines = [`playground in ${dir}: etcd at ${etcd}`];
      for (const n of nodes) lines.push(`  node ${n.id}: target ${n.target}, pid ${n.pid}, metrics ${n.metrics}, data ${n.dataDir}`);
      lines.push(`try: echo hello | wal-recovery append --insecure --target ${nodes[0]?.target ?? '?'}; wal-recovery status --insecure --target ${nodes[0]?.target ?? '?'}`);
      lines.push('Ctrl-C (SIGINT) or SIGTERM stops everything.');
      await print(lines.join('\n') + '\n');
    }
    for (const child of children) {
      child.once('exit', (code, sig) => {
        if (!stopping) process.stderr.write(`wal-recovery playground: process ${child.pid ?? '?'} exited (${sig ?? `code ${String(code)}`})\n`);
      });
    }
    await signal;
    return EXIT_OK;
  } finally {
    stopping = true;
    await stopAll(children);
  }
}

