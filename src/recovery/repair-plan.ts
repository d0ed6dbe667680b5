// The repair planner: from what inspection found in one segment, what verified copies are at
// hand, and the strategy, to the one step repair takes. Pure: no I/O, no clock. src/wal/repair.ts
// gathers the inputs (inspection, fetched frames, the cluster interlock) and executes the step.
//
// Every per-entry verdict comes from the decision table (decide); the planner only combines the
// verdicts over a segment (one halt halts the segment, one escalation escalates it, the earliest
// rollback sets the cut) and adds the whole-file cases the table does not see: a file whose
// header or trailer is damaged, a missing file, a stray file, damaged backup copies.
// test/unit/repair-plan.test.ts checks every row.
import { type DamageSignals, type RepairDecision, type RepairStrategy, absentEntrySignals, decide, haltsOnCorruption } from './decision.js';
import type { FindingKind } from './findings.js';
import type { IndexRange } from './report.js';

/** One damaged stretch of a segment as inspection saw it. */
export interface DamagedStretch {
  /** Indices the stretch loses; last < first when it loses none (damage between frames). */
  readonly first: number;
  readonly last: number;
  /** The kinds of damage seen in the stretch. */
  readonly kinds: readonly FindingKind[];
  /** A write torn by a crash at the end of the open segment (never acknowledged). */
  readonly atOpenTail: boolean;
  /** False when the damage runs to the end of a segment whose last index nothing records. */
  readonly endKnown: boolean;
}

/** What inspection found in one segment, reduced to what the plan depends on. */
export interface SegmentDamage {
  readonly present: boolean;
  /** Only the catalog's record of the segment disagrees with an intact file. */
  readonly onlyCatalog: boolean;
  /** The segment header or trailer is damaged: the file must be written anew. */
  readonly structural: boolean;
  readonly stretches: readonly DamagedStretch[];
  /** Entries the catalog recorded as synced in the open segment that the file no longer holds. */
  readonly syncedLoss: IndexRange | undefined;
  /** A missing file: the indices it held, when a record says (undefined: unknown). */
  readonly held: IndexRange | undefined;
  /** A missing file known only from the catalog's open record: entries after its checkpoint are unknown. */
  readonly onlyOpenRecord: boolean;
}

/** The verified copies at hand, and what the cluster interlock says of the rest. */
export interface AvailableCopies {
  /** The runs of first..last that no verified frame in hand covers (empty: all covered). */
  uncovered(first: number, last: number): IndexRange[];
  /** A replica may hold an index of first..last although no verified copy was obtained. */
  heldElsewhere(first: number, last: number): boolean;
  /** A missing file: whole copies were tried and none verified (false: not tried yet). */
  readonly wholeCopyTried: boolean;
}

/** The decisions that rebuild a segment file. */
export type RebuildDecision = 'reconstruct' | 'skip' | 'rollback';

export type SegmentStep =
  | { readonly step: 'halt'; readonly detail: string }
  | { readonly step: 'escalate'; readonly detail: string }
  /** Nothing to write (the finding is about its place among its neighbours). */
  | { readonly step: 'keep' }
  /** The file is intact: its catalog record is rewritten from it. */
  | { readonly step: 'rebuild-catalog' }
  /** A missing file: put a whole verified copy in place, and plan again (wholeCopyTried) if none is found. */
  | { readonly step: 'restore-file'; readonly held: IndexRange }
  /** Cut the file at the torn write's first byte (nothing acknowledged is lost). */
  | { readonly step: 'truncate-torn-tail' }
  /**
   * Write the file anew from its intact frames and the verified copies; with allowHoles, record
   * holes where neither has an entry; with cutIndex, end it before that index (rollback).
   */
  | { readonly step: 'rebuild'; readonly decision: RebuildDecision; readonly cutIndex: number | undefined; readonly allowHoles: boolean };

/** A stretch and the table's verdict on it. */
export interface StretchDecision {
  readonly stretch: DamagedStretch;
  readonly decision: RepairDecision;
}

const STRUCTURAL_HEADER_KINDS: ReadonlySet<FindingKind> = new Set(['bad-entry-header', 'bad-trailer', 'trailing-garbage']);
const INDEX_KINDS: ReadonlySet<FindingKind> = new Set(['misplaced-entry', 'index-gap']);

