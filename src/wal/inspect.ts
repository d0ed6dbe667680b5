// Whole-store inspection: reads the catalog, every segment file and every backup copy, and says
// what is intact and what is damaged, as findings. Read-only. Used by validate, by repair (which
// acts on what it finds) and by open when the catalog cannot be trusted.
import { relative } from 'node:path';
import { type Disk, isNotFound } from '../io/index.js';
import type { Finding } from '../recovery/index.js';
import { checksumHex } from './checksum.js';
import { type SegmentAnalysis, type DamageRange, analysisBefore, analyzeSegmentFile, isClean } from './analyze.js';
import { type SegmentAnalyzer, inThreadAnalyzer, mapWindowed } from './analyze-pool.js';
import { type Catalog, type HoleRecord, type SegmentRecord, decodeCatalog } from './catalog.js';
import { StoreNotFoundError } from './errors.js';
import { type StoreLayout, fileByteLength, readRange, TEMP_SUFFIX } from './files.js';
import { SEGMENT_HEADER_BYTES, TRAILER_BYTES, decodeSegmentHeader, parseSegmentFileName } from './format.js';
import { type SegmentExpectation, matchesExpectation } from './sources.js';
import { type TornWrite, findTornWrite } from './torn.js';

/** Indices a damaged stretch of a segment loses (first > last when it loses none). */
export interface LostCluster {
  readonly first: number;
  readonly last: number;
  readonly ranges: readonly DamageRange[];
  /**
   * A write torn by a crash (src/wal/torn.ts): from its first damaged byte to the end of the open
   * segment, intact frames after it included, nothing was acknowledged. It loses no index.
   */
  readonly atOpenTail: boolean;
  /**
   * False when the damage runs to the end of a segment whose last index nothing records (an
   * unsealed segment, not a torn write): how many entries it held is unknown.
   */
  readonly endKnown: boolean;
}

export interface SegmentInspection {
  readonly segmentId: number;
  readonly path: string;
  readonly present: boolean;
  readonly record: SegmentRecord | undefined;
  /** With a torn write, the analysis of what stays: the bytes before it (fileByteLength is the file's). */
  readonly analysis: SegmentAnalysis | undefined;
  /** Where a write torn by a crash begins, in the open segment; everything from there is cut. */
  readonly tornWrite: TornWrite | undefined;
  /** The segment must be sealed: the catalog says so, it has a trailer, or a later one exists. */
  readonly mustBeSealed: boolean;
  readonly expected: SegmentExpectation | undefined;
  readonly clusters: readonly LostCluster[];
  readonly findings: readonly Finding[];
  readonly backupFindings: readonly Finding[];
}

export interface StoreInspection {
  readonly dataDir: string;
  readonly log: string;
  readonly catalog: Catalog | undefined;
  readonly catalogProblem: string | undefined;
  readonly segments: readonly SegmentInspection[];
  readonly unexpectedFiles: readonly string[];
  readonly holes: readonly HoleRecord[];
  readonly findings: readonly Finding[];
  readonly bytesScanned: number;
}

export interface InspectOptions {
  readonly entryBytesMax: number;
  readonly logName: string;
  /** Backup copies expected of each sealed segment (0: do not look at backups). */
  readonly backupCopies: number;
  /** The most bytes the store writes between two fdatasyncs: bounds a torn write (tornWindowBytesOf). */
  readonly tornWindowBytes: number;
  /**
   * Replica mode: the store holds only some of the log's segments, so a gap between two whole
   * segment files (one's last index below the next one's first) is not damage. Gaps and
   * misplaced indices inside a segment, and segments that overlap, still are.
   */
  readonly allowSegmentGaps: boolean;
  readonly onProgress?: (bytesDone: number, bytesTotal: number) => void;
  /**
   * Where segment files and backups are analysed, chosen once the work is known (the bytes to read,
   * backups included, and the segment files); inspectStore closes it. Default: in this thread.
   */
  readonly analyzer?: (work: { readonly bytes: number; readonly files: number }) => SegmentAnalyzer | undefined;
}

