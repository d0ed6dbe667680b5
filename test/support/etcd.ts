// A real etcd for integration tests: one member on 127.0.0.1 with free client and peer ports and a
// temporary data dir, started as a child process and stopped by its pid. restart() brings it back
// on the same ports and data dir (the etcd-restart test needs the same endpoint and its keys).
// With tls, it serves https only and asks every client for a certificate its CA signed
// (--client-cert-auth).
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ETCD_BINARY = process.env['ETCD_BINARY'] ?? '/usr/bin/etcd';
const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

const handedOut = new Set<number>();

/** A port that was free on 127.0.0.1 a moment ago (never the same one twice in this process). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        const found = typeof address === 'object' && address ? address.port : 0;
        server.close(() => resolve(found));
      });
    });
    if (port > 0 && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('failed to find a free port on 127.0.0.1');
}

export function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Children still running, killed with SIGKILL if the test process exits without stopping them. */
const running = new Set<ChildProcess>();
let exitHookInstalled = false;
export function trackChild(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of running) if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    });
  }
}

/** Resolves once the child has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Sends signal to the child by pid, waits for its exit, escalates to SIGKILL after a while. */
export async function killAndWait(child: ChildProcess, signal: NodeJS.Signals, timeoutMs = STOP_TIMEOUT_MS): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const done = exited(child);
  try {
    process.kill(child.pid, signal);
  } catch {
    return; // already gone
  }
  const timer = setTimeout(() => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }, timeoutMs);
  await done;
  clearTimeout(timer);
}

/** PEM files of etcd's server identity and of the CA whose client certificates it accepts. */
export interface EtcdTlsFiles {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface EtcdStartOptions {
  /** Serve https with client certificate auth; the health probe presents client (same CA). */
  readonly tls?: EtcdTlsFiles & { readonly client: { readonly cert: string; readonly key: string } };
}

export class EtcdServer {
  private child: ChildProcess | undefined;

  private constructor(
    readonly root: string,
    readonly clientPort: number,
    readonly peerPort: number,
    readonly tls: EtcdStartOptions['tls'],
  ) {}

  /** http://127.0.0.1:PORT (https:// with tls), for the node's --etcd flag. */
  get endpoint(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.clientPort}`;
  }

  get dataDir(): string {
    return join(this.root, 'data');
  }

  get logPath(): string {
    return join(this.root, 'etcd.log');
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  static async start(options: EtcdStartOptions = {}): Promise<EtcdServer> {
    if (!existsSync(ETCD_BINARY)) {
      throw new Error(`etcd not found at ${ETCD_BINARY}: install etcd-server (apt-get install -y etcd-server) or set ETCD_BINARY`);
    }
    const root = await mkdtemp(join(tmpdir(), 'wal-etcd-'));
    const server = new EtcdServer(root, await freePort(), await freePort(), options.tls);
    try {
      await server.launch();
    } catch (error) {
      await server.dispose();
      throw error;
    }
    return server;
  }

  private async launch(): Promise<void> {
    const peerUrl = `http://127.0.0.1:${this.peerPort}`;
    const log = openSync(this.logPath, 'a');
    const child = spawn(
      ETCD_BINARY,
      [
        '--name', 'test',
        '--data-dir', this.dataDir,
        '--listen-client-urls', this.endpoint,
        '--advertise-client-urls', this.endpoint,
        '--listen-peer-urls', peerUrl,
        '--initial-advertise-peer-urls', peerUrl,
        '--initial-cluster', `test=${peerUrl}`,
        '--initial-cluster-state', 'new',
        '--log-level', 'warn',
        '--logger', 'zap',
        ...(this.tls ? ['--cert-file', this.tls.cert, '--key-file', this.tls.key, '--trusted-ca-file', this.tls.ca, '--client-cert-auth'] : []),
      ],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    trackChild(child);
    this.child = child;
    await this.waitHealthy(child);
  }

  private async waitHealthy(child: ChildProcess): Promise<void> {
    const until = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < until) {
      if (child.exitCode !== null || child.signalCode !== null) {
        const tail = (await readFile(this.logPath, 'utf8').catch(() => '')).slice(-2000);
        throw new Error(`etcd exited (${String(child.exitCode ?? child.signalCode)}) before it was healthy:\n${tail}`);
      }
      try {
        if ((await this.health()) === 'true') return;
      } catch {
        // not listening yet
      }
      await sleepMs(100);
    }
    throw new Error(`etcd did not become healthy on ${this.endpoint} within ${READY_TIMEOUT_MS} ms`);
  }

  /** etcd's /health answer ("true" when healthy), over https with a client certificate under tls. */
  private async health(): Promise<string | undefined> {
    if (!this.tls) {
      const response = await fetch(`${this.endpoint}/health`, { signal: AbortSignal.timeout(1_000) });
      return ((await response.json()) as { health?: string }).health;
    }
    const { ca, client } = this.tls;
    const body = await new Promise<string>((resolve, reject) => {
      const req = httpsRequest(`${this.endpoint}/health`, { ca: readFileSync(ca), cert: readFileSync(client.cert), key: readFileSync(client.key), servername: 'localhost', timeout: 1_000 }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve(text));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end();
    });
    return (JSON.parse(body) as { health?: string }).health;
  }

  /** Stops etcd by its pid (SIGTERM, or SIGKILL for a crash) and waits for it to exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child) await killAndWait(child, signal);
  }

  /** Starts etcd again on the same ports and data dir. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  /** Stops etcd and removes its directory. */
  async dispose(): Promise<void> {
    await this.stop('SIGKILL');
    await rm(this.root, { recursive: true, force: true });
  }
}
