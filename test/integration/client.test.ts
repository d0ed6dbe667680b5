// WalClient against a real three-node cluster (node processes on 127.0.0.1, real etcd):
// exactly-once appends while the writer is killed (kill -9, twice) and every client connection is
// cut again and again through TCP proxies. Every acknowledged entry must be in the log exactly
// once at its acknowledged index; no payload may appear twice (an append whose outcome was
// unknown may be absent, never duplicated). `npm test` builds dist/ first (pretest).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppendOutcomeUnknownError, WalClient } from '../../src/client/index.js';
import { CLI, TestCluster, type TestNode, payloadFor, pollUntil } from '../support/cluster.js';
import { EtcdServer, freePort, sleepMs } from '../support/etcd.js';

const LOG = 'exactly-once';
const CLIENTS = 3;
const WORKERS_PER_CLIENT = 8;

/** A TCP proxy to one node whose connections can all be cut at once. */
class CuttableProxy {
  cuts = 0;
  private constructor(
    private readonly server: Server,
    private readonly sockets: Set<Socket>,
    readonly address: string,
  ) {}

  static async start(target: string): Promise<CuttableProxy> {
    const [host, port] = target.split(':') as [string, string];
    const listen = await freePort();
    const sockets = new Set<Socket>();
    const server = createServer((inbound) => {
      const outbound = connect(Number(port), host);
      for (const s of [inbound, outbound]) {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => undefined);
      }
      inbound.pipe(outbound);
      outbound.pipe(inbound);
      inbound.on('close', () => outbound.destroy());
      outbound.on('close', () => inbound.destroy());
    });
    await new Promise<void>((resolve) => server.listen(listen, '127.0.0.1', resolve));
    return new CuttableProxy(server, sockets, `127.0.0.1:${listen}`);
  }

  cut(): void {
    this.cuts += 1;
    for (const s of this.sockets) s.destroy();
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

let etcd: EtcdServer | undefined;
let cluster: TestCluster | undefined;
const proxies = new Map<string, CuttableProxy>(); // node target -> proxy

beforeAll(async () => {
  etcd = await EtcdServer.start();
  cluster = await TestCluster.start({ size: 3, etcd: etcd.endpoint, segmentBytes: 256 * 1024 });
  for (const node of cluster.nodes) proxies.set(node.target, await CuttableProxy.start(node.target));
}, 120_000);

afterAll(async () => {
  for (const proxy of proxies.values()) await proxy.close();
  await cluster?.dispose();
  await etcd?.dispose();
}, 60_000);

function clientOptions() {
  return {
    targets: [...proxies.values()].map((p) => p.address),
    log: LOG,
    createIfMissing: true,
    insecure: true,
    deadlineMs: 30_000,
    attemptDeadlineMs: 3_000,
    dialAddress: (advertised: string) => proxies.get(advertised)?.address ?? advertised,
  };
}

describe('WalClient exactly-once appends under faults', () => {
  it('every acknowledged entry is in the log exactly once after kill -9 of the writer and cut connections', async () => {
    const c = cluster as TestCluster;
    const clients = await Promise.all(Array.from({ length: CLIENTS }, () => WalClient.connect(clientOptions())));
    const acked = new Map<number, string>();
    const unknown = new Set<string>();
    const problems: string[] = [];
    const causes: string[] = [];
    let stop = false;
    let sent = 0;

    const worker = async (client: WalClient, tag: string): Promise<void> => {
      for (let seq = 1; !stop; seq += 1) {
        const text = payloadFor(tag, seq, 48).toString('latin1');
        sent += 1;
        try {
          // Every fourth append is a batch of three, the rest single entries (coalesced).
          if (seq % 4 === 0) {
            const batch = [0, 1, 2].map((k) => `${text}#${k}`);
            const range = await client.append(batch.map((t) => Buffer.from(t, 'latin1')));
            if (range.lastIndex - range.firstIndex !== 2) problems.push(`range ${range.firstIndex}..${range.lastIndex} for 3`);
            batch.forEach((t, k) => note(range.firstIndex + k, t));
          } else {
            const range = await client.append(Buffer.from(text, 'latin1'));
            note(range.firstIndex, text);
          }
        } catch (error) {
          if (!(error instanceof AppendOutcomeUnknownError)) throw error;
          unknown.add(text);
          causes.push(`${error.code}: ${error.cause instanceof Error ? error.cause.message : String(error.cause)}`);
        }
      }
    };
    const note = (index: number, text: string): void => {
      const earlier = acked.get(index);
      if (earlier !== undefined && earlier !== text) problems.push(`index ${index} acknowledged for ${earlier} and ${text}`);
      acked.set(index, text);
    };
    const workers = clients.flatMap((client, k) => Array.from({ length: WORKERS_PER_CLIENT }, (_, w) => worker(client, `c${k}w${w}`)));

    const cutter = (async () => {
      while (!stop) {
        await sleepMs(400);
        for (const proxy of proxies.values()) proxy.cut();
      }
    })();

    await pollUntil('first acknowledgements', 30_000, async () => (acked.size >= 500 ? true : undefined), 100);
    for (let round = 0; round < 2; round += 1) {
      const { writer } = await c.writerOf(LOG);
      const before = acked.size;
      await c.kill(writer.id, 'SIGKILL');
      // Back after a while: a segment opened while a node was down has a two-member ensemble,
      // and a new writer recovering it waits for both (docs/CLUSTER.md, Limits).
      await sleepMs(3_000);
      await c.restart(writer.id);
      await pollUntil(`appends after killing ${writer.id}`, 60_000, async () => (acked.size >= before + 300 ? true : undefined), 100);
    }
    await sleepMs(1_000);
    stop = true;
    await Promise.all(workers);
    await cutter;
    await Promise.all(clients.map((client) => client.close()));
    expect(problems).toEqual([]);

    // Read the whole log back through a fresh client (no cuts now).
    const reader = await WalClient.connect({ ...clientOptions(), createIfMissing: false });
    const seen = new Map<string, number[]>();
    const byIndex = new Map<number, string>();
    for await (const entry of reader.read(1)) {
      const text = entry.payload.toString('latin1');
      byIndex.set(entry.index, text);
      seen.set(text, [...(seen.get(text) ?? []), entry.index]);
    }
    await reader.close();

    const duplicates = [...seen.entries()].filter(([, at]) => at.length > 1).map(([t, at]) => `${t} at ${at.join(',')}`);
    const missing = [...acked.entries()].filter(([index, text]) => byIndex.get(index) !== text).map(([index, text]) => `${index}: ${text} (log has ${byIndex.get(index)})`);
    const ackedTexts = new Set(acked.values());
    const stray = [...seen.keys()].filter((t) => !ackedTexts.has(t) && !unknown.has(t.split('#')[0] as string));
    expect(duplicates.slice(0, 10), 'payloads appended twice').toEqual([]);
    expect(missing.slice(0, 10), 'acknowledged entries not in the log at their index').toEqual([]);
    expect(stray.slice(0, 10), 'entries nobody appended').toEqual([]);
    expect(acked.size).toBeGreaterThan(1_000);
    console.log(`client test: ${sent} appends sent, ${acked.size} entries acknowledged, ${unknown.size} outcomes unknown, ${byIndex.size} entries in the log, ${[...proxies.values()].reduce((n, p) => n + p.cuts, 0)} cuts; unknown: ${[...new Set(causes)].join(' | ')}`);
  }, 240_000);
});

function runCli(args: readonly string[], stdin: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
    });
    child.stdin?.end(stdin);
  });
}

