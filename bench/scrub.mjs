// Benchmark 8 (`--only scrub` or `--only 8`): predictive scrubbing and tracing.
// 8a: time to detection of clustered latent errors for each scrub policy at the same budget, in
//     simulated time (src/sim/scrub-eval.ts, reproducible from its seed; docs/SCRUBBING.md).
// 8b: client appends to a real 3-node cluster (16 in flight, to the writer): scrubbing off, then
//     scrubbing on without the throttle (16 MiB/s per node, continuous, over sealed segments
//     written beforehand), scrubbing on with the throttle (the default: it yields to appends), then
//     tracing on at 1 % sampling (OTLP exporter to a closed local port: spans are built and
//     dropped), then off again (drift of the machine between runs). Each cluster is fresh.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmtMs, fmtOps, runTask, table } from './lib.mjs';
import { httpGet, payloadOf, startEtcd, startNode, waitFor } from './cluster.mjs';

const CLUSTER_SCRIPT = fileURLToPath(new URL('./cluster.mjs', import.meta.url));
const LOG = 'bench';
const verdict = (ok) => (ok ? 'MET' : 'MISSED');

export async function benchScrub({ root, quick, log }) {
  const evaluation = await evaluatePolicies({ quick, log });
  const appends = await appendRuns({ root, quick, log });
  // The baseline is the mean of the two off runs (before and after): the machine drifts.
  const base = { opsPerSec: (appends.off.opsPerSec + appends.off2.opsPerSec) / 2, p99: (appends.off.p99 + appends.off2.p99) / 2 };
  const p99Rise = appends.scrub.p99 / base.p99 - 1;
  const p99RiseUnthrottled = appends.scrubFull.p99 / base.p99 - 1;
  const tracingCost = 1 - appends.tracing.opsPerSec / base.opsPerSec;
  const rows = [['cluster run (16 appenders, 256 B)', 'appends/s', 'p50', 'p99', 'failed', 'scrubbed', 'deficit', 'throttle share', 'probes / decreases']];
  for (const [key, label] of [['off', 'scrubbing off, tracing off'], ['scrubFull', 'scrubbing on, not throttled (16 MiB/s per node)'], ['scrub', 'scrubbing on, throttled (the default)'], ['tracing', 'tracing on, 1 % sampled'], ['off2', 'scrubbing off, tracing off (again)']]) {
    const r = appends[key];
    rows.push([label, fmtOps(r.opsPerSec), fmtMs(r.p50), fmtMs(r.p99), String(r.failed), `${(r.scrubBytes / 1024 / 1024).toFixed(1)} MiB`, `${r.deficitSeconds.toFixed(1)} s`, r.throttleShare.toFixed(2), `${r.probes} / ${r.decreases}`]);
  }
  const section = {
    title: '8. Predictive scrubbing and tracing',
    goal:
      `Goals: model mean time to detection <= round-robin's / 1.7 -> ${verdict(evaluation.speedup >= 1.7)} (${evaluation.speedup.toFixed(2)}x over ${evaluation.seeds.length} seeds); ` +
      `>= 90 % found within one period -> ${verdict(evaluation.withinPeriod >= 0.9)} (${(evaluation.withinPeriod * 100).toFixed(0)} %); ` +
      `append p99 with scrubbing <= 10 % above off -> ${verdict(p99Rise <= 0.1)} (${(p99Rise * 100).toFixed(0)} %; not throttled ${(p99RiseUnthrottled * 100).toFixed(0)} %); ` +
      `appends/s with tracing at 1 % within 5 % of off -> ${verdict(tracingCost <= 0.05)} (${(tracingCost * 100).toFixed(1)} % lower)`,
    body: `${evaluation.table}\n\n${table(rows)}\n(baseline: the mean of the two off runs, before and after; their difference is the machine's drift meanwhile; scrubbed, deficit and throttle share, probes / decreases: summed / max / mean / summed over the 3 nodes' /metrics, during the load)`,
  };
  return { section, results: { evaluation, appends, p99Rise, p99RiseUnthrottled, tracingCost } };
}

async function evaluatePolicies({ quick, log }) {
  const { evaluate } = await import('../dist/sim/scrub-eval.js');
  const seeds = quick ? [1] : [1, 2, 3];
  const nodes = quick ? 24 : 48;
  const pooled = {};
  for (const seed of seeds) {
    log(`8a: scrub policies, seed ${seed}, ${nodes} nodes`);
    for (const r of evaluate({ seed, nodes })) {
      const p = (pooled[r.policy] ??= { damages: 0, byScrub: 0, byRead: 0, ttdSumHours: 0, p99: [], within: 0, bytes: 0, extra: 0, falseAlarm: 0 });
      p.damages += r.damages;
      p.byScrub += r.foundByScrub;
      p.byRead += r.foundByRead;
      p.ttdSumHours += r.meanTtdHours * r.foundByScrub;
      p.p99.push(r.p99TtdHours);
      p.within += r.withinPeriodShare * r.foundByScrub;
      p.bytes += r.bytesScrubbed;
      p.extra += r.extraBytes;
      p.falseAlarm += r.falseAlarmBytes;
    }
  }
  const rows = [['policy (same budget; +boost: extra)', 'errors', 'by scrub', 'by read', 'mean TTD', 'p99 TTD (max over seeds)', 'within 1 period', 'extra bytes', 'suspect rescans clean']];
  const mean = (p) => p.ttdSumHours / Math.max(1, p.byScrub);
  for (const [policy, p] of Object.entries(pooled)) {
    rows.push([policy, String(p.damages), String(p.byScrub), String(p.byRead), `${mean(p).toFixed(1)} h`, `${Math.max(...p.p99).toFixed(1)} h`, `${((p.within / Math.max(1, p.byScrub)) * 100).toFixed(0)} %`, `${((p.extra / p.bytes) * 100).toFixed(1)} %`, `${((p.falseAlarm / p.bytes) * 100).toFixed(1)} % of bytes`]);
  }
  const speedup = mean(pooled['round-robin']) / mean(pooled.model);
  const withinPeriod = pooled.model.within / Math.max(1, pooled.model.byScrub);
  return { seeds, nodes, pooled, speedup, withinPeriod, table: `${table(rows)}\n(seeds ${seeds.join(', ')}; ${nodes} nodes x 1,000 segments, one pass per 7 days at the base budget, 56 days; errors found by a client read first are not in the TTD)` };
}

