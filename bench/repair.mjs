// Benchmark 7: online repair of a sealed segment in a real 3-node cluster.
//
// (a) A 4 KiB block inside a sealed segment is zeroed on one follower while a client reads the
//     entries of that block through that follower in a tight loop (child process); then
//     AdminService.RepairSegment repairs that copy. Measured: the repair's duration, the reads of
//     the damaged range (failures, worst latency, the longest time the range could not be read)
//     against the same reads before the damage, and the time until the local copy equals an
//     intact replica's again.
// (b) The segment file is deleted on the follower and repaired (restore-file: the whole file
//     comes from a replica over FetchSegment); bytes / duration, beside raw loopback TCP
//     throughput (two node processes, 1 MiB writes) measured in the same run, alternating.
// (c) VmRSS of the repairing node process, sampled from /proc every 10 ms before and during
//     (a) and (b).
//
// The driver side (benchRepair, called by run.mjs) starts etcd and three nodes itself (same
// helpers as bench/cluster.mjs, with --segment-bytes, --scrub-bytes-per-second 0 and
// --metrics-listen); child tasks: `node bench/repair.mjs reader|tcpSink|tcpSource '<json>'`.
// Everything started is stopped by pid in a finally block; the data dir is removed.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KIB, MIB, fmtBytes, fmtMs, fmtRate, reportResult, runTask, summary, table } from './lib.mjs';
import { errorKey, httpGet, payloadOf, startEtcd, startNode } from './cluster.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
const LOG = 'repairbench';
const PAYLOAD_BYTES = 4 * KIB;
const ENTRY_HEADER_BYTES = 40;
const SEGMENT_HEADER_BYTES = 128;
const TRAILER_BYTES = 64;

const now = () => performance.now();
/** Milliseconds since the epoch with sub-millisecond resolution, comparable across processes. */
const abs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const round3 = (x) => Math.round(x * 1e3) / 1e3;

/** Sum and count of a Prometheus histogram (all label sets), or undefined. */
async function histogram(metricsUrl, name) {
  if (!metricsUrl) return undefined;
  try {
    const url = metricsUrl.startsWith('http') ? metricsUrl : `http://${metricsUrl}/metrics`;
    const { body } = await httpGet(url.endsWith('/metrics') ? url : `${url.replace(/\/$/, '')}/metrics`);
    let sum = 0;
    let count = 0;
    for (const line of body.split('\n')) {
      if (line.startsWith(`${name}_sum`)) sum += Number(line.split(' ').at(-1));
      if (line.startsWith(`${name}_count`)) count += Number(line.split(' ').at(-1));
    }
    return { sum, count };
  } catch {
    return undefined;
  }
}

function vmRss(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Samples VmRSS of pid every intervalMs; mark(name) starts a named window; stop() returns them. */
function rssSampler(pid, intervalMs = 10) {
  const samples = [];
  const take = () => samples.push([abs(), vmRss(pid)]);
  take();
  const timer = setInterval(take, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return samples;
    },
  };
}

/** RSS over [from, to): the last sample before `from` is "before"; peak and growth over the window. */
function rssWindow(samples, from, to) {
  const before = samples.filter(([t]) => t <= from).at(-1)?.[1] ?? samples[0]?.[1];
  const inside = samples.filter(([t, v]) => t > from && t <= to && Number.isFinite(v)).map(([, v]) => v);
  const peak = Math.max(before, ...inside);
  return { before, peak, growth: peak - before, samples: inside.length };
}

