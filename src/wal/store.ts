// The WAL store: append with group commit, verified reads, seal and roll, backups, and recovery
// on open.
//
// Fault model: the process may die at any instant; the disk may tear the last unsynced write
// (cut it short, or write its pages back in any order), or flip, zero or drop bytes anywhere. An
// append is acknowledged only after the fdatasync that covers it returned; after that, no crash
// loses it. The store never writes more than groupCommitBytesMax bytes between two fdatasyncs (a
// larger batch goes in several write + fdatasync steps; a frame larger than that goes alone), so
// a crash can only damage the last tornWindowBytesOf(...) bytes of the open segment.
//
// Opening after a clean shutdown reads the catalog and stats one path; after a crash it scans the
// open segment from its last checkpoint only. Damage there is a torn write, rolled back from its
// first damaged byte (everything after it, intact frames included, kept in quarantine), when it
// lies within that window of the end of the file, past the checkpoint, is bytes a crash can leave
// (not an intact frame out of place), and either nothing intact follows it or it holds sectors
// never written back (zeros). Any other damage, or damage in a sealed segment, is corruption: it
// goes to the repair engine with the configured strategy, and open refuses (DamageFoundError)
// rather than drop data silently. The rule is TORN_WRITE_RULES in src/recovery/decision.ts.
//
// Replica mode (allowSegmentGaps): the node holds only the segments whose ensemble names it, so
// index gaps between whole segment files are segments held elsewhere, never damage.
import pino, { type Logger } from 'pino';
import { type Disk, type DiskFile, type DiskLock, type DiskStat, isNotFound } from '../io/index.js';
import { type Finding, type RecoveryConfig, type RepairReport, RecoveryMetrics, describeFinding, decide } from '../recovery/index.js';
import { type Checksum64, AGGREGATE_EMPTY, chainAggregate, checksumHex } from './checksum.js';
import { type Catalog, type HoleRecord, type SegmentRecord, encodeCatalog } from './catalog.js';
import { type SegmentAnalysis, analysisBefore, analyzeSegmentFile, analyzeSegmentHandle, isClean } from './analyze.js';
import { type LastWriteWindow, type TornWrite, findTornWrite } from './torn.js';
import type { RepairStrategy, SegmentRepair } from '../recovery/index.js';
import {
  CorruptEntryError,
  EntryLostError,
  EntryTooLargeError,
  IndexOutOfRangeError,
  DamageFoundError,
  StoreClosedError,
  StoreFailedError,
  StoreWriteError,
  StoreNotFoundError,
  WalError,
} from './errors.js';
import {
  StoreLayout,
  exists,
  fileByteLength,
  lockStore,
  quarantineBytes,
  quarantineFile,
  readRange,
  syncFile,
  writeFileAtomic,
  TEMP_SUFFIX,
} from './files.js';
import {
  ENTRY_HEADER_BYTES,
  FLAG_HOLE,
  SEGMENT_HEADER_BYTES,
  TRAILER_BYTES,
  type Trailer,
  decodeFrameAt,
  decodeSegmentHeader,
  decodeTrailer,
  encodeEntryInto,
  encodeSegmentHeader,
  encodeTrailer,
  logIdOf,
  segmentFileName,
} from './format.js';
import { type SegmentInspection, inspectSegment, readCatalog } from './inspect.js';
import { type ResolvedWalOptions, type StoreSettings, type WalOptions, resolveWalOptions, tornWindowBytesOf, validateSettings } from './options.js';
import { type RepairContext, repairSegmentWithRetries, repairStore } from './repair.js';
import { type GoodCopySource, type SegmentExpectation, LocalBackupSource, matchesExpectation, writeBackups } from './sources.js';
import { readsPastBadSectors } from './unreadable.js';

export interface AppendResult {
  readonly firstIndex: number;
  readonly lastIndex: number;
}

export interface Entry {
  readonly index: number;
  readonly timestampMs: number;
  readonly payload: Buffer;
}

export interface OpenReport {
  /** How open found the store. */
  readonly state: 'created' | 'clean' | 'recovered-tail' | 'repaired';
  readonly durationMs: number;
  readonly segmentsScanned: number;
  readonly bytesScanned: number;
  readonly findings: readonly Finding[];
  /** Torn tails rolled back: where, and how many bytes went to quarantine. */
  readonly tornTails: ReadonlyArray<{ segment: number; offsetBytes: number; byteLength: number; quarantinedAs: string }>;
  /** Present when open ran the repair engine (damage other than a torn tail, or a lost catalog). */
  readonly repair?: RepairReport;
  /** Segments found sealed after the last checkpoint (their backups are written again). */
  readonly sealedSinceCheckpoint: readonly number[];
}

interface ActiveSegment {
  readonly segmentId: number;
  readonly firstIndex: number;
  readonly createdMs: number;
  readonly handle: DiskFile;
  byteLength: number;
  lastIndex: number;
  indexCount: number;
  aggregate: Checksum64;
  checkpointedBytes: number;
  /**
   * What the last completed fdatasync covers (byteLength above is always synced). lastIndex,
   * indexCount and aggregate run ahead while a write is in flight; reads, the catalog and the
   * answers to peers use only this, so nothing is served or recorded before it is durable.
   */
  durable: { lastIndex: number; indexCount: number; aggregate: Checksum64 };
}

/** Read-index slots of frames written by one writeAndSync, added once they are durable. */
interface IndexedFrames {
  readonly starts: number[];
  readonly lengths: number[];
  readonly checkWords: number[];
}

interface ReadIndex {
  /** The segment's file, open for reading (the active segment's own handle while it is open). */
  readonly handle: DiskFile;
  /** Reads using the handle now; a retired index closes it when the last one finishes. */
  users: number;
  retired: boolean;
  /** The handle is closed (or closing): this index can no longer be read through. */
  closed: boolean;
  readonly starts: number[];
  readonly lengths: number[];
  /**
   * The low 32 bits of each entry's checksum when it was indexed (written here, or read and, for
   * a sealed segment, checked against its aggregate). A frame rewritten in place since then, even
   * with recomputed checksums (a lying copy), no longer matches and is not served.
   */
  readonly checkWords: number[];
}

interface PendingAppend {
  readonly kind: 'append';
  readonly payloads: readonly Uint8Array[];
  readonly bytes: number;
  readonly resolve: (result: AppendResult) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * A write that runs alone, in queue order (replicated frames, seal, truncate). A WalError it
 * throws rejects that request only; any other error is an I/O failure and fails the store.
 */
interface PendingOp {
  readonly kind: 'op';
  readonly run: () => Promise<void>;
  readonly reject: (error: unknown) => void;
}

type Pending = PendingAppend | PendingOp;

export interface OnlineRepairOptions {
  readonly strategy: RepairStrategy;
  readonly dryRun: boolean;
  /** Tried before the local backups (replicas, in a cluster). */
  readonly sources: readonly GoodCopySource[];
  /** What the segment must contain (etcd's record, in a cluster); default: the local catalog. */
  readonly expected?: SegmentExpectation;
  /** Cluster interlock: whether an unreachable replica may hold the given indices. */
  readonly heldElsewhere?: (segmentId: number, first: number, last: number) => boolean;
  /** Count this damage in corrupted_segments (false when it was counted at an earlier attempt). */
  readonly countDamage?: boolean;
}

/** The identity of a segment as the log's writer chose it (replica mode). */
export interface SegmentStart {
  readonly segmentId: number;
  readonly firstIndex: number;
  readonly createdMs: number;
}

/** A replicated write that does not fit this store's state; the store itself is fine. */
export class ReplicaRejectedError extends WalError {
  override readonly name = 'ReplicaRejectedError';
  constructor(readonly reason: 'segment-mismatch' | 'index-gap' | 'bad-frame' | 'missing-entries' | 'unknown-segment', message: string, readonly lastIndex: number) {
    super(message);
  }
}

const DEFAULT_LOG_LEVEL = process.env['WAL_RECOVERY_LOG_LEVEL'] ?? 'info';

export class WalStore {
  private segments: SegmentRecord[];
  private holes: HoleRecord[];
  private active: ActiveSegment | undefined;
  private readonly readIndexes = new Map<number, ReadIndex>();
  private readonly readIndexBuilds = new Map<number, Promise<ReadIndex>>();
  /** Bumped when a sealed segment's file is replaced: an index built from the old file is stale. */
  private readonly segmentVersions = new Map<number, number>();
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private backupChain: Promise<void> = Promise.resolve();
  private catalogWrites: Promise<void> = Promise.resolve();
  private failure: unknown;
  /** The last catalog write failed: the catalog on disk may not list every segment held. */
  private catalogStale = false;
  private closed = false;
  private generation: number;