/** The decision table's signals for a damaged stretch. A torn write never counts a copy (it loses no index). */
export function stretchSignals(stretch: DamagedStretch, goodCopy: boolean, heldElsewhere: boolean, strategy: RepairStrategy): DamageSignals {
  const headerOk = !stretch.kinds.some((k) => STRUCTURAL_HEADER_KINDS.has(k));
  const bodyOk = headerOk && !stretch.kinds.includes('checksum-mismatch');
  const losesIndices = stretch.last >= stretch.first;
  return {
    headerOk,
    bodyOk,
    indexOk: bodyOk && !stretch.kinds.some((k) => INDEX_KINDS.has(k)),
    atOpenTail: stretch.atOpenTail,
    goodCopy: goodCopy && !stretch.atOpenTail,
    heldElsewhere: losesIndices && heldElsewhere,
    strategy,
  };
}

/** The index ranges whose verified copies the plan can use: damaged stretches (not torn writes) and synced entries gone. */
export function framesWanted(damage: SegmentDamage): IndexRange[] {
  if (!damage.present) return damage.held ? [damage.held] : [];
  const wanted = damage.stretches.filter((s) => s.last >= s.first && !s.atOpenTail).map((s) => ({ first: s.first, last: s.last }));
  if (damage.syncedLoss) wanted.push(damage.syncedLoss);
  return wanted;
}

/** The table's verdict on every damaged stretch of a present file, and on synced entries it no longer holds. */
export function decideStretches(damage: SegmentDamage, available: AvailableCopies, strategy: RepairStrategy): StretchDecision[] {
  const decisions = damage.stretches.map((stretch): StretchDecision => {
    // With the end unknown, no copy can be shown complete; and a hole of unknown length cannot
    // be recorded, so SkipCorrupted rolls such a stretch back (named in the report) instead.
    const goodCopy = stretch.endKnown && (stretch.last < stretch.first || available.uncovered(stretch.first, stretch.last).length === 0);
    const decision = decide(stretchSignals(stretch, goodCopy, available.heldElsewhere(stretch.first, stretch.last), strategy));
    return { stretch, decision: decision === 'skip' && !stretch.endKnown ? 'rollback' : decision };
  });
  if (damage.syncedLoss) decisions.push(absentDecision(damage.syncedLoss, available.uncovered(damage.syncedLoss.first, damage.syncedLoss.last).length === 0, available, strategy));
  return decisions;
}

function absentDecision(range: IndexRange, goodCopy: boolean, available: AvailableCopies, strategy: RepairStrategy): StretchDecision {
  const stretch: DamagedStretch = { first: range.first, last: range.last, kinds: [], atOpenTail: false, endKnown: true };
  return { stretch, decision: decide(absentEntrySignals({ goodCopy, heldElsewhere: available.heldElsewhere(range.first, range.last), strategy })) };
}

/** The one step repair takes for one segment. */
export function planSegmentRepair(damage: SegmentDamage, available: AvailableCopies, strategy: RepairStrategy): SegmentStep {
  if (!damage.present) return planMissing(damage, available, strategy);
  if (damage.onlyCatalog) return { step: 'rebuild-catalog' };
  const decisions = decideStretches(damage, available, strategy);
  if (damage.structural && haltsOnCorruption(strategy)) return { step: 'halt', detail: 'Halt: segment header or trailer is damaged; not touched' };
  return combine(decisions, damage.structural, strategy);
}

function planMissing(damage: SegmentDamage, available: AvailableCopies, strategy: RepairStrategy): SegmentStep {
  const held = damage.held;
  if (!held) return { step: 'escalate', detail: 'segment file is missing and which entries it held is unknown' };
  if (haltsOnCorruption(strategy)) return { step: 'halt', detail: 'Halt: segment file is missing; not touched' };
  if (!available.wholeCopyTried) return { step: 'restore-file', held };
  // The open segment's record ends at its last checkpoint: synced entries after it are unknown
  // (no source can hand them over) and would vanish unreported from a rebuild that seals at the
  // checkpoint. Unless the strategy gives such entries up, refuse.
  if (damage.onlyOpenRecord && decide(absentEntrySignals({ goodCopy: false, heldElsewhere: false, strategy })) === 'escalate') {
    return { step: 'escalate', detail: `the open segment's file is missing: entries after index ${held.last} (its last checkpoint) are unknown; not rebuilt (try --strategy skip or rollback)` };
  }
  // No whole copy verifies: gather the segment entry by entry. What no source holds intact is
  // decided by the strategy and the interlock like damage in a present file.
  const decisions = available.uncovered(held.first, held.last).map((run) => absentDecision(run, false, available, strategy));
  return combine(decisions, true, strategy);
}

