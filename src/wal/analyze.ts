// Analysis of one segment file: reads it with the scanner and turns the items into what is
// intact, what is damaged and which indices each damaged range loses. Read-only; memory bounded
// by the scanner's window plus one record per damaged range.
import type { Disk } from '../io/index.js';
import type { FindingKind } from '../recovery/index.js';
import { type SegmentAggregate, CHAINED_AGGREGATE_VERSION, HASHED_LIST_AGGREGATE_VERSION, newAggregate, resumedAggregate } from './aggregate.js';
import { type Checksum64, checksumHex } from './checksum.js';
import type { SegmentRecord } from './catalog.js';
import {
  type FrameCursor,
  type SegmentHeader,
  type Trailer,
  FLAG_HOLE,
  FORMAT_VERSION,
  SEGMENT_HEADER_BYTES,
  decodeHolePayload,
  decodeSegmentHeader,
  ENTRY_HEADER_BYTES,
  TRAILER_BYTES,
} from './format.js';
import { readRange } from './files.js';
import { type DamageReason, type FrameVisitor, type ScanFile, scanFramesInPlace } from './scan.js';

/** What the analysis had established at one offset: everything intact before it. */
export interface AnalysisPoint {
  readonly lastIndex: number;
  readonly indexCount: number;
  readonly aggregate: SegmentAggregate;
  /** With a damaged header: the same point's aggregate of the other function (see Analyzer.alternate). */
  readonly alternate?: SegmentAggregate | undefined;
  readonly goodEndOffsetBytes: number;
  readonly intactEntryCount: number;
  readonly holeCount: number;
}

export interface DamageRange {
  readonly kind: FindingKind;
  readonly offsetBytes: number;
  readonly byteLength: number;
  /** The last intact index before the damage. */
  readonly prevIndex: number;
  /** The first intact index after it, once one was seen in this segment. */
  nextIndex: number | undefined;
  readonly entryIndex?: number;
  readonly expectedChecksum?: string;
  readonly actualChecksum?: string;
  readonly detail: string;
  /**
   * Bytes a crash can leave (a frame failing its checks, a file ending inside a frame), as
   * opposed to intact bytes out of place (a misplaced frame, skipped indices, a foreign trailer).
   */
  readonly crashShaped: boolean;
  /** The analysis as it stood where this range begins. */
  readonly before: AnalysisPoint;
}

export interface HoleFrame {
  readonly firstIndex: number;
  readonly count: number;
  readonly reason: string;
}

export interface ResumePoint {
  readonly offsetBytes: number;
  readonly lastIndex: number;
  readonly indexCount: number;
  /** The aggregate at the checkpoint: its value (format versions 1 and 2)... */
  readonly aggregate: Checksum64;
  /** ...or its running state (version 3; without it a version-3 segment is scanned from its start). */
  readonly aggregateState?: SegmentAggregate | undefined;
}

export interface SegmentAnalysis {
  readonly segmentId: number;
  readonly fileByteLength: number;
  readonly header: SegmentHeader | undefined;
  readonly headerProblem: string | undefined;
  /** The first index this segment should hold (from its header, else the hint, else its first entry). */
  readonly firstIndex: number | undefined;
  /** The last index held intact (entry or hole), or firstIndex - 1. */
  readonly lastIndex: number;
  readonly indexCount: number;
  readonly aggregate: Checksum64;
  /** The running aggregate of the intact frames (copy it before adding to it). */
  readonly aggregateState: SegmentAggregate;
  /**
   * The segment's format version: its header's, else (header damaged) the one whose aggregate
   * function matches the trailer or the catalog's checkpoint, else FORMAT_VERSION. A rebuild or
   * a rewritten header keeps it, so that the aggregate stays the one the replicas hold.
   */
  readonly formatVersion: number;
  /** Offset just past the last intact frame: where a torn tail is cut. */
  readonly goodEndOffsetBytes: number;
  readonly ranges: readonly DamageRange[];
  readonly holes: readonly HoleFrame[];
  readonly trailer: Trailer | undefined;
  readonly trailerOffsetBytes: number | undefined;
  /** Why the trailer disagrees with the entries before it, when it does. */
  readonly trailerProblem: string | undefined;
  readonly intactEntryCount: number;
}

export interface AnalyzeOptions {
  readonly entryBytesMax: number;
  /** The first index expected, when the header may be damaged (from the catalog or a neighbour). */
  readonly firstIndexHint?: number;
  /** Resume from a checkpoint instead of the start of the entry area. */
  readonly resume?: ResumePoint;
  /**
   * A recorded point of this segment (the catalog's), not resumed from: with a damaged header, the
   * aggregate function whose value matches it there is the segment's. Defaults to resume.
   */
  readonly checkpoint?: Pick<ResumePoint, 'offsetBytes' | 'aggregate' | 'aggregateState'>;
  /** Called for every intact entry frame, in order (view valid during the call only). */
  readonly onIntactFrame?: (index: number, frame: Buffer, offsetBytes: number) => void | Promise<void>;
}