export async function readCatalog(layout: StoreLayout): Promise<{ catalog: Catalog | undefined; problem: string | undefined; missing: boolean }> {
  let bytes: Buffer;
  try {
    bytes = await layout.disk.readFile(layout.catalogPath);
  } catch (error) {
    if (isNotFound(error)) return { catalog: undefined, problem: 'catalog file is missing', missing: true };
    throw error;
  }
  const decoded = decodeCatalog(bytes);
  return decoded.ok ? { catalog: decoded.catalog, problem: undefined, missing: false } : { catalog: undefined, problem: decoded.reason, missing: false };
}

export async function assertStoreDir(disk: Disk, dataDir: string): Promise<void> {
  try {
    if (!(await disk.stat(dataDir))?.isDirectory) throw new StoreNotFoundError(dataDir);
  } catch (error) {
    if (error instanceof StoreNotFoundError) throw error;
    throw new StoreNotFoundError(dataDir, { cause: error });
  }
}

/** Segment files by id, and every other name found in segments/. */
export async function listSegmentFiles(layout: StoreLayout): Promise<{ ids: number[]; others: string[] }> {
  let names: string[];
  try {
    names = await layout.disk.readdir(layout.segmentsDir);
  } catch (error) {
    if (isNotFound(error)) return { ids: [], others: [] };
    throw error;
  }
  const ids: number[] = [];
  const others: string[] = [];
  for (const name of names) {
    const id = parseSegmentFileName(name);
    if (id !== undefined) ids.push(id);
    else if (!name.endsWith(TEMP_SUFFIX)) others.push(name); // temp files are unfinished writes of ours
  }
  ids.sort((a, b) => a - b);
  return { ids, others: others.sort() };
}

