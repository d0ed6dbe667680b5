// docker-compose (v1, `docker-compose`; v2's `docker compose` where that is what is installed)
// brings the stack of docker-compose.yml up on the local images of cluster/build-images.sh, a
// client appends and reads through it, a node container is killed and the cluster keeps serving,
// Prometheus (when its image exists) scrapes the nodes and loads the alert rules, and the stack
// comes down clean. Every port is a free one on 127.0.0.1 (the file's ports are overridable).
// The stack runs TLS (its one-shot certs service makes the certificates): the test copies them
// out of the certs container and calls as admin; a plaintext caller is refused, at the nodes and
// at etcd.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { AdminClient, INSECURE, type Transport, WalClient, loadTransport } from '../../src/rpc/index.js';
import { ETCD_IMAGE, NODE_IMAGE, PROMETHEUS_IMAGE, docker, freePort, imageExists, pollUntil, requireImages, sleepMs } from './harness.js';

const run = promisify(execFile);
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ALERTS_FILE = join(REPO, 'cluster', 'alerts.yml');
const PROJECT = `walcompose${process.pid}`;
const LOG = 'compose';

let dir = '';
let withPrometheus = false;
let compose: string[] = [];
const env: NodeJS.ProcessEnv = { ...process.env };
const ports = { etcd: 0, etcdPeer: 0, etcdMetrics: 0, nodes: [0, 0, 0], metrics: [0, 0, 0], prometheus: 0 };
const clients: (WalClient | AdminClient)[] = [];
/** The admin identity the stack's certs service made (copied out of its container). */
let transport: Transport = INSECURE;

async function composeCmd(): Promise<string[]> {
  try {
    await run('docker-compose', ['version'], { timeout: 30_000 });
    return ['docker-compose'];
  } catch {
    await run('docker', ['compose', 'version'], { timeout: 30_000 });
    return ['docker', 'compose'];
  }
}

