// Recovery on open: from the catalog and the files on disk, the state a store opens with. After a
// clean shutdown this reads the catalog and stats one path; after a crash it scans the open
// segment from its last checkpoint only (recoverTail). A lost catalog, an interrupted repair or
// damage other than a torn tail sends open through the repair engine (fullRepair), which refuses
// (DamageFoundError) rather than drop data silently.
//
// Fault model: a crash can only damage the last tornWindowBytesOf(...) bytes of the open segment
// (see segment-writer.ts). Damage there is a torn write, rolled back from its first damaged byte
// (everything after it, intact frames included, kept in quarantine), when it lies within that
// window of the end of the file, past the checkpoint, is bytes a crash can leave (not an intact
// frame out of place), and either nothing intact follows it or it holds sectors never written
// back (zeros). Any other damage, or damage in a sealed segment, is corruption: it goes to the
// repair engine with the configured strategy. The rule is TORN_WRITE_RULES in
// src/recovery/decision.ts. In replica mode (allowSegmentGaps) index gaps between whole segment
// files are segments held elsewhere, never damage.
import type { Logger } from 'pino';
import type { Disk, DiskStat } from '../io/index.js';
import { type Finding, type RecoveryConfig, type RecoveryMetrics, type RepairReport, describeFinding, haltsOnCorruption } from '../recovery/index.js';
import { type Catalog, type SegmentRecord, encodeCatalog } from './catalog.js';
import { type SegmentAnalysis, analysisBefore, analyzeSegmentFile, segmentRecordOf } from './analyze.js';
import { DamageFoundError, StoreNotFoundError, WalError } from './errors.js';
import { type StoreLayout, TEMP_SUFFIX, exists, fileByteLength, writeFileAtomic } from './files.js';
import { SEGMENT_HEADER_BYTES, logIdOf, segmentFileName } from './format.js';
import { readCatalog } from './inspect.js';
import { type ResolvedWalOptions, type StoreSettings, tornWindowBytesOf } from './options.js';
import { type RepairContext, repairStore } from './repair.js';
import { type TailCut, cutTornTail } from './segment-files.js';
import { LocalBackupSource } from './sources.js';
import { type ActiveSegment, activeSegment } from './store-state.js';
import { type LastWriteWindow, type TornWrite, findTornWrite } from './torn.js';

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

export async function prepareDir(layout: StoreLayout, create: boolean): Promise<void> {
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

export interface Recovered {
  readonly catalog: Catalog;
  readonly report: OpenReport;
  readonly active: ActiveSegment | undefined;
  readonly recovery: RecoveryConfig;
}

export async function recover(layout: StoreLayout, options: ResolvedWalOptions, explicitBackups: boolean, logger: Logger, metrics: RecoveryMetrics): Promise<Recovered> {
  const started = options.clock.monotonicMs();
  const elapsed = (): number => options.clock.monotonicMs() - started;
  const [read, intent] = await Promise.all([readCatalog(layout), exists(layout.disk, layout.repairIntentPath)]);
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
    return fullRepair(ctx, recovery, elapsed);
  }
  const tail = await recoverTail(ctx, read.catalog);
  if (tail === 'corrupt') return fullRepair(ctx, recovery, elapsed);
  return { catalog: tail.catalog, active: tail.active, recovery, report: { ...tail.report, durationMs: elapsed() } };
}

async function hasSegments(layout: StoreLayout): Promise<boolean> {
  const { listSegmentFiles } = await import('./inspect.js');
  return (await listSegmentFiles(layout)).ids.length > 0;
}