class Analyzer implements FrameVisitor {
  lastIndex: number;
  indexCount: number;
  aggregate: SegmentAggregate;
  /**
   * A damaged header leaves the aggregate's function unknown: the chained one (versions 1 and 2)
   * runs beside the hashed list (3) until the trailer or the catalog's checkpoint tells them apart.
   */
  alternate: SegmentAggregate | undefined;
  /** The catalog's checkpoint (not resumed from): which functions' values matched it there. */
  private checkpointMatch: { primary: boolean; alternate: boolean } | undefined;
  goodEnd: number;
  firstIndex: number | undefined;
  intactEntryCount = 0;
  readonly ranges: DamageRange[] = [];
  readonly holes: HoleFrame[] = [];
  trailer: Trailer | undefined;
  trailerOffset: number | undefined;
  trailerProblem: string | undefined;

  constructor(
    firstIndex: number | undefined,
    private readonly segmentId: number,
    formatVersion: number,
    private readonly options: AnalyzeOptions,
    resume: ResumePoint | undefined,
    alternateVersion: number | undefined,
  ) {
    this.firstIndex = firstIndex;
    this.lastIndex = resume?.lastIndex ?? (firstIndex ?? 1) - 1;
    this.indexCount = resume?.indexCount ?? 0;
    this.aggregate = resume ? resumedAggregate(formatVersion, resume.aggregate, resume.aggregateState) : newAggregate(formatVersion);
    this.alternate = resume || alternateVersion === undefined ? undefined : newAggregate(alternateVersion);
    this.goodEnd = resume?.offsetBytes ?? SEGMENT_HEADER_BYTES;
  }

  /** Switches to the alternate function when the evidence names it and not the assumed one. */
  settleFunction(): void {
    const alternate = this.alternate;
    if (alternate === undefined) return;
    const trailer = this.trailer;
    const byTrailer = trailer !== undefined && this.ranges.length === 0 && trailer.aggregateChecksum === alternate.value() && trailer.aggregateChecksum !== this.aggregate.value();
    const byCheckpoint = trailer === undefined && this.checkpointMatch?.alternate === true && !this.checkpointMatch.primary;
    this.alternate = undefined;
    if (!byTrailer && !byCheckpoint) return;
    this.aggregate = alternate;
    for (const [i, range] of this.ranges.entries()) {
      if (range.before.alternate) this.ranges[i] = { ...range, before: { ...range.before, aggregate: range.before.alternate } };
    }
    if (byTrailer) {
      this.trailerProblem = undefined;
      if (trailer) this.checkTrailer(trailer, this.trailerOffset as number);
    }
  }

  private addRange(range: Omit<DamageRange, 'prevIndex' | 'nextIndex' | 'before'>): void {
    const before: AnalysisPoint = {
      lastIndex: this.lastIndex,
      indexCount: this.indexCount,
      aggregate: this.aggregate.copy(),
      alternate: this.alternate?.copy(),
      goodEndOffsetBytes: this.goodEnd,
      intactEntryCount: this.intactEntryCount,
      holeCount: this.holes.length,
    };
    this.ranges.push({ ...range, prevIndex: this.lastIndex, nextIndex: undefined, before });
  }

  private closeRanges(nextIndex: number): void {
    for (let i = this.ranges.length - 1; i >= 0; i -= 1) {
      const range = this.ranges[i];
      if (range === undefined || range.nextIndex !== undefined) break;
      range.nextIndex = nextIndex;
    }
  }

  visitDamage(offsetBytes: number, byteLength: number, reason: DamageReason): void {
    const kind: FindingKind = reason === 'after-trailer' ? 'trailing-garbage' : reason === 'bad-trailer' ? 'bad-trailer' : 'bad-entry-header';
    const detail =
      reason === 'truncated'
        ? 'the file ends inside a frame'
        : reason === 'after-trailer'
          ? 'bytes after the trailer'
          : reason === 'bad-trailer'
            ? 'trailer checksum mismatch'
            : 'no valid frame header here';
    this.addRange({ kind, offsetBytes, byteLength, detail, crashShaped: reason !== 'after-trailer' });
  }