/** The verdicts over a segment combined into one step. `structural`: the file must be written anew even if no index was lost. */
export function combine(decisions: readonly StretchDecision[], structural: boolean, strategy: RepairStrategy): SegmentStep {
  if (decisions.some((d) => d.decision === 'halt')) return { step: 'halt', detail: 'Halt: corruption found; not touched' };
  const escalated = decisions.filter((d) => d.decision === 'escalate');
  if (escalated.length > 0) {
    const ranges = escalated.map((d) => `${d.stretch.first}..${d.stretch.last}`).join(', ');
    return { step: 'escalate', detail: `no verified copy of entries ${ranges}; strategy ${strategy} will not drop them (try --strategy skip or rollback)` };
  }
  // Only findings about the segment's place among the others (a gap or an overlap with its
  // neighbour): its own bytes are intact and stay as they are.
  if (decisions.length === 0 && !structural) return { step: 'keep' };
  if (!structural && decisions.every((d) => d.decision === 'truncate-torn-tail')) return { step: 'truncate-torn-tail' };
  const rollbacks = decisions.filter((d) => d.decision === 'rollback').map((d) => d.stretch.first);
  const cutIndex = rollbacks.length > 0 ? Math.min(...rollbacks) : undefined;
  const allowHoles = decisions.some((d) => d.decision === 'skip');
  return { step: 'rebuild', decision: cutIndex !== undefined ? 'rollback' : allowHoles ? 'skip' : 'reconstruct', cutIndex, allowHoles };
}

/** What repair does about damage to a whole file outside the segment's own bytes. */
export type FileStep = 'halt' | 'quarantine-file' | 'recopy-backup';

/** A stray file in segments/ is moved to quarantine; damaged backup copies are written anew; Halt leaves both. */
export function planFileRepair(what: 'unexpected-file' | 'backup-damaged', strategy: RepairStrategy): FileStep {
  if (haltsOnCorruption(strategy)) return 'halt';
  return what === 'unexpected-file' ? 'quarantine-file' : 'recopy-backup';
}

/**
 * Whether a segment's backups are written anew after its repair: when its contents changed (a
 * hole recorded in a sealed segment) or its own backups are damaged or missing; never after a
 * repair that failed or rolled the segment back. A rebuilt segment equals its verified record,
 * so intact backups of it stay as they are.
 */
export function backupsFollowRepair(r: { decision: string; succeeded: boolean; mustBeSealed: boolean; backupsDamaged: boolean; backupCopies: number }): boolean {
  if (r.backupCopies === 0 || !r.succeeded || r.decision === 'rollback') return false;
  return (r.decision === 'skip' && r.mustBeSealed) || r.backupsDamaged;
}

/** Available copies from a set of covered index ranges (tests and callers holding ranges). */
export function availableFromRanges(covered: readonly IndexRange[], heldElsewhere: readonly IndexRange[] = [], wholeCopyTried = true): AvailableCopies {
  const has = (i: number): boolean => covered.some((r) => i >= r.first && i <= r.last);
  return {
    uncovered: (first, last) => uncoveredRuns(first, last, has),
    heldElsewhere: (first, last) => heldElsewhere.some((r) => r.first <= last && first <= r.last),
    wholeCopyTried,
  };
}

/** The runs of first..last where `has` is false. `step(i)`: how many indices the frame at i covers (hole frames cover several). */
export function uncoveredRuns(first: number, last: number, has: (index: number) => boolean, step: (index: number) => number = () => 1): IndexRange[] {
  const runs: IndexRange[] = [];
  let next = first;
  while (next <= last) {
    if (has(next)) {
      next += Math.max(1, step(next));
      continue;
    }
    let end = next;
    while (end + 1 <= last && !has(end + 1)) end += 1;
    runs.push({ first: next, last: end });
    next = end + 1;
  }
  return runs;
}