export async function inspectStore(layout: StoreLayout, options: InspectOptions): Promise<StoreInspection> {
  await assertStoreDir(layout.disk, layout.dataDir);
  const log = options.logName;
  const { catalog, problem: catalogProblem, missing: catalogMissing } = await readCatalog(layout);
  const files = await listSegmentFiles(layout);
  const findings: Finding[] = [];
  const rel = (path: string): string => relative(layout.dataDir, path);

  if (catalogProblem !== undefined && !(catalogMissing && files.ids.length === 0)) {
    findings.push({ kind: 'bad-catalog', log, file: 'CATALOG', detail: catalogProblem });
  }
  const records = new Map<number, SegmentRecord>((catalog?.segments ?? []).map((r) => [r.segmentId, r]));
  const strays = await findDuplicates(layout, files.ids);
  const present = new Set(files.ids.filter((id) => !strays.has(id)));
  const ids = [...new Set([...records.keys(), ...present])].sort((a, b) => a - b);

  let bytesTotal = 0;
  const sizes = new Map<number, number>();
  for (const id of files.ids) {
    const size = (await fileByteLength(layout.disk, layout.segmentPath(id))) ?? 0;
    sizes.set(id, size);
    // Backups are kept of sealed segments only; the total is corrected as they are read.
    const backedUp = records.get(id)?.state === 'sealed' ? options.backupCopies : 0;
    bytesTotal += size * (1 + backedUp);
  }
  let bytesDone = 0;
  const progress = (bytes: number): void => {
    bytesDone += bytes;
    options.onProgress?.(bytesDone, bytesTotal);
  };

  // Every present segment is analysed (concurrently with a pool), then inspected in order. A
  // segment without a record takes its expected first index from the one before it; that hint
  // matters only when its header is damaged, so such a segment is analysed again in order then.
  const analyzer = options.analyzer?.({ bytes: bytesTotal, files: files.ids.length }) ?? inThreadAnalyzer;
  try {
    return await inspectWith(analyzer);
  } finally {
    await analyzer.close();
  }

  async function inspectWith(analyzer: SegmentAnalyzer): Promise<StoreInspection> {
    const checkpointOf = (record: SegmentRecord | undefined) =>
      record ? { checkpoint: { offsetBytes: record.state === 'sealed' ? record.byteLength - TRAILER_BYTES : record.byteLength, aggregate: record.aggregateChecksum, aggregateState: record.aggregateState } } : {};
    const presentIds = ids.filter((id) => present.has(id));
    const analysed = await mapWindowed(
      presentIds,
      analyzer.concurrency,
      (segmentId) => {
        const record = records.get(segmentId);
        // The record's aggregate at its end tells the function of a segment whose header is damaged.
        return analyzer.analyze(layout.disk, layout.segmentPath(segmentId), segmentId, { entryBytesMax: options.entryBytesMax, ...(record ? { firstIndexHint: record.firstIndex } : {}), ...checkpointOf(record) });
      },
      (segmentId) => progress(sizes.get(segmentId) ?? 0),
    );
    const analyses = new Map(presentIds.map((id, i) => [id, analysed[i] as SegmentAnalysis]));

    const segments: SegmentInspection[] = [];
    let previousLast: number | undefined;
    for (let i = 0; i < ids.length; i += 1) {
      const segmentId = ids[i] as number;
      const record = records.get(segmentId);
      const path = layout.segmentPath(segmentId);
      const isLast = i === ids.length - 1;
      let analysis = analyses.get(segmentId);
      if (analysis && record === undefined && previousLast !== undefined && analysis.header === undefined) {
        analysis = await analyzeSegmentFile(layout.disk, path, segmentId, { entryBytesMax: options.entryBytesMax, firstIndexHint: previousLast + 1 });
      }
      const tornWrite = analysis && isLast ? await tornWriteOf(layout, path, record, analysis, options.tornWindowBytes) : undefined;
      const inspection = inspectSegment({ log, layout, segmentId, path, record, analysis, isLast, ...(tornWrite ? { tornWrite } : {}) });
      segments.push(inspection);
      if (inspection.expected) previousLast = inspection.expected.lastIndex;
      else if (analysis) previousLast = analysis.lastIndex;
    }
    // Continuity across segments, and the expected end of segments whose own end is damaged.
    for (let i = 1; i < segments.length; i += 1) {
      const prev = segments[i - 1] as SegmentInspection;
      const cur = segments[i] as SegmentInspection;
      const prevLast = prev.expected?.lastIndex ?? prev.analysis?.lastIndex;
      const curFirst = cur.expected?.firstIndex ?? cur.analysis?.firstIndex;
      const segmentsBetweenHeldElsewhere = options.allowSegmentGaps && curFirst !== undefined && prevLast !== undefined && curFirst > prevLast + 1;
      if (prevLast !== undefined && curFirst !== undefined && curFirst !== prevLast + 1 && !segmentsBetweenHeldElsewhere) {
        (cur.findings as Finding[]).push({
          kind: curFirst > prevLast + 1 ? 'index-gap' : 'misplaced-entry',
          log,
          segment: cur.segmentId,
          entryIndex: Math.min(curFirst, prevLast + 1),
          indexCount: Math.abs(curFirst - (prevLast + 1)),
          file: rel(cur.path),
          detail: `segment starts at index ${curFirst}, the one before it ends at ${prevLast}`,
        });
      }
    }

    if (options.backupCopies > 0) {
      await mapWindowed(
        segments,
        Math.max(1, Math.floor(analyzer.concurrency / options.backupCopies)),
        (segment) => inspectBackups(layout, segment, options, analyzer, log, rel),
        (segment, backups) => {
          const expectedBytes = segment.record?.state === 'sealed' ? (sizes.get(segment.segmentId) ?? 0) * options.backupCopies : 0;
          (segment.backupFindings as Finding[]).push(...backups.findings);
          bytesTotal += backups.bytesRead - expectedBytes;
          progress(backups.bytesRead);
        },
      );
    }

    const unexpectedFiles = files.others.map((name) => `segments/${name}`);
    for (const file of unexpectedFiles) findings.push({ kind: 'unexpected-file', log, file, detail: 'not a segment file name' });
    for (const [id, of] of strays) {
      const file = relative(layout.dataDir, layout.segmentPath(id));
      unexpectedFiles.push(file);
      findings.push({ kind: 'unexpected-file', log, segment: id, file, detail: `a copy of segment ${of} under another segment's name` });
    }
    for (const segment of segments) findings.push(...segment.findings, ...segment.backupFindings);

    const holes: HoleRecord[] = [];
    for (const segment of segments) {
      for (const hole of segment.analysis?.holes ?? []) holes.push({ segmentId: segment.segmentId, firstIndex: hole.firstIndex, count: hole.count });
    }
    return { dataDir: layout.dataDir, log, catalog, catalogProblem, segments, unexpectedFiles, holes, findings, bytesScanned: bytesDone };
  }
}

