// Child-process side of the benchmarks: `node bench/tasks.mjs <task> '<json args>'`.
// Each task prints one result line (see reportResult) and exits. run.mjs starts them so that
// every measurement runs in a process of its own (fresh heap, store not open anywhere else).
import { hash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { closeSync, fdatasyncSync, openSync, readFileSync, readdirSync, statSync, writeSync } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { WalStore, validateStore } from '../dist/index.js';
import { ENTRY_HEADER_BYTES, MIB, reportResult, summary } from './lib.mjs';

const now = () => performance.now();
const round4 = (x) => Math.round(x * 1e4) / 1e4;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function payloadOf(bytes, seed = 1) {
  const buf = Buffer.allocUnsafe(bytes);
  for (let i = 0; i < bytes; i += 1) buf[i] = (i * 31 + seed * 17) & 0xff;
  return buf;
}

/** Segment files of a store, by id order, with their sizes. */
export function segmentFiles(dir) {
  const segDir = join(dir, 'segments');
  return readdirSync(segDir)
    .filter((name) => !name.includes('.tmp') && !name.startsWith('.'))
    .sort()
    .map((name) => ({ path: join(segDir, name), size: statSync(join(segDir, name)).size }));
}

// ---------------------------------------------------------------------------------------------
// Building stores

async function build({ dir, segmentBytesMax, payloadBytes, entries, batchEntries, inflight = 2 }) {
  const started = now();
  const store = await WalStore.open(dir, { segmentBytesMax, recovery: { backupRetentionCount: 0 } });
  const batch = Array.from({ length: batchEntries }, (_, i) => payloadOf(payloadBytes, i));
  let queued = 0;
  const running = new Set();
  while (queued < entries) {
    const n = Math.min(batchEntries, entries - queued);
    queued += n;
    const p = store.append(n === batchEntries ? batch : batch.slice(0, n)).then(() => running.delete(p));
    running.add(p);
    if (running.size >= inflight) await Promise.race(running);
  }
  await Promise.all(running);
  await store.close();
  const files = segmentFiles(dir);
  reportResult({
    segments: files.length,
    bytes: files.reduce((a, f) => a + f.size, 0),
    entries,
    lastIndex: store.lastIndex,
    durationMs: now() - started,
  });
}

// ---------------------------------------------------------------------------------------------
// 1. Open after clean shutdown

async function openClean({ dir, iterations }) {
  // The first open of this process: store and module code both cold.
  let t = now();
  let store = await WalStore.open(dir);
  const first = { wallMs: now() - t, durationMs: store.openReport.durationMs, state: store.openReport.state };
  const segments = store.segmentRecords().length;
  const sealed = store.segmentRecords().filter((s) => s.state === 'sealed').length;
  await store.close();

  const wall = [];
  const duration = [];
  const states = new Set();
  for (let i = 0; i < iterations; i += 1) {
    t = now();
    store = await WalStore.open(dir);
    wall.push(now() - t);
    duration.push(store.openReport.durationMs);
    states.add(store.openReport.state);
    await store.close();
  }

  // The same with a logger passed in (open otherwise builds a pino logger each time).
  const logger = pino({ level: 'warn' }, pino.destination(2));
  const wallWithLogger = [];
  const durationWithLogger = [];
  for (let i = 0; i < iterations; i += 1) {
    t = now();
    store = await WalStore.open(dir, { logger });
    wallWithLogger.push(now() - t);
    durationWithLogger.push(store.openReport.durationMs);
    await store.close();
  }

  // Baselines in the same process: the I/O a clean open cannot avoid.
  const catalogPath = join(dir, 'CATALOG');
  const files = segmentFiles(dir);
  const lastSegment = files[files.length - 1].path;
  const catalogBytes = statSync(catalogPath).size;
  const base = { readFileSync: [], statSync: [], readFile: [], stat: [] };
  for (let i = 0; i < iterations; i += 1) {
    t = now();
    readFileSync(catalogPath);
    base.readFileSync.push(now() - t);
    t = now();
    statSync(lastSegment);
    base.statSync.push(now() - t);
    t = now();
    await readFile(catalogPath);
    base.readFile.push(now() - t);
    t = now();
    await stat(lastSegment);
    base.stat.push(now() - t);
  }
  reportResult({
    segments,
    sealed,
    catalogBytes,
    first,
    states: [...states],
    wall: summary(wall),
    duration: summary(duration),
    wallWithLogger: summary(wallWithLogger),
    durationWithLogger: summary(durationWithLogger),
    baseline: Object.fromEntries(Object.entries(base).map(([k, v]) => [k, summary(v)])),
  });
}

// ---------------------------------------------------------------------------------------------
// 2. Open after a crash

/**
 * Appends until killed. Prints "ready" once targetBytes are durable and at least sinceCheckpoint
 * bytes were acknowledged after the last catalog checkpoint (seen as a new CATALOG inode, since
 * the catalog is replaced by rename), so that the parent can kill it at a chosen distance from
 * the checkpoint: the tail open must scan. With selfKill the writer SIGKILLs itself right there,
 * synchronously, with its other appends still in flight (a parent's kill arrives a few hundred
 * microseconds later, time enough for the next checkpoint to land).
 */
async function crashWriter({ dir, payloadBytes, targetBytes, sinceCheckpoint = 0, batchEntries, inflight, options = {}, selfKill = false }) {
  const store = await WalStore.open(dir, options);
  const catalog = join(dir, 'CATALOG');
  const batch = Array.from({ length: batchEntries }, (_, i) => payloadOf(payloadBytes, i));
  const batchBytes = batchEntries * (payloadBytes + ENTRY_HEADER_BYTES);
  let acked = 0;
  let lastIno = statSync(catalog).ino;
  let sinceLast = 0;
  let announced = false;
  const writer = async () => {
    for (;;) {
      await store.append(batch);
      acked += batchBytes;
      const ino = statSync(catalog).ino;
      if (ino !== lastIno) {
        lastIno = ino;
        sinceLast = 0;
      } else {
        sinceLast += batchBytes;
      }
      if (!announced && acked >= targetBytes && sinceLast >= sinceCheckpoint) {
        announced = true;
        process.stdout.write(`ready ${acked} ${sinceLast}\n`);
        if (selfKill) process.kill(process.pid, 'SIGKILL');
      }
    }
  };
  await Promise.all(Array.from({ length: inflight }, writer));
}

async function readHash(path, fromOffset, byteLength, chunkBytes) {
  const fh = await open(path, 'r');
  const buf = Buffer.allocUnsafe(MIB);
  try {
    let done = 0;
    while (done < byteLength) {
      const want = Math.min(buf.byteLength, byteLength - done);
      const { bytesRead } = await fh.read(buf, 0, want, fromOffset + done);
      if (bytesRead === 0) break;
      for (let at = 0; at < bytesRead; at += chunkBytes) hash('sha3-256', buf.subarray(at, Math.min(bytesRead, at + chunkBytes)));
      done += bytesRead;
    }
    return done;
  } finally {
    await fh.close();
  }
}

async function openCrash({ dirs, frameBytes }) {
  const results = [];
  // dirs[0] is opened first in this process (cold code), dirs[1] (a copy of the same crash
  // image) second (warm code).
  for (const dir of dirs) {
    const before = segmentFiles(dir);
    const t = now();
    const store = await WalStore.open(dir);
    const wallMs = now() - t;
    const r = store.openReport;
    results.push({
      wallMs,
      durationMs: r.durationMs,
      state: r.state,
      bytesScanned: r.bytesScanned,
      segmentsScanned: r.segmentsScanned,
      tornBytes: r.tornTails.reduce((a, x) => a + x.byteLength, 0),
      fileBytes: before[before.length - 1]?.size ?? 0,
      lastIndex: store.lastIndex,
    });
    await store.close();
  }
  // Baseline: read + hash as many bytes as open scanned, from the same file (page cache warm).
  const { bytesScanned, fileBytes } = results[0];
  const path = segmentFiles(dirs[0]).at(-1).path;
  const from = Math.max(0, fileBytes - bytesScanned);
  const chunk = [];
  const perEntry = [];
  for (let i = 0; i < 5; i += 1) {
    let t = now();
    await readHash(path, from, bytesScanned, MIB);
    chunk.push(now() - t);
    t = now();
    await readHash(path, from, bytesScanned, frameBytes);
    perEntry.push(now() - t);
  }
  reportResult({ cold: results[0], warm: results[1], baseline: { chunkMs: summary(chunk).p50, perEntryMs: summary(perEntry).p50 } });
}

// ---------------------------------------------------------------------------------------------
// 3. Validate throughput

async function hashFiles(files, chunkBytes) {
  const buf = Buffer.allocUnsafe(MIB);
  let bytes = 0;
  for (const { path } of files) {
    const fh = await open(path, 'r');
    try {
      for (let pos = 0; ; ) {
        const { bytesRead } = await fh.read(buf, 0, buf.byteLength, pos);
        if (bytesRead === 0) break;
        for (let at = 0; at < bytesRead; at += chunkBytes) hash('sha3-256', buf.subarray(at, Math.min(bytesRead, at + chunkBytes)));
        pos += bytesRead;
        bytes += bytesRead;
      }
    } finally {
      await fh.close();
    }
  }
  return bytes;
}

function timed(fn) {
  return async () => {
    const cpu0 = process.cpuUsage();
    const t = now();
    const value = await fn();
    const ms = now() - t;
    const cpu = process.cpuUsage(cpu0);
    return { ms, cpuMs: (cpu.user + cpu.system) / 1000, value };
  };
}

async function validateThroughput({ dir, frameBytes, reps }) {
  const files = segmentFiles(dir);
  const total = files.reduce((a, f) => a + f.size, 0);
  const runs = { validate: [], validate1: [], hash1m: [], hashEntry: [] };
  let report;
  const steps = {
    hash1m: timed(() => hashFiles(files, MIB)),
    validate: timed(() => validateStore(dir, { recovery: { backupRetentionCount: 0 }, threads: availableParallelism() })),
    validate1: timed(() => validateStore(dir, { recovery: { backupRetentionCount: 0 }, threads: 1 })),
    hashEntry: timed(() => hashFiles(files, frameBytes)),
  };
  const order = Object.keys(steps);
  for (let i = 0; i < reps; i += 1) {
    // Rotate the order each round so that no run always goes first.
    for (let k = 0; k < order.length; k += 1) {
      const name = order[(i + k) % order.length];
      const r = await steps[name]();
      if (name === 'validate' || name === 'validate1') {
        report = r.value;
        if (!report.ok) throw new Error(`validate found damage: ${JSON.stringify(report.findings.slice(0, 3))}`);
      }
      runs[name].push(r);
    }
  }
  const pick = (list) => ({ ms: list.map((r) => r.ms), cpuMs: list.map((r) => r.cpuMs) });
  reportResult({
    fileBytes: total,
    bytesScanned: report.bytesScanned,
    segments: files.length,
    validate: pick(runs.validate),
    validate1: pick(runs.validate1),
    hash1m: pick(runs.hash1m),
    hashEntry: pick(runs.hashEntry),
  });
}

// ---------------------------------------------------------------------------------------------
// 4. Resident memory while validating

async function plainReadLoop(files) {
  const buf = Buffer.allocUnsafe(MIB);
  let bytes = 0;
  for (const { path } of files) {
    const fh = await open(path, 'r');
    try {
      for (let pos = 0; ; ) {
        const { bytesRead } = await fh.read(buf, 0, buf.byteLength, pos);
        if (bytesRead === 0) break;
        pos += bytesRead;
        bytes += bytesRead;
      }
    } finally {
      await fh.close();
    }
  }
  return bytes;
}

async function rss({ dir, mode, sampleMs }) {
  const files = segmentFiles(dir);
  // "Before" is taken after the modules are loaded and a full GC (run with --expose-gc).
  globalThis.gc?.();
  await sleep(50);
  const mem0 = process.memoryUsage();
  const samples = [mem0.rss];
  let peakHeap = mem0.heapUsed;
  let peakExternal = mem0.external + mem0.arrayBuffers;
  const timer = setInterval(() => {
    const m = process.memoryUsage();
    samples.push(m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
    peakExternal = Math.max(peakExternal, m.external + m.arrayBuffers);
  }, sampleMs);
  const t = now();
  let bytes;
  if (mode === 'validate' || mode === 'validate1') {
    const report = await validateStore(dir, { recovery: { backupRetentionCount: 0 }, threads: mode === 'validate1' ? 1 : availableParallelism() });
    if (!report.ok) throw new Error('validate found damage');
    bytes = report.bytesScanned;
  } else {
    bytes = await plainReadLoop(files);
  }
  const ms = now() - t;
  clearInterval(timer);
  samples.push(process.memoryUsage().rss);
  const peak = Math.max(...samples);
  reportResult({
    mode,
    bytes,
    ms,
    samples: samples.length,
    rssBefore: mem0.rss,
    rssPeak: peak,
    growth: peak - mem0.rss,
    heapGrowth: peakHeap - mem0.heapUsed,
    externalGrowth: peakExternal - (mem0.external + mem0.arrayBuffers),
  });
}

// ---------------------------------------------------------------------------------------------
// 5. Appends

/** Counts fdatasync calls made through FileHandle (the store's only data sync). */
async function countDatasyncs(dir) {
  const probe = await open(join(dir, '.probe'), 'w');
  const proto = Object.getPrototypeOf(probe);
  await probe.close();
  const original = proto.datasync;
  const counter = { n: 0 };
  proto.datasync = function datasync(...args) {
    counter.n += 1;
    return original.apply(this, args);
  };
  return counter;
}

async function append({ dir, payloadBytes, seconds, warmupSeconds, concurrency }) {
  const counter = await countDatasyncs(dir);
  const store = await WalStore.open(join(dir, 'store'));
  const payload = payloadOf(payloadBytes);
  const run = async (ms, lat) => {
    const end = now() + ms;
    let ops = 0;
    const worker = async () => {
      while (now() < end) {
        const t = now();
        await store.append(payload);
        lat?.push(now() - t);
        ops += 1;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return ops;
  };
  await run(warmupSeconds * 1000);
  const lat = [];
  const syncs0 = counter.n;
  const t = now();
  const ops = await run(seconds * 1000, lat);
  const ms = now() - t;
  const syncs = counter.n - syncs0;
  await store.close();
  reportResult({ ops, ms, syncs, payloadBytes, latencies: lat.map(round4) });
}

/** Bare baseline: write `batch` records then fdatasync, in a loop, on a raw file. */
async function bare({ path, recordBytes, seconds, warmupSeconds, batch, mode }) {
  const record = payloadOf(recordBytes);
  const buf = Buffer.concat(Array.from({ length: batch }, () => record));
  const lat = [];
  let ops = 0;
  let ms = 0;
  if (mode === 'sync') {
    const fd = openSync(path, 'w');
    let pos = 0;
    for (const [limit, keep] of [[warmupSeconds, false], [seconds, true]]) {
      const t0 = now();
      const end = t0 + limit * 1000;
      while (now() < end) {
        const t = now();
        writeSync(fd, buf, 0, buf.byteLength, pos);
        fdatasyncSync(fd);
        pos += buf.byteLength;
        if (keep) {
          lat.push(now() - t);
          ops += batch;
        }
      }
      if (keep) ms = now() - t0;
    }
    closeSync(fd);
  } else {
    const fh = await open(path, 'w');
    let pos = 0;
    for (const [limit, keep] of [[warmupSeconds, false], [seconds, true]]) {
      const t0 = now();
      const end = t0 + limit * 1000;
      while (now() < end) {
        const t = now();
        await fh.write(buf, 0, buf.byteLength, pos);
        await fh.datasync();
        pos += buf.byteLength;
        if (keep) {
          lat.push(now() - t);
          ops += batch;
        }
      }
      if (keep) ms = now() - t0;
    }
    await fh.close();
  }
  reportResult({ ops, ms, syncs: lat.length, recordBytes, batch, latencies: lat.map(round4) });
}

// ---------------------------------------------------------------------------------------------

const TASKS = { build, openClean, crashWriter, openCrash, validateThroughput, rss, append, bare };

const [task, json] = process.argv.slice(2);
const fn = TASKS[task];
if (!fn) {
  console.error(`unknown task ${task}; one of ${Object.keys(TASKS).join(', ')}`);
  process.exit(2);
}
await fn(JSON.parse(json ?? '{}'));
