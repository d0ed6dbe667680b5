// Local repair: executes the plans of src/recovery/repair-plan.ts (itself built on the decision
// table) for what inspection found, with the strategy chosen. Nothing is decided here: this file
// gathers the planner's inputs (inspection, verified frames from the sources, the interlock) and
// carries out the step it returns.
//
// Fault model: the process may be killed at any instant. Before anything is changed an intent
// file (REPAIRING) is made durable; a rebuilt segment is written to a temp file and fsynced, the
// damaged original is hard-linked into quarantine/, and only then does a rename replace it. After
// a crash the segment is the old or the new one, and the next open sees the intent and runs the
// repair again. Every byte written was verified: intact frames by their checksums as they are
// copied, fetched frames again on arrival, and a rebuilt sealed segment against the recorded
// aggregate checksum before it replaces anything.
import { relative } from 'node:path';
import type { Logger } from 'pino';
import type { Clock, DiskFile } from '../io/index.js';
import {
  type AvailableCopies,
  type Finding,
  type IndexRange,
  type RecoveryConfig,
  type RecoveryMetrics,
  type RepairDecision,
  type RepairReport,
  type RepairStrategy,
  type SegmentDamage,
  type SegmentRepair,
  type SegmentStep,
  backupsFollowRepair,
  countIndices,
  describeFinding,
  framesWanted,
  haltsOnCorruption,
  mergeRanges,
  planFileRepair,
  planSegmentRepair,
  uncoveredRuns,
} from '../recovery/index.js';
import { CHAINED_AGGREGATE_VERSION, HASHED_LIST_AGGREGATE_VERSION, newAggregate } from './aggregate.js';
import { type Catalog, type HoleRecord, type SegmentRecord, encodeCatalog } from './catalog.js';
import { analyzeSegmentFile, segmentRecordOf } from './analyze.js';
import {
  type StoreLayout,
  quarantineFile,
  writeAll,
  writeFileAtomic,
  writeFileSynced,
  TEMP_SUFFIX,
  exists,
} from './files.js';
import {
  ENTRY_HEADER_BYTES,
  FLAG_HOLE,
  FORMAT_VERSION,
  SEGMENT_HEADER_BYTES,
  TRAILER_BYTES,
  decodeFrameAt,
  decodeHolePayload,
  encodeEntry,
  encodeHolePayload,
  encodeSegmentHeader,
  encodeTrailer,
  isHoleFrame,
  logIdOf,
} from './format.js';
import { type SegmentInspection, type StoreInspection, inspectSegment, inspectStore } from './inspect.js';
import type { StoreSettings } from './options.js';
import { UnrepairableError } from './errors.js';
import { cutTornTail, putSegmentCopyInPlace, verifySegmentCopy } from './segment-files.js';
import { withSpan } from '../observability/tracing.js';
import { type GoodCopySource, type RecordedSegment, type SegmentExpectation, writeBackups } from './sources.js';

/** What repair works with. Files are reached through layout.disk (the one Disk of the store). */
export interface RepairContext {
  readonly layout: StoreLayout;
  readonly settings: StoreSettings;
  /** Attempts and backup copies; the strategy travels in RepairOptions only. */
  readonly recovery: Pick<RecoveryConfig, 'maxRecoveryAttempts' | 'backupRetentionCount'>;
  readonly sources: readonly GoodCopySource[];
  readonly logger: Logger;
  readonly metrics: RecoveryMetrics;
  readonly clock: Clock;
  /** The most bytes the store writes between two fdatasyncs: bounds a torn write (tornWindowBytesOf). */
  readonly tornWindowBytes: number;
  /** Replica mode: gaps between whole segment files are segments held elsewhere, not damage. */
  readonly allowSegmentGaps: boolean;
  /** Cluster interlock: whether a replica may still hold an index we have no verified copy of. */
  readonly heldElsewhere?: (segmentId: number, first: number, last: number) => boolean;
}