async function fullRepair(ctx: RepairContext, recovery: RecoveryConfig, elapsed: () => number): Promise<Recovered> {
  const report = await repairStore(ctx, { strategy: recovery.repairStrategy, dryRun: false });
  const blocking = report.remaining;
  if (blocking.length > 0) {
    const advice = haltsOnCorruption(recovery.repairStrategy)
      ? 'strategy is Halt; run `wal-recovery validate` and choose a repair strategy'
      : 'no verified copy of the damaged entries; run `wal-recovery repair --strategy skip|rollback` to give them up explicitly';
    throw new DamageFoundError(ctx.layout.dataDir, blocking, advice);
  }
  const read = await readCatalog(ctx.layout);
  if (!read.catalog) throw new WalError(`catalog unreadable after repair: ${read.problem ?? 'unknown'}`);
  const reopened = await recoverTail(ctx, read.catalog);
  if (reopened === 'corrupt') throw new DamageFoundError(ctx.layout.dataDir, report.findings, 'repair did not converge');
  return { catalog: reopened.catalog, active: reopened.active, recovery, report: { state: 'repaired', durationMs: elapsed(), segmentsScanned: 0, bytesScanned: 0, findings: report.findings, tornTails: reopened.report.tornTails, repair: report, sealedSinceCheckpoint: reopened.report.sealedSinceCheckpoint } };
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
  // Segments created after the catalog was written, then a leftover temporary file of the next
  // one (a crash while creating it); both names are probed at once.
  for (let probe = (last?.segmentId ?? 0) + 1; ; probe += 1) {
    const leftoverTemp = `${ctx.layout.segmentPath(probe)}${TEMP_SUFFIX}`;
    const [created, leftover] = await Promise.all([exists(disk, ctx.layout.segmentPath(probe)), exists(disk, leftoverTemp)]);
    if (created) {
      tail.push({ id: probe, resume: undefined });
      continue;
    }
    if (leftover) await disk.rename(leftoverTemp, `${leftoverTemp}.abandoned`).catch(() => undefined);
    break;
  }
  if (tail.length === 0) {
    return { catalog, active: undefined, report: { state: 'clean', segmentsScanned: 0, bytesScanned: 0, findings: [], tornTails: [], sealedSinceCheckpoint: [] } };
  }
  const findings: Finding[] = [];
  const tornTails: TailCut[] = [];
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
      ? { offsetBytes: resume.byteLength, lastIndex: resume.lastIndex, indexCount: resume.indexCount, aggregate: resume.aggregateChecksum, aggregateState: resume.aggregateState }
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
      const rolledBack = await rollBackTornWrite(ctx, found, window);
      if (rolledBack === 'corrupt') return 'corrupt';
      analysis = rolledBack.analysis;
      tornTails.push(rolledBack.cut);
      findings.push(rolledBack.finding);
    } else if (!sealed && !isLastFile) {
      return 'corrupt';
    }
    const record = segmentRecordOf(analysis, ctx.clock.nowMs());
    segments.push(record);
    if (sealed) sealedSinceCheckpoint.push(id);
    expectedFirst = analysis.lastIndex + 1;
    if (!sealed) {
      const handle = await disk.open(path, 'r+');
      active = activeSegment({ segmentId: id, firstIndex, createdMs: record.createdMs, handle, byteLength: record.byteLength, lastIndex: record.lastIndex, indexCount: record.indexCount, aggregate: analysis.aggregateState.copy() });
    }
  }
  const holes = catalog.holes;
  const updated: Catalog = { ...catalog, generation: catalog.generation + 1, segments, holes };
  const changed = tornTails.length > 0 || tail.some((t) => t.resume === undefined);
  if (changed) await writeFileAtomic(disk, ctx.layout.catalogPath, ctx.layout.dataDir, encodeCatalog(updated));
  for (const finding of findings) ctx.logger.warn({ log: finding.log, segment: finding.segment, entryIndex: finding.entryIndex, offsetBytes: finding.offsetBytes, kind: finding.kind }, describeFinding(finding));
  // Nothing past the checkpoint (a clean close records the open segment at its synced end).
  const clean = !changed && bytesScanned === 0;
  return { catalog: updated, active, report: { state: clean ? 'clean' : 'recovered-tail', segmentsScanned: tail.length, bytesScanned, findings, tornTails, sealedSinceCheckpoint } };
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

/**
 * Rolls back the damage found in a segment of the tail if it is all one torn write (any damage
 * before it is the repair engine's): the file is cut where the torn write begins.
 */
async function rollBackTornWrite(ctx: RepairContext, found: SegmentAnalysis, window: LastWriteWindow): Promise<{ analysis: SegmentAnalysis; cut: TailCut; finding: Finding } | 'corrupt'> {
  const id = found.segmentId;
  const tornWrite = await tornWriteIn(ctx.layout.disk, ctx.layout.segmentPath(id), found, window);
  // The whole damage is one torn write (isTornWrite) when it is the segment's first damaged
  // range: what a crash tore was never acknowledged, so it is rolled back under every strategy.
  if (tornWrite === undefined || tornWrite.rangeIndex !== 0) return 'corrupt';
  const cut = await cutTornTail(ctx.layout, id, tornWrite.offsetBytes, found.fileByteLength, ctx.clock.nowMs());
  ctx.metrics.torn_tails_truncated += 1;
  const analysis = analysisBefore(found, tornWrite.rangeIndex);
  if (analysis.goodEndOffsetBytes !== tornWrite.offsetBytes) throw new Error('bug: a torn write that begins where no intact frame ends');
  const finding: Finding = { kind: 'torn', log: ctx.settings.logName, segment: id, entryIndex: analysis.lastIndex + 1, offsetBytes: cut.offsetBytes, byteLength: cut.byteLength, file: `segments/${segmentFileName(id)}`, detail: `torn write rolled back; ${cut.byteLength} bytes kept as quarantine/${cut.quarantinedAs}` };
  return { analysis, cut, finding };
}