/** The torn write in the last segment, when it is an open one (header intact, not sealed). */
async function tornWriteOf(layout: StoreLayout, path: string, record: SegmentRecord | undefined, analysis: SegmentAnalysis, tornWindowBytes: number): Promise<TornWrite | undefined> {
  const open = analysis.headerProblem === undefined && analysis.trailer === undefined && record?.state !== 'sealed';
  if (!open || analysis.ranges.length === 0) return undefined;
  const syncedEndBytes = record?.state === 'open' ? Math.max(SEGMENT_HEADER_BYTES, record.byteLength) : SEGMENT_HEADER_BYTES;
  const handle = await layout.disk.open(path, 'r');
  try {
    return await findTornWrite(handle, analysis, { inOpenSegment: true, syncedEndBytes, tornWindowBytes });
  } finally {
    await handle.close();
  }
}

/**
 * Segment files whose intact header names another segment that is present too: duplicated or
 * misnamed copies, not segments of their own. Reads only the 128-byte headers.
 */
async function findDuplicates(layout: StoreLayout, ids: readonly number[]): Promise<Map<number, number>> {
  const strays = new Map<number, number>();
  const present = new Set(ids);
  for (const id of ids) {
    const handle = await layout.disk.open(layout.segmentPath(id), 'r');
    try {
      const decoded = decodeSegmentHeader(await readRange(handle, 0, SEGMENT_HEADER_BYTES));
      if (decoded.ok && decoded.header.segmentId !== id && present.has(decoded.header.segmentId)) strays.set(id, decoded.header.segmentId);
    } finally {
      await handle.close();
    }
  }
  return strays;
}

interface SegmentContext {
  readonly log: string;
  readonly layout: StoreLayout;
  readonly segmentId: number;
  readonly path: string;
  readonly record: SegmentRecord | undefined;
  readonly analysis: SegmentAnalysis | undefined;
  readonly isLast: boolean;
  /** A torn write found in this (open, last) segment. */
  readonly tornWrite?: TornWrite;
}

function expectationOf(ctx: SegmentContext): SegmentExpectation | undefined {
  const { record, analysis } = ctx;
  if (record?.state === 'sealed') {
    return {
      segmentId: ctx.segmentId,
      firstIndex: record.firstIndex,
      lastIndex: record.lastIndex,
      indexCount: record.indexCount,
      aggregateChecksum: record.aggregateChecksum,
    };
  }
  const trailer = analysis?.trailer;
  if (trailer && trailer.segmentId === ctx.segmentId) {
    return {
      segmentId: ctx.segmentId,
      firstIndex: trailer.firstIndex,
      lastIndex: trailer.lastIndex,
      indexCount: trailer.indexCount,
      aggregateChecksum: trailer.aggregateChecksum,
    };
  }
  return undefined;
}