  /** One entry frame, read from the scan's cursor in place (no object per intact frame). */
  visitEntry(frame: FrameCursor, offsetBytes: number): void | Promise<void> {
    const index = frame.index;
    const frameByteLength = frame.frameByteLength;
    if (!frame.bodyOk) {
      this.addRange({
        kind: 'checksum-mismatch',
        offsetBytes,
        byteLength: frameByteLength,
        entryIndex: index,
        expectedChecksum: checksumHex(frame.storedChecksum()),
        actualChecksum: checksumHex(frame.actualChecksum()),
        detail: 'entry checksum does not match its bytes',
        crashShaped: true,
      });
      return;
    }
    const isHole = (frame.flags & FLAG_HOLE) !== 0;
    const hole = isHole ? decodeHolePayload(frame.bytes.subarray(frame.at + ENTRY_HEADER_BYTES, frame.at + frameByteLength)) : undefined;
    if (isHole && hole === undefined) {
      this.addRange({ kind: 'bad-entry-header', offsetBytes, byteLength: frameByteLength, entryIndex: index, detail: 'malformed hole record', crashShaped: false });
      return;
    }
    const count = hole?.count ?? 1;
    if (this.firstIndex === undefined) {
      this.firstIndex = index;
      this.lastIndex = index - 1;
    }
    const expected = this.lastIndex + 1;
    if (index < expected) {
      this.addRange({
        kind: 'misplaced-entry',
        offsetBytes,
        byteLength: frameByteLength,
        entryIndex: index,
        detail: `intact entry ${index} where ${expected} belongs`,
        crashShaped: false,
      });
      return;
    }
    if (index > expected) {
      const open = this.ranges[this.ranges.length - 1];
      if (open === undefined || open.nextIndex !== undefined) {
        this.addRange({
          kind: 'index-gap',
          offsetBytes,
          byteLength: 0,
          entryIndex: expected,
          detail: `indices ${expected}..${index - 1} are missing`,
          crashShaped: false,
        });
      }
    }
    this.closeRanges(index);
    if (hole) this.holes.push({ firstIndex: index, count, reason: hole.reason });
    else this.intactEntryCount += 1;
    this.lastIndex = index + count - 1;
    this.indexCount += count;
    this.aggregate.addStored(frame.bytes, frame.at + 8);
    this.goodEnd = offsetBytes + frameByteLength;
    if (this.alternate) {
      this.alternate.addStored(frame.bytes, frame.at + 8);
      const checkpoint = this.options.checkpoint ?? this.options.resume;
      if (checkpoint && checkpoint.offsetBytes === this.goodEnd && this.ranges.length === 0 && checkpoint.aggregateState === undefined) {
        this.checkpointMatch = { primary: this.aggregate.value() === checkpoint.aggregate, alternate: this.alternate.value() === checkpoint.aggregate };
      }
    }
    const onIntactFrame = this.options.onIntactFrame;
    return onIntactFrame === undefined ? undefined : onIntactFrame(index, frame.frameView(), offsetBytes);
  }

  visitTrailer(trailer: Trailer, offsetBytes: number): void {
    if (trailer.segmentId !== this.segmentId) {
      // Another segment's trailer (a copied or misnamed file): its indices say nothing about this
      // segment, so it must not close the damaged ranges before it as losing nothing.
      this.addRange({ kind: 'bad-trailer', offsetBytes, byteLength: TRAILER_BYTES, detail: `trailer names segment ${trailer.segmentId}, the file name says ${this.segmentId}`, crashShaped: false });
      return;
    }
    this.trailer = trailer;
    this.trailerOffset = offsetBytes;
    this.closeRanges(trailer.lastIndex + 1);
    if (this.ranges.length > 0) return; // compared by the caller against other records
    this.checkTrailer(trailer, offsetBytes);
  }

  private checkTrailer(trailer: Trailer, offsetBytes: number): void {
    const problems: string[] = [];
    if (this.firstIndex !== undefined && trailer.firstIndex !== this.firstIndex) problems.push(`first index ${trailer.firstIndex} != ${this.firstIndex}`);
    if (trailer.lastIndex !== this.lastIndex) problems.push(`last index ${trailer.lastIndex} != ${this.lastIndex}`);
    if (trailer.indexCount !== this.indexCount) problems.push(`index count ${trailer.indexCount} != ${this.indexCount}`);
    const aggregate = this.aggregate.value();
    if (trailer.aggregateChecksum !== aggregate) problems.push(`aggregate ${checksumHex(trailer.aggregateChecksum)} != ${checksumHex(aggregate)}`);
    if (trailer.entriesByteLength !== offsetBytes - SEGMENT_HEADER_BYTES) problems.push('entry byte length disagrees');
    if (problems.length > 0) this.trailerProblem = `trailer disagrees with the entries: ${problems.join('; ')}`;
  }
}