async function waitFor(what, fn, timeoutMs) {
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

function sha256File(path) {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function segmentPath(dataDir, segmentId) {
  return join(dataDir, 'logs', LOG, 'segments', `${String(segmentId).padStart(20, '0')}.wal`);
}

/** Entry frames of a segment file: [{ offset, length, index }]. */
function framesOf(buf) {
  const frames = [];
  let off = SEGMENT_HEADER_BYTES;
  while (off + ENTRY_HEADER_BYTES <= buf.length - TRAILER_BYTES && buf.readUInt32LE(off) === 0x454c4157) {
    const length = buf.readUInt32LE(off + 32);
    const index = buf.readUInt32LE(off + 16) + buf.readUInt32LE(off + 20) * 0x1_0000_0000;
    frames.push({ offset: off, length: ENTRY_HEADER_BYTES + length, index });
    off += ENTRY_HEADER_BYTES + length;
  }
  return frames;
}

// ---------------------------------------------------------------------------------------------
// Child tasks

/** Reads [from, to] through target in a tight loop until stopFile exists; one sample per read. */
async function reader({ target, log, from, to, stopFile, warmupMs }) {
  const { WalClient } = await import('../dist/rpc/index.js');
  const client = new WalClient(target);
  await client.waitForReady(5_000);
  const expected = payloadOf(PAYLOAD_BYTES);
  const want = to - from + 1;
  const samples = [];
  const errors = {};
  const once = async () => {
    const entries = [];
    for await (const batch of client.read(log, from, to, { deadlineMs: 10_000 })) entries.push(...batch.entries);
    if (entries.length !== want) throw new Error(`got ${entries.length} entries, wanted ${want}`);
    for (const e of entries) {
      if (e.lost) throw new Error(`entry ${e.index} reported lost: ${e.lost_reason}`);
      if (!expected.equals(e.payload)) throw new Error(`entry ${e.index}: wrong payload`);
    }
  };
  const warmEnd = now() + warmupMs;
  while (now() < warmEnd) await once().catch(() => undefined);
  process.stdout.write('ready\n');
  while (!existsSync(stopFile)) {
    const t = abs();
    let ok = 1;
    try {
      await once();
    } catch (error) {
      ok = 0;
      const key = errorKey(error);
      errors[key] = (errors[key] ?? 0) + 1;
    }
    samples.push([round3(t), round3(abs() - t), ok]);
  }
  client.close();
  reportResult({ samples, errors });
}

/** Raw TCP sink: counts bytes until `bytes` arrived; reports the absolute time of the last one. */
async function tcpSink({ bytes }) {
  await new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      let got = 0;
      let firstAt;
      socket.on('data', (chunk) => {
        firstAt ??= abs();
        got += chunk.length;
        if (got >= bytes) {
          const lastAt = abs();
          socket.end();
          server.close();
          reportResult({ got, firstAt, lastAt });
          resolve();
        }
      });
      socket.on('error', reject);
    });
    server.listen(0, '127.0.0.1', () => process.stdout.write(`port ${server.address().port}\n`));
  });
}

/** Raw TCP source: connects and writes `bytes` in `writeBytes` writes, respecting backpressure. */
async function tcpSource({ port, bytes, writeBytes }) {
  const chunk = payloadOf(writeBytes);
  const startAt = abs();
  await new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', async () => {
      let sent = 0;
      while (sent < bytes) {
        const n = Math.min(writeBytes, bytes - sent);
        const ok = socket.write(n === writeBytes ? chunk : chunk.subarray(0, n));
        sent += n;
        if (!ok) await new Promise((r) => socket.once('drain', r));
      }
      socket.end();
    });
    socket.on('close', resolve);
    socket.on('error', reject);
  });
  reportResult({ startAt });
}

// ---------------------------------------------------------------------------------------------
// Driver

async function tcpBaseline(bytes) {
  let port;
  let portSeen;
  const portKnown = new Promise((resolve) => (portSeen = resolve));
  const sink = runTask('tcpSink', { bytes }, { script: SCRIPT, timeoutMs: 60_000, onLine: (_c, line) => line.startsWith('port ') && portSeen(Number(line.split(' ')[1])) });
  port = await Promise.race([portKnown, sink.then(() => undefined)]);
  if (!port) throw new Error('tcp sink exited without listening');
  const source = await runTask('tcpSource', { port, bytes, writeBytes: MIB }, { script: SCRIPT, timeoutMs: 60_000 });
  const s = await sink;
  const ms = s.lastAt - source.startAt;
  return { bytes: s.got, ms, bytesPerSec: s.got / (ms / 1000) };
}

/** Longest time a read of the range started at some moment took to return correct data. */
function unreadable(samples) {
  let worst = 0;
  let since;
  for (const [t, ms, ok] of samples) {
    if (!ok) {
      since ??= t;
      continue;
    }
    worst = Math.max(worst, t + ms - (since ?? t));
    since = undefined;
  }
  if (since !== undefined) worst = Infinity; // never readable again
  return worst;
}

