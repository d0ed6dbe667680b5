// Helpers shared by the benchmark driver (run.mjs) and its child processes (tasks.mjs).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

export const KIB = 1024;
export const MIB = 1024 * KIB;
export const GIB = 1024 * MIB;
/** Bytes of an entry frame header (src/wal/format.ts ENTRY_HEADER_BYTES). */
export const ENTRY_HEADER_BYTES = 40;

export const TASKS_PATH = fileURLToPath(new URL('./tasks.mjs', import.meta.url));
const RESULT_MARK = '@@BENCH-RESULT ';

// ---------------------------------------------------------------------------------------------
// Statistics

export function sorted(values) {
  return Float64Array.from(values).sort();
}

/** Nearest-rank percentile (p in 0..100) of an unsorted or sorted list. */
export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const s = values instanceof Float64Array ? values : sorted(values);
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[rank];
}

export function summary(values) {
  const s = sorted(values);
  let sum = 0;
  for (const v of s) sum += v;
  return { n: s.length, min: s[0], p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1], mean: sum / s.length };
}

export function median(values) {
  return percentile(values, 50);
}

// ---------------------------------------------------------------------------------------------
// Formatting

export function fmtMs(ms) {
  if (!Number.isFinite(ms)) return 'n/a';
  if (ms < 0.01) return `${(ms * 1000).toFixed(1)} µs`;
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 100) return `${ms.toFixed(2)} ms`;
  return `${ms.toFixed(0)} ms`;
}

export function fmtBytes(bytes) {
  if (!Number.isFinite(bytes)) return 'n/a';
  const sign = bytes < 0 ? '-' : '';
  const b = Math.abs(bytes);
  if (b >= GIB) return `${sign}${(b / GIB).toFixed(2)} GiB`;
  if (b >= MIB) return `${sign}${(b / MIB).toFixed(2)} MiB`;
  if (b >= KIB) return `${sign}${(b / KIB).toFixed(1)} KiB`;
  return `${sign}${b} B`;
}

export function fmtRate(bytesPerSec) {
  return `${(bytesPerSec / MIB).toFixed(1)} MiB/s`;
}

export function fmtOps(opsPerSec) {
  return opsPerSec >= 10000 ? `${(opsPerSec / 1000).toFixed(1)} k/s` : `${opsPerSec.toFixed(0)} /s`;
}

/** A plain text table: rows are arrays of cells; the first row is the header. */
export function table(rows) {
  const widths = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, String(cell).length)));
  const line = (row) => row.map((cell, i) => (i === 0 ? String(cell).padEnd(widths[i]) : String(cell).padStart(widths[i]))).join('  ');
  const out = [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const row of rows.slice(1)) out.push(line(row));
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Child processes

/**
 * Runs `node tasks.mjs <task> <json>` and resolves with the JSON the child reports. The child's
 * stderr (store logs) is kept and shown only on failure. onLine(child, line) sees every other
 * stdout line as it arrives (progress messages such as "ready").
 */
export const TASK_TIMEOUT_MS = 180_000;

/** Child processes started by the benchmarks and still running, by pid (killed on exit). */
export const livePids = new Set();

/** Sends signal to pid if it is still running (ignores processes that already exited). */
export function killPid(pid, signal = 'SIGKILL') {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** SIGKILLs every child still registered (called on exit and on SIGINT). */
export function killAllChildren() {
  for (const pid of livePids) killPid(pid, 'SIGKILL');
  livePids.clear();
}

/**
 * Runs `node <script> <task> <json>` (script: bench/tasks.mjs unless given) and resolves with the
 * JSON the child reports. A child still running after timeoutMs (default TASK_TIMEOUT_MS) is
 * killed and the promise rejects with a message saying so: no task can hang the whole run.
 */
export function runTask(task, args, { nodeArgs = [], onLine, env, script = TASKS_PATH, timeoutMs = TASK_TIMEOUT_MS } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, script, task, JSON.stringify(args)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, WAL_RECOVERY_LOG_LEVEL: process.env.WAL_RECOVERY_LOG_LEVEL ?? 'warn', ...env },
    });
    if (child.pid !== undefined) livePids.add(child.pid);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killPid(child.pid, 'SIGKILL');
    }, timeoutMs);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    let pending = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      if (!onLine) return;
      pending += chunk;
      let nl;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (!line.startsWith(RESULT_MARK)) onLine(child, line);
      }
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
      if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
    });
    child.on('error', (error) => {
      clearTimeout(timer);
      livePids.delete(child.pid);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      livePids.delete(child.pid);
      if (timedOut) {
        reject(new Error(`bench task ${task} timed out after ${(timeoutMs / 1000).toFixed(0)} s and was killed\n${stderr.slice(-2000)}`));
        return;
      }
      const at = stdout.lastIndexOf(RESULT_MARK);
      if (at >= 0) {
        const line = stdout.slice(at + RESULT_MARK.length).split('\n')[0];
        resolve({ ...JSON.parse(line), exit: { code, signal } });
        return;
      }
      if (signal === 'SIGKILL' && args.expectKill) {
        resolve({ exit: { code, signal } });
        return;
      }
      reject(new Error(`bench task ${task} failed (code ${code}, signal ${signal})\n${stderr.slice(-4000)}`));
    });
  });
}

/** Called by a child to hand its result back. */
export function reportResult(value) {
  process.stdout.write(`${RESULT_MARK}${JSON.stringify(value)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Machine

export function machineInfo() {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    if (line) cpuModel = line.split(':').slice(1).join(':').trim();
  } catch {
    // not Linux
  }
  let nproc = os.availableParallelism?.() ?? os.cpus().length;
  return {
    nproc,
    cpuModel,
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    memTotal: os.totalmem(),
    loadavg: os.loadavg().map((x) => Number(x.toFixed(2))),
    tmpdir: os.tmpdir(),
  };
}