export async function analyzeSegmentHandle(
  handle: ScanFile,
  segmentId: number,
  fileByteLength: number,
  options: AnalyzeOptions,
): Promise<SegmentAnalysis> {
  const headerBytes = await readRange(handle, 0, Math.min(SEGMENT_HEADER_BYTES, fileByteLength));
  const decoded = decodeSegmentHeader(headerBytes);
  let header = decoded.ok ? decoded.header : undefined;
  let headerProblem = decoded.ok ? undefined : decoded.reason;
  if (header && header.segmentId !== segmentId) {
    headerProblem = `header names segment ${header.segmentId}, the file name says ${segmentId}`;
    header = undefined;
  }
  // A damaged header leaves the version unknown: a checkpoint with a running aggregate state says
  // 3; else the current version is assumed while the chained function (versions 1 and 2, written
  // back as 2) runs beside it, and the trailer or the catalog's checkpoint decides (RECOVERY.md).
  const formatVersion = header?.formatVersion ?? FORMAT_VERSION;
  const alternateVersion = header === undefined && (options.checkpoint ?? options.resume)?.aggregateState === undefined ? CHAINED_AGGREGATE_VERSION : undefined;
  // A version-3 checkpoint without its running aggregate cannot be resumed: scan from the start.
  const resume = options.resume && (formatVersion < HASHED_LIST_AGGREGATE_VERSION || options.resume.aggregateState?.formatVersion === formatVersion) ? options.resume : undefined;
  const analyzer = new Analyzer(header?.firstIndex ?? options.firstIndexHint, segmentId, formatVersion, options, resume, alternateVersion);
  const start = resume?.offsetBytes ?? SEGMENT_HEADER_BYTES;
  if (fileByteLength > start) {
    await scanFramesInPlace(handle, { startOffsetBytes: start, endOffsetBytes: fileByteLength, entryBytesMax: options.entryBytesMax }, analyzer);
  }
  analyzer.settleFunction();
  return {
    segmentId,
    fileByteLength,
    header,
    headerProblem,
    firstIndex: analyzer.firstIndex,
    lastIndex: analyzer.lastIndex,
    indexCount: analyzer.indexCount,
    aggregate: analyzer.aggregate.value(),
    aggregateState: analyzer.aggregate,
    formatVersion: header?.formatVersion ?? analyzer.aggregate.formatVersion,
    goodEndOffsetBytes: analyzer.goodEnd,
    ranges: analyzer.ranges,
    holes: analyzer.holes,
    trailer: analyzer.trailer,
    trailerOffsetBytes: analyzer.trailerOffset,
    trailerProblem: analyzer.trailerProblem,
    intactEntryCount: analyzer.intactEntryCount,
  };
}

export async function analyzeSegmentFile(disk: Disk, path: string, segmentId: number, options: AnalyzeOptions): Promise<SegmentAnalysis> {
  const handle = await disk.open(path, 'r');
  try {
    const size = await handle.byteLength();
    return await analyzeSegmentHandle(handle, segmentId, size, options);
  } finally {
    await handle.close();
  }
}

/**
 * The analysis of the segment's bytes before ranges[rangeIndex]: what remains once a torn write
 * is rolled back from there (the file's length is still the length found).
 */
export function analysisBefore(analysis: SegmentAnalysis, rangeIndex: number): SegmentAnalysis {
  const range = analysis.ranges[rangeIndex];
  if (range === undefined) throw new RangeError(`no damaged range ${rangeIndex} in segment ${analysis.segmentId}`);
  const at = range.before;
  return {
    ...analysis,
    lastIndex: at.lastIndex,
    indexCount: at.indexCount,
    aggregate: at.aggregate.value(),
    aggregateState: at.aggregate.copy(),
    goodEndOffsetBytes: at.goodEndOffsetBytes,
    ranges: analysis.ranges.slice(0, rangeIndex),
    holes: analysis.holes.slice(0, at.holeCount),
    intactEntryCount: at.intactEntryCount,
  };
}

/** A segment that analysed with no damage of any kind. */
export function isClean(analysis: SegmentAnalysis): boolean {
  return analysis.header !== undefined && analysis.ranges.length === 0 && analysis.trailerProblem === undefined;
}

/**
 * The catalog record of a segment file as analysed: sealed when it has a trailer (the whole
 * file), else open up to just past its last intact frame. createdMsIfUnknown stands in for the
 * creation time of a file whose header is damaged.
 */
export function segmentRecordOf(analysis: SegmentAnalysis, createdMsIfUnknown: number): SegmentRecord {
  const trailer = analysis.trailer;
  return {
    segmentId: analysis.segmentId,
    firstIndex: trailer?.firstIndex ?? analysis.firstIndex ?? analysis.lastIndex + 1,
    lastIndex: analysis.lastIndex,
    indexCount: analysis.indexCount,
    byteLength: trailer ? analysis.fileByteLength : analysis.goodEndOffsetBytes,
    aggregateChecksum: analysis.aggregate,
    ...(trailer ? {} : { aggregateState: analysis.aggregateState.copy() }),
    state: trailer ? 'sealed' : 'open',
    createdMs: analysis.header?.createdMs ?? createdMsIfUnknown,
  };
}
