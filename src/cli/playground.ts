// `wal-recovery playground`: a local cluster on loopback (etcd from PATH plus N node processes),
// for trying things out and for the README's main job. Runs until SIGINT or SIGTERM, then stops
// everything it started, by pid. Node logs go to <dir>/<node>.log, etcd's to <dir>/etcd.log.
// TLS by default, as a real cluster: `certs` files in <dir>/certs (kept when --dir is reused),
// nodes with peer certificates, etcd on https with --client-cert-auth; --insecure opts out.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { type CertsLayout, type IdentityFiles, makeCerts } from './certs.js';
import { EXIT_OK, EtcdMissingError, type ExitCode, UsageError } from './exit.js';
import { ETCD_TLS_ENV, TLS_ENV } from './options.js';
import { untilSignal } from './server.js';

export interface PlaygroundOptions {
  readonly nodes: number;
  readonly dir?: string;
  readonly segmentBytes?: number;
  readonly json: boolean;
  /** Plaintext gRPC and http to etcd, no certificates. */
  readonly insecure?: boolean;
  /** The docker-compose ports (PINNED_PORTS) instead of free ones; a taken port is refused. */
  readonly pinPorts?: boolean;
}

/** The ports of docker-compose.yml, so that its commands work against a pinned playground. */
export const PINNED_PORTS = Object.freeze({ etcdClient: 2379, etcdPeer: 2380, nodeFirst: 7001, metricsFirst: 9101 });

/** The ports one playground uses: 0 for a node lets it pick a free one. */
interface PlaygroundPorts {
  readonly etcdClient: number;
  readonly etcdPeer: number;
  node(i: number): { readonly listen: number; readonly metrics: number };
}

async function portsOf(o: PlaygroundOptions): Promise<PlaygroundPorts> {
  if (!o.pinPorts) return { etcdClient: await freePort(), etcdPeer: await freePort(), node: () => ({ listen: 0, metrics: 0 }) };
  const p = PINNED_PORTS;
  const wanted: Array<[number, string]> = [[p.etcdClient, 'etcd clients'], [p.etcdPeer, 'etcd peers']];
  for (let i = 0; i < o.nodes; i += 1) wanted.push([p.nodeFirst + i, `node n${i + 1} gRPC`], [p.metricsFirst + i, `node n${i + 1} metrics`]);
  for (const [port, what] of wanted) {
    if (!(await portIsFree(port))) throw new UsageError(`port ${port} (${what}) is taken on 127.0.0.1: stop what holds it, or run playground without --pin-ports (free ports)`);
  }
  return { etcdClient: p.etcdClient, etcdPeer: p.etcdPeer, node: (i) => ({ listen: p.nodeFirst + i, metrics: p.metricsFirst + i }) };
}

async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolveFree) => {
    const server = createServer();
    server.once('error', () => resolveFree(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolveFree(true)));
  });
}

