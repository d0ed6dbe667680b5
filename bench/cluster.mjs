// Benchmark 6: appends to a real 3-node cluster (ack quorum 2 of 3, loopback, group commit),
// beside etcd's own puts against the same etcd, same value size and concurrency.
//
// The driver side (benchCluster, called by run.mjs) starts etcd (/usr/bin/etcd, 127.0.0.1, free
// ports, a temporary data dir) and three `wal-recovery node` processes, then runs each load in a
// child process of its own: `node bench/cluster.mjs walLoad|etcdLoad '<json>'`. Everything it
// starts is stopped by pid in a finally block (SIGTERM, then SIGKILL after a grace period), and
// run.mjs SIGKILLs whatever is still registered in livePids if it exits early.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmtMs, fmtOps, fmtRate, killPid, livePids, reportResult, runTask, summary, table } from './lib.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
const CLI = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const ETCD = process.env.ETCD_BIN ?? '/usr/bin/etcd';
const PAYLOAD_BYTES = 256;
const LOG = 'bench';

const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const round4 = (x) => Math.round(x * 1e4) / 1e4;

export function payloadOf(bytes) {
  const buf = Buffer.allocUnsafe(bytes);
  for (let i = 0; i < bytes; i += 1) buf[i] = (i * 31 + 17) & 0xff;
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Processes

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A started process: its pid, a tail of its stderr, and stop() (SIGTERM, then SIGKILL). */
function startProcess(name, command, args, env) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  livePids.add(child.pid);
  const proc = { name, child, pid: child.pid, stderrLines: [], stdoutLines: [], exited: undefined };
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      proc.exited = { code, signal };
      livePids.delete(child.pid);
      resolve(proc.exited);
    });
  });
  child.on('error', (error) => proc.stderrLines.push(`spawn error: ${error.message}`));
  const lines = (stream, into, max) => {
    let pending = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      pending += chunk;
      let nl;
      while ((nl = pending.indexOf('\n')) >= 0) {
        into.push(pending.slice(0, nl));
        if (into.length > max) into.splice(0, into.length - max);
        pending = pending.slice(nl + 1);
        proc.onLine?.();
      }
    });
  };
  lines(child.stdout, proc.stdoutLines, 50);
  lines(child.stderr, proc.stderrLines, 400);
  proc.stop = async (graceMs = 5_000) => {
    if (proc.exited) return proc.exited;
    killPid(proc.pid, 'SIGTERM');
    const timer = setTimeout(() => killPid(proc.pid, 'SIGKILL'), graceMs);
    const result = await exited;
    clearTimeout(timer);
    return result;
  };
  proc.waitExit = exited;
  return proc;
}