export interface RepairOptions {
  readonly strategy: RepairStrategy;
  readonly dryRun: boolean;
  readonly onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

/** Repairs the whole store. The caller holds the store's lock. */
export async function repairStore(ctx: RepairContext, options: RepairOptions): Promise<RepairReport> {
  const disk = ctx.layout.disk;
  const started = ctx.clock.monotonicMs();
  const startedAt = new Date(ctx.clock.nowMs()).toISOString();
  const inspectOptions = {
    entryBytesMax: ctx.settings.entryBytesMax,
    logName: ctx.settings.logName,
    backupCopies: ctx.recovery.backupRetentionCount,
    tornWindowBytes: ctx.tornWindowBytes,
    allowSegmentGaps: ctx.allowSegmentGaps,
  };
  const inspected = await inspectStore(ctx.layout, options.onProgress ? { ...inspectOptions, onProgress: options.onProgress } : inspectOptions);
  const before = await withRecordedShapes(ctx, inspected);
  const actions: SegmentRepair[] = [];
  if (before.findings.length > 0) {
    for (const finding of before.findings) {
      ctx.logger.warn({ log: finding.log, segment: finding.segment, entryIndex: finding.entryIndex, offsetBytes: finding.offsetBytes, kind: finding.kind }, `damage found: ${describeFinding(finding)}`);
    }
    ctx.metrics.corrupted_segments += new Set(before.findings.map((f) => f.segment ?? -1)).size;
    if (!options.dryRun) await writeFileSynced(disk, ctx.layout.repairIntentPath, Buffer.from(JSON.stringify({ strategy: options.strategy, startedAt }) + '\n'));
    await disk.fsyncDir(ctx.layout.dataDir);
    await repairFindings(ctx, before, options, actions);
  }
  let after = before;
  // Segment files the rewritten catalog has no record of: damage repair could not mend in a segment
  // no record described (a lost catalog, a destroyed trailer). They keep the intent (below).
  let unrecorded: number[] = [];
  if (!options.dryRun && before.findings.length > 0) {
    after = await inspectStore(ctx.layout, inspectOptions);
    // Halt changes nothing it did not have to (a torn tail): not even the catalog's generation.
    // 'keep' and 'rebuild-catalog' changed no file (the latter IS a catalog rewrite), so they do
    // not count; and a record that disagrees with its file stays, the evidence of what was
    // acknowledged, for the operator Halt leaves it to.
    const halt = haltsOnCorruption(options.strategy);
    if (!halt || actions.some((a) => a.outcome === 'done' && a.decision !== 'keep' && a.decision !== 'rebuild-catalog')) {
      const rolledBack = new Set(actions.filter((a) => a.decision === 'rollback' && a.outcome === 'done').map((a) => a.segment));
      const written = await writeCatalog(ctx, after, before.catalog, rolledBack, halt);
      const recorded = new Set(written.segments.map((r) => r.segmentId));
      unrecorded = after.segments.filter((s) => s.present && !recorded.has(s.segmentId)).map((s) => s.segmentId);
      // The catalog was just rebuilt from the segment files: what that fixed (a lost or stale
      // catalog, records of rolled-back segments) must not be reported as remaining damage.
      if (after.findings.length > 0) after = await inspectStore(ctx.layout, inspectOptions);
    }
  }
  // Also when nothing was found: an intent left by an interrupted repair that had already
  // finished its work would otherwise send every later open through a full repair. Not while a
  // segment file is left out of the catalog: the next open would find nothing to scan and open
  // without that segment (its entries forgotten, sim seed 14014); with the intent it repairs
  // again, and refuses until the segment is repaired or given up.
  if (!options.dryRun && unrecorded.length === 0 && (before.findings.length > 0 || (await exists(disk, ctx.layout.repairIntentPath)))) {
    await disk.remove(ctx.layout.repairIntentPath);
    await disk.fsyncDir(ctx.layout.dataDir);
  }
  const repaired = actions.flatMap((a) => a.repaired);
  const lost = actions.flatMap((a) => a.lost);
  const truncated = actions.flatMap((a) => a.truncated);
  return {
    log: ctx.settings.logName,
    dataDir: ctx.layout.dataDir,
    strategy: options.strategy,
    dryRun: options.dryRun,
    startedAt,
    durationMs: ctx.clock.monotonicMs() - started,
    findings: before.findings,
    actions,
    remaining: options.dryRun ? before.findings : after.findings,
    entriesRepaired: countIndices(mergeRanges(repaired)),
    entriesLost: countIndices(mergeRanges(lost)),
    entriesTruncated: countIndices(mergeRanges(truncated)),
  };
}

/**
 * Replica mode: a damaged segment file that neither a catalog record nor a trailer describes (a
 * lost catalog and a destroyed end, sim seed 14014) takes its shape from the cluster's record of
 * the sealed segment (etcd's, through a source that has one): its first index (where the scan
 * starts when the header is damaged too), last index, count, aggregate and created time. Repair
 * then fetches what the file lacks up to that last index, and the rebuilt copy must match the
 * recorded aggregate, so a replica copy that disagrees with the record is never taken. A record
 * the file contradicts (an intact header that starts elsewhere) or that overlaps a neighbouring
 * segment is not used. Without a usable record the segment's end stays unknown, repair escalates
 * and open refuses, as before (docs/RECOVERY.md, known limit 4).
 */
async function withRecordedShapes(ctx: RepairContext, inspection: StoreInspection): Promise<StoreInspection> {
  const sources = ctx.sources.filter((s) => s.recordedSegment !== undefined);
  if (!ctx.allowSegmentGaps || sources.length === 0) return inspection;
  const segments = [...inspection.segments];
  const replaced = new Set<Finding>();
  const added: Finding[] = [];
  for (let i = 0; i < segments.length; i += 1) {
    const segment = segments[i] as SegmentInspection;
    // Asked only where the file alone cannot give the shape: a segment that must be sealed (a later
    // one exists), a damaged header, or damage running to an end nothing records. A torn write at
    // the open end was never acknowledged: rolled back as always. Damage inside an open copy with
    // its header intact is rebuilt as an open segment from the replicas, as without a record.
    if (!segment.present || segment.expected !== undefined || segment.tornWrite !== undefined || segment.findings.length === 0) continue;
    const shapeUnknown = segment.mustBeSealed || segment.analysis?.header === undefined || segment.clusters.some((c) => !c.endKnown);
    if (!shapeUnknown) continue;
    const recorded = await recordOf(sources, segment.segmentId);
    if (recorded === undefined) continue;
    const prev = segments[i - 1];
    const next = segments[i + 1];
    const prevLast = prev?.expected?.lastIndex ?? prev?.analysis?.lastIndex;
    const nextFirst = next?.expected?.firstIndex ?? next?.analysis?.firstIndex;
    const headerFirst = segment.analysis?.header?.firstIndex;
    const fits = (headerFirst === undefined || headerFirst === recorded.firstIndex) && (prevLast === undefined || prevLast < recorded.firstIndex) && (nextFirst === undefined || nextFirst > recorded.lastIndex);
    const fields = { log: ctx.settings.logName, segment: segment.segmentId, firstIndex: recorded.firstIndex, lastIndex: recorded.lastIndex };
    if (!fits) {
      ctx.logger.warn({ ...fields, headerFirst, prevLast, nextFirst }, 'the cluster\'s record of a segment with no record and no trailer here does not fit its file or its neighbours; not used');
      continue;
    }
    const record: SegmentRecord = { segmentId: segment.segmentId, firstIndex: recorded.firstIndex, lastIndex: recorded.lastIndex, indexCount: recorded.indexCount, byteLength: recorded.byteLength, aggregateChecksum: recorded.aggregateChecksum, state: 'sealed', createdMs: recorded.createdMs };
    // A damaged header: scan again from the recorded first index (the neighbour's guess may be
    // wrong, known limit 17).
    const analysis = segment.analysis?.header === undefined
      ? await analyzeSegmentFile(ctx.layout.disk, segment.path, segment.segmentId, { entryBytesMax: ctx.settings.entryBytesMax, firstIndexHint: record.firstIndex, checkpoint: { offsetBytes: record.byteLength - TRAILER_BYTES, aggregate: record.aggregateChecksum } })
      : segment.analysis;
    const shaped = inspectSegment({ log: ctx.settings.logName, layout: ctx.layout, segmentId: segment.segmentId, path: segment.path, record, analysis, isLast: false });
    for (const finding of segment.findings) replaced.add(finding);
    added.push(...shaped.findings);
    segments[i] = { ...shaped, backupFindings: segment.backupFindings };
    ctx.logger.warn(fields, 'segment with no record and no trailer here: repaired to the shape of the cluster\'s record of it');
  }
  if (replaced.size === 0) return inspection;
  return { ...inspection, segments, findings: [...inspection.findings.filter((f) => !replaced.has(f)), ...added] };
}

async function recordOf(sources: readonly GoodCopySource[], segmentId: number): Promise<RecordedSegment | undefined> {
  for (const source of sources) {
    const recorded = await source.recordedSegment?.(segmentId);
    if (recorded !== undefined) return recorded;
  }
  return undefined;
}

async function repairFindings(ctx: RepairContext, inspection: StoreInspection, options: RepairOptions, actions: SegmentRepair[]): Promise<void> {
  for (const file of inspection.unexpectedFiles) {
    const step = planFileRepair('unexpected-file', options.strategy);
    actions.push(step === 'halt' ? emptyRepair(-1, 'halt', 'halted', `Halt: ${file} left in place`) : await quarantineUnexpected(ctx, `${ctx.layout.dataDir}/${file}`, options.dryRun));
  }
  let cutIndex: number | undefined;
  for (const segment of inspection.segments) {
    if (cutIndex !== undefined) {
      actions.push(await quarantineRolledBack(ctx, segment, options.dryRun));
      continue;
    }
    if (segment.findings.length > 0) {
      const action = await repairSegmentWithRetries(ctx, segment, options);
      actions.push(action);
      if (action.truncated.length > 0 && action.decision === 'rollback') {
        cutIndex = action.truncated[0]?.first;
        continue;
      }
      const follow = backupsFollowRepair({
        decision: action.decision,
        succeeded: action.outcome === 'done' || action.outcome === 'planned',
        mustBeSealed: segment.mustBeSealed,
        backupsDamaged: segment.backupFindings.length > 0,
        backupCopies: ctx.recovery.backupRetentionCount,
      });
      if (follow) actions.push(await recopyBackups(ctx, segment, options.dryRun));
    } else if (segment.backupFindings.length > 0) {
      const step = planFileRepair('backup-damaged', options.strategy);
      actions.push(step === 'halt' ? emptyRepair(segment.segmentId, 'halt', 'halted', 'Halt: backup copies left as they are') : await recopyBackups(ctx, segment, options.dryRun));
    }
  }
}

/** Repairs one segment, with up to maxRecoveryAttempts attempts (also used by online repair). */
export async function repairSegmentWithRetries(ctx: RepairContext, segment: SegmentInspection, options: RepairOptions): Promise<SegmentRepair> {
  let last: SegmentRepair | undefined;
  for (let attempt = 1; attempt <= ctx.recovery.maxRecoveryAttempts; attempt += 1) {
    const started = ctx.clock.monotonicMs();
    let retryable = false;
    try {
      last = await repairSegment(ctx, segment, options);
    } catch (error) {
      if (!(error instanceof UnrepairableError)) throw error;
      last = emptyRepair(segment.segmentId, 'reconstruct', 'failed', error.message);
      retryable = error.retryable;
    }
    if (options.dryRun) return last;
    const outcome = last.outcome === 'done' ? 'success' : 'failure';
    ctx.metrics.recordAttempt(outcome, ctx.clock.monotonicMs() - started);
    const logFields = { log: ctx.settings.logName, segment: segment.segmentId, decision: last.decision, attempt };
    if (last.outcome === 'done') {
      ctx.metrics.entries_repaired += countIndices(last.repaired);
      ctx.metrics.entries_lost += countIndices(last.lost);
      ctx.metrics.bytes_repaired += last.bytesWritten;
      if (last.lost.length > 0 || last.truncated.length > 0) ctx.logger.error({ ...logFields, lost: last.lost, truncated: last.truncated }, `repair gave up entries: ${last.detail}`);
      else ctx.logger.info(logFields, `repaired segment: ${last.detail}`);
      return last;
    }
    ctx.logger.error(logFields, `failed to repair segment: ${last.detail}`);
    if (last.outcome === 'halted' || !retryable) return last;
  }
  return last as SegmentRepair;
}

function emptyRepair(segment: number, decision: SegmentRepair['decision'], outcome: SegmentRepair['outcome'], detail: string): SegmentRepair {
  return { segment, decision, outcome, repaired: [], lost: [], truncated: [], bytesWritten: 0, detail };
}

async function fetchVerifiedFrames(ctx: RepairContext, segmentId: number, wanted: readonly IndexRange[]): Promise<{ frames: Map<number, Buffer>; source: string | undefined }> {
  const frames = new Map<number, Buffer>();
  let source: string | undefined;
  for (const range of wanted) {
    for (const src of ctx.sources) {
      const got = await src.fetchFrames(segmentId, range.first, range.last);
      for (const [index, frame] of got) {
        if (frames.has(index)) continue;
        const decoded = decodeFrameAt(frame, 0, ctx.settings.entryBytesMax);
        if (decoded.kind !== 'entry' || !decoded.bodyOk || decoded.header.index !== index || decoded.frameByteLength !== frame.byteLength) {
          ctx.logger.warn({ log: ctx.settings.logName, segment: segmentId, entryIndex: index, peer: src.name }, 'source served a frame that fails verification; not used');
          continue;
        }
        frames.set(index, frame);
        source ??= src.name;
      }
    }
  }
  return { frames, source };
}

function frameIndexCount(frame: Buffer): number {
  if (!isHoleFrame(frame)) return 1;
  return decodeHolePayload(frame.subarray(ENTRY_HEADER_BYTES))?.count ?? 1;
}

/** What the planner needs of a segment's inspection (src/recovery/repair-plan.ts). */
function damageOf(segment: SegmentInspection): SegmentDamage {
  const record = segment.record;
  const heldBy = segment.expected ?? record;
  return {
    present: segment.present,
    onlyCatalog: segment.present && segment.findings.every((f) => f.kind === 'bad-catalog'),
    structural: segment.analysis?.headerProblem !== undefined || segment.findings.some((f) => f.kind === 'bad-trailer'),
    stretches: segment.clusters.map((c) => ({ first: c.first, last: c.last, kinds: c.ranges.map((r) => r.kind), atOpenTail: c.atOpenTail, endKnown: c.endKnown })),
    syncedLoss: syncedLoss(segment),
    held: heldBy ? { first: heldBy.firstIndex, last: heldBy.lastIndex } : undefined,
    onlyOpenRecord: record?.state === 'open' && segment.expected === undefined,
  };
}

function availableOf(ctx: RepairContext, segmentId: number, frames: ReadonlyMap<number, Buffer>, wholeCopyTried: boolean): AvailableCopies {
  return {
    uncovered: (first, last) => uncoveredRuns(first, last, (i) => frames.has(i), (i) => frameIndexCount(frames.get(i) as Buffer)),
    heldElsewhere: (first, last) => ctx.heldElsewhere?.(segmentId, first, last) ?? false,
    wholeCopyTried,
  };
}

/** Plans the repair of one segment (src/recovery/repair-plan.ts) and carries the plan out. */
async function repairSegment(ctx: RepairContext, segment: SegmentInspection, options: RepairOptions): Promise<SegmentRepair> {
  const damage = damageOf(segment);
  const id = segment.segmentId;
  if (!damage.present) {
    const first = planSegmentRepair(damage, availableOf(ctx, id, new Map(), false), options.strategy);
    if (first.step !== 'restore-file') return carryOut(ctx, segment, first, { frames: new Map(), source: undefined }, options);
    const restored = await restoreWholeFile(ctx, segment, expectationOfMissing(segment), options);
    if (restored) return restored;
  }
  const fetched = await fetchVerifiedFrames(ctx, id, framesWanted(damage));
  return carryOut(ctx, segment, planSegmentRepair(damage, availableOf(ctx, id, fetched.frames, true), options.strategy), fetched, options);
}

/** A missing segment's expectation: etcd's record, or the catalog's (whose aggregate is not known). */
function expectationOfMissing(segment: SegmentInspection): SegmentExpectation {
  const record = segment.record;
  const expected = segment.expected ?? (record ? { segmentId: record.segmentId, firstIndex: record.firstIndex, lastIndex: record.lastIndex, indexCount: record.indexCount, aggregateChecksum: undefined } : undefined);
  if (!expected) throw new Error('unreachable: a missing segment is restored only when a record says what it held');
  return expected;
}

/** Executes a planned step. */
async function carryOut(ctx: RepairContext, segment: SegmentInspection, plan: SegmentStep, fetched: { frames: Map<number, Buffer>; source: string | undefined }, options: RepairOptions): Promise<SegmentRepair> {
  const id = segment.segmentId;
  const settled = options.dryRun ? 'planned' : 'done';
  switch (plan.step) {
    case 'halt':
      return emptyRepair(id, 'halt', 'halted', plan.detail);
    case 'escalate':
      return emptyRepair(id, 'escalate', 'failed', plan.detail);
    case 'keep':
      return emptyRepair(id, 'keep', settled, 'segment intact; its neighbours are repaired on their own');
    case 'rebuild-catalog':
      return emptyRepair(id, 'rebuild-catalog', settled, 'catalog record rewritten from the segment');
    case 'restore-file':
      throw new Error('unreachable: a whole copy is tried before the plan is made with the frames fetched');
    case 'truncate-torn-tail':
      return truncateTornTail(ctx, segment, options.dryRun);
    case 'rebuild':
      return rebuildSegment(ctx, segment, {
        ...fetched,
        cutIndex: plan.cutIndex,
        allowHoles: plan.allowHoles,
        dryRun: options.dryRun,
        decision: plan.decision,
        ...(segment.present ? {} : { expected: expectationOfMissing(segment) }),
      });
  }
}

/**
 * Entries the catalog says were synced in the open segment but that the file no longer holds; or
 * entries a sealed record says the segment holds past the file's intact end, when no damaged
 * stretch reaches there and the file has no trailer (a copy that ends cleanly short of its seal
 * point: an open copy on a node that missed the last entries, given its shape by etcd's record).
 */
function syncedLoss(segment: SegmentInspection): IndexRange | undefined {
  const record = segment.record;
  const analysis = segment.analysis;
  if (!record || !analysis || analysis.lastIndex >= record.lastIndex) return undefined;
  const shortSealed = record.state === 'sealed' && analysis.trailer === undefined && segment.clusters.every((c) => c.last < record.lastIndex);
  if (record.state !== 'open' && !shortSealed) return undefined;
  return { first: analysis.lastIndex + 1, last: record.lastIndex };
}

async function truncateTornTail(ctx: RepairContext, segment: SegmentInspection, dryRun: boolean): Promise<SegmentRepair> {
  const analysis = segment.analysis;
  if (!analysis) throw new Error('unreachable');
  // From the torn write's first damaged byte: intact frames after it were never acknowledged.
  const cut = segment.tornWrite?.offsetBytes ?? analysis.goodEndOffsetBytes;
  const tornBytes = analysis.fileByteLength - cut;
  const detail = `torn tail of ${tornBytes} bytes at offset ${cut} rolled back to index ${analysis.lastIndex}`;
  if (dryRun) return { ...emptyRepair(segment.segmentId, 'truncate-torn-tail', 'planned', detail) };
  const { quarantinedAs } = await cutTornTail(ctx.layout, segment.segmentId, cut, analysis.fileByteLength, ctx.clock.nowMs());
  ctx.metrics.torn_tails_truncated += 1;
  ctx.logger.warn({ log: ctx.settings.logName, segment: segment.segmentId, offsetBytes: cut, byteLength: tornBytes }, detail);
  return { segment: segment.segmentId, decision: 'truncate-torn-tail', outcome: 'done', repaired: [], lost: [], truncated: [], quarantinedAs, bytesWritten: 0, detail };
}

interface RebuildPlan {
  readonly frames: Map<number, Buffer>;
  readonly source: string | undefined;
  readonly cutIndex: number | undefined;
  readonly allowHoles: boolean;
  readonly dryRun: boolean;
  readonly decision: RepairDecision;
  /** What the segment held, when the inspection has no expectation of it (a missing file). */
  readonly expected?: SegmentExpectation;
}

/** Buffers writes to a file in chunks of about 1 MiB; the file is written front to back. */
class ChunkWriter {
  private chunks: Buffer[] = [];
  private pending = 0;
  offset = 0;
  constructor(private readonly handle: DiskFile | undefined) {}
  async write(bytes: Buffer): Promise<void> {
    this.chunks.push(Buffer.from(bytes));
    this.pending += bytes.byteLength;
    this.offset += bytes.byteLength;
    if (this.pending >= 1024 * 1024) await this.flush();
  }
  /** Replaces the first bytes written (the header, once its version is known). */
  async rewriteStart(bytes: Buffer): Promise<void> {
    const first = this.chunks[0];
    if (this.offset - this.pending === 0 && first !== undefined && first.byteLength === bytes.byteLength) this.chunks[0] = Buffer.from(bytes);
    else if (this.handle) await writeAll(this.handle, bytes, 0);
  }
  async flush(): Promise<void> {
    if (this.handle && this.pending > 0) await writeAll(this.handle, Buffer.concat(this.chunks, this.pending), this.offset - this.pending);
    this.chunks = [];
    this.pending = 0;
  }
}

/**
 * Writes the segment anew: the intact frames of its own file (none when the file is missing), the
 * fetched frames where it has none, and hole frames where the plan allows them.
 */
async function rebuildSegment(ctx: RepairContext, segment: SegmentInspection, plan: RebuildPlan): Promise<SegmentRepair> {
  const analysis = segment.analysis;
  const expected = plan.expected ?? segment.expected;
  // A missing file is rebuilt from its record only: without one, which entries it held is unknown.
  if (analysis === undefined && expected === undefined) throw new Error('unreachable: a missing segment is rebuilt only from its record');
  const recordedLast = expected?.lastIndex ?? analysis?.lastIndex ?? 0;
  const firstIndex = expected?.firstIndex ?? segment.record?.firstIndex ?? analysis?.firstIndex;
  if (firstIndex === undefined) throw new UnrepairableError('first index of the segment is unknown (header, catalog and entries all damaged)', false);
  const sealed = segment.mustBeSealed;
  const endIndex = plan.cutIndex !== undefined ? plan.cutIndex - 1 : sealed ? recordedLast : Math.max(recordedLast, syncedLoss(segment)?.last ?? 0);
  const temp = `${segment.path}${TEMP_SUFFIX}`;
  const disk = ctx.layout.disk;
  if (!plan.dryRun && !segment.present) await disk.mkdirp(ctx.layout.segmentsDir);
  const handle = plan.dryRun ? undefined : await disk.open(temp, 'w');
  const writer = new ChunkWriter(handle);
  const repaired: IndexRange[] = [];
  const lost: IndexRange[] = [];
  // A rebuilt segment keeps its format version (its aggregate's function): a damaged header's is
  // the one the analysis found from the trailer or the checkpoint, else the current one.
  const formatVersion = analysis?.formatVersion ?? FORMAT_VERSION;
  const header = analysis?.header ?? {
    segmentId: segment.segmentId,
    firstIndex,
    createdMs: segment.record?.createdMs ?? ctx.clock.nowMs(),
    logId: logIdOf(ctx.settings.logName),
    logName: ctx.settings.logName,
    formatVersion,
  };
  let aggregate = newAggregate(formatVersion);
  // No header to say (a missing file, or a damaged header and trailer): the chained function of
  // versions 1 and 2 runs beside, and the recorded aggregate picks one (the replicas hold it).
  let alternate = analysis?.header === undefined && formatVersion >= HASHED_LIST_AGGREGATE_VERSION ? newAggregate(CHAINED_AGGREGATE_VERSION) : undefined;
  let indexCount = 0;
  let next = firstIndex;

  const writeFrame = async (frame: Buffer): Promise<void> => {
    await writer.write(frame);
    aggregate.addStored(frame, 8);
    alternate?.addStored(frame, 8);
    indexCount += frameIndexCount(frame);
  };
  const fill = async (upTo: number): Promise<void> => {
    while (next <= upTo) {
      const frame = plan.frames.get(next);
      if (frame) {
        const count = frameIndexCount(frame);
        await writeFrame(frame);
        repaired.push({ first: next, last: next + count - 1 });
        next += count;
        continue;
      }
      if (!plan.allowHoles) throw new UnrepairableError(`no verified copy of entry ${next}`, true);
      let end = next;
      while (end + 1 <= upTo && !plan.frames.has(end + 1)) end += 1;
      const hole = encodeEntry({ index: next, timestampMs: ctx.clock.nowMs(), flags: FLAG_HOLE, payload: encodeHolePayload(end - next + 1, 'lost: damaged and no verified copy') });
      await writeFrame(hole.frame);
      lost.push({ first: next, last: end });
      next = end + 1;
    }
  };

  try {
    await writer.write(encodeSegmentHeader(header));
    if (segment.present) await analyzeSegmentFile(disk, segment.path, segment.segmentId, {
      entryBytesMax: ctx.settings.entryBytesMax,
      firstIndexHint: firstIndex,
      onIntactFrame: async (index, frame, offsetBytes) => {
        if (index < next || index > endIndex) return;
        if (segment.tornWrite && offsetBytes >= segment.tornWrite.offsetBytes) return; // torn: never acknowledged
        await fill(index - 1);
        await writeFrame(frame);
        next = index + frameIndexCount(frame);
      },
    });
    await fill(endIndex);
    if (sealed) {
      const recorded = expected?.aggregateChecksum;
      if (alternate !== undefined && recorded !== undefined && aggregate.value() !== recorded && alternate.value() === recorded) {
        aggregate = alternate;
        await writer.rewriteStart(encodeSegmentHeader({ ...header, formatVersion: alternate.formatVersion }));
      }
      alternate = undefined;
      if (plan.cutIndex === undefined && lost.length === 0 && expected?.aggregateChecksum !== undefined && aggregate.value() !== expected.aggregateChecksum) {
        throw new UnrepairableError('rebuilt segment does not match the recorded aggregate checksum', true);
      }
      await writer.write(encodeTrailer({ segmentId: segment.segmentId, firstIndex, lastIndex: next - 1, indexCount, aggregateChecksum: aggregate.value(), entriesByteLength: writer.offset - SEGMENT_HEADER_BYTES }));
    }
    await writer.flush();
    await handle?.sync();
  } catch (error) {
    await handle?.close();
    if (handle) await disk.remove(temp);
    throw error;
  }
  await handle?.close();
  const truncated: IndexRange[] = plan.cutIndex !== undefined ? [{ first: plan.cutIndex, last: Math.max(plan.cutIndex, recordedLast) }] : [];
  const summary = `rebuilt ${sealed ? 'sealed' : 'open'} segment: ${countIndices(repaired)} entries from ${plan.source ?? 'no source'}, ${countIndices(lost)} lost, ${countIndices(truncated)} rolled back`;
  repaired.splice(0, repaired.length, ...mergeRanges(repaired));
  lost.splice(0, lost.length, ...mergeRanges(lost));
  if (plan.dryRun) return { segment: segment.segmentId, decision: plan.decision, outcome: 'planned', repaired, lost, truncated, ...(plan.source ? { source: plan.source } : {}), bytesWritten: writer.offset, detail: summary };
  const quarantinedAs = await withSpan('segment.install', { 'wal.segment': segment.segmentId }, async () => {
    const old = segment.present ? await quarantineFile(ctx.layout, segment.path, 'damaged', { keepOriginal: true, retention: ctx.recovery.backupRetentionCount, now: ctx.clock.nowMs() }) : undefined;
    if (plan.cutIndex !== undefined) await quarantineBackups(ctx, segment.segmentId);
    await disk.rename(temp, segment.path);
    await disk.fsyncDir(ctx.layout.segmentsDir);
    return old;
  });
  return { segment: segment.segmentId, decision: plan.decision, outcome: 'done', repaired, lost, truncated, ...(plan.source ? { source: plan.source } : {}), ...(quarantinedAs ? { quarantinedAs } : {}), bytesWritten: writer.offset, detail: summary };
}

/** Puts in place a whole copy of a missing segment that verifies against its record, if a source has one. */
async function restoreWholeFile(ctx: RepairContext, segment: SegmentInspection, expected: SegmentExpectation, options: RepairOptions): Promise<SegmentRepair | undefined> {
  for (const src of ctx.sources) {
    const path = await src.fetchSegmentFile(segment.segmentId, expected);
    if (path === undefined) continue;
    const detail = `restored the whole segment from ${src.name}`;
    const range = { first: expected.firstIndex, last: expected.lastIndex };
    if (options.dryRun) {
      await src.release?.(path);
      return { segment: segment.segmentId, decision: 'restore-file', outcome: 'planned', repaired: [range], lost: [], truncated: [], source: src.name, bytesWritten: 0, detail };
    }
    // Copied: a fetched file is released (its temporary directory removed) once copied in place.
    const copy = await verifySegmentCopy(ctx.layout, segment.segmentId, path, { how: 'copy', entryBytesMax: ctx.settings.entryBytesMax, expected }).finally(() => src.release?.(path));
    if (!copy) continue;
    await putSegmentCopyInPlace(ctx.layout, copy);
    return { segment: segment.segmentId, decision: 'restore-file', outcome: 'done', repaired: [range], lost: [], truncated: [], source: src.name, bytesWritten: copy.analysis.fileByteLength, detail };
  }
  return undefined;
}

async function quarantineUnexpected(ctx: RepairContext, path: string, dryRun: boolean): Promise<SegmentRepair> {
  const detail = `moved ${path} to quarantine`;
  if (dryRun) return emptyRepair(-1, 'quarantine-file', 'planned', detail);
  const quarantinedAs = await quarantineFile(ctx.layout, path, 'unexpected', { keepOriginal: false, retention: Number.MAX_SAFE_INTEGER, now: ctx.clock.nowMs() });
  await ctx.layout.disk.fsyncDir(ctx.layout.segmentsDir);
  return { ...emptyRepair(-1, 'quarantine-file', 'done', detail), quarantinedAs };
}

async function quarantineRolledBack(ctx: RepairContext, segment: SegmentInspection, dryRun: boolean): Promise<SegmentRepair> {
  const first = segment.expected?.firstIndex ?? segment.record?.firstIndex ?? segment.analysis?.firstIndex;
  const last = segment.expected?.lastIndex ?? Math.max(segment.record?.lastIndex ?? 0, segment.analysis?.lastIndex ?? 0);
  const truncated = first !== undefined && last >= first ? [{ first, last }] : [];
  const detail = 'segment after the rollback point moved to quarantine';
  if (dryRun || !segment.present) return { segment: segment.segmentId, decision: 'rollback', outcome: dryRun ? 'planned' : 'done', repaired: [], lost: [], truncated, bytesWritten: 0, detail };
  const quarantinedAs = await quarantineFile(ctx.layout, segment.path, 'rolled-back', { keepOriginal: false, retention: Number.MAX_SAFE_INTEGER, now: ctx.clock.nowMs() });
  await ctx.layout.disk.fsyncDir(ctx.layout.segmentsDir);
  await quarantineBackups(ctx, segment.segmentId);
  return { segment: segment.segmentId, decision: 'rollback', outcome: 'done', repaired: [], lost: [], truncated, quarantinedAs, bytesWritten: 0, detail };
}

/**
 * Backups of a segment that a rollback cut or removed describe entries the log no longer has;
 * the id will be reused by new appends, so they must never serve as a source again.
 */
async function quarantineBackups(ctx: RepairContext, segmentId: number): Promise<void> {
  for (let copy = 1; copy <= Math.max(ctx.recovery.backupRetentionCount, 8); copy += 1) {
    const path = ctx.layout.backupPath(segmentId, copy);
    if (await exists(ctx.layout.disk, path)) await quarantineFile(ctx.layout, path, `rolled-back-backup-${copy}`, { keepOriginal: false, retention: Number.MAX_SAFE_INTEGER, now: ctx.clock.nowMs() });
  }
}

async function recopyBackups(ctx: RepairContext, segment: SegmentInspection, dryRun: boolean): Promise<SegmentRepair> {
  const why = segment.backupFindings.map((f) => f.detail).join('; ') || 'the segment was rewritten';
  const detail = `backup copies rewritten from the verified segment (${why})`;
  if (dryRun) return emptyRepair(segment.segmentId, 'recopy-backup', 'planned', detail);
  const damaged = new Set(segment.backupFindings.map((f) => f.file));
  for (let copy = 1; copy <= ctx.recovery.backupRetentionCount; copy += 1) {
    const path = ctx.layout.backupPath(segment.segmentId, copy);
    // A damaged copy is kept in quarantine; an intact one is simply replaced by the same bytes.
    if (damaged.has(relative(ctx.layout.dataDir, path)) && (await exists(ctx.layout.disk, path))) {
      await quarantineFile(ctx.layout, path, `backup-${copy}`, { keepOriginal: false, retention: ctx.recovery.backupRetentionCount, now: ctx.clock.nowMs() });
    }
  }
  await writeBackups(ctx.layout, segment.segmentId, ctx.recovery.backupRetentionCount);
  return emptyRepair(segment.segmentId, 'recopy-backup', 'done', detail);
}

/** Rewrites the catalog from an inspection; damaged sealed segments keep their old record. */
export async function writeCatalog(ctx: RepairContext, inspection: StoreInspection, previous: Catalog | undefined, rolledBack: ReadonlySet<number> = new Set(), keepDisagreeing = false): Promise<Catalog> {
  const segments: SegmentRecord[] = [];
  for (const segment of inspection.segments) {
    if (!segment.present && rolledBack.has(segment.segmentId)) continue; // given up by a rollback, named in the report
    const analysis = segment.analysis;
    // keepDisagreeing (Halt): a record that disagrees with its intact file (bad-catalog) stays.
    const clean = analysis !== undefined && (keepDisagreeing ? segment.findings.length === 0 : segment.findings.every((f) => f.kind === 'bad-catalog'));
    if (!clean || analysis === undefined) {
      if (segment.record) segments.push(segment.record);
      continue;
    }
    segments.push(segmentRecordOf(analysis, segment.record?.createdMs ?? ctx.clock.nowMs()));
  }
  const holes: HoleRecord[] = [...inspection.holes];
  const catalog: Catalog = {
    generation: (previous?.generation ?? 0) + 1,
    logName: ctx.settings.logName,
    logId: logIdOf(ctx.settings.logName),
    segmentBytesMax: ctx.settings.segmentBytesMax,
    entryBytesMax: ctx.settings.entryBytesMax,
    backupRetentionCount: ctx.recovery.backupRetentionCount,
    createdMs: previous?.createdMs ?? ctx.clock.nowMs(),
    segments,
    holes,
  };
  await writeFileAtomic(ctx.layout.disk, ctx.layout.catalogPath, ctx.layout.dataDir, encodeCatalog(catalog));
  return catalog;
}
