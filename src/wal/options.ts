// Options of a WAL store: defaults filled and validated once into a readonly object.
import type { Logger } from 'pino';
import { type Clock, type Disk, nodeDisk, systemClock } from '../io/index.js';
import { type RecoveryConfig, type RecoveryMetrics, resolveRecoveryConfig } from '../recovery/index.js';
import { InvalidOptionError } from './errors.js';
import { ENTRY_HEADER_BYTES, LOG_NAME_BYTES_MAX, SEGMENT_HEADER_BYTES, TRAILER_BYTES, frameByteLength } from './format.js';
import type { GoodCopySource } from './sources.js';

export const KIB = 1024;
export const MIB = 1024 * KIB;

export const WAL_DEFAULTS = Object.freeze({
  logName: 'default',
  segmentBytesMax: 64 * MIB,
  entryBytesMax: 1 * MIB,
  groupCommitBytesMax: 4 * MIB,
  checkpointBytes: 1 * MIB,
  readIndexSegmentsMax: 16,
  readIndexBytesMax: 64 * MIB,
});

export const SEGMENT_BYTES_MIN = 4 * KIB;
export const SEGMENT_BYTES_LIMIT = 1024 * MIB; // offsets stay well inside 32 bits

export interface WalOptions {
  /** Name of the log kept in this directory (new stores; an existing store keeps its own). */
  readonly logName?: string;
  /** Roll size of segments (new stores; an existing store keeps its own). */
  readonly segmentBytesMax?: number;
  /** Largest payload accepted (new stores; an existing store keeps its own). */
  readonly entryBytesMax?: number;
  /**
   * Most bytes the store writes between two fdatasyncs (a larger batch is written in several
   * write + fdatasync steps; a single frame larger than this is written alone). It bounds the
   * write a crash can tear: recovery treats damage within this many bytes of the end of the open
   * segment as possibly torn (tornWindowBytesOf), so reopen a crashed store with at least the
   * value it ran with.
   */
  readonly groupCommitBytesMax?: number;
  /** Appended bytes between catalog checkpoints; bounds the scan after a crash. */
  readonly checkpointBytes?: number;
  /** Sealed segments whose entry offsets are kept in memory for reads. */
  readonly readIndexSegmentsMax?: number;
  /**
   * Memory the read indexes may take, estimated at READ_INDEX_BYTES_PER_ENTRY per indexed entry
   * (the most recently used index and the open segment's are kept whatever their size).
   */
  readonly readIndexBytesMax?: number;
  /** Where backups of sealed segments go (default: <dataDir>/backups). */
  readonly backupDir?: string;
  /** Create the directory and an empty store when none exists (default true). */
  readonly create?: boolean;
  readonly recovery?: Partial<RecoveryConfig>;
  readonly logger?: Logger;
  readonly metrics?: RecoveryMetrics;
  /**
   * Seal the open segment on close (default false). A clean close leaves it open, recorded at its
   * synced end, and the next open goes on appending to it: sealing on every close would leave one
   * short segment per run. (A replica never seals on its own: that is the log writer's decision.)
   */
  readonly sealOnClose?: boolean;
  /**
   * Replica mode: segments need not follow on from each other (a node holds only the segments
   * whose ensemble it is in). Reads of indices in a gap say IndexOutOfRange.
   */
  readonly allowSegmentGaps?: boolean;
  /** Sources of verified copies besides the local backups (replicas, in a cluster). */
  readonly sources?: readonly GoodCopySource[];
  /** Where the store's files live (default: nodeDisk). The simulator passes an in-memory disk. */
  readonly disk?: Disk;
  /** Entry timestamps, createdMs and quarantine names (nowMs); durations (monotonicMs). */
  readonly clock?: Clock;
}

export interface StoreSettings {
  readonly logName: string;
  readonly segmentBytesMax: number;
  readonly entryBytesMax: number;
}