export function httpGet(url, timeoutMs = 1_000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

export async function startEtcd(dir) {
  const clientPort = await freePort();
  const peerPort = await freePort();
  const url = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  mkdirSync(dir, { recursive: true });
  const proc = startProcess('etcd', ETCD, [
    '--name', 'bench',
    '--data-dir', dir,
    '--listen-client-urls', url,
    '--advertise-client-urls', url,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `bench=${peer}`,
    '--initial-cluster-state', 'new',
    '--logger', 'zap',
    '--log-level', 'warn',
  ]);
  proc.url = url;
  const end = Date.now() + 15_000;
  for (;;) {
    if (proc.exited) throw new Error(`etcd exited (${JSON.stringify(proc.exited)}): ${proc.stderrLines.slice(-5).join(' | ')}`);
    try {
      const r = await httpGet(`${url}/health`);
      if (r.status === 200 && r.body.includes('true')) return proc;
    } catch {
      // not listening yet
    }
    if (Date.now() > end) throw new Error(`etcd not healthy after 15 s: ${proc.stderrLines.slice(-5).join(' | ')}`);
    await sleep(50);
  }
}

/** Starts a `wal-recovery node` process and waits for its ready line; extraArgs go to the verb. */
export async function startNode(id, dataDir, etcdUrl, cluster, extraArgs = []) {
  mkdirSync(dataDir, { recursive: true });
  const proc = startProcess(
    id,
    process.execPath,
    [CLI, 'node', '--id', id, '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--etcd', etcdUrl, '--cluster', cluster, '--insecure', ...extraArgs],
    { WAL_RECOVERY_LOG_LEVEL: process.env.WAL_RECOVERY_LOG_LEVEL ?? 'warn' },
  );
  const line = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${id} printed no ready line within 20 s; stderr: ${proc.stderrLines.slice(-5).join(' | ')}`)), 20_000);
    const check = () => {
      const found = proc.stdoutLines.find((l) => l.startsWith('{'));
      if (found) {
        clearTimeout(timer);
        resolve(found);
      }
    };
    proc.onLine = check;
    proc.waitExit.then((e) => {
      clearTimeout(timer);
      reject(new Error(`node ${id} exited before serving (${JSON.stringify(e)}); stderr: ${proc.stderrLines.slice(-5).join(' | ')}`));
    });
    check();
  });
  proc.onLine = undefined;
  const info = JSON.parse(line);
  proc.id = info.node;
  proc.target = info.target;
  proc.metrics = info.metrics;
  proc.dataDir = dataDir;
  return proc;
}

/** CPU seconds (user + system) a process has used so far, from /proc (NaN when unreadable). */
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------
// Loads (child processes)

export function errorKey(error) {
  const code = error?.code !== undefined ? `code ${error.code}` : error?.name ?? 'Error';
  return `${code}: ${String(error?.details ?? error?.message ?? error).slice(0, 160)}`;
}

/** Runs `concurrency` workers calling op() in a loop: warmup, then a measured window. */
async function drive(op, { concurrency, seconds, warmupSeconds }) {
  const errors = {};
  const run = async (ms, lat) => {
    const end = now() + ms;
    let ops = 0;
    let failed = 0;
    const worker = async (w) => {
      for (let i = 0; now() < end; i += 1) {
        const t = now();
        try {
          await op(w, i);
          lat?.push(now() - t);
          ops += 1;
        } catch (error) {
          failed += 1;
          const key = errorKey(error);
          errors[key] = (errors[key] ?? 0) + 1;
          await sleep(10);
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
    return { ops, failed };
  };
  const warm = await run(warmupSeconds * 1000);
  const lat = [];
  const t = now();
  const { ops, failed } = await run(seconds * 1000, lat);
  const ms = now() - t;
  // warmupOps: the servers' CPU is measured over the whole task, so per-entry CPU divides by both.
  return { ops, warmupOps: warm.ops, failed, ms, errors, latencies: lat.map(round4) };
}

async function walLoad({ target, log, payloadBytes, perCall = 1, ...shape }) {
  const { WalClient } = await import('../dist/rpc/index.js');
  const client = new WalClient(target);
  await client.waitForReady(5_000);
  const payloads = Array.from({ length: perCall }, () => payloadOf(payloadBytes));
  try {
    const result = await drive(() => client.append(log, payloads, { createIfMissing: true, deadlineMs: 10_000 }), shape);
    // ops counts entries; latencies stay per call.
    reportResult({ ...result, ops: result.ops * perCall, warmupOps: result.warmupOps * perCall });
  } finally {
    client.close();
  }
}

/** Single-entry appends through the package's WalClient (coalesced), with or without sessions. */
async function clientLoad({ targets, log, payloadBytes, sessions, perCall = 1, ...shape }) {
  const { WalClient } = await import('../dist/index.js');
  const client = await WalClient.connect({ targets, log, sessions, createIfMissing: true, insecure: true, deadlineMs: 10_000 });
  const payload = payloadOf(payloadBytes);
  const payloads = Array.from({ length: perCall }, () => payloadOf(payloadBytes));
  try {
    if (perCall === 1) reportResult(await drive(() => client.append(payload), shape));
    else {
      // Batched: entries counted as ops, latency per call.
      const result = await drive(() => client.append(payloads), shape);
      reportResult({ ...result, ops: result.ops * perCall, warmupOps: result.warmupOps * perCall });
    }
  } finally {
    await client.close();
  }
}

async function etcdLoad({ url, payloadBytes, prefix, ...shape }) {
  const { Etcd3 } = await import('etcd3');
  const client = new Etcd3({ hosts: url });
  const payload = payloadOf(payloadBytes);
  try {
    reportResult(await drive((w, i) => client.put(`${prefix}/${w}/${i}`).value(payload), shape));
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Driver

export async function waitFor(what, fn, timeoutMs) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs / 1000} s${last ? ` (last error: ${errorKey(last)})` : ''}`);
    await sleep(100);
  }
}

