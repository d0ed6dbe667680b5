// Online repair of a sealed segment: check it against its record (etcd's, in a cluster), repair
// it through the repair engine (src/wal/repair.ts) or replace a whole copy that does not match
// the record, then take the new file in (record, holes, read index). Appends only ever touch the
// open segment, so a sealed one can be rebuilt and swapped in while the store keeps serving
// every other segment; reads of this one verify checksums as always, and fail over to replicas.
//
// Fault model: the process may die at any instant. A replacement file is written to a temp
// file and synced; the old copy is hard-linked into quarantine before a rename puts the new one
// in place, so the segment's name always holds one whole copy, old or new. A crash between the
// swap and the catalog write leaves a stale catalog record: the next check finds the file right
// and the record wrong, and takes the file in again. A copy that agrees with itself but not with
// the record is replaced only by a copy that matches the record; never by nothing.
import { type RepairStrategy, type SegmentRepair, haltsOnCorruption } from '../recovery/index.js';
import { AGGREGATE_EMPTY, type Checksum64, checksumHex } from './checksum.js';
import type { HoleRecord, SegmentRecord } from './catalog.js';
import { analyzeSegmentFile } from './analyze.js';
import { ReplicaRejectedError, StoreClosedError, WalError } from './errors.js';
import { TEMP_SUFFIX, exists, readRange } from './files.js';
import { SEGMENT_HEADER_BYTES, TRAILER_BYTES, decodeSegmentHeader, decodeTrailer, encodeTrailer } from './format.js';
import { type SegmentInspection, inspectSegment } from './inspect.js';
import { tornWindowBytesOf } from './options.js';
import type { ReadIndexCache } from './read-index.js';
import { type RepairContext, repairSegmentWithRetries } from './repair.js';
import { putSegmentCopyInPlace, verifySegmentCopy } from './segment-files.js';
import { type GoodCopySource, type SegmentExpectation, LocalBackupSource } from './sources.js';
import type { StoreState } from './store-state.js';

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

export class SealedSegmentRepair {
  constructor(
    private readonly state: StoreState,
    private readonly readIndexes: ReadIndexCache,
  ) {}

  /** Checks a sealed segment against its record (etcd's, in a cluster) without changing it. */
  async check(segmentId: number, expected?: SegmentExpectation): Promise<SegmentInspection> {
    const state = this.state;
    if (state.closed) throw new StoreClosedError();
    if (state.active?.segmentId === segmentId) throw new WalError(`segment ${segmentId} is open; only sealed segments are checked against a record`);
    const local = state.segments.find((r) => r.segmentId === segmentId);
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
    const path = state.layout.segmentPath(segmentId);
    const analysis = (await exists(state.layout.disk, path)) ? await analyzeSegmentFile(state.layout.disk, path, segmentId, { entryBytesMax: state.settings.entryBytesMax, firstIndexHint: record.firstIndex }) : undefined;
    return inspectSegment({ log: state.settings.logName, layout: state.layout, segmentId, path, record, analysis, isLast: false });
  }

  async repair(segmentId: number, options: OnlineRepairOptions): Promise<SegmentRepair> {
    const state = this.state;
    const inspection = await this.check(segmentId, options.expected);
    const a = inspection.analysis;
    const expectedAggregate = options.expected?.aggregateChecksum;
    // Every entry intact (header and frames), yet not the contents the record says: no entry of
    // this copy can be trusted, however self-consistent.
    const intactButWrong =
      a !== undefined && a.header !== undefined && a.ranges.length === 0 && expectedAggregate !== undefined && a.aggregate !== expectedAggregate;
    if (options.expected && !haltsOnCorruption(options.strategy) && inspection.findings.length > 0 && (intactButWrong || inspection.findings.every((f) => f.kind === 'bad-catalog'))) {
      return this.replaceWholeSegment(segmentId, options.expected, options);
    }
    if (inspection.findings.length === 0) return this.keepVerified(segmentId, options);
    if (options.countDamage !== false) state.metrics.corrupted_segments += 1;
    for (const finding of inspection.findings) state.reportFinding(finding, false);
    const ctx: RepairContext = {
      layout: state.layout,
      settings: state.settings,
      recovery: state.recovery,
      sources: [...options.sources, new LocalBackupSource(state.layout, state.recovery.backupRetentionCount, state.settings.entryBytesMax)],
      logger: state.logger,
      metrics: state.metrics,
      clock: state.options.clock,
      tornWindowBytes: tornWindowBytesOf(state.options.groupCommitBytesMax, state.settings.entryBytesMax),
      allowSegmentGaps: state.options.allowSegmentGaps,
      ...(options.heldElsewhere ? { heldElsewhere: options.heldElsewhere } : {}),
    };
    const result = await repairSegmentWithRetries(ctx, inspection, { strategy: options.strategy, dryRun: options.dryRun });
    if (!options.dryRun && result.outcome === 'done') await this.reload(segmentId);
    return result;
  }