export interface ResolvedWalOptions extends StoreSettings {
  readonly groupCommitBytesMax: number;
  readonly checkpointBytes: number;
  readonly readIndexSegmentsMax: number;
  readonly readIndexBytesMax: number;
  readonly backupDir: string | undefined;
  readonly create: boolean;
  readonly recovery: RecoveryConfig;
  readonly sources: readonly GoodCopySource[];
  readonly sealOnClose: boolean;
  readonly allowSegmentGaps: boolean;
  readonly disk: Disk;
  readonly clock: Clock;
}

/**
 * The largest single write the store issues before an fdatasync: groupCommitBytesMax, or one
 * whole frame when a frame can be larger (a frame is never split across syncs), or a trailer.
 * Damage in the open segment is a torn write only within this many bytes of its end.
 */
export function tornWindowBytesOf(groupCommitBytesMax: number, entryBytesMax: number): number {
  return Math.max(groupCommitBytesMax, frameByteLength(entryBytesMax), TRAILER_BYTES);
}

function integer(option: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidOptionError(option, `must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

export function validateSettings(settings: StoreSettings): StoreSettings {
  const name = Buffer.byteLength(settings.logName, 'utf8');
  if (name < 1 || name > LOG_NAME_BYTES_MAX || !/^[A-Za-z0-9._-]+$/.test(settings.logName) || /^\.{1,2}$/.test(settings.logName)) {
    throw new InvalidOptionError('logName', `must be 1 to ${LOG_NAME_BYTES_MAX} characters of A-Z a-z 0-9 . _ -`);
  }
  const segmentBytesMax = integer('segmentBytesMax', settings.segmentBytesMax, SEGMENT_BYTES_MIN, SEGMENT_BYTES_LIMIT);
  const entryLimit = segmentBytesMax - SEGMENT_HEADER_BYTES - TRAILER_BYTES - ENTRY_HEADER_BYTES;
  const entryBytesMax = integer('entryBytesMax', settings.entryBytesMax, 1, entryLimit);
  return Object.freeze({ logName: settings.logName, segmentBytesMax, entryBytesMax });
}

export function resolveWalOptions(options: WalOptions = {}): ResolvedWalOptions {
  const segmentBytesMax = options.segmentBytesMax ?? WAL_DEFAULTS.segmentBytesMax;
  const settings = validateSettings({
    logName: options.logName ?? WAL_DEFAULTS.logName,
    segmentBytesMax,
    entryBytesMax:
      options.entryBytesMax ??
      Math.min(WAL_DEFAULTS.entryBytesMax, segmentBytesMax - SEGMENT_HEADER_BYTES - TRAILER_BYTES - ENTRY_HEADER_BYTES),
  });
  return Object.freeze({
    ...settings,
    groupCommitBytesMax: integer('groupCommitBytesMax', options.groupCommitBytesMax ?? WAL_DEFAULTS.groupCommitBytesMax, 4 * KIB, 256 * MIB),
    checkpointBytes: integer('checkpointBytes', options.checkpointBytes ?? WAL_DEFAULTS.checkpointBytes, 4 * KIB, 4096 * MIB),
    readIndexSegmentsMax: integer('readIndexSegmentsMax', options.readIndexSegmentsMax ?? WAL_DEFAULTS.readIndexSegmentsMax, 1, 4096),
    readIndexBytesMax: integer('readIndexBytesMax', options.readIndexBytesMax ?? WAL_DEFAULTS.readIndexBytesMax, 4 * KIB, 64 * 1024 * MIB),
    backupDir: options.backupDir,
    create: options.create ?? true,
    recovery: resolveRecoveryConfig(options.recovery),
    sources: options.sources ?? [],
    sealOnClose: options.sealOnClose ?? false,
    allowSegmentGaps: options.allowSegmentGaps ?? false,
    disk: options.disk ?? nodeDisk,
    clock: options.clock ?? systemClock,
  });
}