  private constructor(
    readonly dataDir: string,
    private readonly layout: StoreLayout,
    /** The store's directory lock, released on close. */
    private readonly lock: DiskLock,
    readonly settings: StoreSettings,
    private readonly options: ResolvedWalOptions,
    readonly logger: Logger,
    readonly metrics: RecoveryMetrics,
    catalog: Catalog,
    readonly openReport: OpenReport,
    /** RecoveryConfig in force: the options, with the backup count the store recorded unless overridden. */
    readonly recovery: RecoveryConfig,
  ) {
    this.segments = [...catalog.segments];
    this.holes = [...catalog.holes];
    this.generation = catalog.generation;
  }

  /** Opens (and, unless told not to, creates) the store in dataDir, recovering it first. */
  static async open(dataDir: string, walOptions: WalOptions = {}): Promise<WalStore> {
    const logger = walOptions.logger ?? pino({ level: DEFAULT_LOG_LEVEL, base: { component: 'wal' } }, pino.destination(2));
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
      const store = new WalStore(dataDir, layout, lock, settings, options, logger, metrics, catalog, report, recovery);
      store.active = active;
      for (const segmentId of report.sealedSinceCheckpoint) store.scheduleBackup(segmentId);
      return store;
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  /** A write failed and could not be rolled back: the store refuses writes until reopened. */
  get failed(): boolean {
    return this.failure !== undefined;
  }

  /** The first index still in the log (1 for a new log). */
  get firstIndex(): number {
    return this.segments[0]?.firstIndex ?? 1;
  }

  /** The last index written (0 for an empty log). */
  get lastIndex(): number {
    if (this.active) return this.active.durable.lastIndex;
    const last = this.segments[this.segments.length - 1];
    return last ? last.lastIndex : 0;
  }

  get holeRecords(): readonly HoleRecord[] {
    return this.holes;
  }

  segmentRecords(): readonly SegmentRecord[] {
    return this.segments.map((record) => (this.active && record.segmentId === this.active.segmentId ? this.activeRecord() : record));
  }

  /** Appends one payload or a batch; resolves once they are durable (fdatasync returned). */
  append(payloads: Uint8Array | readonly Uint8Array[]): Promise<AppendResult> {
    const list = payloads instanceof Uint8Array ? [payloads] : payloads;
    if (this.closed) return Promise.reject(new StoreClosedError());
    if (this.failure !== undefined) return Promise.reject(new StoreFailedError({ cause: this.failure }));
    if (list.length === 0) return Promise.reject(new WalError('append needs at least one entry'));
    let bytes = 0;
    for (const payload of list) {
      if (payload.byteLength > this.settings.entryBytesMax) return Promise.reject(new EntryTooLargeError(payload.byteLength, this.settings.entryBytesMax));
      bytes += ENTRY_HEADER_BYTES + payload.byteLength;
    }
    return new Promise<AppendResult>((resolve, reject) => {
      this.queue.push({ kind: 'append', payloads: list, bytes, resolve, reject });
      this.flushing ??= this.flushLoop();
    });
  }

  /** Reads one entry, verified. Throws EntryLostError for a recorded hole, CorruptEntryError for damage. */
  async read(index: number): Promise<Entry> {
    const { frame, timestampMs } = await this.readFrame(index);
    return { index, timestampMs, payload: frame.subarray(ENTRY_HEADER_BYTES) };
  }

  /** The whole encoded frame of one entry, verified (what replicas exchange). */
  async readFrame(index: number): Promise<{ frame: Buffer; timestampMs: number; checksum: Checksum64; segmentId: number }> {
    if (this.closed) throw new StoreClosedError();
    if (!Number.isSafeInteger(index) || index < this.firstIndex || index > this.lastIndex) {
      throw new IndexOutOfRangeError(index, this.firstIndex, this.lastIndex);
    }
    const hole = this.findHole(index);
    if (hole) throw new EntryLostError(index, hole.segmentId, 'recorded as lost by a repair');
    const record = this.findSegment(index);
    if (!record) throw new IndexOutOfRangeError(index, this.firstIndex, this.lastIndex);
    let readIndex = await this.readIndexFor(record);
    // Retired (evicted, or replaced by a repair) between its lookup and now: its handle may be
    // closed. Take the current one; the check and users += 1 below run with no await between.
    for (let attempt = 0; readIndex.closed && attempt < READ_INDEX_BUILD_ATTEMPTS_MAX; attempt += 1) readIndex = await this.readIndexFor(this.segmentRecord(record.segmentId) ?? record);
    if (readIndex.closed) throw new WalError(`segment ${record.segmentId} kept changing while it was read; try again`);
    const slot = index - record.firstIndex;
    const start = readIndex.starts[slot];
    const length = readIndex.lengths[slot];
    if (start === undefined || length === undefined || start < 0) {
      throw this.corrupt(index, record.segmentId, undefined, 'entry could not be located: the bytes around it are damaged');
    }
    if (length === 0) throw new EntryLostError(index, record.segmentId, 'recorded as lost by a repair');
    readIndex.users += 1;
    let frame: Buffer;
    try {
      frame = await readRange(readIndex.handle, start, length);
    } finally {
      readIndex.users -= 1;
      if (readIndex.retired && readIndex.users === 0 && !readIndex.closed) {
        readIndex.closed = true;
        await readIndex.handle.close().catch(() => undefined);
      }
    }
    const decoded = decodeFrameAt(frame, 0, this.settings.entryBytesMax);
    if (decoded.kind !== 'entry' || !decoded.bodyOk || decoded.header.index !== index || decoded.frameByteLength !== length) {
      const detail = decoded.kind === 'entry' && !decoded.bodyOk ? 'entry checksum does not match its bytes' : 'entry header is damaged';
      throw this.corrupt(index, record.segmentId, start, detail, decoded.kind === 'entry' ? decoded : undefined);
    }
    if (checkWordOf(decoded.header.checksum) !== readIndex.checkWords[slot]) {
      throw this.corrupt(index, record.segmentId, start, 'entry was rewritten since it was indexed: its checksum is not the one recorded');
    }
    return { frame, timestampMs: decoded.header.timestampMs, checksum: decoded.header.checksum, segmentId: record.segmentId };
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

  // -------------------------------------------------------------------------------------------
  // Replica mode: the log's writer chose segment boundaries, indices and timestamps and encoded
  // the frames; this store verifies every frame and writes it verbatim, so sealed segments are
  // byte-identical on every replica.

  /** Runs fn alone in the write queue, after every write queued before it. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new StoreClosedError());
    if (this.failure !== undefined) return Promise.reject(new StoreFailedError({ cause: this.failure }));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ kind: 'op', run: async () => resolve(await fn()), reject });
      this.flushing ??= this.flushLoop();
    });
  }

  /**
   * Appends frames encoded by the writer to segment `start.segmentId`, creating it on its first
   * frame. Frames at indices already held are skipped (a retried request); the rest must follow on.
   */
  appendFrames(start: SegmentStart, frames: readonly Buffer[]): Promise<AppendResult> {
    return this.exclusive(async () => {
      // Every frame is verified before anything is created: a bad request leaves no segment behind.
      const decodedFrames = frames.map((frame) => decodeFrameAt(frame, 0, this.settings.entryBytesMax));
      decodedFrames.forEach((decoded, i) => {
        if (decoded.kind !== 'entry' || !decoded.bodyOk || decoded.frameByteLength !== frames[i]?.byteLength || (decoded.header.flags & FLAG_HOLE) !== 0) {
          throw new ReplicaRejectedError('bad-frame', 'a frame failed verification on arrival', this.lastIndex);
        }
      });
      let active = this.active;
      if (!active || active.segmentId !== start.segmentId) {
        if (active) throw new ReplicaRejectedError('segment-mismatch', `segment ${active.segmentId} is still open here, cannot start ${start.segmentId}`, active.lastIndex);
        const last = this.segments[this.segments.length - 1];
        if (last && last.segmentId >= start.segmentId) {
          throw new ReplicaRejectedError('segment-mismatch', `segment ${start.segmentId} is already sealed here`, this.lastIndex);
        }
        const followsOn = start.firstIndex === this.lastIndex + 1;
        if (!followsOn && !(this.options.allowSegmentGaps && start.firstIndex > this.lastIndex)) {
          throw new ReplicaRejectedError('index-gap', `segment ${start.segmentId} starts at ${start.firstIndex} but this replica ends at ${this.lastIndex}`, this.lastIndex);
        }
        const head = decodedFrames[0];
        if (head?.kind === 'entry' && head.header.index !== start.firstIndex) {
          throw new ReplicaRejectedError('index-gap', `segment ${start.segmentId} starts at ${start.firstIndex} but its first frame is ${head.header.index}`, this.lastIndex);
        }
        const gapped = (last?.segmentId ?? 0) + 1 !== start.segmentId;
        active = await this.createSegment(start.firstIndex, start);
        // Open finds segments created after the catalog by probing consecutive ids: one that
        // skips ids must be in the catalog before it holds an entry.
        if (gapped) await this.writeCatalog();
      }
      const accepted: Buffer[] = [];
      let next = active.lastIndex + 1;
      for (const [i, frame] of frames.entries()) {
        const decoded = decodedFrames[i];
        if (decoded?.kind !== 'entry') throw new ReplicaRejectedError('bad-frame', 'a frame failed verification on arrival', active.lastIndex);
        if (decoded.header.index < next) continue;
        if (decoded.header.index !== next) throw new ReplicaRejectedError('index-gap', `frame ${decoded.header.index} arrived but ${next} is next`, active.lastIndex);
        accepted.push(frame);
        next += 1;
      }
      const firstIndex = active.lastIndex + 1;
      if (accepted.length === 0) return { firstIndex, lastIndex: active.lastIndex };
      const bytes = Buffer.concat(accepted);
      const indexed: IndexedFrames = { starts: [], lengths: [], checkWords: [] };
      let offset = active.byteLength;
      for (const frame of accepted) {
        indexed.starts.push(offset);
        indexed.lengths.push(frame.byteLength);
        indexed.checkWords.push(frame.readUInt32BE(12));
        offset += frame.byteLength;
        active.aggregate = chainAggregate(active.aggregate, frame.readBigUInt64BE(8));
        active.lastIndex += 1;
        active.indexCount += 1;
      }
      await this.writeAndSync(active, bytes, indexed);
      return { firstIndex, lastIndex: active.lastIndex };
    });
  }

  /**
   * Seals segment segmentId at lastIndex: entries after it (written but never acknowledged by a
   * quorum) are cut off and kept in quarantine. Idempotent for a segment already sealed there.
   */
  sealSegment(segmentId: number, lastIndex: number): Promise<SegmentRecord> {
    return this.exclusive(async () => {
      const active = this.active;
      if (!active || active.segmentId !== segmentId) {
        const record = this.segments.find((r) => r.segmentId === segmentId);
        if (record?.state === 'sealed' && record.lastIndex === lastIndex) return record;
        if (!record) throw new ReplicaRejectedError('unknown-segment', `segment ${segmentId} is not held here`, this.lastIndex);
        throw new ReplicaRejectedError('segment-mismatch', `segment ${segmentId} is sealed here at ${record.lastIndex}, not ${lastIndex}`, record.lastIndex);
      }
      if (active.lastIndex < lastIndex) {
        throw new ReplicaRejectedError('missing-entries', `segment ${segmentId} holds up to ${active.lastIndex} here, cannot seal at ${lastIndex}`, active.lastIndex);
      }
      if (active.lastIndex > lastIndex) await this.truncateActive(lastIndex);
      await this.sealActive();
      return this.segments[this.segments.length - 1] as SegmentRecord;
    });
  }

  /** Cuts the open segment after lastIndex, keeping the cut bytes in quarantine. */
  private async truncateActive(lastIndex: number): Promise<void> {
    const active = this.active as ActiveSegment;
    const readIndex = await this.readIndexFor(this.activeRecord());
    const slot = lastIndex - active.firstIndex;
    const cut = slot < 0 ? SEGMENT_HEADER_BYTES : (readIndex.starts[slot] ?? -1) + (readIndex.lengths[slot] ?? 0);
    if (cut < SEGMENT_HEADER_BYTES) throw new WalError(`cannot locate the end of entry ${lastIndex} to truncate after it`);
    const cutBytes = await readRange(active.handle, cut, active.byteLength - cut);
    await quarantineBytes(this.layout, `${segmentFileName(active.segmentId)}.${this.options.clock.nowMs()}.unacknowledged-after-${lastIndex}`, cutBytes);
    // The lowered state is made durable in the catalog before the file shrinks: a crash between
    // the two then finds a file longer than its checkpoint (the cut frames follow on and are
    // taken back, as before the seal began), never one shorter than what was synced.
    const analysis = await analyzeSegmentHandle(active.handle, active.segmentId, cut, { entryBytesMax: this.settings.entryBytesMax });
    active.byteLength = cut;
    active.lastIndex = analysis.lastIndex;
    active.indexCount = analysis.indexCount;
    active.aggregate = analysis.aggregate;
    markDurable(active);
    readIndex.starts.length = Math.max(0, slot + 1);
    readIndex.lengths.length = Math.max(0, slot + 1);
    readIndex.checkWords.length = Math.max(0, slot + 1);
    await this.writeCatalog();
    await active.handle.truncate(cut);
    await active.handle.sync();
    this.logger.warn({ log: this.settings.logName, segment: active.segmentId, entryIndex: lastIndex + 1, byteLength: cutBytes.byteLength }, 'cut unacknowledged entries before sealing');
  }

  // -------------------------------------------------------------------------------------------
  // Online repair of a sealed segment. Appends only ever touch the open segment, so a sealed one
  // can be rebuilt and swapped in (temp file, fsync, rename) while the store keeps serving every
  // other segment; reads of this one verify checksums as always, and fail over to replicas.

  /** Checks a sealed segment against its record (etcd's, in a cluster) without changing it. */
  async checkSealedSegment(segmentId: number, expected?: SegmentExpectation): Promise<SegmentInspection> {
    if (this.closed) throw new StoreClosedError();
    if (this.active?.segmentId === segmentId) throw new WalError(`segment ${segmentId} is open; only sealed segments are checked against a record`);
    const local = this.segments.find((r) => r.segmentId === segmentId);
    if (!local && !expected) throw new WalError(`segment ${segmentId} is not held here`);
    const record: SegmentRecord = expected
      ? {
          segmentId,
          firstIndex: expected.firstIndex,
          lastIndex: expected.lastIndex,
          indexCount: expected.indexCount,
          byteLength: local?.byteLength ?? 0,
          aggregateChecksum: expected.aggregateChecksum ?? local?.aggregateChecksum ?? AGGREGATE_EMPTY,
          state: 'sealed',
          createdMs: local?.createdMs ?? 0,
        }
      : (local as SegmentRecord);
    const path = this.layout.segmentPath(segmentId);
    const analysis = (await exists(this.layout.disk, path)) ? await analyzeSegmentFile(this.layout.disk, path, segmentId, { entryBytesMax: this.settings.entryBytesMax, firstIndexHint: record.firstIndex }) : undefined;
    return inspectSegment({ log: this.settings.logName, layout: this.layout, segmentId, path, record, analysis, isLast: false });
  }

  async repairSealedSegment(segmentId: number, options: OnlineRepairOptions): Promise<SegmentRepair> {
    const inspection = await this.checkSealedSegment(segmentId, options.expected);
    const a = inspection.analysis;
    const expectedAggregate = options.expected?.aggregateChecksum;
    // Every entry intact (header and frames), yet not the contents the record says: no entry of
    // this copy can be trusted, however self-consistent.
    const intactButWrong =
      a !== undefined && a.header !== undefined && a.ranges.length === 0 && expectedAggregate !== undefined && a.aggregate !== expectedAggregate;
    if (options.expected && options.strategy !== 'halt' && inspection.findings.length > 0 && (intactButWrong || inspection.findings.every((f) => f.kind === 'bad-catalog'))) {
      return this.replaceWholeSegment(segmentId, options.expected, options);
    }
    if (inspection.findings.length === 0) {
      const local = this.segments.find((r) => r.segmentId === segmentId);
      const expectedAggregateOk = options.expected?.aggregateChecksum === undefined || local?.aggregateChecksum === options.expected.aggregateChecksum;
      if (!options.dryRun && options.expected && (!local || local.lastIndex !== options.expected.lastIndex || !expectedAggregateOk)) {
        // The file is right but the catalog still describes an older copy (a crash between a
        // whole-copy swap and its catalog write): take the file in again.
        await this.reloadSealedSegment(segmentId);
        return { segment: segmentId, decision: 'keep', outcome: 'done', repaired: [], lost: [], truncated: [], bytesWritten: 0, detail: 'segment file verified against its record; the catalog entry was stale and is rewritten' };
      }
      return { segment: segmentId, decision: 'keep', outcome: 'done', repaired: [], lost: [], truncated: [], bytesWritten: 0, detail: 'segment verified against its record: nothing to repair' };
    }
    if (options.countDamage !== false) this.metrics.corrupted_segments += 1;
    for (const finding of inspection.findings) this.reportFinding(finding, false);
    const ctx: RepairContext = {
      layout: this.layout,
      settings: this.settings,
      recovery: { ...this.recovery, repairStrategy: options.strategy },
      sources: [...options.sources, new LocalBackupSource(this.layout, this.recovery.backupRetentionCount, this.settings.entryBytesMax)],
      logger: this.logger,
      metrics: this.metrics,
      clock: this.options.clock,
      tornWindowBytes: tornWindowBytesOf(this.options.groupCommitBytesMax, this.settings.entryBytesMax),
      allowSegmentGaps: this.options.allowSegmentGaps,
      ...(options.heldElsewhere ? { heldElsewhere: options.heldElsewhere } : {}),
    };
    const result = await repairSegmentWithRetries(ctx, inspection, { strategy: options.strategy, dryRun: options.dryRun });
    if (!options.dryRun && result.outcome === 'done') await this.reloadSealedSegment(segmentId);
    return result;
  }

  /**
   * Replaces a copy whose intact bytes are not what the record says (a lying or stale copy) by a
   * whole copy that matches the record. The local copy is moved to quarantine only once such a
   * replacement is in hand: if no source has one, the copy stays (and is reported), because
   * copies that agree with each other but not with the record may mean the record is wrong.
   */
  private async replaceWholeSegment(segmentId: number, expected: SegmentExpectation, options: OnlineRepairOptions): Promise<SegmentRepair> {
    const disk = this.layout.disk;
    const started = this.options.clock.monotonicMs();
    const base = { segment: segmentId, repaired: [], lost: [], truncated: [] } as const;
    if (options.countDamage !== false) this.metrics.corrupted_segments += 1;
    for (const source of options.sources) {
      const path = await source.fetchSegmentFile(segmentId, expected).catch(() => undefined);
      if (path === undefined) continue;
      const range = [{ first: expected.firstIndex, last: expected.lastIndex }];
      if (options.dryRun) return { ...base, decision: 'restore-file', outcome: 'planned', repaired: range, source: source.name, bytesWritten: 0, detail: `would replace the whole copy with ${source.name}'s, which matches the record` };
      // Copied, not moved: a source's file (a local backup) stays where it is.
      const temp = `${this.layout.segmentPath(segmentId)}${TEMP_SUFFIX}`;
      await disk.copyFile(path, temp);
      await syncFile(disk, temp);
      // The old copy is linked into quarantine and the new one renamed over it: at every instant
      // the segment's name holds one whole copy, old or new (a crash never leaves neither).
      const quarantinedAs = await quarantineFile(this.layout, this.layout.segmentPath(segmentId), 'disagrees-with-record', { keepOriginal: true, retention: Math.max(1, this.recovery.backupRetentionCount), now: this.options.clock.nowMs() });
      await disk.rename(temp, this.layout.segmentPath(segmentId));
      await disk.fsyncDir(this.layout.segmentsDir);
      await this.reloadSealedSegment(segmentId);
      this.metrics.recordAttempt('success', this.options.clock.monotonicMs() - started);
      this.metrics.entries_repaired += expected.lastIndex - expected.firstIndex + 1;
      this.logger.warn({ log: this.settings.logName, segment: segmentId, peer: source.name, quarantinedAs }, 'replaced a copy whose entries do not match the recorded aggregate');
      return { ...base, decision: 'restore-file', outcome: 'done', repaired: range, source: source.name, quarantinedAs, bytesWritten: 0, detail: `replaced the whole copy (its entries did not add up to the record) with ${source.name}'s` };
    }
    if (!options.dryRun) this.metrics.recordAttempt('failure', this.options.clock.monotonicMs() - started);
    return { ...base, decision: 'escalate', outcome: options.dryRun ? 'planned' : 'failed', bytesWritten: 0, detail: 'the copy does not add up to the recorded aggregate and no source holds one that does; left as it is' };
  }

  /**
   * Takes in a sealed segment after it was replaced: its record (from its trailer), its holes, and
   * a fresh read index, built here (one pass over the file, which also checks the entries against
   * the trailer's aggregate) so that the first read after a repair does not pay for it.
   */
  private async reloadSealedSegment(segmentId: number): Promise<void> {
    this.segmentVersions.set(segmentId, (this.segmentVersions.get(segmentId) ?? 0) + 1);
    this.readIndexBuilds.delete(segmentId); // a build still running reads the old file
    const cached = this.readIndexes.get(segmentId);
    this.readIndexes.delete(segmentId);
    if (cached) await retire(cached);
    const path = this.layout.segmentPath(segmentId);
    const handle = await this.layout.disk.open(path, 'r');
    let header: ReturnType<typeof decodeSegmentHeader>;
    let trailer: ReturnType<typeof decodeTrailer>;
    let size: number;
    try {
      size = await handle.byteLength();
      header = decodeSegmentHeader(await readRange(handle, 0, SEGMENT_HEADER_BYTES));
      trailer = decodeTrailer(await readRange(handle, Math.max(0, size - TRAILER_BYTES), TRAILER_BYTES));
    } finally {
      await handle.close();
    }
    if (!trailer.ok || !header.ok) throw new WalError(`segment ${segmentId} has no valid header or trailer after its repair`);
    const t = trailer.trailer;
    const record: SegmentRecord = { segmentId, firstIndex: t.firstIndex, lastIndex: t.lastIndex, indexCount: t.indexCount, byteLength: size, aggregateChecksum: t.aggregateChecksum, state: 'sealed', createdMs: header.header.createdMs };
    const at = this.segments.findIndex((r) => r.segmentId === segmentId);
    if (at >= 0) this.segments[at] = record;
    else {
      this.segments.push(record);
      this.segments.sort((a, b) => a.segmentId - b.segmentId);
    }
    const index = await this.readIndexFor(record);
    const holes: HoleRecord[] = [];
    index.lengths.forEach((length, slot) => {
      if (length !== 0 || (index.starts[slot] ?? -1) < 0) return;
      const first = t.firstIndex + slot;
      const last = holes[holes.length - 1];
      if (last && last.firstIndex + last.count === first) holes[holes.length - 1] = { ...last, count: last.count + 1 };
      else holes.push({ segmentId, firstIndex: first, count: 1 });
    });
    this.holes = [...this.holes.filter((h) => h.segmentId !== segmentId), ...holes].sort((a, b) => a.firstIndex - b.firstIndex);
    await this.writeCatalog();
  }


  /**
   * Replica mode: puts a whole sealed segment file (fetched from a replica) in place. The file
   * is verified first (intact, sealed, named as this segment, and matching `expected` when
   * given); the segment must not overlap one held already, nor come after the open one.
   */
  async installSealedSegment(segmentId: number, sourcePath: string, expected?: SegmentExpectation): Promise<SegmentRecord> {
    if (this.closed) throw new StoreClosedError();
    // Synced before it is verified and renamed in: what was checked is what a crash leaves.
    await syncFile(this.layout.disk, sourcePath);
    const analysis = await analyzeSegmentFile(this.layout.disk, sourcePath, segmentId, { entryBytesMax: this.settings.entryBytesMax });
    const trailer = analysis.trailer;
    if (!isClean(analysis) || !trailer || (expected && !matchesExpectation(analysis, expected))) {
      throw new ReplicaRejectedError('bad-frame', `the copy of segment ${segmentId} does not verify`, this.lastIndex);
    }
    // Checked and put in place in queue order, so no write or seal runs between the check and
    // the rename, and the catalog is written from durable state only.
    return this.exclusive(async () => {
      if (this.segmentRecord(segmentId)) throw new ReplicaRejectedError('segment-mismatch', `segment ${segmentId} is held here already`, this.lastIndex);
      if (this.active && this.active.segmentId < segmentId) throw new ReplicaRejectedError('segment-mismatch', `segment ${this.active.segmentId} is still open here`, this.lastIndex);
      const overlaps = this.segments.some((r) => r.firstIndex <= trailer.lastIndex && trailer.firstIndex <= r.lastIndex && r.lastIndex >= r.firstIndex);
      const inOrder = this.segments.every((r) => (r.segmentId < segmentId ? r.lastIndex < trailer.firstIndex : r.firstIndex > trailer.lastIndex));
      if (overlaps || !inOrder || (!this.options.allowSegmentGaps && !(trailer.firstIndex === this.lastIndex + 1))) {
        throw new ReplicaRejectedError('index-gap', `segment ${segmentId} (${trailer.firstIndex}..${trailer.lastIndex}) does not fit the segments held here`, this.lastIndex);
      }
      const target = this.layout.segmentPath(segmentId);
      await this.layout.disk.rename(sourcePath, target);
      await this.layout.disk.fsyncDir(this.layout.segmentsDir);
      const record = sealedRecordOf(segmentId, analysis, trailer);
      // Held (listed, served) only once a durable catalog lists it: open finds a segment past a
      // gap only through the catalog, so one served before that could vanish in a crash.
      await this.writeCatalog([record]);
      this.segments.push(record);
      this.segments.sort((a, b) => a.segmentId - b.segmentId);
      this.scheduleBackup(segmentId);
      return record;
    });
  }

  /** What this store holds of a segment (the open one included), or undefined. */
  segmentRecord(segmentId: number): SegmentRecord | undefined {
    if (this.active?.segmentId === segmentId) return this.activeRecord();
    return this.segments.find((r) => r.segmentId === segmentId);
  }

  /** Waits for queued appends, seals the open segment, finishes backups, writes the catalog. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.flushing;
      if (this.failure === undefined) {
        if (this.active && this.options.sealOnClose) await this.sealActive();
        await this.backupChain;
        await this.writeCatalog();
      }
    } finally {
      await this.active?.handle.close().catch(() => undefined);
      for (const readIndex of this.readIndexes.values()) if (readIndex.handle !== this.active?.handle) await retire(readIndex);
      this.readIndexes.clear();
      await this.lock.release();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Appends

  private async flushLoop(): Promise<void> {
    try {
      while (this.queue.length > 0 && this.failure === undefined) {
        const head = this.queue[0] as Pending;
        if (head.kind === 'op') {
          this.queue.shift();
          try {
            await head.run();
            await this.maybeCheckpoint();
          } catch (error) {
            if (error instanceof WalError) {
              head.reject(error);
              continue;
            }
            head.reject(await this.afterWriteFailed(error));
          }
          continue;
        }
        let bytes = 0;
        let take = 0;
        for (let next = this.queue[0]; next?.kind === 'append' && (take === 0 || bytes + next.bytes <= this.options.groupCommitBytesMax); next = this.queue[take]) {
          bytes += next.bytes;
          take += 1;
        }
        const batch = this.queue.splice(0, take) as PendingAppend[];
        try {
          const results = await this.writeBatch(batch, bytes);
          batch.forEach((request, i) => request.resolve(results[i] as AppendResult));
          await this.maybeCheckpoint();
        } catch (error) {
          const failed = await this.afterWriteFailed(error);
          for (const request of batch) request.reject(failed);
        }
      }
      for (const request of this.queue.splice(0)) request.reject(new StoreFailedError({ cause: this.failure }));
    } finally {
      this.flushing = undefined;
    }
  }

  /**
   * After a write or fdatasync failed (EIO, ENOSPC): what was written since the last sync may be
   * anywhere between absent and whole on the medium, and after a failed fdatasync Linux may have
   * dropped the dirty pages while reads still show them and a later fdatasync succeeds
   * ("fsyncgate"). Retrying the sync and acknowledging would acknowledge bytes that may not be
   * there. So the unsynced tail is given up: the open segment is cut back to its last synced
   * length (which also drops the pages a read could still see) and that is synced, and the
   * in-memory state goes back to the durable one. Then the store keeps going (a full disk that
   * frees up needs no restart), once the catalog matches that state again. If any of that fails,
   * the store refuses writes until reopened.
   */
  private async afterWriteFailed(cause: unknown): Promise<WalError> {
    const active = this.active;
    let lastError: unknown;
    // Retrying is safe here, unlike retrying the failed fdatasync: each attempt cuts first, so
    // what its sync makes durable is the length, never bytes the disk may have dropped.
    for (let attempt = 0; attempt < ROLLBACK_ATTEMPTS_MAX; attempt += 1) {
      try {
        if (active) {
          await active.handle.truncate(active.byteLength);
          await active.handle.datasync();
          active.lastIndex = active.durable.lastIndex;
          active.indexCount = active.durable.indexCount;
          active.aggregate = active.durable.aggregate;
        }
        // The failed step may have been a catalog write (after a segment was created past a gap,
        // or sealed): open finds such a segment only through the catalog, so it is rewritten
        // from the state the store now serves before the store goes on.
        if (this.catalogStale) await this.writeCatalog();
        this.logger.error({ err: cause, log: this.settings.logName, segment: active?.segmentId, offsetBytes: active?.byteLength }, 'failed to write: the unsynced tail is given up and the store keeps going');
        return new StoreWriteError({ cause });
      } catch (error) {
        lastError = error;
      }
    }
    this.failure = cause;
    this.logger.error({ err: lastError, cause, log: this.settings.logName }, 'failed to write, then failed to roll back to the last sync: store refuses writes until reopened');
    return new StoreFailedError({ cause });
  }

  private async writeBatch(batch: readonly PendingAppend[], bytes: number): Promise<AppendResult[]> {
    const buf = Buffer.allocUnsafe(bytes);
    const timestampMs = this.options.clock.nowMs();
    const results: AppendResult[] = [];
    let cursor = 0;
    let pendingFrom = 0;
    let active = this.active ?? (await this.createSegment(this.lastIndex + 1));
    let indexed: IndexedFrames = { starts: [], lengths: [], checkWords: [] };
    for (const request of batch) {
      const firstIndex = active.lastIndex + 1;
      for (const payload of request.payloads) {
        const frameBytes = ENTRY_HEADER_BYTES + payload.byteLength;
        const segmentBytes = active.byteLength + (cursor - pendingFrom);
        if (active.indexCount > 0 && segmentBytes + frameBytes + TRAILER_BYTES > this.settings.segmentBytesMax) {
          await this.writeAndSync(active, buf.subarray(pendingFrom, cursor), indexed);
          pendingFrom = cursor;
          indexed = { starts: [], lengths: [], checkWords: [] };
          await this.sealActive();
          active = await this.createSegment(active.lastIndex + 1);
        }
        const index = active.lastIndex + 1;
        const checksum = encodeEntryInto(buf, cursor, { index, timestampMs, flags: 0, payload });
        indexed.starts.push(active.byteLength + (cursor - pendingFrom));
        indexed.lengths.push(frameBytes);
        indexed.checkWords.push(checkWordOf(checksum));
        active.aggregate = chainAggregate(active.aggregate, checksum);
        active.lastIndex = index;
        active.indexCount += 1;
        cursor += frameBytes;
      }
      results.push({ firstIndex: Math.min(firstIndex, active.lastIndex), lastIndex: active.lastIndex });
    }
    await this.writeAndSync(active, buf.subarray(pendingFrom, cursor), indexed);
    return results;
  }

  /**
   * Writes bytes at the end of the open segment and syncs them. Only then do they count: the
   * durable state moves up to the in-memory one, and their frames join the read index (a read
   * never sees a frame a crash could still take away, nor a slot whose bytes are not there).
   *
   * Never more than groupCommitBytesMax bytes between two fdatasyncs (a frame larger than that
   * alone): recovery relies on it to tell the write a crash tore from corruption (tornWindowBytesOf).
   * A larger batch is written in several write + fdatasync steps, split between frames.
   */
  private async writeAndSync(active: ActiveSegment, bytes: Buffer, indexed?: IndexedFrames): Promise<void> {
    let from = 0;
    for (const to of this.syncStepEnds(active, bytes.byteLength, indexed)) {
      let written = from;
      while (written < to) {
        const { bytesWritten } = await active.handle.write(bytes, written, to - written, active.byteLength + written);
        if (bytesWritten <= 0) throw new Error(`write of segment ${active.segmentId} made no progress`);
        written += bytesWritten;
      }
      await active.handle.datasync();
      from = to;
    }
    if (bytes.byteLength === 0) await active.handle.datasync();
    active.byteLength += bytes.byteLength;
    markDurable(active);
    const readIndex = this.readIndexes.get(active.segmentId);
    if (readIndex && indexed) {
      readIndex.starts.push(...indexed.starts);
      readIndex.lengths.push(...indexed.lengths);
      readIndex.checkWords.push(...indexed.checkWords);
    }
  }

  /**
   * Where each write + fdatasync step of writeAndSync ends (offsets into its bytes): frames in
   * order, as many as fit groupCommitBytesMax, at least one per step.
   */
  private syncStepEnds(active: ActiveSegment, byteLength: number, indexed: IndexedFrames | undefined): number[] {
    const stepBytesMax = this.options.groupCommitBytesMax;
    if (byteLength === 0) return [];
    if (byteLength <= stepBytesMax) return [byteLength];
    // Only frames are ever written in more than one step; anything else is a trailer (64 bytes).
    if (indexed === undefined) throw new Error(`bug: ${byteLength} bytes that are not frames exceed one write step`);
    const ends: number[] = [];
    let stepStart = 0;
    let frameEnd = 0;
    indexed.starts.forEach((start, i) => {
      const frameStart = start - active.byteLength;
      frameEnd = frameStart + (indexed.lengths[i] as number);
      if (frameStart > stepStart && frameEnd - stepStart > stepBytesMax) {
        ends.push(frameStart);
        stepStart = frameStart;
      }
    });
    if (frameEnd !== byteLength) throw new Error('bug: the frames indexed do not cover the bytes written');
    ends.push(byteLength);
    return ends;
  }

  private async createSegment(firstIndex: number, start?: SegmentStart): Promise<ActiveSegment> {
    const last = this.segments[this.segments.length - 1];
    const segmentId = start?.segmentId ?? (last?.segmentId ?? 0) + 1;
    const createdMs = start?.createdMs ?? this.options.clock.nowMs();
    const header = encodeSegmentHeader({ segmentId, firstIndex, createdMs, logId: logIdOf(this.settings.logName), logName: this.settings.logName });
    const path = this.layout.segmentPath(segmentId);
    await writeFileAtomic(this.layout.disk, path, this.layout.segmentsDir, header);
    const handle = await this.layout.disk.open(path, 'r+');
    const active = activeSegment({ segmentId, firstIndex, createdMs, handle, byteLength: SEGMENT_HEADER_BYTES, lastIndex: firstIndex - 1, indexCount: 0, aggregate: AGGREGATE_EMPTY });
    this.active = active;
    this.segments.push(this.activeRecord());
    this.readIndexes.set(segmentId, { handle, users: 0, retired: false, closed: false, starts: [], lengths: [], checkWords: [] });
    await this.evictReadIndexes();
    return active;
  }

  private activeRecord(): SegmentRecord {
    const a = this.active;
    if (!a) throw new Error('no active segment');
    const d = a.durable;
    return { segmentId: a.segmentId, firstIndex: a.firstIndex, lastIndex: d.lastIndex, indexCount: d.indexCount, byteLength: a.byteLength, aggregateChecksum: d.aggregate, state: 'open', createdMs: a.createdMs };
  }

  private async sealActive(): Promise<void> {
    const active = this.active;
    if (!active) return;
    const trailer = encodeTrailer({
      segmentId: active.segmentId,
      firstIndex: active.firstIndex,
      lastIndex: active.lastIndex,
      indexCount: active.indexCount,
      aggregateChecksum: active.aggregate,
      entriesByteLength: active.byteLength - SEGMENT_HEADER_BYTES,
    });
    await this.writeAndSync(active, trailer);
    const record: SegmentRecord = { ...this.activeRecord(), state: 'sealed' };
    this.segments[this.segments.length - 1] = record;
    this.active = undefined;
    // The read index (if cached) keeps reading through the segment's handle; else close it.
    if (this.readIndexes.get(active.segmentId)?.handle !== active.handle) await active.handle.close();
    await this.writeCatalog();
    this.logger.debug({ log: this.settings.logName, segment: active.segmentId, aggregate: checksumHex(active.aggregate) }, 'sealed segment');
    this.scheduleBackup(active.segmentId);
  }

  private scheduleBackup(segmentId: number): void {
    const copies = this.recovery.backupRetentionCount;
    if (copies === 0) return;
    this.backupChain = this.backupChain.then(async () => {
      try {
        await writeBackups(this.layout, segmentId, copies);
      } catch (error) {
        this.logger.error({ err: error, log: this.settings.logName, segment: segmentId }, 'failed to back up sealed segment; validate will report it and repair will copy it again');
      }
    });
  }

  private async maybeCheckpoint(): Promise<void> {
    const active = this.active;
    if (active && active.byteLength - active.checkpointedBytes >= this.options.checkpointBytes) {
      await this.writeCatalog();
    }
  }

  /** Catalog writes come from the append loop and from online repairs: one at a time. */
  private writeCatalog(adding: readonly SegmentRecord[] = []): Promise<void> {
    const next = this.catalogWrites.then(() => this.writeCatalogNow(adding));
    this.catalogWrites = next.then(
      () => void (this.catalogStale = false),
      () => void (this.catalogStale = true),
    );
    return next;
  }

  /** Writes the catalog of the state served now, plus `adding` (records not served yet). */
  private async writeCatalogNow(adding: readonly SegmentRecord[]): Promise<void> {
    if (this.active) this.active.checkpointedBytes = this.active.byteLength;
    this.generation += 1;
    const catalog: Catalog = {
      generation: this.generation,
      logName: this.settings.logName,
      logId: logIdOf(this.settings.logName),
      segmentBytesMax: this.settings.segmentBytesMax,
      entryBytesMax: this.settings.entryBytesMax,
      backupRetentionCount: this.recovery.backupRetentionCount,
      createdMs: this.createdMs(),
      segments: adding.length === 0 ? this.segmentRecords() : [...this.segmentRecords(), ...adding].sort((a, b) => a.segmentId - b.segmentId),
      holes: this.holes,
    };
    await writeFileAtomic(this.layout.disk, this.layout.catalogPath, this.layout.dataDir, encodeCatalog(catalog));
  }

  private createdMs(): number {
    return this.segments[0]?.createdMs ?? this.options.clock.nowMs();
  }

  // -------------------------------------------------------------------------------------------
  // Reads

  private findHole(index: number): HoleRecord | undefined {
    let lo = 0;
    let hi = this.holes.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const hole = this.holes[mid] as HoleRecord;
      if (index < hole.firstIndex) hi = mid - 1;
      else if (index >= hole.firstIndex + hole.count) lo = mid + 1;
      else return hole;
    }
    return undefined;
  }

  private findSegment(index: number): SegmentRecord | undefined {
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const record = this.segments[mid] as SegmentRecord;
      const last = this.active?.segmentId === record.segmentId ? this.active.durable.lastIndex : record.lastIndex;
      if (index < record.firstIndex) hi = mid - 1;
      else if (index > last) lo = mid + 1;
      else return record;
    }
    return undefined;
  }

