// The verbs: each takes parsed options, talks to an endpoint (backend.ts), writes its output and
// returns an exit code. Errors are thrown as they are; exit.ts alone turns them into codes.
import type { Logger } from 'pino';
import type { RepairStrategy } from '../recovery/index.js';
import { APPEND_ENTRIES_MAX } from '../replication/index.js';
import { type AdminOptions, type AppendRange, type Endpoint, type OnProgress, type OpenLogOptions, type StoreChecks, adminFor, clusterStatus, openLog } from './backend.js';
import { EXIT_DAMAGE, EXIT_OK, type ExitCode, PartialAppendError, SegmentNotFoundError } from './exit.js';
import { lineBatches } from './lines.js';
import { runClusterRepair, runClusterValidate } from './cluster-commands.js';
import type { Output } from './output.js';
import { type ProgressStream, createProgress } from './progress.js';
import { type ClusterStatusLike, appendLines, clusterStatusLines, dumpJson, dumpLine, inspectLines, repairLines, statusLines, statusOf, validateLines } from './render.js';

export interface CommandContext {
  readonly out: Output;
  readonly stdin: AsyncIterable<Buffer | string>;
  readonly stderr: ProgressStream;
  readonly logger: Logger;
  readonly json: boolean;
  /** --backups: backup copies per sealed segment (kept by append, expected by the others). */
  readonly backupRetentionCount: number | undefined;
}

function adminOptions(ctx: CommandContext): AdminOptions {
  return { logger: ctx.logger, ...(ctx.backupRetentionCount !== undefined ? { backupRetentionCount: ctx.backupRetentionCount } : {}) };
}

function admin(ctx: CommandContext, endpoint: Endpoint): StoreChecks {
  return adminFor(endpoint, adminOptions(ctx));
}

function logOptions(ctx: CommandContext, create: boolean): OpenLogOptions {
  return { logger: ctx.logger, create, ...(ctx.backupRetentionCount !== undefined ? { backupRetentionCount: ctx.backupRetentionCount } : {}) };
}

/** Lines per append call: each call is one group commit (one fdatasync) in the store, and one writer turn in a cluster. */
const APPEND_BATCH_ENTRIES_MAX = APPEND_ENTRIES_MAX;
const APPEND_BATCH_BYTES_MAX = 1024 * 1024;

export interface AppendOptions {
  readonly segmentBytesMax?: number;
}

export async function runAppend(ctx: CommandContext, endpoint: Endpoint, options: AppendOptions): Promise<ExitCode> {
  const log = await openLog(endpoint, { ...logOptions(ctx, true), ...options });
  let first: AppendRange | undefined;
  let last: AppendRange | undefined;
  let count = 0;
  // One batch in flight while the next is read: stdin and fdatasync overlap.
  let inFlight: Promise<void> | undefined;
  try {
    const limits = { lineBytesMax: log.entryBytesMax, batchEntriesMax: APPEND_BATCH_ENTRIES_MAX, batchBytesMax: APPEND_BATCH_BYTES_MAX };
    for await (const batch of lineBatches(ctx.stdin, limits)) {
      await inFlight;
      inFlight = log.append(batch).then((range) => {
        first ??= range;
        last = range;
        count += batch.length;
      });
      // Handled when awaited above; this keeps a failure during the next stdin read from being
      // reported as an unhandled rejection.
      inFlight.catch(() => undefined);
    }
    await inFlight;
  } catch (error) {
    // Entries appended before the failure are durable: the error says which, counting the batch
    // that was in flight when reading stdin failed.
    await inFlight?.catch(() => undefined);
    if (first !== undefined && last !== undefined) throw new PartialAppendError(first.firstIndex, last.lastIndex, error);
    throw error;
  } finally {
    await log.close();
  }
  const range = first !== undefined && last !== undefined ? { firstIndex: first.firstIndex, lastIndex: last.lastIndex } : undefined;
  if (ctx.json) await ctx.out.json({ count, firstIndex: range?.firstIndex ?? null, lastIndex: range?.lastIndex ?? null });
  else await ctx.out.write(appendLines(range, count));
  return EXIT_OK;
}