async function appendRuns({ root, quick, log }) {
  const seconds = quick ? 3 : 6;
  const out = {};
  const configs = [
    ['off', ['--scrub-bytes-per-second', '0']],
    ['scrubFull', ['--scrub-bytes-per-second', String(16 * 1024 * 1024), '--scrub-interval-ms', '100', '--no-scrub-throttle']],
    ['scrub', ['--scrub-bytes-per-second', String(16 * 1024 * 1024), '--scrub-interval-ms', '100']],
    ['tracing', ['--scrub-bytes-per-second', '0', '--otlp-endpoint', 'http://127.0.0.1:9', '--trace-sample-ratio', '0.01']],
    ['off2', ['--scrub-bytes-per-second', '0']],
  ];
  for (const [key, flags] of configs) out[key] = await oneCluster({ root, key, flags, seconds, quick, log });
  return out;
}

async function oneCluster({ root, key, flags, seconds, quick, log }) {
  const base = join(root, `scrub-${key}`);
  const procs = [];
  const clients = [];
  try {
    const etcd = await startEtcd(join(base, 'etcd'));
    procs.push(etcd);
    const cluster = `scrub${key}${process.pid}`;
    const nodes = [];
    for (const id of ['n1', 'n2', 'n3']) {
      const node = await startNode(id, join(base, id), etcd.url, cluster, ['--segment-bytes', String(4 * 1024 * 1024), '--metrics-listen', '127.0.0.1:0', ...flags]);
      procs.push(node);
      nodes.push(node);
    }
    const { AdminClient, WalClient } = await import('../dist/rpc/index.js');
    const admin = new AdminClient(nodes[0].target);
    clients.push(admin);
    await waitFor('3 members', async () => (await admin.status('')).members.length >= 3, 15_000);
    const creator = new WalClient(nodes[0].target);
    clients.push(creator);
    await waitFor('log created', () => creator.append(LOG, [payloadOf(256)], { createIfMissing: true, deadlineMs: 5_000 }), 20_000);
    const status = await waitFor('writer', async () => {
      const s = await admin.status(LOG);
      return s.logs[0]?.writer ? s : undefined;
    }, 10_000);
    const writerTarget = status.members.find((m) => m.id === status.logs[0].writer).address;
    // Sealed segments for the scrubber (written in every configuration: the same disk state).
    const writer = new WalClient(writerTarget);
    clients.push(writer);
    const big = payloadOf(60 * 1024);
    const prefillBytes = (quick ? 24 : 48) * 1024 * 1024;
    for (let written = 0; written < prefillBytes; written += 16 * big.length) await writer.append(LOG, Array.from({ length: 16 }, () => big));
    log(`8b ${key}: ${prefillBytes / 1024 / 1024} MiB written; ${seconds} s of appends`);
    const before = await scrubGauges(nodes);
    const r = await runTask('walLoad', { target: writerTarget, log: LOG, prefix: `scrub/${key}`, payloadBytes: 256, concurrency: 16, seconds, warmupSeconds: 0.5 }, { script: CLUSTER_SCRIPT, timeoutMs: seconds * 1000 + 30_000 });
    const sorted = [...r.latencies].sort((a, b) => a - b);
    const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
    const after = await scrubGauges(nodes);
    return {
      opsPerSec: r.ops / (r.ms / 1000),
      p50: at(0.5),
      p99: at(0.99),
      failed: r.failed,
      scrubBytes: after.bytes - before.bytes,
      deficitSeconds: after.deficitMax,
      throttleShare: after.shareMean,
      probes: after.probes - before.probes,
      decreases: after.decreases - before.decreases,
    };
  } finally {
    for (const c of clients) c.close();
    await Promise.all(procs.filter((p) => p.name !== 'etcd').map((p) => p.stop()));
    await Promise.all(procs.filter((p) => p.name === 'etcd').map((p) => p.stop()));
    rmSync(base, { recursive: true, force: true });
  }
}

/** Scrub bytes (summed), deficit (max) and throttle share (mean) over the nodes' /metrics. */
async function scrubGauges(nodes) {
  let bytes = 0;
  let deficitMax = 0;
  let shareSum = 0;
  let probes = 0;
  let decreases = 0;
  for (const node of nodes) {
    const { body } = await httpGet(node.metrics, 5_000);
    // Lines are `name{node="n1",cluster="..."} value` (the registry's default labels).
    const value = (name) => Number(body.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))?.split(' ').at(-1) ?? NaN);
    bytes += value('wal_recovery_scrub_bytes_total');
    deficitMax = Math.max(deficitMax, value('wal_recovery_scrub_deficit_seconds'));
    shareSum += value('wal_recovery_scrub_throttle_share');
    probes += value('wal_recovery_scrub_throttle_probes_total');
    decreases += value('wal_recovery_scrub_throttle_decreases_total');
  }
  return { bytes, deficitMax, shareMean: shareSum / nodes.length, probes, decreases };
}