  private async readIndexFor(record: SegmentRecord): Promise<ReadIndex> {
    const cached = this.readIndexes.get(record.segmentId);
    if (cached) {
      this.readIndexes.delete(record.segmentId); // re-insert: most recently used last
      this.readIndexes.set(record.segmentId, cached);
      return cached;
    }
    // Readers arriving while an index is built wait for that one build.
    const building = this.readIndexBuilds.get(record.segmentId);
    if (building) return building;
    const version = this.segmentVersions.get(record.segmentId) ?? 0;
    const build = this.buildReadIndex(record, version).finally(() => {
      if (this.readIndexBuilds.get(record.segmentId) === build) this.readIndexBuilds.delete(record.segmentId);
    });
    this.readIndexBuilds.set(record.segmentId, build);
    return build;
  }

  /**
   * Builds a segment's read index from its file, through a read handle of its own (the active
   * segment's writer handle may be closed by a seal meanwhile). For the open segment only synced
   * bytes are indexed, and since frames made durable during the scan are not pushed into an index
   * that is not installed yet, the scan runs again until it caught up with the durable end; the
   * check and the install happen with no await between them, so no durable frame is ever missed.
   */
  private async buildReadIndex(record: SegmentRecord, version: number): Promise<ReadIndex> {
    let handle: DiskFile;
    try {
      handle = await this.layout.disk.open(this.layout.segmentPath(record.segmentId), 'r');
    } catch (error) {
      if (isNotFound(error)) throw this.corrupt(record.firstIndex, record.segmentId, undefined, 'segment file is missing');
      throw error;
    }
    let built: { starts: number[]; lengths: number[]; checkWords: number[] } | undefined;
    let caughtUp = false;
    try {
      for (let attempt = 0; attempt < READ_INDEX_BUILD_ATTEMPTS_MAX && !caughtUp; attempt += 1) {
        const active = this.active?.segmentId === record.segmentId ? this.active : undefined;
        const size = active ? active.byteLength : await handle.byteLength();
        built = await this.scanForIndex(handle, active ? this.activeRecord() : record, size, active === undefined);
        const now = this.active?.segmentId === record.segmentId ? this.active : undefined;
        caughtUp = now === active && (now === undefined || now.byteLength === size);
      }
    } catch (error) {
      await handle.close().catch(() => undefined);
      throw error;
    }
    const readIndex: ReadIndex = { handle, users: 0, retired: false, closed: false, ...(built as { starts: number[]; lengths: number[]; checkWords: number[] }) };
    if ((this.segmentVersions.get(record.segmentId) ?? 0) !== version) {
      // The file was replaced (repaired) while this index was being built from the old one.
      await handle.close();
      return this.readIndexFor(this.segmentRecord(record.segmentId) ?? record);
    }
    if (!caughtUp) {
      // Appends kept landing during every scan: serve this read from the index as built, and
      // let the next read build again (never install an index that may miss durable frames).
      readIndex.retired = true;
      return readIndex;
    }
    this.readIndexes.set(record.segmentId, readIndex);
    await this.evictReadIndexes();
    return readIndex;
  }