function readStats(samples) {
  const ok = samples.filter((s) => s[2]);
  const lat = summary(ok.map((s) => s[1]));
  return { reads: samples.length, failed: samples.length - ok.length, p50: lat.p50, p99: lat.p99, max: samples.length ? Math.max(...samples.map((s) => s[1])) : NaN, unreadableMs: unreadable(samples) };
}

export async function benchRepair({ root, quick, log }) {
  const segmentBytes = quick ? 16 * MIB : 64 * MIB;
  const sizes = { segmentBytes, baselineMs: quick ? 1500 : 3000, tailMs: quick ? 800 : 1500, fullReps: quick ? 1 : 2 };
  const base = join(root, 'repair');
  const procs = [];
  const clients = [];
  const cluster = `repair${process.pid}`;
  let events;
  try {
    const etcd = await startEtcd(join(base, 'etcd'));
    procs.push(etcd);
    const extra = ['--segment-bytes', String(segmentBytes), '--scrub-bytes-per-second', '0'];
    const nodes = [];
    for (const id of ['n1', 'n2', 'n3']) {
      const node = await startNode(id, join(base, id), etcd.url, cluster, ['--metrics-listen', '127.0.0.1:0', ...extra]);
      procs.push(node);
      nodes.push(node);
    }
    log(`etcd ${etcd.url}; nodes ${nodes.map((n) => `${n.id} ${n.target} (pid ${n.pid})`).join(', ')}; --segment-bytes ${segmentBytes}, scrubber off`);
    const { AdminClient, WalClient } = await import('../dist/rpc/index.js');
    const admin0 = new AdminClient(nodes[0].target);
    clients.push(admin0);
    await waitFor('all 3 members registered in etcd', async () => (await admin0.status('')).members.length >= 3, 15_000);
    const payload = payloadOf(PAYLOAD_BYTES);
    const creator = new WalClient(nodes[0].target);
    clients.push(creator);
    await waitFor(`first append to log "${LOG}"`, () => creator.append(LOG, [payload], { createIfMissing: true, deadlineMs: 5_000 }), 20_000);
    const st0 = await waitFor('log status with a writer', async () => {
      const s = await admin0.status(LOG);
      return s.logs[0]?.writer ? s : undefined;
    }, 10_000);
    const writerId = st0.logs[0].writer;
    const writer = nodes.find((n) => n.id === writerId);
    const wc = new WalClient(writer.target);
    clients.push(wc);

    // Fill one segment: 4 KiB entries, 64 per append, 4 appends in flight, until one is sealed.
    const batch = Array.from({ length: 64 }, () => payload);
    const t = now();
    let appended = 0;
    const sealedSegment = async () => (await admin0.status(LOG)).logs[0].segments.find((s) => s.state === 'SEALED');
    let sealed;
    while (!sealed) {
      const target = appended + segmentBytes + 2 * MIB;
      const worker = async () => {
        while (appended < target) {
          appended += batch.length * (PAYLOAD_BYTES + ENTRY_HEADER_BYTES);
          await wc.append(LOG, batch, { deadlineMs: 30_000 });
        }
      };
      await Promise.all([worker(), worker(), worker(), worker()]);
      sealed = await waitFor('a sealed segment', sealedSegment, 10_000).catch(() => undefined);
      if (!sealed && appended > 4 * segmentBytes) throw new Error('no segment sealed after appending 4 segments worth');
    }
    const appendMs = now() - t;
    const segmentId = sealed.segment_id;
    const follower = nodes.find((n) => n.id !== writerId && sealed.ensemble.includes(n.id));
    const replica = nodes.find((n) => n !== follower && sealed.ensemble.includes(n.id) && n.id !== writerId) ?? writer;
    const path = segmentPath(follower.dataDir, segmentId);
    const replicaPath = segmentPath(replica.dataDir, segmentId);
    await waitFor(`segment file ${path} sealed on ${follower.id} and ${replica.id}`, async () => {
      for (const p of [path, replicaPath]) {
        const b = readFileSync(p);
        if (b.length < TRAILER_BYTES || b.readUInt32LE(b.length - TRAILER_BYTES) !== 0x544c4157) return false;
      }
      return true;
    }, 15_000);
    const fileBytes = statSync(path).size;
    const intactHash = sha256File(replicaPath);
    const followerHash = sha256File(path);
    if (intactHash !== followerHash) log(`note: ${follower.id}'s copy differs from ${replica.id}'s before any damage; "whole" means equal to its own pre-damage bytes`);
    const wholeHash = followerHash;
    log(`appended ${fmtBytes(appended)} in ${fmtMs(appendMs)}; segment ${segmentId} (${sealed.first_index}..${sealed.last_index}, ${fmtBytes(fileBytes)}) sealed, ensemble ${sealed.ensemble.join('/')}, writer ${writerId}; damaging ${follower.id}'s copy, comparing with ${replica.id}'s`);

    // The 4 KiB block in the middle of the file and the entries it touches (plus one each side).
    const frames = framesOf(readFileSync(path));
    const blockAt = Math.floor(fileBytes / 2 / (4 * KIB)) * 4 * KIB;
    const hit = frames.filter((f) => f.offset < blockAt + 4 * KIB && f.offset + f.length > blockAt);
    if (hit.length === 0) throw new Error(`no entry frame overlaps offset ${blockAt} (${frames.length} frames parsed)`);
    const from = Math.max(sealed.first_index, hit[0].index - 1);
    const to = Math.min(sealed.last_index, hit.at(-1).index + 1);

    const followerAdmin = new AdminClient(follower.target);
    clients.push(followerAdmin);
    const eventLog = [];
    events = followerAdmin.watchEvents(LOG);
    events.on('data', (e) => eventLog.push({ at: abs(), kind: e.kind, source: e.source, node: e.node, segment: Number(e.segment), detail: e.detail }));
    events.on('error', () => undefined);

    // ---- (a) damaged range --------------------------------------------------------------
    const stopFile = join(base, 'reader.stop');
    let readySeen;
    const readyP = new Promise((resolve) => (readySeen = resolve));
    const rss = rssSampler(follower.pid, 10);
    const replicaRss = rssSampler(replica.pid, 10);
    const readerTask = runTask('reader', { target: follower.target, log: LOG, from, to, stopFile, warmupMs: 500 }, {
      script: SCRIPT,
      timeoutMs: 240_000,
      onLine: (_c, line) => line === 'ready' && readySeen(abs()),
    });
    const readyAt = await Promise.race([readyP, readerTask.then(() => NaN)]);
    if (!Number.isFinite(readyAt)) throw new Error('reader exited before it was ready');
    log(`(a) reading entries ${from}..${to} (block at offset ${blockAt} touches ${hit.map((f) => f.index).join(', ')}) through ${follower.id}; ${sizes.baselineMs} ms baseline`);
    await sleep(sizes.baselineMs);
    const unavailable0 = await histogram(follower.metrics, 'wal_recovery_segment_unavailable_seconds');
    const repairHist0 = await histogram(follower.metrics, 'wal_recovery_repair_duration_seconds');
    const inode0 = statSync(path).ino;
    const damageAt = abs();
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.alloc(4 * KIB), 0, 4 * KIB, blockAt); // the page cache is what reads see: no fsync
    closeSync(fd);
    let swappedAt;
    const poll = setInterval(() => {
      try {
        if (swappedAt === undefined && statSync(path).ino !== inode0) swappedAt = abs();
      } catch {
        // mid-rename
      }
    }, 2);
    const repairStart = abs();
    let response;
    let repairError;
    try {
      response = await followerAdmin.repairSegment({ log: LOG, segmentId, node: follower.id });
    } catch (error) {
      repairError = errorKey(error);
    }
    const repairEnd = abs();
    // Whole again: the copy renamed in (or rewritten in place) equals the intact bytes.
    let wholeAt;
    const wholeDeadline = Date.now() + 15_000;
    for (;;) {
      const h = sha256File(path);
      if (h === wholeHash) {
        wholeAt = swappedAt !== undefined && swappedAt <= abs() ? swappedAt : abs();
        break;
      }
      if (Date.now() > wholeDeadline) break;
      await sleep(20);
    }
    clearInterval(poll);
    await sleep(sizes.tailMs);
    writeFileSync(stopFile, '');
    const readerResult = await readerTask;
    const afterEnd = abs();
    const unavailable1 = await histogram(follower.metrics, 'wal_recovery_segment_unavailable_seconds');
    const repairHist1 = await histogram(follower.metrics, 'wal_recovery_repair_duration_seconds');
    const rssA = rss.stop();
    const replicaRssA = replicaRss.stop();
    const windowEnd = Math.max(repairEnd, wholeAt ?? repairEnd);
    const samples = readerResult.samples;
    const before = samples.filter(([s]) => s >= readyAt && s < damageAt);
    const during = samples.filter(([s]) => s >= damageAt && s < windowEnd);
    const after = samples.filter(([s]) => s >= windowEnd);
    const a = {
      segmentId,
      fileBytes,
      blockAt,
      entries: { from, to, damaged: hit.map((f) => f.index) },
      repairMs: repairEnd - repairStart,
      repairError,
      result: response?.results?.map((r) => ({ node: r.node, decision: r.decision, outcome: r.outcome, source: r.source, detail: r.detail, bytesWritten: Number(r.bytes_written) })),
      swappedAfterMs: swappedAt === undefined ? undefined : swappedAt - damageAt,
      wholeAfterMs: wholeAt === undefined ? undefined : wholeAt - damageAt,
      reads: { before: readStats(before), during: readStats(during), after: readStats(after), errors: readerResult.errors },
      rss: { baseline: rssWindow(rssA, readyAt, damageAt), during: rssWindow(rssA, damageAt, windowEnd), replicaDuring: rssWindow(replicaRssA, damageAt, windowEnd) },
      metrics: {
        unavailable: unavailable0 && unavailable1 ? { count: unavailable1.count - unavailable0.count, sumSeconds: unavailable1.sum - unavailable0.sum } : undefined,
        repairDuration: repairHist0 && repairHist1 ? { count: repairHist1.count - repairHist0.count, sumSeconds: repairHist1.sum - repairHist0.sum } : undefined,
      },
      events: eventLog.filter((e) => e.at >= damageAt && e.at <= afterEnd).map((e) => ({ ...e, at: round3(e.at - damageAt) })),
    };
    log(`(a) repair ${fmtMs(a.repairMs)} (${a.result?.map((r) => `${r.decision}/${r.outcome}`).join(', ') ?? repairError}); whole after ${fmtMs(a.wholeAfterMs)}; reads during: ${a.reads.during.reads}, ${a.reads.during.failed} failed, max ${fmtMs(a.reads.during.max)}`);

    // ---- (b) full-segment repair, alternating with raw TCP ------------------------------
    const b = { runs: [], tcp: [] };
    log(`(b) raw loopback TCP baseline: ${fmtBytes(fileBytes)} in 1 MiB writes, two processes`);
    b.tcp.push(await tcpBaseline(fileBytes));
    for (let rep = 1; rep <= sizes.fullReps; rep += 1) {
      rmSync(path, { force: true });
      const sampler = rssSampler(follower.pid, 10);
      const h0 = await histogram(follower.metrics, 'wal_recovery_repair_duration_seconds');
      await sleep(200);
      const start = abs();
      let res;
      let err;
      try {
        res = await followerAdmin.repairSegment({ log: LOG, segmentId, node: follower.id });
      } catch (error) {
        err = errorKey(error);
      }
      const end = abs();
      await sleep(50);
      const samplesB = sampler.stop();
      const h1 = await histogram(follower.metrics, 'wal_recovery_repair_duration_seconds');
      const whole = existsSync(path) && sha256File(path) === wholeHash;
      const run = {
        ms: end - start,
        bytes: fileBytes,
        bytesPerSec: fileBytes / ((end - start) / 1000),
        whole,
        error: err,
        result: res?.results?.map((r) => ({ node: r.node, decision: r.decision, outcome: r.outcome, source: r.source, detail: r.detail })),
        rss: rssWindow(samplesB, start - 1, end),
        attemptMs: h0 && h1 && h1.count > h0.count ? ((h1.sum - h0.sum) * 1000) / (h1.count - h0.count) : NaN,
      };
      b.runs.push(run);
      log(`(b) run ${rep}: restore ${fmtBytes(fileBytes)} in ${fmtMs(run.ms)} = ${fmtRate(run.bytesPerSec)} (${run.result?.map((r) => `${r.decision}/${r.outcome} from ${r.source}`).join(', ') ?? err}); whole ${whole}; RSS +${fmtBytes(run.rss.growth)}`);
      b.tcp.push(await tcpBaseline(fileBytes));
    }
    for (const n of nodes) if (n.exited) log(`node ${n.id} exited during the run: ${JSON.stringify(n.exited)}`);

    // ---- table ------------------------------------------------------------------------------
    const okRuns = b.runs.filter((r) => !r.error && r.whole && r.result?.every((x) => x.outcome === 'done'));
    const repairRate = okRuns.length ? summary(okRuns.map((r) => r.bytesPerSec)).p50 : NaN;
    const tcpRate = summary(b.tcp.map((x) => x.bytesPerSec)).p50;
    const rssGrowth = Math.max(a.rss.during.growth, ...b.runs.map((r) => r.rss.growth));
    const aOk = !repairError && a.result?.every((r) => r.outcome === 'done') && a.wholeAfterMs !== undefined;
    const unreadableMs = a.reads.during.unreadableMs;
    const goalA = aOk && unreadableMs < 50;
    const goalB = repairRate >= 0.5 * tcpRate;
    const goalC = rssGrowth < 10 * 1000 * 1000;
    const verdict = (ok) => (ok ? 'MET' : 'MISSED');
    const rd = (s) => [String(s.reads), String(s.failed), fmtMs(s.p50), fmtMs(s.p99), fmtMs(s.max), fmtMs(s.unreadableMs)];
    const rowsA = [
      ['7a reads of entries ' + `${from}..${to} through ${follower.id}`, 'reads', 'failed', 'p50', 'p99', 'max', 'longest unreadable'],
      ['   baseline: before the damage', ...rd(a.reads.before)],
      ['   block zeroed -> local copy whole again', ...rd(a.reads.during)],
      ['   after', ...rd(a.reads.after)],
    ];
    const evDelta = (k1, k2) => {
      const e1 = a.events.find((e) => e.kind === k1);
      const e2 = a.events.find((e) => e.kind === k2);
      return e1 && e2 ? e2.at - e1.at : NaN;
    };
    const rowsRepair = [
      ['measurement', 'value', 'baseline (same run)', 'value'],
      ['7a repairSegment RPC (4 KiB block zeroed)', fmtMs(a.repairMs), 'reads p50 before damage', fmtMs(a.reads.before.p50)],
      ['7a damage -> local copy equals intact replica', fmtMs(a.wholeAfterMs), 'damage -> repair RPC returned', fmtMs(repairEnd - damageAt)],
      ['7a detected -> "repaired" event (node\'s events)', fmtMs(evDelta('detected', 'repaired')), 'damage -> repair RPC sent', fmtMs(repairStart - damageAt)],
      ['7a node\'s repair attempts (wal_recovery_repair_duration_seconds)', `${a.metrics.repairDuration?.count ?? 'n/a'} x, sum ${fmtMs((a.metrics.repairDuration?.sumSeconds ?? NaN) * 1000)}`, 'wal_recovery_segment_unavailable_seconds', `${a.metrics.unavailable?.count ?? 'n/a'} x, sum ${fmtMs((a.metrics.unavailable?.sumSeconds ?? NaN) * 1000)}`],
      ...b.runs.map((r, i) => [`7b full-segment repair run ${i + 1} (file deleted)`, `${fmtRate(r.bytesPerSec)} (${fmtMs(r.ms)})`, `raw loopback TCP run ${i + 1}`, `${fmtRate(b.tcp[i].bytesPerSec)} (${fmtMs(b.tcp[i].ms)})`]),
      ['7b median', fmtRate(repairRate), `raw TCP median of ${b.tcp.length}`, fmtRate(tcpRate)],
      ...b.runs.map((r, i) => [`7b run ${i + 1}: node's repair attempt (wal_recovery_repair_duration_seconds)`, fmtMs(r.attemptMs), 'repairSegment RPC wall time', fmtMs(r.ms)]),
      ['7c RSS growth of the repairing node during 7a', fmtBytes(a.rss.during.growth), 'same node, reads before damage', fmtBytes(a.rss.baseline.growth)],
      ...b.runs.map((r, i) => [`7c RSS growth during 7b run ${i + 1}`, fmtBytes(r.rss.growth), 'RSS before', fmtBytes(r.rss.before)]),
      ['   RSS growth of the replica during 7a', fmtBytes(a.rss.replicaDuring.growth), '', ''],
    ];
    const notes = [];
    for (const r of [...(a.result ?? []), ...b.runs.flatMap((x) => x.result ?? [])]) notes.push(`repair result on ${r.node}: ${r.decision}/${r.outcome}${r.source ? ` from ${r.source}` : ''}: ${r.detail}`);
    if (repairError) notes.push(`7a repairSegment failed: ${repairError}`);
    for (const r of b.runs) if (r.error) notes.push(`7b repairSegment failed: ${r.error}`);
    for (const [k, n] of Object.entries(a.reads.errors)) notes.push(`read errors: ${n} x ${k}`);
    if (a.events.length) notes.push(`recovery events on ${follower.id} (ms after damage): ${a.events.map((e) => `${e.at.toFixed(1)} ${e.kind}/${e.source}`).join('; ')}`);
    if (a.metrics.unavailable) notes.push(`${follower.id} wal_recovery_segment_unavailable_seconds during 7a: ${a.metrics.unavailable.count} observation(s), sum ${fmtMs(a.metrics.unavailable.sumSeconds * 1000)}; wal_recovery_repair_duration_seconds: ${a.metrics.repairDuration?.count} attempt(s), sum ${fmtMs((a.metrics.repairDuration?.sumSeconds ?? NaN) * 1000)}`);
    if (intactHash !== followerHash) notes.push(`${follower.id}'s copy was not byte-equal to ${replica.id}'s even before damage: "whole" compared with its own pre-damage bytes`);
    const section = {
      title: `7. Online repair of a sealed ${fmtBytes(fileBytes)} segment (4 KiB entries), 3 nodes + etcd on loopback, scrubber off; repaired copy on follower ${follower.id}, intact replica ${replica.id}`,
      goal:
        `goals: damaged range unreadable under 50 ms -> ${verdict(goalA)} (longest ${fmtMs(unreadableMs)}, ${a.reads.during.failed} failed reads, max read ${fmtMs(a.reads.during.max)} vs ${fmtMs(a.reads.before.max)} before); ` +
        `full-segment repair at least half of raw TCP -> ${verdict(goalB)} (${fmtRate(repairRate)} = ${((repairRate / tcpRate) * 100).toFixed(0)} % of ${fmtRate(tcpRate)}); ` +
        `RSS growth under 10 MB -> ${verdict(goalC)} (${fmtBytes(rssGrowth)})`,
      body:
        `${table(rowsA)}\n\n${table(rowsRepair)}\n` +
        `(reads: WalClient.read of ${to - from + 1} entries in a tight loop from a child process, payload checked; "longest unreadable": the longest time from a read's start until a read of the range returned correct data; ` +
        `7b: repairSegment wall time as the client sees it, file deleted on ${follower.id}, restored from a replica over FetchSegment and verified; raw TCP: one node process writing ${fmtBytes(fileBytes)} in 1 MiB writes to another, alternating with the repairs; ` +
        `RSS: /proc/<pid>/status VmRSS every 10 ms, growth = peak during - last sample before)` +
        (notes.length ? `\n${notes.join('\n')}` : ''),
    };
    return { section, results: { sizes, appendMs, a, b, repairRate, tcpRate, rssGrowth, goalMet: { unreadable: goalA, throughput: goalB, rss: goalC } } };
  } finally {
    events?.cancel();
    for (const c of clients) c.close();
    await Promise.all(procs.filter((p) => p.name !== 'etcd').map((p) => p.stop()));
    await Promise.all(procs.filter((p) => p.name === 'etcd').map((p) => p.stop()));
    rmSync(base, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------

if (process.argv[1] === SCRIPT) {
  const TASKS = { reader, tcpSink, tcpSource };
  const [task, json] = process.argv.slice(2);
  const fn = TASKS[task];
  if (!fn) {
    console.error(`unknown task ${task}; one of ${Object.keys(TASKS).join(', ')}`);
    process.exit(2);
  }
  await fn(JSON.parse(json ?? '{}'));
  process.exit(0);
}