export interface DumpOptions {
  readonly fromIndex?: number;
  readonly toIndex?: number;
}

export async function runDump(ctx: CommandContext, endpoint: Endpoint, options: DumpOptions): Promise<ExitCode> {
  const log = await openLog(endpoint, logOptions(ctx, false));
  try {
    for await (const record of log.entries(options.fromIndex, options.toIndex)) {
      if (ctx.json) await ctx.out.json(dumpJson(record), true);
      else await ctx.out.write(dumpLine(record));
    }
  } finally {
    await log.close();
  }
  return EXIT_OK;
}

async function withProgress<T>(ctx: CommandContext, label: string, work: (onProgress: OnProgress) => Promise<T>): Promise<T> {
  const progress = createProgress(ctx.stderr, label);
  try {
    return await work(progress.onProgress);
  } finally {
    progress.finish();
  }
}

export async function runValidate(ctx: CommandContext, endpoint: Endpoint, node = '', threads?: number): Promise<ExitCode> {
  if (endpoint.kind === 'cluster') return runClusterValidate(ctx, endpoint, node);
  const checks = threads !== undefined ? adminFor(endpoint, { ...adminOptions(ctx), threads }) : admin(ctx, endpoint);
  const report = await withProgress(ctx, 'validating', (onProgress) => checks.validate(onProgress));
  if (ctx.json) await ctx.out.json(report);
  else await ctx.out.write(validateLines(report));
  return report.ok ? EXIT_OK : EXIT_DAMAGE;
}

export interface RepairOptions {
  readonly strategy: RepairStrategy;
  /** False when --strategy was left at its default: with --target, each node then uses its own. */
  readonly strategyGiven?: boolean;
  readonly dryRun: boolean;
  /** With --target: the segment, and optionally the one node whose copy to repair. */
  readonly segment?: number;
  readonly node?: string;
}

export async function runRepair(ctx: CommandContext, endpoint: Endpoint, options: RepairOptions): Promise<ExitCode> {
  if (endpoint.kind === 'cluster') return runClusterRepair(ctx, endpoint, options);
  const label = options.dryRun ? 'planning repair' : 'repairing';
  const report = await withProgress(ctx, label, (onProgress) => admin(ctx, endpoint).repair(options.strategy, options.dryRun, onProgress));
  if (ctx.json) await ctx.out.json(report);
  else await ctx.out.write(repairLines(report));
  return report.remaining.length === 0 ? EXIT_OK : EXIT_DAMAGE;
}

export interface InspectOptions {
  readonly segment?: number;
}

/** Describes; it does not judge (validate does): exit 0 whatever state the segments are in. */
export async function runInspect(ctx: CommandContext, endpoint: Endpoint, options: InspectOptions): Promise<ExitCode> {
  const report = await admin(ctx, endpoint).inspect();
  const segments = options.segment === undefined ? report.segments : report.segments.filter((s) => s.segment === options.segment);
  if (options.segment !== undefined && segments.length === 0) throw new SegmentNotFoundError(options.segment, report.dataDir);
  if (ctx.json) {
    const findings = report.findings.filter((f) => options.segment === undefined || f.segment === options.segment);
    const holes = report.holes.filter((h) => options.segment === undefined || h.segmentId === options.segment);
    await ctx.out.json({ log: report.log, dataDir: report.dataDir, ok: report.ok, segments, findings, holes });
  } else {
    await ctx.out.write(inspectLines(report, segments));
  }
  return EXIT_OK;
}

/** A one-line summary of the store; exit 1 when it is damaged. */
export async function runStatus(ctx: CommandContext, endpoint: Endpoint, allLogs = false): Promise<ExitCode> {
  if (endpoint.kind === 'cluster') {
    const status = await clusterStatus(endpoint, allLogs);
    if (ctx.json) await ctx.out.json(status);
    else await ctx.out.write(clusterStatusLines(status as ClusterStatusLike));
    return EXIT_OK;
  }
  const summary = statusOf(await admin(ctx, endpoint).inspect());
  if (ctx.json) await ctx.out.json(summary);
  else await ctx.out.write(statusLines(summary));
  return summary.ok ? EXIT_OK : EXIT_DAMAGE;
}