  /** The file verified against its record; the catalog entry is taken in again if it is stale. */
  private async keepVerified(segmentId: number, options: OnlineRepairOptions): Promise<SegmentRepair> {
    const local = this.state.segments.find((r) => r.segmentId === segmentId);
    const expectedAggregateOk = options.expected?.aggregateChecksum === undefined || local?.aggregateChecksum === options.expected.aggregateChecksum;
    if (!options.dryRun && options.expected && (!local || local.lastIndex !== options.expected.lastIndex || !expectedAggregateOk)) {
      // The file is right but the catalog still describes an older copy (a crash between a
      // whole-copy swap and its catalog write): take the file in again.
      await this.reload(segmentId);
      return { segment: segmentId, decision: 'keep', outcome: 'done', repaired: [], lost: [], truncated: [], bytesWritten: 0, detail: 'segment file verified against its record; the catalog entry was stale and is rewritten' };
    }
    return { segment: segmentId, decision: 'keep', outcome: 'done', repaired: [], lost: [], truncated: [], bytesWritten: 0, detail: 'segment verified against its record: nothing to repair' };
  }

  /**
   * Replaces a copy whose intact bytes are not what the record says (a lying or stale copy) by a
   * whole copy that matches the record. The local copy is moved to quarantine only once such a
   * replacement is in hand: if no source has one, the copy stays (and is reported), because
   * copies that agree with each other but not with the record may mean the record is wrong.
   */
  private async replaceWholeSegment(segmentId: number, expected: SegmentExpectation, options: OnlineRepairOptions): Promise<SegmentRepair> {
    const state = this.state;
    const clock = state.options.clock;
    const started = clock.monotonicMs();
    const base = { segment: segmentId, repaired: [], lost: [], truncated: [] } as const;
    if (options.countDamage !== false) state.metrics.corrupted_segments += 1;
    for (const source of options.sources) {
      const path = await source.fetchSegmentFile(segmentId, expected).catch(() => undefined);
      if (path === undefined) continue;
      const range = [{ first: expected.firstIndex, last: expected.lastIndex }];
      if (options.dryRun) {
        await source.release?.(path);
        return { ...base, decision: 'restore-file', outcome: 'planned', repaired: range, source: source.name, bytesWritten: 0, detail: `would replace the whole copy with ${source.name}'s, which matches the record` };
      }
      // Copied, not moved: a source's file (a local backup) stays where it is; a fetched one is
      // released (its temporary directory removed) once copied.
      const copy = await verifySegmentCopy(state.layout, segmentId, path, { how: 'copy', entryBytesMax: state.settings.entryBytesMax, expected }).finally(() => source.release?.(path));
      if (!copy) continue;
      const quarantineOld = { label: 'disagrees-with-record', retention: Math.max(1, state.recovery.backupRetentionCount), nowMs: clock.nowMs() };
      const quarantinedAs = await putSegmentCopyInPlace(state.layout, copy, quarantineOld);
      await this.reload(segmentId);
      state.scheduleBackup(segmentId); // the backups still hold the copy just replaced
      state.metrics.recordAttempt('success', clock.monotonicMs() - started);
      state.metrics.entries_repaired += expected.lastIndex - expected.firstIndex + 1;
      state.logger.warn({ log: state.settings.logName, segment: segmentId, peer: source.name, quarantinedAs }, 'replaced a copy whose entries do not match the recorded aggregate');
      return { ...base, decision: 'restore-file', outcome: 'done', repaired: range, source: source.name, ...(quarantinedAs ? { quarantinedAs } : {}), bytesWritten: 0, detail: `replaced the whole copy (its entries did not add up to the record) with ${source.name}'s` };
    }
    if (!options.dryRun) state.metrics.recordAttempt('failure', clock.monotonicMs() - started);
    return { ...base, decision: 'escalate', outcome: options.dryRun ? 'planned' : 'failed', bytesWritten: 0, detail: 'the copy does not add up to the recorded aggregate and no source holds one that does; left as it is' };
  }