async function dc(args: readonly string[], timeoutMs = 180_000): Promise<string> {
  const [cmd, ...pre] = compose as [string, ...string[]];
  const { stdout } = await run(cmd, [...pre, '-f', join(REPO, 'docker-compose.yml'), '-p', PROJECT, ...args], { env, cwd: REPO, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

function wal(i: number): WalClient {
  const c = new WalClient(`127.0.0.1:${ports.nodes[i]}`, transport);
  clients.push(c);
  return c;
}

async function readAll(client: WalClient, to: number): Promise<Map<number, Buffer>> {
  const out = new Map<number, Buffer>();
  for await (const response of client.read(LOG, 1, to, { deadlineMs: 30_000 })) {
    for (const entry of response.entries) if (!entry.lost) out.set(entry.index, entry.payload);
  }
  return out;
}

async function appendSome(client: WalClient, acked: Map<number, Buffer>, tag: string, count: number): Promise<void> {
  for (let i = 0; i < count; i += 10) {
    const payloads = Array.from({ length: 10 }, (_, j) => Buffer.from(`${tag}-${i + j}`));
    const outcome = await pollUntil(`append ${tag} ${i}`, 30_000, () => client.append(LOG, payloads, { createIfMissing: true, deadlineMs: 5_000 }), 500);
    payloads.forEach((p, j) => acked.set(outcome.firstIndex + j, p));
  }
}

async function expectReadBack(client: WalClient, acked: Map<number, Buffer>): Promise<void> {
  const top = Math.max(...acked.keys());
  const got = await pollUntil('every acknowledged entry readable', 30_000, async () => {
    const m = await readAll(client, top);
    return m.size >= acked.size ? m : undefined;
  }, 500);
  for (const [index, payload] of acked) expect(got.get(index)?.equals(payload), `index ${index}`).toBe(true);
}

async function prometheusQuery(query: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const res = await fetch(`http://127.0.0.1:${ports.prometheus}/api/v1/query?query=${encodeURIComponent(query)}`, { signal: AbortSignal.timeout(5_000) });
  const body = (await res.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
  return body.data.result;
}

describe('docker-compose stack', () => {
  beforeAll(async () => {
    await requireImages([NODE_IMAGE, ETCD_IMAGE]);
    compose = await composeCmd();
    withPrometheus = await imageExists(PROMETHEUS_IMAGE);
    dir = await mkdtemp(join(tmpdir(), 'wal-compose-'));
    ports.etcd = await freePort();
    ports.etcdPeer = await freePort();
    ports.etcdMetrics = await freePort();
    for (let i = 0; i < 3; i += 1) {
      ports.nodes[i] = await freePort();
      ports.metrics[i] = await freePort();
    }
    ports.prometheus = await freePort();
    const promConfig = join(dir, 'prometheus.yml');
    await writeFile(
      promConfig,
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        'rule_files: [/etc/prometheus/alerts.yml]',
        'scrape_configs:',
        `  - { job_name: wal-recovery, static_configs: [{ targets: [${ports.metrics.map((p) => `"127.0.0.1:${p}"`).join(', ')}] }] }`,
        '',
      ].join('\n'),
      { mode: 0o644 },
    );
    Object.assign(env, {
      WAL_NODE_IMAGE: NODE_IMAGE,
      WAL_ETCD_IMAGE: ETCD_IMAGE,
      WAL_PROMETHEUS_IMAGE: PROMETHEUS_IMAGE,
      WAL_PROMETHEUS_CONFIG: promConfig,
      WAL_ETCD_CLIENT_PORT: String(ports.etcd),
      WAL_ETCD_PEER_PORT: String(ports.etcdPeer),
      WAL_ETCD_METRICS_PORT: String(ports.etcdMetrics),
      WAL_PROMETHEUS_PORT: String(ports.prometheus),
      WAL_SEGMENT_BYTES: '65536',
      WAL_SCRUB_INTERVAL_MS: '2000',
      WAL_CLUSTER: PROJECT,
    });
    for (let i = 0; i < 3; i += 1) {
      env[`WAL_NODE${i + 1}_PORT`] = String(ports.nodes[i]);
      env[`WAL_NODE${i + 1}_METRICS_PORT`] = String(ports.metrics[i]);
    }
    const services = ['etcd', 'node1', 'node2', 'node3', ...(withPrometheus ? ['prometheus'] : [])];
    await dc(['up', '-d', '--no-build', ...services]);
    // The certs service ran to completion before etcd and the nodes started (its condition).
    const certsContainer = (await dc(['ps', '-q', 'certs'])).trim();
    await docker(['cp', `${certsContainer}:/certs`, join(dir, 'certs')]);
    transport = await loadTransport({ ca: join(dir, 'certs/ca.pem'), cert: join(dir, 'certs/admin.pem'), key: join(dir, 'certs/admin.key') });
  }, 240_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    if (compose.length > 0) {
      // down -v removes containers, network and volumes; then anything left by label, by id.
      await dc(['down', '-v', '--timeout', '15']).catch((error: unknown) => console.log(`compose down failed: ${String(error)}`));
      const left = (await docker(['ps', '-aq', '--filter', `label=com.docker.compose.project=${PROJECT}`]).catch(() => '')).split('\n').filter((s) => s !== '');
      if (left.length > 0) await docker(['rm', '-f', '-v', ...left]).catch(() => undefined);
    }
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  }, 240_000);

  it('serves appends and reads, survives a killed node, and comes down clean', async () => {
    // every node up and a member
    const admin = new AdminClient(`127.0.0.1:${ports.nodes[0]}`, transport);
    clients.push(admin);
    await pollUntil('three members', 60_000, async () => ((await admin.status('', 2_000)).members.length === 3 ? true : undefined), 500);

    // TLS only: a plaintext caller gets nothing from a node, and etcd answers no plain http.
    const plaintext = new AdminClient(`127.0.0.1:${ports.nodes[0]}`, INSECURE);
    await expect(plaintext.status('', 5_000)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    plaintext.close();
    const etcdAnsweredHttp = await fetch(`http://127.0.0.1:${ports.etcd}/health`, { signal: AbortSignal.timeout(5_000) }).then(async (r) => r.ok && (await r.text()).includes('true'), () => false);
    expect(etcdAnsweredHttp).toBe(false);

    const acked = new Map<number, Buffer>();
    await appendSome(wal(0), acked, 'before', 300);
    for (let i = 0; i < 3; i += 1) await expectReadBack(wal(i), acked);

    // kill node2's container: appends and reads go on through node1 and node3
    await dc(['kill', 'node2']);
    await appendSome(wal(2), acked, 'during', 300);
    await expectReadBack(wal(0), acked);
    await expectReadBack(wal(2), acked);

    if (withPrometheus) {
      // Prometheus scrapes the nodes (node2 down) and has loaded the alert rules of cluster/alerts.yml.
      await pollUntil('Prometheus sees node2 down and the others up', 60_000, async () => {
        const up = await prometheusQuery('up{job="wal-recovery"}');
        const values = new Map(up.map((r) => [r.metric['instance'], r.value[1]]));
        return values.get(`127.0.0.1:${ports.metrics[1]}`) === '0' && values.get(`127.0.0.1:${ports.metrics[0]}`) === '1' ? true : undefined;
      }, 1_000);
      const appended = await prometheusQuery('sum(wal_recovery_appended_entries_total)');
      expect(Number(appended[0]?.value[1] ?? 0)).toBeGreaterThan(0);
      const rules = (await (await fetch(`http://127.0.0.1:${ports.prometheus}/api/v1/rules`)).json()) as { data: { groups: { rules: { name: string }[] }[] } };
      const names = rules.data.groups.flatMap((g) => g.rules.map((r) => r.name)).sort();
      // Every rule of cluster/alerts.yml, and nothing else.
      const declared = [...(await readFile(ALERTS_FILE, 'utf8')).matchAll(/^\s*- alert: (\S+)\s*$/gm)].map((m) => m[1] as string).sort();
      expect(declared.length).toBeGreaterThan(5);
      expect(names).toEqual(declared);
    }

    // node2 back: it catches up and serves everything
    await dc(['start', 'node2']);
    await sleepMs(1_000);
    await expectReadBack(wal(1), acked);

    // the image's health check (gRPC health) reports healthy
    const id = (await dc(['ps', '-q', 'node1'])).trim();
    await pollUntil('node1 healthy', 60_000, async () => ((await docker(['inspect', '--format', '{{.State.Health.Status}}', id])).trim() === 'healthy' ? true : undefined), 1_000);

    // down: every container and volume of the project gone
    for (const c of clients.splice(0)) c.close();
    await dc(['down', '-v', '--timeout', '15']);
    const left = (await docker(['ps', '-aq', '--filter', `label=com.docker.compose.project=${PROJECT}`])).trim();
    expect(left).toBe('');
    const volumes = (await docker(['volume', 'ls', '-q', '--filter', `label=com.docker.compose.project=${PROJECT}`])).trim();
    expect(volumes).toBe('');
  });
});