  /** Keeps at most readIndexSegmentsMax indexes (and open files), least recently used out first. */
  private async evictReadIndexes(): Promise<void> {
    for (const [segmentId, index] of [...this.readIndexes.entries()]) {
      if (this.readIndexes.size <= this.options.readIndexSegmentsMax) return;
      if (segmentId === this.active?.segmentId) continue; // the open segment's index is kept
      // The list is a snapshot and retire() awaits: an entry replaced meanwhile (a repair's
      // reload) is not this one any more, and is neither removed nor left open untracked.
      if (this.readIndexes.get(segmentId) !== index) continue;
      this.readIndexes.delete(segmentId);
      await retire(index);
    }
  }

  /** One pass over a segment's first byteLength bytes: each intact frame's offset and length. */
  private async scanForIndex(handle: DiskFile, record: SegmentRecord, byteLength: number, sealed: boolean): Promise<{ starts: number[]; lengths: number[]; checkWords: number[] }> {
    const starts: number[] = [];
    const lengths: number[] = [];
    const checkWords: number[] = [];
    const analysis = await analyzeSegmentHandle(handle, record.segmentId, byteLength, {
      entryBytesMax: this.settings.entryBytesMax,
      firstIndexHint: record.firstIndex,
      onIntactFrame: (index, frame, offsetBytes) => {
        const slot = index - record.firstIndex;
        while (starts.length < slot) {
          starts.push(-1);
          lengths.push(0);
          checkWords.push(0);
        }
        const isHole = (frame.readUInt16LE(36) & FLAG_HOLE) !== 0;
        starts.push(offsetBytes);
        lengths.push(isHole ? 0 : frame.byteLength);
        checkWords.push(frame.readUInt32BE(12));
      },
    });
    for (const range of analysis.ranges) {
      this.reportFinding({ kind: range.kind, log: this.settings.logName, segment: record.segmentId, entryIndex: range.entryIndex ?? range.prevIndex + 1, offsetBytes: range.offsetBytes, byteLength: range.byteLength, detail: `found while reading: ${range.detail}` });
    }
    if (sealed && record.state === 'sealed' && analysis.ranges.length === 0 && analysis.aggregate !== record.aggregateChecksum) {
      // Entries that each verify but together are not the sealed segment that was recorded
      // (rewritten by something that recomputed checksums): serve none of them.
      starts.fill(-1);
      this.reportFinding({ kind: 'bad-trailer', log: this.settings.logName, segment: record.segmentId, detail: `found while reading: entries do not add up to the recorded aggregate ${checksumHex(record.aggregateChecksum)}` });
    }
    return { starts, lengths, checkWords };
  }