export function inspectSegment(ctx: SegmentContext): SegmentInspection {
  const { log, segmentId, record } = ctx;
  const tornWrite = ctx.tornWrite;
  const file = relative(ctx.layout.dataDir, ctx.path);
  const findings: Finding[] = [];
  const expected = expectationOf(ctx);
  const mustBeSealed = expected !== undefined || !ctx.isLast;
  const base = { log, segment: segmentId, file };

  const found = ctx.analysis;
  if (found === undefined) {
    findings.push({
      ...base,
      kind: 'missing-segment',
      ...(record ? { entryIndex: record.firstIndex, indexCount: record.indexCount } : {}),
      detail: 'the catalog lists this segment but its file is missing',
    });
    return { segmentId, path: ctx.path, present: false, record, analysis: undefined, tornWrite: undefined, mustBeSealed: true, expected, clusters: [], findings, backupFindings: [] };
  }
  // What stays once the torn write is rolled back.
  const analysis = tornWrite ? analysisBefore(found, tornWrite.rangeIndex) : found;
  if (analysis.headerProblem !== undefined) {
    findings.push({ ...base, kind: 'bad-header', offsetBytes: 0, byteLength: Math.min(128, analysis.fileByteLength), detail: analysis.headerProblem });
  }
  // A header is written whole (temp, fsync, rename) before any entry: damage to it is never a
  // torn write, so nothing in a segment with a damaged header counts as one (tornWriteOf).
  const clusters = clusterRanges(found, expected, tornWrite);
  for (const cluster of clusters) {
    const lost = cluster.last - cluster.first + 1;
    for (const range of mergeAdjacent(cluster.ranges)) {
      findings.push({
        ...base,
        kind: cluster.atOpenTail ? 'torn' : range.kind,
        entryIndex: range.entryIndex ?? cluster.first,
        ...(lost > 0 ? { indexCount: lost } : {}),
        offsetBytes: range.offsetBytes,
        byteLength: range.byteLength,
        ...(range.expectedChecksum ? { expectedChecksum: range.expectedChecksum } : {}),
        ...(range.actualChecksum ? { actualChecksum: range.actualChecksum } : {}),
        detail: cluster.atOpenTail ? `torn write in the last write of the open segment, rolled back from offset ${tornWrite?.offsetBytes ?? range.offsetBytes} (${range.detail})` : range.detail,
      });
    }
  }
  if (analysis.trailerProblem !== undefined) {
    findings.push({ ...base, kind: 'bad-trailer', ...(analysis.trailerOffsetBytes === undefined ? {} : { offsetBytes: analysis.trailerOffsetBytes }), detail: analysis.trailerProblem });
  }
  const sealedOk = analysis.trailer !== undefined;
  if (mustBeSealed && !sealedOk && !findings.some((f) => f.kind === 'bad-trailer')) {
    findings.push({ ...base, kind: 'bad-trailer', offsetBytes: analysis.goodEndOffsetBytes, detail: 'sealed segment has no valid trailer' });
  }
  if (expected && analysis.ranges.length === 0 && analysis.trailerProblem === undefined && sealedOk && !matchesExpectation(analysis, expected)) {
    findings.push({
      ...base,
      kind: 'bad-catalog',
      detail: `catalog record disagrees with the sealed segment (aggregate ${checksumHex(analysis.aggregate)}, catalog ${expected.aggregateChecksum === undefined ? '?' : checksumHex(expected.aggregateChecksum)})`,
    });
  }
  if (record?.state === 'open' && analysis.fileByteLength < record.byteLength) {
    findings.push({
      ...base,
      kind: 'index-gap',
      entryIndex: analysis.lastIndex + 1,
      offsetBytes: analysis.fileByteLength,
      detail: `file is ${analysis.fileByteLength} bytes but ${record.byteLength} were synced (up to index ${record.lastIndex})`,
    });
  }
  return { segmentId, path: ctx.path, present: true, record, analysis, tornWrite, mustBeSealed, expected, clusters, findings, backupFindings: [] };
}

