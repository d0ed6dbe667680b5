// What a store holds in memory: the segment records, the holes, the open segment, and the
// catalog that makes them durable. Every mechanism of the store (write queue, segment writer,
// replica writes, online repair, read index) works on this one state; WalStore owns it.
//
// Fault model: the catalog is replaced atomically (temp, fsync, rename, fsync the directory), so
// a crash leaves the old or the new one. It is written only from durable state (the open
// segment's `durable` fields), never from what a write in flight may still lose. Writes of the
// catalog are serialized here; backups of sealed segments run one after another, and a failed
// backup is logged (validate reports it and repair copies it again), never fatal.
import type { Logger } from 'pino';
import type { DiskFile } from '../io/index.js';
import { type Finding, type RecoveryConfig, type RecoveryMetrics, describeFinding } from '../recovery/index.js';
import type { SegmentAggregate } from './aggregate.js';
import { type Catalog, type HoleRecord, type SegmentRecord, encodeCatalog } from './catalog.js';
import { type StoreLayout, writeFileAtomic } from './files.js';
import { logIdOf } from './format.js';
import type { ResolvedWalOptions, StoreSettings } from './options.js';
import { writeBackups } from './sources.js';

export interface ActiveSegment {
  readonly segmentId: number;
  readonly firstIndex: number;
  readonly createdMs: number;
  readonly handle: DiskFile;
  byteLength: number;
  lastIndex: number;
  indexCount: number;
  /** The running aggregate of the frames written (its format version is the segment's). */
  aggregate: SegmentAggregate;
  checkpointedBytes: number;
  /**
   * What the last completed fdatasync covers (byteLength above is always synced). lastIndex,
   * indexCount and aggregate run ahead while a write is in flight; reads, the catalog and the
   * answers to peers use only this, so nothing is served or recorded before it is durable.
   */
  durable: { lastIndex: number; indexCount: number; aggregate: SegmentAggregate };
}

export function activeSegment(fields: Omit<ActiveSegment, 'durable' | 'checkpointedBytes'>): ActiveSegment {
  return { ...fields, checkpointedBytes: fields.byteLength, durable: { lastIndex: fields.lastIndex, indexCount: fields.indexCount, aggregate: fields.aggregate.copy() } };
}

/** After a sync that covered everything written: the durable state catches up. */
export function markDurable(active: ActiveSegment): void {
  active.durable = { lastIndex: active.lastIndex, indexCount: active.indexCount, aggregate: active.aggregate.copy() };
}

export class StoreState {
  segments: SegmentRecord[];
  holes: HoleRecord[];
  active: ActiveSegment | undefined;
  closed = false;
  private generation: number;
  private backupChain: Promise<void> = Promise.resolve();
  private catalogWrites: Promise<void> = Promise.resolve();
  /** The last catalog write failed: the catalog on disk may not list every segment held. */
  catalogStale = false;

  constructor(
    readonly layout: StoreLayout,
    readonly settings: StoreSettings,
    readonly options: ResolvedWalOptions,
    readonly logger: Logger,
    readonly metrics: RecoveryMetrics,
    /** RecoveryConfig in force: the options, with the backup count the store recorded unless overridden. */
    readonly recovery: RecoveryConfig,
    catalog: Catalog,
    active: ActiveSegment | undefined,
  ) {
    this.segments = [...catalog.segments];
    this.holes = [...catalog.holes];
    this.generation = catalog.generation;
    this.active = active;
  }

  /** The first index still in the log (1 for a new log). */
  get firstIndex(): number {
    return this.segments[0]?.firstIndex ?? 1;
  }

  /** The last durable index (0 for an empty log). */
  get lastIndex(): number {
    if (this.active) return this.active.durable.lastIndex;
    const last = this.segments[this.segments.length - 1];
    return last ? last.lastIndex : 0;
  }

  activeRecord(): SegmentRecord {
    const a = this.active;
    if (!a) throw new Error('no active segment');
    const d = a.durable;
    return { segmentId: a.segmentId, firstIndex: a.firstIndex, lastIndex: d.lastIndex, indexCount: d.indexCount, byteLength: a.byteLength, aggregateChecksum: d.aggregate.value(), aggregateState: d.aggregate, state: 'open', createdMs: a.createdMs };
  }

  segmentRecords(): readonly SegmentRecord[] {
    return this.segments.map((record) => (this.active && record.segmentId === this.active.segmentId ? this.activeRecord() : record));
  }

  /** What this store holds of a segment (the open one included), or undefined. */
  segmentRecord(segmentId: number): SegmentRecord | undefined {
    if (this.active?.segmentId === segmentId) return this.activeRecord();
    return this.segments.find((r) => r.segmentId === segmentId);
  }

  /** Puts a sealed segment's record in place of the one held (or among them, in id order). */
  putSealedRecord(record: SegmentRecord): void {
    const at = this.segments.findIndex((r) => r.segmentId === record.segmentId);
    if (at >= 0) {
      this.segments[at] = record;
      return;
    }
    this.segments.push(record);
    this.segments.sort((a, b) => a.segmentId - b.segmentId);
  }

  findHole(index: number): HoleRecord | undefined {
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

  findSegment(index: number): SegmentRecord | undefined {
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

  async maybeCheckpoint(): Promise<void> {
    const active = this.active;
    if (active && active.byteLength - active.checkpointedBytes >= this.options.checkpointBytes) {
      await this.writeCatalog();
    }
  }

  /** Catalog writes come from the append loop and from online repairs: one at a time. */
  writeCatalog(adding: readonly SegmentRecord[] = []): Promise<void> {
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
      createdMs: this.segments[0]?.createdMs ?? this.options.clock.nowMs(),
      segments: adding.length === 0 ? this.segmentRecords() : [...this.segmentRecords(), ...adding].sort((a, b) => a.segmentId - b.segmentId),
      holes: this.holes,
    };
    await writeFileAtomic(this.layout.disk, this.layout.catalogPath, this.layout.dataDir, encodeCatalog(catalog));
  }

  scheduleBackup(segmentId: number): void {
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

  /** Resolves when every backup scheduled so far is written (or has failed and been logged). */
  backupsDone(): Promise<void> {
    return this.backupChain;
  }

  reportFinding(finding: Finding, countSegment = true): void {
    if (countSegment) this.metrics.corrupted_segments += 1;
    this.logger.error({ log: finding.log, segment: finding.segment, entryIndex: finding.entryIndex, offsetBytes: finding.offsetBytes, kind: finding.kind }, describeFinding(finding));
  }
}