  /**
   * A copy sealed past the point its segment was recorded at (members sealed at different points
   * by a failed recovery and the old writer; the entries past the lowest point were never
   * acknowledged): cut to lastIndex, once its entries up to there add up to expectedAggregate.
   * The cut copy is built beside the old one, verified entry by entry against the aggregate, and
   * swapped in whole (the old one linked into quarantine first): a crash leaves one whole copy,
   * old or new. Runs in the store's write queue (ReplicaWrites.sealSegment).
   */
  async cutSealedCopy(record: SegmentRecord, lastIndex: number, expectedAggregate: Checksum64): Promise<SegmentRecord> {
    const state = this.state;
    const { disk } = state.layout;
    const segmentId = record.segmentId;
    const path = state.layout.segmentPath(segmentId);
    // A crash between the swap and the catalog write leaves the cut file under a catalog that
    // still describes the old copy: the retried seal finds the file already cut and takes it in.
    if (await fileIsSealedAt(state, path, segmentId, lastIndex, expectedAggregate)) {
      await this.reload(segmentId);
      state.scheduleBackup(segmentId);
      return state.segments.find((r) => r.segmentId === segmentId) as SegmentRecord;
    }
    const readIndex = await this.readIndexes.forSegment(record);
    const slot = lastIndex - record.firstIndex;
    const start = readIndex.starts[slot] ?? -1;
    const cut = start + (readIndex.lengths[slot] ?? 0);
    const rejected = (why: string): ReplicaRejectedError => new ReplicaRejectedError('segment-mismatch', `segment ${segmentId} is sealed here at ${record.lastIndex} and cannot be cut to ${lastIndex}: ${why}`, record.lastIndex);
    if (start < SEGMENT_HEADER_BYTES || (readIndex.lengths[slot] ?? 0) === 0) throw rejected(`entry ${lastIndex} is not intact here`);
    // Its own temp name: a whole-copy repair of the same segment uses <segment>.tmp.
    const temp = `${path}.cut${TEMP_SUFFIX}`;
    await disk.copyFile(path, temp);
    const handle = await disk.open(temp, 'r+');
    try {
      await handle.truncate(cut);
      const trailer = encodeTrailer({ segmentId, firstIndex: record.firstIndex, lastIndex, indexCount: slot + 1, aggregateChecksum: expectedAggregate, entriesByteLength: cut - SEGMENT_HEADER_BYTES });
      await handle.write(trailer, 0, trailer.byteLength, cut);
    } finally {
      await handle.close();
    }
    // Synced and every entry re-read and chained: the aggregate must be what the entries add up to.
    const expected = { segmentId, firstIndex: record.firstIndex, lastIndex, indexCount: slot + 1, aggregateChecksum: expectedAggregate };
    const copy = await verifySegmentCopy(state.layout, segmentId, temp, { how: 'move', entryBytesMax: state.settings.entryBytesMax, expected });
    if (!copy) {
      await disk.remove(temp);
      throw rejected(`its entries up to there do not add up to the recorded aggregate ${checksumHex(expectedAggregate)}`);
    }
    const quarantinedAs = await putSegmentCopyInPlace(state.layout, copy, { label: `sealed-past-record-${lastIndex}`, retention: Math.max(1, state.recovery.backupRetentionCount), nowMs: state.options.clock.nowMs() });
    await this.reload(segmentId);
    state.scheduleBackup(segmentId); // the backups still hold the entries past the point
    state.logger.warn({ log: state.settings.logName, segment: segmentId, from: record.lastIndex, to: lastIndex, quarantinedAs }, 'cut a sealed copy to the point its segment was recorded at; the entries past it were never acknowledged');
    return state.segments.find((r) => r.segmentId === segmentId) as SegmentRecord;
  }

  /**
   * Takes in a sealed segment after it was replaced: its record (from its trailer), its holes, and
   * a fresh read index, built here (one pass over the file, which also checks the entries against
   * the trailer's aggregate) so that the first read after a repair does not pay for it.
   */
  async reload(segmentId: number): Promise<void> {
    const state = this.state;
    await this.readIndexes.invalidate(segmentId);
    const path = state.layout.segmentPath(segmentId);
    const handle = await state.layout.disk.open(path, 'r');
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
    state.putSealedRecord(record);
    const index = await this.readIndexes.forSegment(record);
    const holes: HoleRecord[] = [];
    index.lengths.forEach((length, slot) => {
      if (length !== 0 || (index.starts[slot] ?? -1) < 0) return;
      const first = t.firstIndex + slot;
      const last = holes[holes.length - 1];
      if (last && last.firstIndex + last.count === first) holes[holes.length - 1] = { ...last, count: last.count + 1 };
      else holes.push({ segmentId, firstIndex: first, count: 1 });
    });
    state.holes = [...state.holes.filter((h) => h.segmentId !== segmentId), ...holes].sort((a, b) => a.firstIndex - b.firstIndex);
    await state.writeCatalog();
  }
}

/** Whether a segment file's own trailer says sealed at lastIndex with aggregate (its entries are checked on reload). */
async function fileIsSealedAt(state: StoreState, path: string, segmentId: number, lastIndex: number, aggregate: Checksum64): Promise<boolean> {
  const handle = await state.layout.disk.open(path, 'r');
  try {
    const size = await handle.byteLength();
    if (size < SEGMENT_HEADER_BYTES + TRAILER_BYTES) return false;
    const decoded = decodeTrailer(await readRange(handle, size - TRAILER_BYTES, TRAILER_BYTES));
    return decoded.ok && decoded.trailer.segmentId === segmentId && decoded.trailer.lastIndex === lastIndex && decoded.trailer.aggregateChecksum === aggregate;
  } finally {
    await handle.close();
  }
}