/** Warn/error lines of a node's stderr (pino JSON), condensed to "level msg (err)". */
function noteworthy(proc) {
  const out = [];
  for (const line of proc.stderrLines) {
    let entry;
    try {
      entry = JSON.parse(line);
    } catch {
      if (line.trim() !== '') out.push(line.slice(0, 200));
      continue;
    }
    if ((entry.level ?? 0) < 40) continue;
    const err = entry.err ? ` (${entry.err.type ?? ''} ${String(entry.err.message ?? '').slice(0, 120)})` : '';
    out.push(`${entry.level >= 50 ? 'error' : 'warn'} ${entry.msg ?? ''}${err}`);
  }
  return out;
}

export async function benchCluster({ root, sizes, log }) {
  const base = join(root, 'cluster');
  const procs = [];
  const clients = [];
  const cluster = `bench${process.pid}`;
  try {
    const t = now();
    const etcd = await startEtcd(join(base, 'etcd'));
    procs.push(etcd);
    log(`etcd ${etcd.url} (pid ${etcd.pid}) healthy in ${fmtMs(now() - t)}; starting 3 nodes`);
    const nodes = [];
    for (const id of ['n1', 'n2', 'n3']) {
      const node = await startNode(id, join(base, id), etcd.url, cluster);
      procs.push(node);
      nodes.push(node);
    }
    log(`nodes serving: ${nodes.map((n) => `${n.id} ${n.target} (pid ${n.pid})`).join(', ')}`);

    const { AdminClient, WalClient } = await import('../dist/rpc/index.js');
    const admin = new AdminClient(nodes[0].target);
    clients.push(admin);
    await waitFor('all 3 members registered in etcd', async () => (await admin.status('')).members.length >= 3, 15_000);
    const creator = new WalClient(nodes[0].target);
    clients.push(creator);
    const payload = payloadOf(PAYLOAD_BYTES);
    await waitFor(`first append to log "${LOG}" (createIfMissing)`, () => creator.append(LOG, [payload], { createIfMissing: true, deadlineMs: 5_000 }), 20_000);
    const status = await waitFor('log status with a writer', async () => {
      const s = await admin.status(LOG);
      return s.logs[0]?.writer ? s : undefined;
    }, 10_000);
    const logStatus = status.logs[0];
    const byId = new Map(status.members.map((m) => [m.id, m.address]));
    const writerTarget = byId.get(logStatus.writer);
    if (!writerTarget) throw new Error(`writer ${logStatus.writer} is not among the members ${[...byId.keys()].join(', ')}`);
    const other = status.members.find((m) => m.id !== logStatus.writer);
    const writerProc = nodes.find((n) => n.id === logStatus.writer);
    const followers = nodes.filter((n) => n !== writerProc);
    const openSegment = logStatus.segments.at(-1);
    const shapeNote = `writer ${logStatus.writer}, replication ${logStatus.replication_factor}, ack quorum ${logStatus.ack_quorum}, ensemble ${openSegment?.ensemble?.join('/') ?? '?'}`;
    log(`log "${LOG}": ${shapeNote}; forwarding through ${other.id}`);
    // The writer rebuilds its session table from the log before its first session append (once
    // per writer start): done here, so that no measured run pays for it.
    const { WalClient: PublicClient } = await import('../dist/index.js');
    const warm = await PublicClient.connect({ targets: [other.address], log: LOG, insecure: true });
    await warm.append(payload);
    await warm.close();

    // Runs alternate between the cluster and etcd in short slices, pooled per kind.
    const kinds = [
      { key: 'wal1', label: '6a cluster: 1 client, await each append (to the writer)', task: 'walLoad', args: { target: writerTarget }, concurrency: 1 },
      { key: 'etcd1', label: '   baseline: etcd put, 1 client, await each put', task: 'etcdLoad', args: { url: etcd.url }, concurrency: 1 },
      { key: 'fwd1', label: `6c cluster: 1 client through non-writer ${other.id} (forwarded)`, task: 'walLoad', args: { target: other.address }, concurrency: 1 },
      { key: 'wal64', label: '6b cluster: 64 concurrent appenders (to the writer)', task: 'walLoad', args: { target: writerTarget }, concurrency: 64 },
      { key: 'etcd64', label: '   baseline: etcd put, 64 concurrent', task: 'etcdLoad', args: { url: etcd.url }, concurrency: 64 },
      { key: 'fwd64', label: `6c cluster: 64 concurrent through non-writer ${other.id} (forwarded)`, task: 'walLoad', args: { target: other.address }, concurrency: 64 },
      { key: 'batch8x64', label: '6d cluster: 8 clients x 64 entries per Append call (to the writer; entries/s, latency per call)', task: 'walLoad', args: { target: writerTarget, perCall: 64 }, concurrency: 8 },
      // Issue 12: the package's WalClient (finds the writer, coalesces concurrent single appends).
      { key: 'cli64s', label: '6e WalClient: 64 concurrent single appends, sessions (exactly-once)', task: 'clientLoad', args: { targets: [other.address], sessions: true }, concurrency: 64 },
      { key: 'cli64n', label: '6e WalClient: 64 concurrent single appends, no sessions', task: 'clientLoad', args: { targets: [other.address], sessions: false }, concurrency: 64 },
      { key: 'cli1s', label: '6f WalClient: 1 appender awaiting each append, sessions', task: 'clientLoad', args: { targets: [other.address], sessions: true }, concurrency: 1 },
      { key: 'cli1n', label: '6f WalClient: 1 appender awaiting each append, no sessions', task: 'clientLoad', args: { targets: [other.address], sessions: false }, concurrency: 1 },
      { key: 'cliBatch', label: '6g WalClient: 8 appenders x 256 entries per append, sessions (entries/s, latency per call)', task: 'clientLoad', args: { targets: [other.address], sessions: true, perCall: 256 }, concurrency: 8 },
    ];
    const pooled = {};
    for (let round = 1; round <= sizes.rounds; round += 1) {
      for (const kind of kinds) {
        log(`round ${round}/${sizes.rounds}: ${kind.key} (${kind.concurrency} in flight, ${sizes.seconds} s)`);
        const args = { ...kind.args, log: LOG, prefix: `bench/${round}/${kind.key}`, payloadBytes: PAYLOAD_BYTES, concurrency: kind.concurrency, seconds: sizes.seconds, warmupSeconds: sizes.warmupSeconds };
        const p = (pooled[kind.key] ??= { ops: 0, entries: 0, failed: 0, ms: 0, latencies: [], errors: {}, cpu: { writer: 0, follower: 0, followers: 0, etcd: 0 }, wallMs: 0 });
        try {
          const cpu0 = { writer: cpuSeconds(writerProc.pid), follower: cpuSeconds(followers[0].pid), followers: followers.reduce((a, f) => a + cpuSeconds(f.pid), 0), etcd: cpuSeconds(etcd.pid) };
          const w0 = now();
          const r = await runTask(kind.task, args, { script: SCRIPT, timeoutMs: (sizes.seconds + sizes.warmupSeconds) * 1000 + 30_000 });
          p.wallMs += now() - w0;
          p.cpu.writer += cpuSeconds(writerProc.pid) - cpu0.writer;
          p.cpu.follower += cpuSeconds(followers[0].pid) - cpu0.follower;
          p.cpu.followers += followers.reduce((a, f) => a + cpuSeconds(f.pid), 0) - cpu0.followers;
          p.entries += r.ops + (r.warmupOps ?? 0);
          p.cpu.etcd += cpuSeconds(etcd.pid) - cpu0.etcd;
          p.ops += r.ops;
          p.failed += r.failed;
          p.ms += r.ms;
          for (const x of r.latencies) p.latencies.push(x);
          for (const [k, n] of Object.entries(r.errors)) p.errors[k] = (p.errors[k] ?? 0) + n;
          if (r.failed > 0) log(`${kind.key}: ${r.failed} failed: ${Object.entries(r.errors).map(([k, n]) => `${n} x ${k}`).join('; ')}`);
        } catch (error) {
          const message = String(error?.message ?? error).split('\n')[0];
          log(`${kind.key}: task FAILED: ${message}`);
          p.taskErrors = [...(p.taskErrors ?? []), message];
        }
      }
    }
    for (const n of nodes) if (n.exited) log(`node ${n.id} exited during the run: ${JSON.stringify(n.exited)}`);

    const stats = {};
    for (const kind of kinds) {
      const p = pooled[kind.key];
      stats[kind.key] = {
        label: kind.label,
        ops: p.ops,
        failed: p.failed,
        ms: p.ms,
        opsPerSec: p.ms > 0 ? p.ops / (p.ms / 1000) : NaN,
        latency: p.latencies.length > 0 ? summary(p.latencies) : { p50: NaN, p99: NaN, max: NaN, n: 0 },
        errors: p.errors,
        taskErrors: p.taskErrors ?? [],
        // CPU use of the servers over the whole task (warmup and process start included), in cores.
        cores: Object.fromEntries(Object.entries(p.cpu).map(([k, v]) => [k, p.wallMs > 0 ? v / (p.wallMs / 1000) : NaN])),
        // CPU microseconds per entry (per put for etcd): the process's CPU over the task divided by
        // the entries of the task (warmup included; /proc utime + stime, 10 ms ticks).
        usPerEntry: Object.fromEntries(Object.entries(p.cpu).map(([k, v]) => [k, p.entries > 0 ? (v * 1e6) / p.entries : NaN])),
      };
    }
    const rows = [['run', 'ops/s', 'payload MB/s', 'p50', 'p99', 'max', 'failed', 'CPU writer', 'CPU followers', 'CPU etcd', 'us/entry writer', 'us/entry follower', 'us/put etcd']];
    const cores = (x) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
    const us = (x) => (Number.isFinite(x) && x > 0 ? x.toFixed(0) : 'n/a');
    const isEtcd = (key) => key.startsWith('etcd');
    for (const key of ['wal1', 'etcd1', 'wal64', 'etcd64', 'fwd1', 'fwd64', 'batch8x64', 'cli64s', 'cli64n', 'cli1s', 'cli1n', 'cliBatch']) {
      const s = stats[key];
      rows.push([s.label, fmtOps(s.opsPerSec), fmtRate(s.opsPerSec * PAYLOAD_BYTES), fmtMs(s.latency.p50), fmtMs(s.latency.p99), fmtMs(s.latency.max), s.taskErrors.length > 0 ? 'TASK FAILED' : String(s.failed), cores(s.cores.writer), cores(s.cores.followers), cores(s.cores.etcd), isEtcd(key) ? '' : us(s.usPerEntry.writer), isEtcd(key) ? '' : us(s.usPerEntry.follower), isEtcd(key) ? us(s.usPerEntry.etcd) : '']);
    }
    const ahead = (a, b) => Number.isFinite(a.opsPerSec) && a.opsPerSec > b.opsPerSec && a.taskErrors.length === 0 && a.failed === 0;
    const ok = ahead(stats.wal1, stats.etcd1) && ahead(stats.wal64, stats.etcd64);
    const rel = (a, b) => `${((a.opsPerSec / b.opsPerSec) * 100).toFixed(0)} %`;
    // Issue 12's goals for the client, each against its baseline of this run.
    const clean = (a) => Number.isFinite(a.opsPerSec) && a.taskErrors.length === 0 && a.failed === 0;
    const client64 = clean(stats.cli64s) && stats.cli64s.opsPerSec >= 2 * stats.etcd64.opsPerSec && stats.cli64s.latency.p99 <= stats.etcd64.latency.p99;
    const client1 = clean(stats.cli1s) && stats.cli1s.opsPerSec >= stats.etcd1.opsPerSec;
    const sessionCost = 1 - stats.cli64s.opsPerSec / stats.cli64n.opsPerSec;
    const batched = clean(stats.cliBatch) && stats.cliBatch.opsPerSec >= 50_000;
    const sessionsCheap = clean(stats.cli64s) && clean(stats.cli64n) && sessionCost <= 0.05;
    const clientGoals =
      `WalClient, 64 concurrent >= 2x etcd's puts/s, p99 <= etcd's -> ${verdict(client64)} (${rel(stats.cli64s, stats.etcd64)} of etcd, p99 ${fmtMs(stats.cli64s.latency.p99)} vs ${fmtMs(stats.etcd64.latency.p99)}); ` +
      `1 sequential >= etcd's rate -> ${verdict(client1)} (${rel(stats.cli1s, stats.etcd1)}); ` +
      `exactly-once costs <= 5 % -> ${verdict(sessionsCheap)} (64 concurrent: ${(sessionCost * 100).toFixed(1)} %; 1 sequential: ${((1 - stats.cli1s.opsPerSec / stats.cli1n.opsPerSec) * 100).toFixed(1)} %); ` +
      `batched >= 50 k entries/s -> ${verdict(batched)} (${fmtOps(stats.cliBatch.opsPerSec)} entries/s; CPU per entry: writer ${us(stats.cliBatch.usPerEntry.writer)} us, follower ${us(stats.cliBatch.usPerEntry.follower)} us; etcd ${us(stats.etcd64.usPerEntry.etcd)} us per put at 64 concurrent)`;
    const notes = [];
    for (const s of Object.values(stats)) {
      for (const [k, n] of Object.entries(s.errors)) notes.push(`errors in "${s.label.trim()}": ${n} x ${k}`);
      for (const m of s.taskErrors) notes.push(`task failed in "${s.label.trim()}": ${m}`);
    }
    const nodeNotes = {};
    for (const n of nodes) {
      const lines = noteworthy(n);
      nodeNotes[n.id] = lines;
      if (lines.length > 0) {
        const counts = {};
        for (const l of lines) counts[l] = (counts[l] ?? 0) + 1;
        const top = Object.entries(counts).sort((a, b) => b[1] - a[1]).slice(0, 4);
        notes.push(`node ${n.id} stderr: ${lines.length} warn/error lines; ${top.map(([l, c]) => `${c} x "${l}"`).join('; ')}`);
      }
    }
    const section = {
      title: `6. Cluster appends of ${PAYLOAD_BYTES} B payloads: 3 nodes + 1 etcd on loopback, ${shapeNote}; ${sizes.rounds} round(s) x ${sizes.seconds} s per run, pooled`,
      goal:
        `goal: ahead of etcd at equal durability -> ${verdict(ok)} ` +
        `(1 client: ${rel(stats.wal1, stats.etcd1)} of etcd's puts/s, p99 ${fmtMs(stats.wal1.latency.p99)} vs ${fmtMs(stats.etcd1.latency.p99)}; ` +
        `64 in flight: ${rel(stats.wal64, stats.etcd64)}, p99 ${fmtMs(stats.wal64.latency.p99)} vs ${fmtMs(stats.etcd64.latency.p99)})\n` +
        `goal (issue 12): ${clientGoals}`,
      body:
        `${table(rows)}\n(latency per append / put as the client sees it; an append is acknowledged once 2 of 3 nodes fsynced it; ` +
        `etcd (1 member) fsyncs its WAL before acknowledging a put; CPU: cores used by the server processes during the task (both followers summed), /proc; each run is a fresh client process, all on the same ${os.availableParallelism()}-core machine as the servers)` +
        (notes.length > 0 ? `\n${notes.join('\n')}` : ''),
    };
    return { section, results: { clientGoals: { client64, client1, sessionsCheap, sessionCost, batched }, stats, writer: logStatus.writer, forwardedThrough: other.id, replication: logStatus.replication_factor, ackQuorum: logStatus.ack_quorum, nodeNotes, goalMet: ok } };
  } finally {
    for (const c of clients) c.close();
    // Nodes first (they hold etcd leases), then etcd.
    await Promise.all(procs.filter((p) => p.name !== 'etcd').map((p) => p.stop()));
    await Promise.all(procs.filter((p) => p.name === 'etcd').map((p) => p.stop()));
    rmSync(base, { recursive: true, force: true });
  }
}

const verdict = (ok) => (ok ? 'MET' : 'MISSED');

// ---------------------------------------------------------------------------------------------

if (process.argv[1] === SCRIPT) {
  const TASKS = { walLoad, etcdLoad, clientLoad };
  const [task, json] = process.argv.slice(2);
  const fn = TASKS[task];
  if (!fn) {
    console.error(`unknown task ${task}; one of ${Object.keys(TASKS).join(', ')}`);
    process.exit(2);
  }
  await fn(JSON.parse(json ?? '{}'));
  process.exit(0);
}
