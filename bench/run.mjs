// Benchmarks of wal-recovery (DESIGN.md section 9). Run with `npm run bench` (builds first).
//
//   node bench/run.mjs [--quick] [--json] [--only 1,3,5]
//
// --quick (or BENCH_QUICK=1): smaller sizes, about a minute and a half. --json: print one JSON document on
// stdout instead of the tables (progress goes to stderr either way). Every figure is printed next
// to a baseline measured in the same run, on the same machine, usually in the same process.
// Each measurement runs in a child process of its own (bench/tasks.mjs). Data goes to a temporary
// directory under os.tmpdir(), removed at the end.
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import {
  ENTRY_HEADER_BYTES,
  GIB,
  KIB,
  MIB,
  fmtBytes,
  fmtMs,
  fmtOps,
  fmtRate,
  killAllChildren,
  machineInfo,
  runTask,
  summary,
  table,
} from './lib.mjs';
import { WAL_DEFAULTS } from '../dist/index.js';
import { benchCluster } from './cluster.mjs';
import { benchRepair } from './repair.mjs';
import { benchScrub } from './scrub.mjs';

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const valueOf = (name) => {
  const i = argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (i < 0) return undefined;
  return argv[i].includes('=') ? argv[i].split('=')[1] : argv[i + 1];
};
if (flag('help')) {
  console.log('usage: node bench/run.mjs [--quick] [--json] [--only 1,2,3,4,5,6,7,8|scrub]');
  process.exit(0);
}
const QUICK = flag('quick') || process.env.BENCH_QUICK === '1';
const JSON_OUT = flag('json');
// Sections by number, or by name (scrub: 8).
const SECTION_NAMES = { scrub: 8 };
const ONLY = new Set((valueOf('only') ?? '1,2,3,4,5,6,7,8').split(',').map((s) => SECTION_NAMES[s.trim()] ?? Number(s.trim())));

// crashTargets: [bytes acknowledged, distance from the last checkpoint as a fraction of the default
// checkpointBytes (1: the ack just before the next checkpoint would land, the worst case)].
// cluster: seconds per measured run, rounds (runs alternate between the store and etcd), warmup.
const SIZES = QUICK
  ? { openIterations: 100, crashTargets: [[12 * MIB, 1], [12 * MIB, 0.5]], bigStore: 256 * MIB, smallStore: 32 * MIB, validateReps: 3, appendSeconds: 3, appendRounds: 2, warmupSeconds: 0.3, cluster: { seconds: 1.5, rounds: 1, warmupSeconds: 0.3 } }
  : { openIterations: 300, crashTargets: [[20 * MIB, 1], [20 * MIB, 0.5], [28 * MIB, 1], [28 * MIB, 0]], bigStore: 1 * GIB, smallStore: 128 * MIB, validateReps: 3, appendSeconds: 9, appendRounds: 3, warmupSeconds: 0.3, cluster: { seconds: 2.5, rounds: 2, warmupSeconds: 0.4 } };

const root = mkdtempSync(join(os.tmpdir(), 'wal-bench-'));
const log = (msg) => process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
const t0 = performance.now();
const results = { machine: machineInfo(), mode: QUICK ? 'quick' : 'full', sizes: SIZES, benches: {} };
const sections = [];
const verdict = (ok) => (ok ? 'MET' : 'MISSED');
const pct = (x) => `${(x * 100).toFixed(0)} %`;
const ratio = (a, b) => pct(a / b);

function cleanup() {
  killAllChildren();
  rmSync(root, { recursive: true, force: true });
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    cleanup();
    process.exit(130);
  });
}
process.on('exit', killAllChildren);

