// Operations on a data directory without opening it for writing: validate (read-only), inspect
// and repair. These are what the CLI runs with --data-dir.
import pino, { type Logger } from 'pino';
import { type Clock, type Disk, nodeDisk, systemClock } from '../io/index.js';
import { type Finding, type RepairReport, type RepairStrategy, RecoveryMetrics, resolveRecoveryConfig, type RecoveryConfig } from '../recovery/index.js';
import { checksumHex } from './checksum.js';
import type { HoleRecord } from './catalog.js';
import { StoreLayout, lockStore } from './files.js';
import { existsSync } from 'node:fs';
import type { Worker } from 'node:worker_threads';
import { type SegmentAnalyzer, AnalyzePool, analyzeWorkerScriptPath, availableCores } from './analyze-pool.js';
import { type StoreInspection, inspectStore, readCatalog, assertStoreDir } from './inspect.js';
import { type StoreSettings, WAL_DEFAULTS, resolveWalOptions, tornWindowBytesOf, validateSettings } from './options.js';
import { repairStore } from './repair.js';
import { type GoodCopySource, LocalBackupSource } from './sources.js';

export interface DataDirOptions {
  readonly backupDir?: string;
  readonly recovery?: Partial<RecoveryConfig>;
  /** Largest payload to accept when the catalog (which records it) is lost. */
  readonly entryBytesMax?: number;
  /**
   * The groupCommitBytesMax the store ran with (default: WAL_DEFAULTS.groupCommitBytesMax): bounds the write a crash
   * can tear, so damage in the open segment within it of the end is a torn write.
   */
  readonly groupCommitBytesMax?: number;
  /**
   * Replica mode (a cluster node's log directory): the store holds only some of the log's
   * segments, so gaps between whole segment files are not damage. Nothing on disk records the
   * mode; the caller says (default false: every gap is damage).
   */
  readonly allowSegmentGaps?: boolean;
  readonly logger?: Logger;
  readonly metrics?: RecoveryMetrics;
  readonly sources?: readonly GoodCopySource[];
  readonly onProgress?: (bytesDone: number, bytesTotal: number) => void;
  /** Where the store's files live (default: nodeDisk, the real file system). */
  readonly disk?: Disk;
  /** Quarantine names and hole timestamps (nowMs); durations (monotonicMs). Default: the system's. */
  readonly clock?: Clock;
  /**
   * validate: worker threads that read and hash segment files (default 1: in this thread). More
   * than 1 starts a pool (at most one worker per core) when the store is on the real file system and
   * holds at least POOL_MIN_BYTES in two or more segment files. The report is the same either way. One thread is
   * the default because each worker adds ~8 MiB of resident memory (the specification bounds
   * recovery's extra memory at 10 MB) and on a loaded 2-core machine the pool measured no faster.
   */
  readonly threads?: number;
  /** validate: starts one analysis worker (default: analyze-worker.js; tests pass a stand-in). */
  readonly spawnWorker?: () => Worker;
}

/** Below this many bytes to read, starting worker threads costs more than it saves. */
export const POOL_MIN_BYTES = 16 * 1024 * 1024;

function analyzerOf(options: DataDirOptions): ((work: { bytes: number; files: number }) => SegmentAnalyzer | undefined) | undefined {
  if (options.disk !== undefined && options.disk !== nodeDisk) return undefined;
  return (work) => {
    const asked = options.threads ?? 1;
    // Below POOL_MIN_BYTES a pool costs more than it saves; more workers than cores never help. A
    // test's stand-in worker (spawnWorker) is taken at its word.
    const threads = options.spawnWorker !== undefined ? asked : work.bytes >= POOL_MIN_BYTES ? Math.min(asked, availableCores()) : 1;
    // From TypeScript sources (no compiled worker beside this module) validate stays in thread.
    if (threads < 2 || work.files < 2 || (options.spawnWorker === undefined && !existsSync(analyzeWorkerScriptPath()))) return undefined;
    return new AnalyzePool({ threads: Math.min(threads, work.files), ...(options.spawnWorker ? { spawn: options.spawnWorker } : {}) });
  };
}

export interface SegmentSummary {
  readonly segment: number;
  readonly state: 'open' | 'sealed' | 'missing' | 'damaged';
  readonly firstIndex: number | undefined;
  readonly lastIndex: number | undefined;
  readonly indexCount: number | undefined;
  readonly byteLength: number | undefined;
  readonly aggregateChecksum: string | undefined;
  readonly holes: number;
}

export interface ValidationReport {
  readonly log: string;
  readonly dataDir: string;
  /** True when nothing is damaged (recorded holes are listed, not damage). */
  readonly ok: boolean;
  readonly findings: readonly Finding[];
  readonly holes: readonly HoleRecord[];
  readonly segments: readonly SegmentSummary[];
  readonly bytesScanned: number;
  readonly durationMs: number;
}

