// The WAL store: the public face over one mechanism per file.
//
//   store-state.ts      what the store holds (segment records, holes, open segment) and its catalog
//   write-queue.ts      the write queue: group commit for appends, exclusive writes in order
//   segment-writer.ts   the open segment: framing, roll, write + fdatasync, seal
//   replica-writes.ts   replica mode: frames from the log's writer, seal at a point, install a copy
//   online-repair.ts    check, repair or replace a sealed segment while the store serves
//   open-repair.ts      rewrite damaged entries of the open segment in place (replica mode)
//   read-index.ts       where each entry lies, cached per segment; verified reads
//   recover-on-open.ts  recovery on open: torn tail, or the repair engine
//
// Fault model: the process may die at any instant; the disk may tear the last unsynced write,
// or flip, zero or drop bytes anywhere. An append is acknowledged only after the fdatasync that
// covers it returned; after that, no crash loses it. No read returns bytes that fail their
// checksum. Each mechanism's file states its own part of this.
import pino, { type Logger } from 'pino';
import type { DiskLock } from '../io/index.js';
import { RecoveryMetrics } from '../recovery/index.js';
import type { RecoveryConfig, SegmentRepair } from '../recovery/index.js';
import type { Checksum64 } from './checksum.js';
import type { HoleRecord, SegmentRecord } from './catalog.js';
import { EntryLostError, EntryTooLargeError, IndexOutOfRangeError, StoreClosedError, WalError } from './errors.js';
import { StoreLayout, exists, lockStore, quarantineFile } from './files.js';
import { ENTRY_HEADER_BYTES, entryPayloadOf } from './format.js';
import type { SegmentInspection } from './inspect.js';
import { type ResolvedWalOptions, type StoreSettings, type WalOptions, resolveWalOptions, validateSettings } from './options.js';
import { readsPastBadSectors } from './unreadable.js';
import { type OnlineRepairOptions, SealedSegmentRepair } from './online-repair.js';
import { type OpenRepairOptions, OpenSegmentRepair } from './open-repair.js';
import { ReadIndexCache } from './read-index.js';
import { type OpenReport, prepareDir, recover } from './recover-on-open.js';
import { ReplicaWrites } from './replica-writes.js';
import { type AppendResult, type SegmentStart, SegmentWriter } from './segment-writer.js';
import type { SegmentExpectation } from './sources.js';
import { StoreState } from './store-state.js';
import { WriteQueue } from './write-queue.js';

export { ReplicaRejectedError } from './errors.js';
export type { AppendResult, SegmentStart } from './segment-writer.js';
export type { OnlineRepairOptions } from './online-repair.js';
export type { OpenRepairOptions } from './open-repair.js';
export type { OpenReport } from './recover-on-open.js';

export interface Entry {
  readonly index: number;
  readonly timestampMs: number;
  readonly payload: Buffer;
}

const DEFAULT_LOG_LEVEL = process.env['WAL_RECOVERY_LOG_LEVEL'] ?? 'info';

let defaultLogger: Logger | undefined;

/**
 * The logger of a store opened without one: built once per process, not once per open, and on
 * process.stderr (written synchronously for files and pipes on Linux) rather than a SonicBoom
 * destination, whose construction (exit hooks) cost ~40 ms of CPU in a fresh process's first open.
 */
function storeLogger(): Logger {
  defaultLogger ??= pino({ level: DEFAULT_LOG_LEVEL, base: { component: 'wal' } }, process.stderr);
  return defaultLogger;
}

export class WalStore {
  private readonly state: StoreState;
  private readonly readIndexes: ReadIndexCache;
  private readonly writer: SegmentWriter;
  private readonly queue: WriteQueue;
  private readonly replica: ReplicaWrites;
  private readonly sealedRepair: SealedSegmentRepair;
  private readonly openRepair: OpenSegmentRepair;

  private constructor(
    readonly dataDir: string,
    /** The store's directory lock, released on close. */
    private readonly lock: DiskLock,
    state: StoreState,
    readonly openReport: OpenReport,
  ) {
    this.state = state;
    this.readIndexes = new ReadIndexCache(state);
    this.writer = new SegmentWriter(state, this.readIndexes);
    this.queue = new WriteQueue(state, (requests, bytes) => this.writer.writeBatch(requests, bytes));
    this.replica = new ReplicaWrites(state, this.queue, this.writer, this.readIndexes, (record, lastIndex, aggregate) => this.sealedRepair.cutSealedCopy(record, lastIndex, aggregate));
    this.sealedRepair = new SealedSegmentRepair(state, this.readIndexes);
    this.openRepair = new OpenSegmentRepair(state, this.queue, this.readIndexes);
  }