/** Runs one benchmark; a failure becomes a FAILED section instead of ending the whole run. */
async function guarded(number, name, fn) {
  try {
    await fn();
  } catch (error) {
    const message = String(error?.stack ?? error);
    log(`${number}: FAILED: ${message}`);
    sections.push({ title: `${number}. ${name}`, goal: 'FAILED', body: message.split('\n').slice(0, 12).join('\n') });
    results.benches[`failed${number}`] = { error: message };
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Open after clean shutdown, 1,000 sealed segments

async function benchOpenClean() {
  const dir = join(root, 'clean');
  log('1: building a store of 1,000 sealed segments (segmentBytesMax 4 KiB, 13 x 256 B entries each)');
  const built = await runTask('build', { dir, segmentBytesMax: 4 * KIB, payloadBytes: 256, entries: 13_000, batchEntries: 130 });
  log(`1: built ${built.segments} segments in ${fmtMs(built.durationMs)}; measuring open in a fresh process`);
  const r = await runTask('openClean', { dir, iterations: SIZES.openIterations });
  rmSync(dir, { recursive: true, force: true });
  const b = r.baseline;
  const rows = [
    ['measurement', 'median', 'p99', 'max', 'baseline (same process)', 'median'],
    ['open: openReport.durationMs', fmtMs(r.duration.p50), fmtMs(r.duration.p99), fmtMs(r.duration.max), 'fs.readFileSync(CATALOG)', fmtMs(b.readFileSync.p50)],
    ['open: wall time of WalStore.open()', fmtMs(r.wall.p50), fmtMs(r.wall.p99), fmtMs(r.wall.max), 'fs.statSync(segment)', fmtMs(b.statSync.p50)],
    ['open: wall, logger passed in', fmtMs(r.wallWithLogger.p50), fmtMs(r.wallWithLogger.p99), fmtMs(r.wallWithLogger.max), 'await fsp.readFile(CATALOG)', fmtMs(b.readFile.p50)],
    ['open: durationMs, logger passed in', fmtMs(r.durationWithLogger.p50), fmtMs(r.durationWithLogger.p99), fmtMs(r.durationWithLogger.max), 'await fsp.stat(segment)', fmtMs(b.stat.p50)],
    ['first open in the process (cold code)', fmtMs(r.first.durationMs), '', '', 'wall', fmtMs(r.first.wallMs)],
  ];
  const ok = r.duration.p50 < 1;
  sections.push({
    title: `1. Open after clean shutdown, ${r.sealed} sealed segments (catalog ${fmtBytes(r.catalogBytes)}), ${r.wall.n} open+close cycles, state ${r.states.join('/')}`,
    goal: `goal: median under 1 ms -> ${verdict(ok)} (median durationMs ${fmtMs(r.duration.p50)}; wall time ${fmtMs(r.wall.p50)})`,
    body: table(rows),
  });
  results.benches.openClean = { build: built, ...r, goalMet: ok };
}

// ---------------------------------------------------------------------------------------------
// 2. Open after a crash, default settings

async function benchOpenCrash() {
  const frameBytes = ENTRY_HEADER_BYTES + KIB;
  const checkpointBytes = WAL_DEFAULTS.checkpointBytes;
  const batchEntries = 16;
  const inflight = 8;
  const batchBytes = batchEntries * frameBytes;
  // "Just before the next checkpoint": the ack after which one more batch would reach
  // checkpointBytes. The store checkpoints after the group commit that crosses it, so this is the
  // longest tail open can meet with default settings (plus the batches still in flight).
  const beforeNext = (ckpt) => Math.max(0, ckpt - batchBytes);
  const runs = [];
  const failures = [];
  // The last run is not the default: checkpointBytes 4x the default, to show that the scan is
  // proportional to it.
  const plan = [
    ...SIZES.crashTargets.map(([target, fraction]) => [target, fraction === 1 ? beforeNext(checkpointBytes) : fraction * checkpointBytes]),
    [12 * MIB, beforeNext(4 * checkpointBytes), { checkpointBytes: 4 * checkpointBytes }],
  ];
  for (let i = 0; i < plan.length; i += 1) {
    const [target, sinceCheckpoint, options = {}] = plan[i];
    const extra = options.checkpointBytes !== undefined;
    const dir = join(root, `crash-${i}`);
    const what = `${extra ? `checkpointBytes ${fmtBytes(options.checkpointBytes)}` : 'default options'}`;
    log(`2: run ${i + 1}: appending 1 KiB entries (${batchEntries} per append, ${inflight} in flight) with ${what}; SIGKILL at the ack that makes ${fmtBytes(target)} acknowledged and ${fmtBytes(sinceCheckpoint)} since the last checkpoint`);
    try {
      let ready;
      const started = performance.now();
      await runTask(
        'crashWriter',
        { dir, payloadBytes: KIB, targetBytes: target, sinceCheckpoint, batchEntries, inflight, options, expectKill: true, selfKill: true },
        {
          timeoutMs: 60_000,
          onLine: (child, line) => {
            if (line.startsWith('ready') && !ready) {
              ready = { ackedBytes: Number(line.split(' ')[1]), sinceCheckpointBytes: Number(line.split(' ')[2]), atMs: performance.now() - started };
              setTimeout(() => child.kill('SIGKILL'), 0); // in case the writer's own kill failed
            }
          },
        },
      );
      if (!ready) throw new Error('crash writer exited without reporting ready');
      const writeMs = performance.now() - started;
      cpSync(dir, `${dir}-copy`, { recursive: true });
      const r = await runTask('openCrash', { dirs: [dir, `${dir}-copy`], frameBytes }, { timeoutMs: 60_000 });
      runs.push({ target, sinceCheckpoint, ready, writeMs, extra, options, ...r });
    } catch (error) {
      const message = String(error?.message ?? error).split('\n')[0];
      log(`2: run ${i + 1} FAILED: ${message}`);
      failures.push({ run: i + 1, extra, message });
      runs.push({ target, sinceCheckpoint, extra, options, failed: message });
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(`${dir}-copy`, { recursive: true, force: true });
    }
  }
  const rows = [['run', 'segment', 'state', 'scanned', 'torn', 'open durationMs', 'wall', 'same, warm code', 'read+sha3 1 MiB', 'read+sha3 per entry', 'open / per-entry']];
  runs.forEach((r, i) => {
    const label = `${i + 1}${r.extra ? ` checkpointBytes ${fmtBytes(r.options.checkpointBytes)} (not default)` : ''}`;
    if (r.failed) {
      rows.push([`${label}: FAILED: ${r.failed}`, '', '', '', '', '', '', '', '', '', '']);
      return;
    }
    rows.push([
      `${label}: killed at the ack with ${fmtBytes(r.ready.sinceCheckpointBytes)} acked since checkpoint`,
      fmtBytes(r.cold.fileBytes),
      r.cold.state,
      fmtBytes(r.cold.bytesScanned),
      fmtBytes(r.cold.tornBytes),
      fmtMs(r.cold.durationMs),
      fmtMs(r.cold.wallMs),
      fmtMs(r.warm.durationMs),
      fmtMs(r.baseline.chunkMs),
      fmtMs(r.baseline.perEntryMs),
      `${(r.cold.durationMs / r.baseline.perEntryMs).toFixed(2)}x`,
    ]);
  });
  const measured = runs.filter((r) => !r.extra && !r.failed);
  const worst = measured.length > 0 ? Math.max(...measured.map((r) => r.cold.durationMs)) : NaN;
  const ok = measured.length > 0 && failures.every((f) => f.extra) && worst < 50;
  const failNote = failures.length > 0 ? `; ${failures.length} run(s) FAILED` : '';
  sections.push({
    title: `2. Open after a crash (SIGKILL while appending), default settings (${fmtBytes(WAL_DEFAULTS.segmentBytesMax)} segments, checkpoints every ${fmtBytes(checkpointBytes)}), fresh process`,
    goal: `goal: under 50 ms -> ${verdict(ok)} (worst durationMs with defaults ${fmtMs(worst)}; the scan is bounded by checkpointBytes = ${fmtBytes(checkpointBytes)} plus the writes in flight${failNote})`,
    body: `${table(rows)}\n(each writer kills itself with SIGKILL at the chosen ack, ${inflight} appends of ${batchEntries} x 1 KiB still in flight; durationMs: openReport of the first open in a fresh process; "same, warm code": a copy of the same crash image opened next in that process; baselines: read + crypto.hash('sha3-256') of as many bytes as open scanned, same file, page cache warm)`,
  });
  results.benches.openCrash = { checkpointBytes, runs, worstMs: worst, failures, goalMet: ok };
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. Validate throughput and memory

async function buildStore(name, payloadBytes, bytes) {
  const dir = join(root, name);
  const frame = payloadBytes + ENTRY_HEADER_BYTES;
  const entries = Math.floor(bytes / frame);
  const batchEntries = Math.max(1, Math.floor((4 * MIB) / frame));
  log(`building ${fmtBytes(bytes)} store of ${payloadBytes} B entries (${entries} entries, default 64 MiB segments)`);
  const built = await runTask('build', { dir, segmentBytesMax: 64 * MIB, payloadBytes, entries, batchEntries });
  log(`built ${built.segments} segments, ${fmtBytes(built.bytes)} in ${fmtMs(built.durationMs)}`);
  return { dir, frame, built };
}

async function benchValidate(stores) {
  const rows = [['entries', 'store', 'validate (pool)', 'cpu/wall', 'validate, 1 thread', 'pool / 1 thread', 'sha3-256 in 1 MiB chunks', '1 thread: ratio', 'ratio (cpu)', 'sha3-256 per entry-sized chunk', 'ratio', 'ratio (cpu)']];
  const out = [];
  for (const { label, store } of stores) {
    log(`3: validate throughput, ${label} entries (${SIZES.validateReps} rounds, median)`);
    const r = await runTask('validateThroughput', { dir: store.dir, frameBytes: store.frame, reps: SIZES.validateReps });
    // Rates from the median time of each; ratios as the median of the per-round ratios (each
    // round runs baseline, validate with the pool, validate in one thread, per-entry baseline).
    const rate = (list) => r.fileBytes / (summary(list).p50 / 1000);
    const perRound = (base, of = r.validate1) => summary(of.ms.map((ms, i) => base[i] / ms)).p50;
    const v = rate(r.validate.ms);
    const v1 = rate(r.validate1.ms);
    const h1 = rate(r.hash1m.ms);
    const he = rate(r.hashEntry.ms);
    const cpu = summary(r.validate.cpuMs.map((c, i) => c / r.validate.ms[i])).p50;
    const speedup = perRound(r.validate1.ms, r.validate);
    const ratio1m = perRound(r.hash1m.ms);
    const ratioEntry = perRound(r.hashEntry.ms);
    // The same ratios per CPU second (robust to other load on the shared machine).
    const perCpu = (x) => summary(x.cpuMs).p50;
    const cpuRatio1m = perCpu(r.hash1m) / perCpu(r.validate1);
    const cpuRatioEntry = perCpu(r.hashEntry) / perCpu(r.validate1);
    rows.push([label, fmtBytes(r.fileBytes), fmtRate(v), cpu.toFixed(2), fmtRate(v1), `${speedup.toFixed(2)}x`, fmtRate(h1), pct(ratio1m), pct(cpuRatio1m), fmtRate(he), pct(ratioEntry), pct(cpuRatioEntry)]);
    out.push({ label, ...r, mibPerSec: { validate: v / MIB, validate1: v1 / MIB, hash1m: h1 / MIB, hashEntry: he / MIB }, speedup, ratio1m, ratioEntry, cpuRatio1m, cpuRatioEntry, cpuPerWall: cpu });
  }
  const main = out[0];
  const small = out[1];
  const cores = results.machine.nproc;
  const okMain = main.ratio1m >= 0.9 && (cores < 2 || main.speedup >= 1.7);
  const okSmall = small === undefined || small.ratio1m >= 0.5;
  const ok = okMain && okSmall;
  sections.push({
    title: '3. Validate throughput (validateStore, backupRetentionCount 0: primary segments only; page cache warm for all runs)',
    goal: `goal: one thread >= 90 % of native SHA3-256 (1 MiB chunks) with 4 KiB entries and >= 50 % with 256 B, the pool >= 1.7x one thread on 2 cores -> ${verdict(ok)} (${main.label}: ${pct(main.ratio1m)}, pool ${main.speedup.toFixed(2)}x on ${cores} cores${small ? `; ${small.label}: ${pct(small.ratio1m)}` : ''})`,
    body: `${table(rows)}\n(baselines read the same files through a 1 MiB buffer and hash with crypto.hash('sha3-256') in one thread; ratio = validate in one thread / baseline speed, median of the rounds; ratio (cpu) = the same per CPU second of the process; pool / 1 thread = the speed-up of the default validate, a worker per core, when the store has several segments)`,
  });
  results.benches.validate = { stores: out, goalMet: ok };
}

async function benchMemory(store) {
  log(`4: RSS while validating ${fmtBytes(store.built.bytes)} (sampled every 10 ms), and a plain read loop`);
  const nodeArgs = ['--expose-gc'];
  const v = await runTask('rss', { dir: store.dir, mode: 'validate', sampleMs: 10 }, { nodeArgs });
  const v1 = await runTask('rss', { dir: store.dir, mode: 'validate1', sampleMs: 10 }, { nodeArgs });
  const b = await runTask('rss', { dir: store.dir, mode: 'readloop', sampleMs: 10 }, { nodeArgs });
  const rows = [
    ['process', 'bytes read', 'time', 'RSS before', 'RSS peak', 'RSS growth', 'peak heapUsed growth', 'peak external+arrayBuffers growth', 'samples'],
    ...[['validateStore --threads <cores> (worker pool, workers included)', v], ['validateStore, threads 1', v1], ['baseline: plain read loop, 1 MiB buffer', b]].map(([name, r]) => [
      name,
      fmtBytes(r.bytes),
      fmtMs(r.ms),
      fmtBytes(r.rssBefore),
      fmtBytes(r.rssPeak),
      fmtBytes(r.growth),
      fmtBytes(r.heapGrowth),
      fmtBytes(r.externalGrowth),
      r.samples,
    ]),
  ];
  const ok = v.growth < 10 * 1000 * 1000;
  sections.push({
    title: `4. Resident memory during validate of ${fmtBytes(v.bytes)}`,
    goal: `goal: RSS grows by under 10 MB -> ${verdict(ok)} (growth ${fmtBytes(v.growth)}, in one thread ${fmtBytes(v1.growth)}; baseline ${fmtBytes(b.growth)})`,
    body: table(rows),
  });
  results.benches.memory = { validate: v, validateOneThread: v1, readLoop: b, goalMet: ok };
}

// ---------------------------------------------------------------------------------------------
// 5. Appends

async function benchAppend() {
  const payloadBytes = 256;
  const recordBytes = payloadBytes + ENTRY_HEADER_BYTES;
  const rounds = SIZES.appendRounds;
  const seconds = SIZES.appendSeconds / rounds;
  const common = { payloadBytes, seconds, warmupSeconds: SIZES.warmupSeconds };
  const bareArgs = (name, batch, mode) => ({ path: join(root, name), recordBytes, seconds, warmupSeconds: SIZES.warmupSeconds, batch, mode });
  const fresh = (name) => {
    const dir = join(root, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    return dir;
  };
  // The machine is shared and noisy: the store and its baselines run in alternating short
  // slices (each in a fresh process on a fresh file), and the slices are pooled.
  const pooled = {};
  const add = (key, r) => {
    const p = (pooled[key] ??= { ops: 0, ms: 0, syncs: 0, latencies: [] });
    p.ops += r.ops;
    p.ms += r.ms;
    p.syncs += r.syncs;
    for (const x of r.latencies) p.latencies.push(x);
  };
  let avgBatch = 64;
  for (let round = 1; round <= rounds; round += 1) {
    log(`5: round ${round}/${rounds}: ${payloadBytes} B appends, ${seconds.toFixed(1)} s per run: store 1 appender, bare sync, bare async, store 64 appenders, bare batched`);
    add('seq', await runTask('append', { dir: fresh('append-seq'), ...common, concurrency: 1 }));
    add('bareSync', await runTask('bare', bareArgs('bare-sync', 1, 'sync')));
    add('bareAsync', await runTask('bare', bareArgs('bare-async', 1, 'async')));
    const conc = await runTask('append', { dir: fresh('append-conc'), ...common, concurrency: 64 });
    add('conc', conc);
    if (round === 1) avgBatch = Math.max(1, Math.round(conc.ops / conc.syncs));
    add('bareBatch', await runTask('bare', bareArgs('bare-batch', avgBatch, 'sync')));
  }
  for (const name of ['append-seq', 'append-conc', 'bare-sync', 'bare-async', 'bare-batch']) rmSync(join(root, name), { recursive: true, force: true });

  const stats = {};
  for (const [key, p] of Object.entries(pooled)) {
    stats[key] = { ops: p.ops, ms: p.ms, syncs: p.syncs, opsPerSec: p.ops / (p.ms / 1000), latency: summary(p.latencies) };
  }
  const line = (name, r, latencyNote) => [
    name,
    fmtOps(r.opsPerSec),
    fmtRate(r.opsPerSec * payloadBytes),
    (r.ops / r.syncs).toFixed(1),
    fmtMs(r.latency.p50),
    fmtMs(r.latency.p99),
    fmtMs(r.latency.max),
    latencyNote,
  ];
  const rows = [
    ['run', 'ops/s', 'payload MB/s', 'records/fdatasync', 'p50', 'p99', 'max', 'latency is'],
    line('5a store: 1 appender, await each append', stats.seq, 'per append'),
    line('   baseline: writeSync+fdatasyncSync, 1 record', stats.bareSync, 'per record'),
    line('   baseline: async fh.write+fh.datasync, 1 record', stats.bareAsync, 'per record'),
    line('5b store: 64 concurrent appenders', stats.conc, 'per append'),
    line(`   baseline: writeSync+fdatasyncSync, ${avgBatch} records`, stats.bareBatch, 'per batch'),
  ];
  sections.push({
    title: `5. Appends of ${payloadBytes} B payloads (${recordBytes} B records), default options, single node (no replication); ${rounds} rounds x ${seconds.toFixed(1)} s per run, pooled`,
    goal:
      `no numeric goal. Group commit: 64 appenders get ${(stats.conc.opsPerSec / stats.seq.opsPerSec).toFixed(1)}x the sequential rate. ` +
      `Store vs bare loop: sequential ${ratio(stats.seq.opsPerSec, stats.bareSync.opsPerSec)} of sync, ${ratio(stats.seq.opsPerSec, stats.bareAsync.opsPerSec)} of async; ` +
      `64 appenders ${ratio(stats.conc.opsPerSec, stats.bareBatch.opsPerSec)} of the same batch size`,
    body: table(rows),
  });
  results.benches.append = { ...stats, avgBatch, rounds, secondsPerRun: seconds };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const m = results.machine;
  log(`machine: ${m.nproc} cores, ${m.cpuModel}, node ${m.node}; data under ${root}; mode ${results.mode}`);
  if (ONLY.has(1)) await guarded(1, 'Open after clean shutdown', benchOpenClean);
  if (ONLY.has(2)) await guarded(2, 'Open after a crash', benchOpenCrash);
  if (ONLY.has(3) || ONLY.has(4)) await guarded(ONLY.has(3) ? 3 : 4, 'Validate throughput and memory', benchValidateAndMemory);
  if (ONLY.has(5)) await guarded(5, 'Appends, single node', benchAppend);
  if (ONLY.has(6)) await guarded(6, 'Cluster appends', benchClusterSection);
  if (ONLY.has(7)) await guarded(7, 'Online segment repair', benchRepairSection);
  if (ONLY.has(8)) await guarded(8, 'Predictive scrubbing and tracing', benchScrubSection);
  results.totalSeconds = (performance.now() - t0) / 1000;
  log(`done in ${results.totalSeconds.toFixed(1)} s`);
}

async function benchClusterSection() {
  const r = await benchCluster({ root, sizes: SIZES.cluster, log: (msg) => log(`6: ${msg}`) });
  sections.push(r.section);
  results.benches.cluster = r.results;
}

async function benchRepairSection() {
  const r = await benchRepair({ root, quick: QUICK, log: (msg) => log(`7: ${msg}`) });
  sections.push(r.section);
  results.benches.repair = r.results;
}

async function benchScrubSection() {
  const r = await benchScrub({ root, quick: QUICK, log: (msg) => log(`8: ${msg}`) });
  sections.push(r.section);
  results.benches.scrub = r.results;
}

async function benchValidateAndMemory() {
  const big = await buildStore('validate-4k', 4 * KIB, SIZES.bigStore);
  if (ONLY.has(3)) {
    const small = await buildStore('validate-256', 256, SIZES.smallStore);
    await benchValidate([
      { label: '4 KiB', store: big },
      { label: '256 B', store: small },
    ]);
    rmSync(small.dir, { recursive: true, force: true });
  }
  if (ONLY.has(4)) await benchMemory(big);
  rmSync(big.dir, { recursive: true, force: true });
}

try {
  await main();
} finally {
  cleanup();
}

if (JSON_OUT) {
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
} else {
  const m = results.machine;
  const out = [
    `wal-recovery benchmarks (${results.mode} run, ${results.totalSeconds.toFixed(0)} s)`,
    `machine: ${m.nproc} cores, ${m.cpuModel}, ${fmtBytes(m.memTotal)} RAM, node ${m.node}, ${m.platform}, load average at start ${m.loadavg.join(' ')}`,
    `data in ${m.tmpdir} (removed). Each figure is printed beside a baseline measured in the same run.`,
    '',
  ];
  for (const s of sections) out.push(s.title, s.goal, '', s.body, '');
  process.stdout.write(`${out.join('\n')}\n`);
}