describe('the CLI through WalClient', () => {
  it('append --target and dump --target write and read a log of the cluster', async () => {
    const target = (cluster as TestCluster).nodes[0]?.target as string;
    const appended = await runCli(['append', '--target', target, '--log', 'cli', '--json', '--insecure'], 'first\nsecond\nthird\n');
    expect(appended.stderr).toBe('');
    expect(JSON.parse(appended.stdout)).toMatchObject({ count: 3, firstIndex: 1, lastIndex: 3 });
    const dumped = await runCli(['dump', '--target', target, '--log', 'cli', '--json', '--insecure'], '');
    expect(dumped.code).toBe(0);
    const lines = dumped.stdout.trim().split('\n').map((l) => JSON.parse(l) as { index: number });
    expect(lines.map((l) => l.index)).toEqual([1, 2, 3]);
    expect(dumped.stdout).toContain(Buffer.from('second').toString('base64'));
  }, 120_000);
});

describe('WalClient reads', () => {
  it('tail follows entries as they are acknowledged; read gives a range', async () => {
    const client = await WalClient.connect({ ...clientOptions(), log: 'tailed' });
    try {
      const first = await client.append([Buffer.from('t1')]);
      const controller = new AbortController();
      const seen: string[] = [];
      const following = (async () => {
        for await (const entry of client.tail(first.firstIndex, controller.signal)) {
          seen.push(entry.payload.toString());
          if (seen.length === 4) controller.abort();
        }
      })();
      for (const text of ['t2', 't3', 't4']) await client.append(Buffer.from(text));
      await following;
      expect(seen).toEqual(['t1', 't2', 't3', 't4']);
      const range: string[] = [];
      for await (const entry of client.read(first.firstIndex + 1, first.firstIndex + 2)) range.push(entry.payload.toString());
      expect(range).toEqual(['t2', 't3']);
    } finally {
      await client.close();
    }
  }, 60_000);
});

describe('a session batch across writer failover', () => {
  it('the next writer (another node) answers a retried batch with its original indices, from the session frames in the log', async () => {
    const c = cluster as TestCluster;
    const log = 'failover-session';
    const session = { sessionId: randomBytes(16).toString('hex'), sequence: 1 };
    const batch = [Buffer.from('s-1'), Buffer.from('s-2')];
    const first = c.nodes[0] as TestNode;
    await first.walClient().append(log, [Buffer.from('before')], { createIfMissing: true, deadlineMs: 20_000 });
    const original = await first.walClient().append(log, batch, { session, deadlineMs: 20_000 });
    const { writer } = await c.writerOf(log);
    await c.kill(writer.id, 'SIGKILL');
    const survivor = c.nodes.find((n) => n.alive) as TestNode;
    const retried = await survivor.walClient().append(log, batch, { session, deadlineMs: 30_000 });
    expect(retried).toEqual(original);
    const { writer: next } = await c.writerOf(log);
    expect(next.id).not.toBe(writer.id);
    const texts: string[] = [];
    for await (const response of survivor.walClient().read(log, 1, 0)) for (const e of response.entries) texts.push(e.payload.toString());
    expect(texts).toEqual(['before', 's-1', 's-2']);
    await c.restart(writer.id);
  }, 120_000);
});