  /** Opens (and, unless told not to, creates) the store in dataDir, recovering it first. */
  static async open(dataDir: string, walOptions: WalOptions = {}): Promise<WalStore> {
    const logger = walOptions.logger ?? storeLogger();
    const resolved = resolveWalOptions(walOptions);
    // A sector that fails with EIO reads as zeros: its entries fail their checksums and are
    // repaired like any other damage, instead of one bad sector making a segment unreadable.
    const disk = readsPastBadSectors(resolved.disk, (path, offsetBytes, byteLength) =>
      logger.error({ path, offsetBytes, byteLength }, 'failed to read a sector (EIO): read as zeros, so the entries in it fail their checksums'),
    );
    const options: ResolvedWalOptions = { ...resolved, disk };
    const layout = new StoreLayout(options.disk, dataDir, options.backupDir);
    const metrics = walOptions.metrics ?? new RecoveryMetrics();
    await prepareDir(layout, options.create);
    const lock = await lockStore(layout);
    try {
      const explicitBackups = walOptions.recovery?.backupRetentionCount !== undefined;
      const { catalog, report, active, recovery } = await recover(layout, options, explicitBackups, logger, metrics);
      const settings = validateSettings({ logName: catalog.logName, segmentBytesMax: catalog.segmentBytesMax, entryBytesMax: catalog.entryBytesMax });
      const state = new StoreState(layout, settings, options, logger, metrics, recovery, catalog, active);
      const store = new WalStore(dataDir, lock, state, report);
      for (const segmentId of report.sealedSinceCheckpoint) state.scheduleBackup(segmentId);
      return store;
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  get settings(): StoreSettings {
    return this.state.settings;
  }

  get logger(): Logger {
    return this.state.logger;
  }

  get metrics(): RecoveryMetrics {
    return this.state.metrics;
  }

  /** RecoveryConfig in force: the options, with the backup count the store recorded unless overridden. */
  get recovery(): RecoveryConfig {
    return this.state.recovery;
  }

  /** A write failed and could not be rolled back: the store refuses writes until reopened. */
  get failed(): boolean {
    return this.queue.failure !== undefined;
  }

  /** The first index still in the log (1 for a new log). */
  get firstIndex(): number {
    return this.state.firstIndex;
  }

  /** The last index written (0 for an empty log). */
  get lastIndex(): number {
    return this.state.lastIndex;
  }

  get holeRecords(): readonly HoleRecord[] {
    return this.state.holes;
  }

  segmentRecords(): readonly SegmentRecord[] {
    return this.state.segmentRecords();
  }

  /** What this store holds of a segment (the open one included), or undefined. */
  segmentRecord(segmentId: number): SegmentRecord | undefined {
    return this.state.segmentRecord(segmentId);
  }

  /** Appends one payload or a batch; resolves once they are durable (fdatasync returned). */
  append(payloads: Uint8Array | readonly Uint8Array[]): Promise<AppendResult> {
    const list = payloads instanceof Uint8Array ? [payloads] : payloads;
    const refused = this.queue.refusal();
    if (refused) return Promise.reject(refused);
    if (list.length === 0) return Promise.reject(new WalError('append needs at least one entry'));
    let bytes = 0;
    for (const payload of list) {
      if (payload.byteLength > this.settings.entryBytesMax) return Promise.reject(new EntryTooLargeError(payload.byteLength, this.settings.entryBytesMax));
      bytes += ENTRY_HEADER_BYTES + payload.byteLength;
    }
    return this.queue.append(list, bytes);
  }

  /** Reads one entry, verified. Throws EntryLostError for a recorded hole, CorruptEntryError for damage. */
  async read(index: number): Promise<Entry> {
    const { frame, timestampMs } = await this.readFrame(index);
    return { index, timestampMs, payload: entryPayloadOf(frame) };
  }

  /** The whole encoded frame of one entry, verified (what replicas exchange). */
  async readFrame(index: number): Promise<{ frame: Buffer; timestampMs: number; checksum: Checksum64; segmentId: number }> {
    const state = this.state;
    if (state.closed) throw new StoreClosedError();
    if (!Number.isSafeInteger(index) || index < state.firstIndex || index > state.lastIndex) {
      throw new IndexOutOfRangeError(index, state.firstIndex, state.lastIndex);
    }
    const hole = state.findHole(index);
    if (hole) throw new EntryLostError(index, hole.segmentId, 'recorded as lost by a repair');
    const record = state.findSegment(index);
    if (!record) throw new IndexOutOfRangeError(index, state.firstIndex, state.lastIndex);
    return this.readIndexes.readFrame(index, record);
  }

  /** Entries first..last in order; a hole is yielded as { index, lost: true }. */
  async *entries(first = this.firstIndex, last = this.lastIndex): AsyncGenerator<Entry | { index: number; lost: true; reason: string }> {
    for (let index = Math.max(first, this.firstIndex); index <= Math.min(last, this.lastIndex); index += 1) {
      try {
        yield await this.read(index);
      } catch (error) {
        if (!(error instanceof EntryLostError)) throw error;
        yield { index, lost: true, reason: error.reason };
      }
    }
  }

  /**
   * Replica mode: appends frames encoded by the writer to segment `start.segmentId`, creating it
   * on its first frame. Frames at indices already held are skipped (a retried request).
   */
  appendFrames(start: SegmentStart, frames: readonly Buffer[]): Promise<AppendResult> {
    return this.replica.appendFrames(start, frames);
  }

  /**
   * Replica mode, group commit: several appendFrames requests in one write queue operation, their
   * frames written with one write and one fdatasync. Each outcome is that request's range or the
   * WalError that refused it alone; an I/O failure rejects them all.
   */
  appendFrameGroups(requests: ReadonlyArray<{ readonly start: SegmentStart; readonly frames: readonly Buffer[] }>): Promise<Array<AppendResult | WalError>> {
    return this.replica.appendFrameGroups(requests);
  }

  /** Replica mode: seals segment segmentId at lastIndex, cutting unacknowledged entries after it. */
  sealSegment(segmentId: number, lastIndex: number, expectedAggregate?: Checksum64, keepThrough = 0): Promise<SegmentRecord> {
    return this.replica.sealSegment(segmentId, lastIndex, expectedAggregate, keepThrough);
  }

  /** Replica mode: puts a verified whole sealed segment file (fetched from a replica) in place. */
  installSealedSegment(segmentId: number, sourcePath: string, expected?: SegmentExpectation): Promise<SegmentRecord> {
    return this.replica.installSealedSegment(segmentId, sourcePath, expected);
  }

  /** Checks a sealed segment against its record (etcd's, in a cluster) without changing it. */
  checkSealedSegment(segmentId: number, expected?: SegmentExpectation): Promise<SegmentInspection> {
    return this.sealedRepair.check(segmentId, expected);
  }

  /** Repairs a sealed segment while the store keeps serving every other segment. */
  repairSealedSegment(segmentId: number, options: OnlineRepairOptions): Promise<SegmentRepair> {
    return this.sealedRepair.repair(segmentId, options);
  }

  /**
   * Replica mode: rewrites damaged entries of the open segment in place from verified copies,
   * while it stays open (the frames must fill each damaged stretch and chain to the aggregate this
   * store wrote). Throws WalError when segmentId is not the open segment (sealed meanwhile).
   */
  repairOpenSegment(segmentId: number, options: OpenRepairOptions): Promise<SegmentRepair> {
    return this.openRepair.repair(segmentId, options);
  }

  /**
   * A cheap check of the open segment's file (no read of its entries): gone from its name, or
   * shorter than the bytes synced into it. Undefined when there is no open segment or it is fine.
   */
  async openSegmentFileProblem(): Promise<{ segmentId: number; detail: string } | undefined> {
    const active = this.state.active;
    if (!active || this.state.closed) return undefined;
    const info = await this.state.layout.disk.stat(this.state.layout.segmentPath(active.segmentId));
    if (info === undefined) return { segmentId: active.segmentId, detail: 'the open segment file is missing' };
    if (info.byteLength < active.byteLength) return { segmentId: active.segmentId, detail: `the open segment file holds ${info.byteLength} bytes, ${active.byteLength} were synced` };
    return undefined;
  }

  /** Paths of the local backup copies of a sealed segment (one per backupRetentionCount). */
  backupPaths(segmentId: number): string[] {
    return Array.from({ length: this.state.recovery.backupRetentionCount }, (_, i) => this.state.layout.backupPath(segmentId, i + 1));
  }

  /**
   * Writes the backup copies of a sealed segment again from the segment file (which the caller
   * verified), after moving the given damaged copies (1-based) into quarantine.
   */
  async recopyBackups(segmentId: number, damagedCopies: readonly number[]): Promise<void> {
    const state = this.state;
    if (state.closed) throw new StoreClosedError();
    if (state.segments.find((r) => r.segmentId === segmentId)?.state !== 'sealed') throw new WalError(`segment ${segmentId} is not sealed here`);
    const quarantined: string[] = [];
    for (const copy of damagedCopies) {
      const path = state.layout.backupPath(segmentId, copy);
      if (!(await exists(state.layout.disk, path))) continue;
      quarantined.push(await quarantineFile(state.layout, path, `backup-${copy}`, { keepOriginal: false, retention: Math.max(1, state.recovery.backupRetentionCount), now: state.options.clock.nowMs() }));
    }
    state.scheduleBackup(segmentId);
    await state.backupsDone();
    state.logger.warn({ log: state.settings.logName, segment: segmentId, copies: damagedCopies, quarantined }, 'backup copies were damaged or missing; wrote them again from the verified segment');
  }

  /**
   * Waits for queued appends, finishes backups and writes the catalog, which records the open
   * segment at its synced end (sealed first only with `sealOnClose`).
   */
  async close(): Promise<void> {
    const state = this.state;
    if (state.closed) return;
    state.closed = true;
    try {
      await this.queue.drain();
      if (this.queue.failure === undefined) {
        if (state.active && state.options.sealOnClose) await this.writer.sealActive();
        await state.backupsDone();
        await state.writeCatalog();
      }
    } finally {
      const activeHandle = state.active?.handle;
      await activeHandle?.close().catch(() => undefined);
      await this.readIndexes.closeAll(activeHandle);
      await this.lock.release();
    }
  }
}