/**
 * One damage, one finding: ranges that follow each other without a gap (a zeroed block reads as
 * a frame failing its checksum, then bytes with no valid frame header) are reported as one, of
 * the first range's kind, spanning all of them. Repair works on clusters, not on findings.
 */
function mergeAdjacent(ranges: readonly DamageRange[]): DamageRange[] {
  const merged: DamageRange[] = [];
  for (const range of ranges) {
    const last = merged[merged.length - 1];
    if (last !== undefined && last.offsetBytes + last.byteLength === range.offsetBytes) {
      const detail = last.detail.endsWith(range.detail) ? last.detail : `${last.detail}, then ${range.detail}`;
      merged[merged.length - 1] = { ...last, byteLength: last.byteLength + range.byteLength, detail, crashShaped: last.crashShaped && range.crashShaped };
    } else {
      merged.push(range);
    }
  }
  return merged;
}

/**
 * Groups damaged ranges that lie between the same two intact indices; each group loses the
 * indices between. The ranges of a torn write (it and everything after it) form one last
 * cluster that loses nothing: none of it was acknowledged.
 */
function clusterRanges(analysis: SegmentAnalysis, expected: SegmentExpectation | undefined, tornWrite: TornWrite | undefined): LostCluster[] {
  const clusters: LostCluster[] = [];
  const ranges = tornWrite ? analysis.ranges.slice(0, tornWrite.rangeIndex) : analysis.ranges;
  let current: DamageRange[] = [];
  const flush = (): void => {
    const first = current[0];
    if (first === undefined) return;
    const atEnd = first.nextIndex === undefined;
    const endIndex = atEnd ? (expected ? expected.lastIndex + 1 : first.prevIndex + 1) : (first.nextIndex as number);
    clusters.push({ first: first.prevIndex + 1, last: endIndex - 1, ranges: current, atOpenTail: false, endKnown: !atEnd || expected !== undefined });
    current = [];
  };
  for (const range of ranges) {
    const head = current[0];
    if (head && (head.prevIndex !== range.prevIndex || head.nextIndex !== range.nextIndex)) flush();
    current.push(range);
  }
  flush();
  const torn = tornWrite ? analysis.ranges[tornWrite.rangeIndex] : undefined;
  if (tornWrite && torn) {
    clusters.push({ first: torn.prevIndex + 1, last: torn.prevIndex, ranges: analysis.ranges.slice(tornWrite.rangeIndex), atOpenTail: true, endKnown: true });
  }
  return clusters;
}

async function inspectBackups(
  layout: StoreLayout,
  segment: SegmentInspection,
  options: InspectOptions,
  analyzer: SegmentAnalyzer,
  log: string,
  rel: (path: string) => string,
): Promise<{ findings: Finding[]; bytesRead: number }> {
  const findings: Finding[] = [];
  let bytesRead = 0;
  const expected = segment.expected;
  if (expected === undefined || !segment.mustBeSealed) return { findings, bytesRead };
  for (let copy = 1; copy <= options.backupCopies; copy += 1) {
    const path = layout.backupPath(segment.segmentId, copy);
    let problem: string | undefined;
    try {
      const analysis = await analyzer.analyze(layout.disk, path, segment.segmentId, { entryBytesMax: options.entryBytesMax });
      bytesRead += analysis.fileByteLength;
      if (!isClean(analysis) || analysis.trailer === undefined) problem = 'backup copy is damaged';
      else if (!matchesExpectation(analysis, expected)) problem = 'backup copy differs from the sealed segment';
    } catch (error) {
      if (!isNotFound(error)) throw error;
      problem = 'backup copy is missing';
    }
    if (problem !== undefined) {
      findings.push({ kind: 'backup-damaged', log, segment: segment.segmentId, file: rel(path), detail: problem });
    }
  }
  return { findings, bytesRead };
}
