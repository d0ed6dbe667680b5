#!/usr/bin/env node
// `npm run sim -- --seed N | --seeds K [--start S] [--json] [--duration-ms D] [--etcd-restore] [--lose-nodes] [--pipeline] [--trace-lines N]`: runs the
// deterministic simulation for one seed or a sweep; one line (or one JSON object) per seed and
// a summary. Exit 0 only when every seed holds every invariant.
import { parseArgs } from 'node:util';
import { runSeed, type SimResult } from './run.js';

function summaryLine(r: SimResult): string {
  const faults = Object.entries(r.faults).sort().map(([k, v]) => `${k}=${v}`).join(' ');
  const verdict = r.ok ? 'ok' : `VIOLATION ${r.violations[0]?.invariant}: ${r.violations[0]?.detail}`;
  return `seed ${r.seed} ${verdict} ops=${r.operations} steps=${r.steps} virtual=${r.virtualMs}ms trace=${r.traceHash} faults: ${faults}`;
}

function parseOptions() {
  return parseArgs({
    options: {
      seed: { type: 'string' },
      seeds: { type: 'string' },
      start: { type: 'string' },
      json: { type: 'boolean', default: false },
      'duration-ms': { type: 'string' },
      'time-budget-ms': { type: 'string' },
      'etcd-restore': { type: 'boolean', default: false },
      'lose-nodes': { type: 'boolean', default: false },
      pipeline: { type: 'boolean', default: false },
      'trace-lines': { type: 'string' },
    },
  });
}

async function main(): Promise<number> {
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions();
  } catch (error) {
    process.stderr.write(`wal-recovery sim: ${error instanceof Error ? error.message : String(error)}\nusage: npm run sim -- --seed N | --seeds K [--start S] [--json] [--duration-ms D] [--time-budget-ms B] [--etcd-restore] [--lose-nodes] [--pipeline] [--trace-lines N]\n`);
    return 2;
  }
  const { values } = parsed;

  if (values.seed !== undefined && values.seeds !== undefined) {
    process.stderr.write('wal-recovery sim: give --seed N (one seed) or --seeds K [--start S] (a sweep), not both\n');
    return 2;
  }
  const one = values.seed !== undefined ? Number(values.seed) : undefined;
  const count = values.seeds !== undefined ? Number(values.seeds) : 1;
  const start = values.start !== undefined ? Number(values.start) : one ?? 1;
  const durationMs = values['duration-ms'] !== undefined ? Number(values['duration-ms']) : undefined;
  const traceLinesMax = values['trace-lines'] !== undefined ? Number(values['trace-lines']) : undefined;
  if (traceLinesMax !== undefined && (!Number.isSafeInteger(traceLinesMax) || traceLinesMax < 1)) {
    process.stderr.write('wal-recovery sim: --trace-lines must be a positive integer\n');
    return 2;
  }
  const budgetMs = values['time-budget-ms'] !== undefined ? Number(values['time-budget-ms']) : Number.POSITIVE_INFINITY;
  if (durationMs !== undefined && (!Number.isSafeInteger(durationMs) || durationMs < 1_000)) {
    process.stderr.write('wal-recovery sim: --duration-ms must be an integer of at least 1000\n');
    return 2;
  }
  for (const [name, value] of [['seed', start], ['seeds', count]] as const) {
    if (!Number.isSafeInteger(value) || value < 0) {
      process.stderr.write(`wal-recovery sim: --${name} must be a non-negative integer\n`);
      return 2;
    }
  }
  const began = performance.now();
  let failed = 0;
  let ran = 0;
  let operations = 0;
  for (let seed = start; seed < start + count; seed += 1) {
    if (performance.now() - began > budgetMs) break;
    const result = await runSeed({ seed, etcdRestore: values['etcd-restore'] === true, loseNodes: values['lose-nodes'] === true, pipeline: values.pipeline === true, ...(durationMs !== undefined ? { durationMs } : {}), ...(traceLinesMax !== undefined ? { traceLinesMax } : {}) });
    ran += 1;
    operations += result.operations;
    if (!result.ok) failed += 1;
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ seed: result.seed, ok: result.ok, operations: result.operations, faults: result.faults, violations: result.violations, traceHash: result.traceHash })}\n`);
    } else {
      process.stdout.write(`${summaryLine(result)}\n`);
      if (!result.ok || traceLinesMax !== undefined) process.stdout.write(`  trace (last ${result.trace.length} lines):\n${result.trace.map((l) => `    ${l}`).join('\n')}\n`);
    }
  }
  const seconds = (performance.now() - began) / 1000;
  const summary = { seeds: ran, failed, operations, seconds: Number(seconds.toFixed(1)), seedsPerMinute: Number(((ran / seconds) * 60).toFixed(1)), operationsPerSecond: Math.round(operations / seconds) };
  process.stdout.write(values.json ? `${JSON.stringify({ summary })}\n` : `summary: ${ran} seeds, ${failed} failed, ${operations} operations in ${summary.seconds} s (${summary.seedsPerMinute} seeds/min, ${summary.operationsPerSecond} ops/s)\n`);
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`wal-recovery sim: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(2);
  },
);