async function settingsOf(layout: StoreLayout, options: DataDirOptions): Promise<{ settings: StoreSettings; recordedBackups: number | undefined }> {
  await assertStoreDir(layout.disk, layout.dataDir);
  const { catalog } = await readCatalog(layout);
  if (catalog) {
    return {
      settings: validateSettings({ logName: catalog.logName, segmentBytesMax: catalog.segmentBytesMax, entryBytesMax: catalog.entryBytesMax }),
      recordedBackups: catalog.backupRetentionCount,
    };
  }
  return { settings: { logName: WAL_DEFAULTS.logName, segmentBytesMax: WAL_DEFAULTS.segmentBytesMax, entryBytesMax: options.entryBytesMax ?? WAL_DEFAULTS.entryBytesMax }, recordedBackups: undefined };
}

function windowOf(options: DataDirOptions, settings: StoreSettings): number {
  // Validated as the store validates it.
  const { groupCommitBytesMax } = resolveWalOptions(options.groupCommitBytesMax === undefined ? {} : { groupCommitBytesMax: options.groupCommitBytesMax });
  return tornWindowBytesOf(groupCommitBytesMax, settings.entryBytesMax);
}

/** RecoveryConfig from the options, with the store's recorded backup count unless overridden. */
function recoveryOf(options: DataDirOptions, recordedBackups: number | undefined, overrides: Partial<RecoveryConfig> = {}): RecoveryConfig {
  const backups = options.recovery?.backupRetentionCount ?? recordedBackups;
  return resolveRecoveryConfig({ ...options.recovery, ...(backups === undefined ? {} : { backupRetentionCount: backups }), ...overrides });
}

function summarize(inspection: StoreInspection): SegmentSummary[] {
  return inspection.segments.map((s) => {
    const a = s.analysis;
    const damaged = s.findings.length > 0;
    return {
      segment: s.segmentId,
      state: !s.present ? 'missing' : damaged ? 'damaged' : a?.trailer ? 'sealed' : 'open',
      firstIndex: s.expected?.firstIndex ?? a?.firstIndex ?? s.record?.firstIndex,
      lastIndex: s.expected?.lastIndex ?? a?.lastIndex ?? s.record?.lastIndex,
      indexCount: s.expected?.indexCount ?? a?.indexCount ?? s.record?.indexCount,
      byteLength: a?.fileByteLength,
      aggregateChecksum: a && !damaged ? checksumHex(a.aggregate) : s.expected?.aggregateChecksum === undefined ? undefined : checksumHex(s.expected.aggregateChecksum),
      holes: a?.holes.length ?? 0,
    };
  });
}

/** Reads every file of the store and reports what is damaged. Never writes. */
export async function validateStore(dataDir: string, options: DataDirOptions = {}): Promise<ValidationReport> {
  const clock = options.clock ?? systemClock;
  const started = clock.monotonicMs();
  const layout = new StoreLayout(options.disk ?? nodeDisk, dataDir, options.backupDir);
  const { settings, recordedBackups } = await settingsOf(layout, options);
  const recovery = recoveryOf(options, recordedBackups);
  const analyzer = analyzerOf(options);
  const inspection = await inspectStore(layout, {
    entryBytesMax: settings.entryBytesMax,
    logName: settings.logName,
    backupCopies: recovery.backupRetentionCount,
    tornWindowBytes: windowOf(options, settings),
    allowSegmentGaps: options.allowSegmentGaps ?? false,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(analyzer ? { analyzer } : {}),
  });
  return {
    log: settings.logName,
    dataDir,
    ok: inspection.findings.length === 0,
    findings: inspection.findings,
    holes: inspection.holes,
    segments: summarize(inspection),
    bytesScanned: inspection.bytesScanned,
    durationMs: clock.monotonicMs() - started,
  };
}

/** Segment summaries only (no backup checks). */
export async function inspectDataDir(dataDir: string, options: DataDirOptions = {}): Promise<ValidationReport> {
  return validateStore(dataDir, { ...options, recovery: { ...options.recovery, backupRetentionCount: 0 } });
}

/** Repairs the store in dataDir with the given strategy. Takes the store's lock. */
export async function repairDataDir(
  dataDir: string,
  repair: { strategy: RepairStrategy; dryRun: boolean },
  options: DataDirOptions = {},
): Promise<RepairReport> {
  const layout = new StoreLayout(options.disk ?? nodeDisk, dataDir, options.backupDir);
  const { settings, recordedBackups } = await settingsOf(layout, options);
  const recovery = recoveryOf(options, recordedBackups);
  const logger = options.logger ?? pino({ level: 'silent' });
  const lock = await lockStore(layout);
  try {
    return await repairStore(
      {
        layout,
        settings,
        recovery,
        sources: [new LocalBackupSource(layout, recovery.backupRetentionCount, settings.entryBytesMax), ...(options.sources ?? [])],
        logger,
        metrics: options.metrics ?? new RecoveryMetrics(),
        clock: options.clock ?? systemClock,
        tornWindowBytes: windowOf(options, settings),
        allowSegmentGaps: options.allowSegmentGaps ?? false,
      },
      { strategy: repair.strategy, dryRun: repair.dryRun, ...(options.onProgress ? { onProgress: options.onProgress } : {}) },
    );
  } finally {
    await lock.release();
  }
}
