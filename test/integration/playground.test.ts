// `wal-recovery playground`, as the README's main job runs it (`npm start`): TLS by default, with
// the files it made named in `--json` ("tls": {"ca", "admin", "client"}), and the CLI verbs
// reaching the cluster with them (flags or WAL_TLS_* variables) while a call without them is a
// usage error; `--insecure` opts out, and the node says so loudly. Real etcd and node processes on
// 127.0.0.1.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import type { PlaygroundNode, PlaygroundTls } from '../../src/cli/playground.js';
import { cliProcess } from '../support/cli.js';
import { cliSchema, validateJson } from '../support/json-schema.js';
import { CLI } from '../support/cluster.js';
import { exited, killAndWait, trackChild } from '../support/etcd.js';

const START_TIMEOUT_MS = 60_000;
const dirs: string[] = [];
const running: ChildProcess[] = [];

interface PlaygroundLine {
  readonly etcd: string;
  readonly nodes: PlaygroundNode[];
  readonly tls?: PlaygroundTls;
}

/** Starts the playground with --json and returns its line once every node serves. */
async function startPlayground(args: readonly string[]): Promise<{ child: ChildProcess; line: PlaygroundLine; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'wal-playground-'));
  dirs.push(dir);
  const child = spawn(process.execPath, [CLI, 'playground', '--json', '--dir', dir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  trackChild(child);
  running.push(child);
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const line = await new Promise<PlaygroundLine>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`playground printed nothing within ${START_TIMEOUT_MS} ms: ${stderr}`)), START_TIMEOUT_MS);
    child.once('exit', (code) => reject(new Error(`playground exited (${String(code)}): ${stderr}`)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', (text) => {
      clearTimeout(timer);
      resolve(JSON.parse(text) as PlaygroundLine);
    });
  });
  return { child, line, dir };
}

afterAll(async () => {
  for (const child of running) await killAndWait(child, 'SIGTERM', 15_000);
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
}, 60_000);

describe('playground', () => {
  it('runs with TLS by default; --json names the files; the CLI verbs reach it with them and not without', async () => {
    const { child, line, dir } = await startPlayground(['--nodes', '3']);
    expect(line.etcd).toMatch(/^https:\/\/127\.0\.0\.1:/);
    expect(line.nodes).toHaveLength(3);
    const tls = line.tls;
    if (!tls) throw new Error('no "tls" in the playground line');
    for (const file of [tls.ca, tls.admin.cert, tls.admin.key, tls.client.cert, tls.client.key]) expect(existsSync(file), file).toBe(true);
    const target = line.nodes[0]?.target as string;
    const asClient = { WAL_TLS_CA: tls.ca, WAL_TLS_CERT: tls.client.cert, WAL_TLS_KEY: tls.client.key, WAL_INSECURE: '' };
    const appended = await cliProcess(['append', '--target', target, '--json'], asClient, 'order 1\norder 2\norder 3\n');
    expect(appended.code, appended.stderr).toBe(0);
    const dump = await cliProcess(['dump', '--target', line.nodes[1]?.target as string, '--tls-ca', tls.ca, '--tls-cert', tls.admin.cert, '--tls-key', tls.admin.key], { WAL_INSECURE: '' });
    expect(dump.code, dump.stderr).toBe(0);
    expect(dump.stdout.trim().split('\n').map((l) => l.split('\t')[2])).toEqual(['order 1', 'order 2', 'order 3']);
    const status = await cliProcess(['status', '--target', target], asClient);
    expect(status.code, status.stderr).toBe(0);
    // --json of every verb with --target has the schema of the same verb on a local store.
    const asAdmin = { WAL_TLS_CA: tls.ca, WAL_TLS_CERT: tls.admin.cert, WAL_TLS_KEY: tls.admin.key, WAL_INSECURE: '' };
    for (const [verb, args] of [['append', []], ['dump', []], ['validate', []], ['repair', ['--segment', '1', '--dry-run']], ['status', []]] as const) {
      const out = await cliProcess([verb, '--target', target, '--json', ...args], asAdmin, verb === 'append' ? 'order 4\n' : '');
      expect(out.code, `${verb}: ${out.stderr}`).toBe(0);
      const documents = verb === 'dump' ? out.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown) : [JSON.parse(out.stdout) as unknown];
      for (const document of documents) expect(validateJson(document, cliSchema(verb)), `${verb}: ${JSON.stringify(document).slice(0, 300)}`).toEqual([]);
    }
    // A client role may not validate (admin only); no files: a usage error; plaintext: refused.
    const validate = await cliProcess(['validate', '--target', target], asClient);
    expect(validate.code).toBe(2);
    expect(validate.stderr).toMatch(/not allowed to role client/);
    const none = await cliProcess(['status', '--target', target], { WAL_TLS_CA: '', WAL_TLS_CERT: '', WAL_TLS_KEY: '', WAL_INSECURE: '' });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/TLS is required/);
    const plaintext = await cliProcess(['status', '--target', target, '--insecure'], { WAL_TLS_CA: '', WAL_TLS_CERT: '', WAL_TLS_KEY: '' });
    expect(plaintext.code).toBe(2);
    expect(plaintext.stderr).toMatch(/gRPC status 14/);
    await killAndWait(child, 'SIGTERM', 15_000);
    expect(child.exitCode).toBe(0);
    expect(await readFile(join(dir, 'n1.log'), 'utf8')).not.toMatch(/INSECURE/);
  }, 180_000);

  it('--insecure runs plaintext: no "tls" in --json, and a client with --insecure reaches it', async () => {
    const { child, line, dir } = await startPlayground(['--nodes', '1', '--insecure']);
    // The node says so at start: a line on stderr whatever the log level, and a warning in its log.
    const log = await readFile(join(dir, 'n1.log'), 'utf8');
    expect(log).toMatch(/^wal-recovery node n1: INSECURE \(--insecure\): plaintext gRPC/m);
    expect(log).toMatch(/"level":40.*INSECURE: no TLS/);
    expect(line.etcd).toMatch(/^http:\/\/127\.0\.0\.1:/);
    expect(line.tls).toBeUndefined();
    const status = await cliProcess(['status', '--target', line.nodes[0]?.target as string, '--insecure', '--all-logs', '--json'], { WAL_TLS_CA: '', WAL_TLS_CERT: '', WAL_TLS_KEY: '' });
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ members: [{ id: 'n1' }] });
    await killAndWait(child, 'SIGTERM', 15_000);
    await exited(child);
  }, 120_000);
});