/** Where the playground's callers find their TLS files (the `tls` of --json). */
export interface PlaygroundTls {
  readonly ca: string;
  readonly admin: IdentityFiles;
  readonly client: IdentityFiles;
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

/** etcd's /health over https, with the nodes' etcd client certificate (--client-cert-auth). */
function etcdHealthTls(url: string, certs: CertsLayout): Promise<boolean> {
  const { etcd } = certs;
  return new Promise((resolveHealth) => {
    const options = { ca: readFileSync(etcd.ca), cert: readFileSync(etcd.client.cert), key: readFileSync(etcd.client.key), servername: 'localhost', timeout: 1_000 };
    const req = httpsRequest(`${url}/health`, options, (res) => {
      res.resume();
      resolveHealth(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolveHealth(false));
    req.end();
  });
}

async function etcdHealthy(url: string, certs: CertsLayout | undefined): Promise<boolean> {
  if (certs) return etcdHealthTls(url, certs);
  try {
    return (await fetch(`${url}/health`)).ok;
  } catch {
    return false; // not up yet
  }
}

async function startEtcd(dir: string, certs: CertsLayout | undefined, ports: PlaygroundPorts, children: ChildProcess[]): Promise<string> {
  if (spawnSync('etcd', ['--version'], { stdio: 'ignore' }).error) throw new EtcdMissingError();
  const client = `${certs ? 'https' : 'http'}://127.0.0.1:${ports.etcdClient}`;
  const peer = `http://127.0.0.1:${ports.etcdPeer}`;
  const etcd = spawn('etcd', [
    '--name', 'playground',
    '--data-dir', join(dir, 'etcd'),
    '--listen-client-urls', client,
    '--advertise-client-urls', client,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `playground=${peer}`,
    ...(certs ? ['--cert-file', certs.etcd.server.cert, '--key-file', certs.etcd.server.key, '--trusted-ca-file', certs.etcd.ca, '--client-cert-auth'] : []),
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(etcd);
  logTo(etcd, join(dir, 'etcd.log'));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (etcd.exitCode !== null) throw new UsageError(`etcd exited at start (code ${etcd.exitCode}); see ${join(dir, 'etcd.log')}`);
    if (await etcdHealthy(client, certs)) return client;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new UsageError(`etcd did not become healthy within ${START_TIMEOUT_MS} ms; see ${join(dir, 'etcd.log')}`);
}

/** The node verb's transport flags: its peer certificate and the etcd client certificate, or --insecure. */
function transportArgs(id: string, certs: CertsLayout | undefined): string[] {
  if (!certs) return ['--insecure'];
  const own = certs.nodes[id];
  if (!own) throw new Error(`no certificate was made for node ${id}`);
  return ['--tls-ca', certs.ca, '--tls-cert', own.cert, '--tls-key', own.key, '--etcd-ca', certs.etcd.ca, '--etcd-cert', certs.etcd.client.cert, '--etcd-key', certs.etcd.client.key];
}

/** The environment of a node: the caller's, without transport variables that would contradict the flags. */
function nodeEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of [...Object.values(TLS_ENV), ...Object.values(ETCD_TLS_ENV)]) delete env[name];
  return env;
}

async function startNode(id: string, dir: string, etcd: string, certs: CertsLayout | undefined, segmentBytes: number | undefined, ports: { listen: number; metrics: number }, children: ChildProcess[]): Promise<PlaygroundNode> {
  const dataDir = join(dir, id);
  mkdirSync(dataDir, { recursive: true });
  const args = [cliPath(), 'node', '--id', id, '--data-dir', dataDir, '--listen', `127.0.0.1:${ports.listen}`, '--metrics-listen', `127.0.0.1:${ports.metrics}`, '--etcd', etcd, ...transportArgs(id, certs)];
  if (segmentBytes !== undefined) args.push('--segment-bytes', String(segmentBytes));
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: nodeEnv() });
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

/** What a person reads: where everything is, and two commands to paste. */
function summary(dir: string, etcd: string, nodes: readonly PlaygroundNode[], tls: PlaygroundTls | undefined): string {
  const lines = [`playground in ${dir}: etcd at ${etcd}${tls ? ' (TLS, client certificates)' : ' (INSECURE: plaintext, no authentication)'}`];
  for (const n of nodes) lines.push(`  node ${n.id}: target ${n.target}, pid ${n.pid}, metrics ${n.metrics}, data ${n.dataDir}`);
  const target = nodes[0]?.target ?? '?';
  if (tls) {
    lines.push(`TLS files in ${dirname(tls.ca)}; to call the cluster as admin (or use client.pem / client.key for the client role):`);
    lines.push(`  export ${TLS_ENV.ca}=${tls.ca} ${TLS_ENV.cert}=${tls.admin.cert} ${TLS_ENV.key}=${tls.admin.key}`);
    lines.push(`try: echo hello | wal-recovery append --target ${target}; wal-recovery status --target ${target}`);
  } else {
    lines.push(`try: echo hello | wal-recovery append --insecure --target ${target}; wal-recovery status --insecure --target ${target}`);
  }
  lines.push('Ctrl-C (SIGINT) or SIGTERM stops everything.');
  return lines.join('\n') + '\n';
}

export async function runPlayground(o: PlaygroundOptions, print: (text: string) => Promise<void>): Promise<ExitCode> {
  const dir = resolve(o.dir ?? (await mkdtemp(join(tmpdir(), 'wal-recovery-playground-'))));
  mkdirSync(dir, { recursive: true });
  const children: ChildProcess[] = [];
  const signal = untilSignal();
  try {
    const ids = Array.from({ length: o.nodes }, (_, i) => `n${i + 1}`);
    // Kept when --dir is reused: the nodes' data outlives one run, and so does their CA.
    const certs = o.insecure ? undefined : await makeCerts({ outDir: join(dir, 'certs'), nodes: ids, keepExisting: true }).catch((error: unknown) => {
      throw new UsageError(`${error instanceof Error ? error.message : String(error)} (or run playground --insecure, without TLS)`);
    });
    const ports = await portsOf(o);
    const etcd = await startEtcd(dir, certs, ports, children);
    const nodes: PlaygroundNode[] = [];
    for (const [i, id] of ids.entries()) nodes.push(await startNode(id, dir, etcd, certs, o.segmentBytes, ports.node(i), children));
    const tls: PlaygroundTls | undefined = certs ? { ca: certs.ca, admin: certs.admin, client: certs.client } : undefined;
    if (o.json) await print(JSON.stringify({ etcd, nodes, ...(tls ? { tls } : {}) }) + '\n');
    else await print(summary(dir, etcd, nodes, tls));
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