  private reportFinding(finding: Finding, countSegment = true): void {
    if (countSegment) this.metrics.corrupted_segments += 1;
    this.logger.error({ log: finding.log, segment: finding.segment, entryIndex: finding.entryIndex, offsetBytes: finding.offsetBytes, kind: finding.kind }, describeFinding(finding));
  }

  private corrupt(index: number, segment: number, offsetBytes: number | undefined, detail: string, decoded?: { header: { checksum: Checksum64 }; actualChecksum: Checksum64 }): CorruptEntryError {
    const finding: Finding = {
      kind: decoded ? 'checksum-mismatch' : 'bad-entry-header',
      log: this.settings.logName,
      segment,
      entryIndex: index,
      ...(offsetBytes === undefined ? {} : { offsetBytes }),
      ...(decoded ? { expectedChecksum: checksumHex(decoded.header.checksum), actualChecksum: checksumHex(decoded.actualChecksum) } : {}),
      file: `segments/${segmentFileName(segment)}`,
      detail,
    };
    this.reportFinding(finding);
    return new CorruptEntryError(index, finding);
  }
}

/** Attempts to cut the open segment back to its last sync after a failed write (afterWriteFailed). */
const ROLLBACK_ATTEMPTS_MAX = 3;

/** Scans of the open segment's read index before giving up on catching up with its appends. */
const READ_INDEX_BUILD_ATTEMPTS_MAX = 4;

/** Closes an index's handle now, or when the last read using it finishes. */
async function retire(readIndex: ReadIndex): Promise<void> {
  readIndex.retired = true;
  if (readIndex.users > 0 || readIndex.closed) return;
  readIndex.closed = true;
  await readIndex.handle.close().catch(() => undefined);
}

function activeSegment(fields: Omit<ActiveSegment, 'durable' | 'checkpointedBytes'>): ActiveSegment {
  return { ...fields, checkpointedBytes: fields.byteLength, durable: { lastIndex: fields.lastIndex, indexCount: fields.indexCount, aggregate: fields.aggregate } };
}

/** After a sync that covered everything written: the durable state catches up. */
function markDurable(active: ActiveSegment): void {
  active.durable = { lastIndex: active.lastIndex, indexCount: active.indexCount, aggregate: active.aggregate };
}

/** The catalog record of a sealed segment file, from its analysis. */
function sealedRecordOf(segmentId: number, analysis: SegmentAnalysis, trailer: Trailer): SegmentRecord {
  return {
    segmentId,
    firstIndex: trailer.firstIndex,
    lastIndex: trailer.lastIndex,
    indexCount: trailer.indexCount,
    byteLength: analysis.fileByteLength,
    aggregateChecksum: trailer.aggregateChecksum,
    state: 'sealed',
    createdMs: analysis.header?.createdMs ?? 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Recovery on open

/** The low 32 bits of an entry checksum: what a read index keeps per entry. */
function checkWordOf(checksum: Checksum64): number {
  return Number(checksum & 0xffffffffn);
}

async function prepareDir(layout: StoreLayout, create: boolean): Promise<void> {
  const dataDir = layout.dataDir;
  let info: DiskStat | undefined;
  try {
    info = await layout.disk.stat(dataDir);
  } catch (error) {
    throw new StoreNotFoundError(dataDir, { cause: error });
  }
  if (info === undefined) {
    if (!create) throw new StoreNotFoundError(dataDir);
    await layout.disk.mkdirp(dataDir);
  } else if (!info.isDirectory) {
    throw new StoreNotFoundError(dataDir);
  }
}

interface Recovered {
  readonly catalog: Catalog;
  readonly report: OpenReport;
  readonly active: ActiveSegment | undefined;
  readonly recovery: RecoveryConfig;
}

async function recover(layout: StoreLayout, options: ResolvedWalOptions, explicitBackups: boolean, logger: Logger, metrics: RecoveryMetrics): Promise<Recovered> {
  const started = options.clock.monotonicMs();
  const elapsed = (): number => options.clock.monotonicMs() - started;
  const read = await readCatalog(layout);
  const intent = await exists(layout.disk, layout.repairIntentPath);
  if (read.missing && !intent && !(await hasSegments(layout))) {
    const catalog: Catalog = { generation: 1, logName: options.logName, logId: logIdOf(options.logName), segmentBytesMax: options.segmentBytesMax, entryBytesMax: options.entryBytesMax, backupRetentionCount: options.recovery.backupRetentionCount, createdMs: options.clock.nowMs(), segments: [], holes: [] };
    await layout.disk.mkdirp(layout.segmentsDir);
    await writeFileAtomic(layout.disk, layout.catalogPath, layout.dataDir, encodeCatalog(catalog));
    return { catalog, recovery: options.recovery, report: { state: 'created', durationMs: elapsed(), segmentsScanned: 0, bytesScanned: 0, findings: [], tornTails: [], sealedSinceCheckpoint: [] }, active: undefined };
  }
  const settings: StoreSettings = read.catalog
    ? { logName: read.catalog.logName, segmentBytesMax: read.catalog.segmentBytesMax, entryBytesMax: read.catalog.entryBytesMax }
    : { logName: options.logName, segmentBytesMax: options.segmentBytesMax, entryBytesMax: options.entryBytesMax };
  const recorded = read.catalog?.backupRetentionCount;
  const recovery: RecoveryConfig = explicitBackups || recorded === undefined ? options.recovery : { ...options.recovery, backupRetentionCount: recorded };
  const ctx: RepairContext = {
    layout,
    settings,
    recovery,
    sources: [new LocalBackupSource(layout, recovery.backupRetentionCount, settings.entryBytesMax), ...options.sources],
    logger,
    metrics,
    clock: options.clock,
    tornWindowBytes: tornWindowBytesOf(options.groupCommitBytesMax, settings.entryBytesMax),
    allowSegmentGaps: options.allowSegmentGaps,
  };
  if (!read.catalog || intent) {
    logger.warn({ log: settings.logName, reason: intent ? 'an interrupted repair' : read.problem }, 'running a full repair on open');
    return fullRepair(ctx, options, elapsed);
  }
  const tail = await recoverTail(ctx, read.catalog);
  if (tail === 'corrupt') return fullRepair(ctx, options, elapsed);
  return { catalog: tail.catalog, active: tail.active, recovery, report: { ...tail.report, durationMs: elapsed() } };
}

async function hasSegments(layout: StoreLayout): Promise<boolean> {
  const { listSegmentFiles } = await import('./inspect.js');
  return (await listSegmentFiles(layout)).ids.length > 0;
}

async function fullRepair(ctx: RepairContext, options: ResolvedWalOptions, elapsed: () => number): Promise<Recovered> {
  const report = await repairStore(ctx, { strategy: options.recovery.repairStrategy, dryRun: false });
  const blocking = report.remaining;
  if (blocking.length > 0) {
    const advice = options.recovery.repairStrategy === 'halt'
      ? 'strategy is Halt; run `wal-recovery validate` and choose a repair strategy'
      : 'no verified copy of the damaged entries; run `wal-recovery repair --strategy skip|rollback` to give them up explicitly';
    throw new DamageFoundError(ctx.layout.dataDir, blocking, advice);
  }
  const read = await readCatalog(ctx.layout);
  if (!read.catalog) throw new WalError(`catalog unreadable after repair: ${read.problem ?? 'unknown'}`);
  const reopened = await recoverTail(ctx, read.catalog);
  if (reopened === 'corrupt') throw new DamageFoundError(ctx.layout.dataDir, report.findings, 'repair did not converge');
  return { catalog: reopened.catalog, active: reopened.active, recovery: ctx.recovery, report: { state: 'repaired', durationMs: elapsed(), segmentsScanned: 0, bytesScanned: 0, findings: report.findings, tornTails: reopened.report.tornTails, repair: report, sealedSinceCheckpoint: reopened.report.sealedSinceCheckpoint } };
}

type TailResult = { catalog: Catalog; active: ActiveSegment | undefined; report: Omit<OpenReport, 'durationMs'> } | 'corrupt';

/**
 * Scans only what may have changed since the catalog was written: the open segment from its
 * checkpoint, and segments created after it. Everything before was synced and recorded.
 */
async function recoverTail(ctx: RepairContext, catalog: Catalog): Promise<TailResult> {
  const segments = [...catalog.segments];
  const last = segments[segments.length - 1];
  const tail: Array<{ id: number; resume: SegmentRecord | undefined }> = [];
  if (last?.state === 'open') {
    segments.pop();
    tail.push({ id: last.segmentId, resume: last });
  }
  const disk = ctx.layout.disk;
  let probe = (last?.segmentId ?? 0) + 1;
  while (await exists(disk, ctx.layout.segmentPath(probe))) {
    tail.push({ id: probe, resume: undefined });
    probe += 1;
  }
  const leftoverTemp = `${ctx.layout.segmentPath(probe)}${TEMP_SUFFIX}`;
  if (await exists(disk, leftoverTemp)) await disk.rename(leftoverTemp, `${leftoverTemp}.abandoned`).catch(() => undefined);
  if (tail.length === 0) {
    return { catalog, active: undefined, report: { state: 'clean', segmentsScanned: 0, bytesScanned: 0, findings: [], tornTails: [], sealedSinceCheckpoint: [] } };
  }
  const findings: Finding[] = [];
  const tornTails: Array<{ segment: number; offsetBytes: number; byteLength: number; quarantinedAs: string }> = [];
  let bytesScanned = 0;
  const sealedSinceCheckpoint: number[] = [];
  let active: ActiveSegment | undefined;
  let expectedFirst = (segments[segments.length - 1]?.lastIndex ?? 0) + 1;
  for (let i = 0; i < tail.length; i += 1) {
    const { id, resume } = tail[i] as { id: number; resume: SegmentRecord | undefined };
    const path = ctx.layout.segmentPath(id);
    const size = (await fileByteLength(disk, path)) ?? -1;
    if (size < 0 || (resume && size < resume.byteLength)) return 'corrupt';
    const resumePoint = resume && resume.byteLength >= SEGMENT_HEADER_BYTES
      ? { offsetBytes: resume.byteLength, lastIndex: resume.lastIndex, indexCount: resume.indexCount, aggregate: resume.aggregateChecksum }
      : undefined;
    const found = await analyzeSegmentFile(disk, path, id, { entryBytesMax: ctx.settings.entryBytesMax, firstIndexHint: expectedFirst, ...(resumePoint ? { resume: resumePoint } : {}) });
    bytesScanned += size - (resumePoint?.offsetBytes ?? 0);
    const firstIndex = found.header?.firstIndex;
    if (firstIndex === undefined || !followsOn(firstIndex, expectedFirst, resume, ctx.allowSegmentGaps) || found.trailerProblem !== undefined) return 'corrupt';
    const isLastFile = i === tail.length - 1;
    const sealed = found.trailer !== undefined;
    let analysis = found;
    if (found.ranges.length > 0) {
      const window = { inOpenSegment: isLastFile && !sealed, syncedEndBytes: resumePoint?.offsetBytes ?? SEGMENT_HEADER_BYTES, tornWindowBytes: ctx.tornWindowBytes };
      const tornWrite = await tornWriteIn(disk, path, found, window);
      // Only damage that is all one torn write is cut here; any before it is the repair engine's.
      const atOpenTail = tornWrite?.rangeIndex === 0;
      const decision = decide({ headerOk: false, bodyOk: false, indexOk: false, atOpenTail, goodCopy: false, heldElsewhere: false, strategy: ctx.recovery.repairStrategy });
      if (tornWrite === undefined || decision !== 'truncate-torn-tail') return 'corrupt';
      const torn = await truncateTail(ctx, id, tornWrite.offsetBytes, size);
      analysis = analysisBefore(found, tornWrite.rangeIndex);
      if (analysis.goodEndOffsetBytes !== tornWrite.offsetBytes) throw new Error('bug: a torn write that begins where no intact frame ends');
      tornTails.push(torn);
      findings.push({ kind: 'torn', log: ctx.settings.logName, segment: id, entryIndex: analysis.lastIndex + 1, offsetBytes: torn.offsetBytes, byteLength: torn.byteLength, file: `segments/${segmentFileName(id)}`, detail: `torn write rolled back; ${torn.byteLength} bytes kept as quarantine/${torn.quarantinedAs}` });
    } else if (!sealed && !isLastFile) {
      return 'corrupt';
    }
    const record: SegmentRecord = {
      segmentId: id,
      firstIndex,
      lastIndex: analysis.lastIndex,
      indexCount: analysis.indexCount,
      byteLength: analysis.trailer ? size : analysis.goodEndOffsetBytes,
      aggregateChecksum: analysis.aggregate,
      state: sealed ? 'sealed' : 'open',
      createdMs: analysis.header?.createdMs ?? ctx.clock.nowMs(),
    };
    segments.push(record);
    if (sealed) sealedSinceCheckpoint.push(id);
    expectedFirst = analysis.lastIndex + 1;
    if (!sealed) {
      const handle = await disk.open(path, 'r+');
      active = activeSegment({ segmentId: id, firstIndex, createdMs: record.createdMs, handle, byteLength: record.byteLength, lastIndex: record.lastIndex, indexCount: record.indexCount, aggregate: record.aggregateChecksum });
    }
  }
  const holes = catalog.holes;
  const updated: Catalog = { ...catalog, generation: catalog.generation + 1, segments, holes };
  const changed = tornTails.length > 0 || tail.some((t) => t.resume === undefined);
  if (changed) await writeFileAtomic(disk, ctx.layout.catalogPath, ctx.layout.dataDir, encodeCatalog(updated));
  for (const finding of findings) ctx.logger.warn({ log: finding.log, segment: finding.segment, entryIndex: finding.entryIndex, offsetBytes: finding.offsetBytes, kind: finding.kind }, describeFinding(finding));
  return { catalog: updated, active, report: { state: 'recovered-tail', segmentsScanned: tail.length, bytesScanned, findings, tornTails, sealedSinceCheckpoint } };
}

/**
 * Whether a segment of the tail starting at firstIndex fits where it was found: the catalog's
 * open record (resume) names its first index, and it follows on from the segment before it; in
 * replica mode it may also start later (the segments between are held by other nodes).
 */
function followsOn(firstIndex: number, expectedFirst: number, resume: SegmentRecord | undefined, allowSegmentGaps: boolean): boolean {
  if (resume && firstIndex !== resume.firstIndex) return false;
  return firstIndex === expectedFirst || (allowSegmentGaps && firstIndex > expectedFirst);
}

async function tornWriteIn(disk: Disk, path: string, analysis: SegmentAnalysis, window: LastWriteWindow): Promise<TornWrite | undefined> {
  if (!window.inOpenSegment) return undefined;
  const handle = await disk.open(path, 'r');
  try {
    return await findTornWrite(handle, analysis, window);
  } finally {
    await handle.close();
  }
}

async function truncateTail(ctx: RepairContext, segmentId: number, cutOffsetBytes: number, sizeBytes: number): Promise<{ segment: number; offsetBytes: number; byteLength: number; quarantinedAs: string }> {
  const path = ctx.layout.segmentPath(segmentId);
  const handle = await ctx.layout.disk.open(path, 'r+');
  try {
    const torn = await readRange(handle, cutOffsetBytes, sizeBytes - cutOffsetBytes);
    const quarantinedAs = await quarantineBytes(ctx.layout, `${segmentFileName(segmentId)}.${ctx.clock.nowMs()}.torn-at-${cutOffsetBytes}`, torn);
    await handle.truncate(cutOffsetBytes);
    await handle.sync();
    ctx.metrics.torn_tails_truncated += 1;
    await ctx.layout.disk.fsyncDir(ctx.layout.segmentsDir);
    return { segment: segmentId, offsetBytes: cutOffsetBytes, byteLength: sizeBytes - cutOffsetBytes, quarantinedAs };
  } finally {
    await handle.close();
  }
}
