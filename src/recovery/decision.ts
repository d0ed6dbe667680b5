// The recovery decision table: one pure mapping from the independent signals about a damaged
// entry (or range of entries) to the one action recovery takes. Rules are tried in order and the
// first that matches wins; the last rule matches everything, so every combination has an action.
// test/unit/decision.test.ts enumerates every combination of the inputs.
//
// The position signal `atOpenTail` ("this damage is a write torn by a crash") is itself derived
// by a small pure rule, TORN_WRITE_RULES below, from independent signals about where the damage
// lies and what it looks like; its test enumerates every combination of those too.

export type RepairStrategy = 'partial' | 'skip' | 'rollback' | 'halt';
export const REPAIR_STRATEGIES: readonly RepairStrategy[] = ['partial', 'skip', 'rollback', 'halt'];

/** The specification's RepairAction names for each strategy. */
export const REPAIR_ACTION_NAMES: Readonly<Record<RepairStrategy, string>> = {
  partial: 'PartialReconstruct',
  skip: 'SkipCorrupted',
  rollback: 'Rollback',
  halt: 'Halt',
};

export interface DamageSignals {
  /** The entry header passed its crc32 (its length and index can be trusted). */
  readonly headerOk: boolean;
  /** The entry's SHA3 checksum matched (false whenever the header is not ok). */
  readonly bodyOk: boolean;
  /** The entry's index is the one expected at its position. */
  readonly indexOk: boolean;
  /**
   * The damage is a write torn by a crash: in the open segment, within the last write that could
   * have been in flight (isTornWrite below). Bytes from its first damaged byte on were never
   * acknowledged.
   */
  readonly atOpenTail: boolean;
  /** A verified copy is available from a replica or a local backup. */
  readonly goodCopy: boolean;
  /** A replica may hold the entry although no verified copy was obtained (cluster interlock). */
  readonly heldElsewhere: boolean;
  readonly strategy: RepairStrategy;
}

export type RepairDecision =
  /** Intact: nothing to do. */
  | 'keep'
  /** Roll back bytes written after the last completed sync (never acknowledged). */
  | 'truncate-torn-tail'
  /** Rebuild from a verified copy. */
  | 'reconstruct'
  /** Record the entries as a hole; reads of them say "entry lost". */
  | 'skip'
  /** Truncate the log before the damage. */
  | 'rollback'
  /** Refuse to go on; an operator decides. */
  | 'halt'
  /** Not repairable under this strategy now: report, count a failed attempt, retry or escalate. */
  | 'escalate';

interface Rule {
  readonly why: string;
  readonly when: (s: DamageSignals) => boolean;
  readonly then: RepairDecision;
}

const intact = (s: DamageSignals): boolean => s.headerOk && s.bodyOk && s.indexOk;

export const DECISION_TABLE: readonly Rule[] = [
  { why: 'intact entry', when: intact, then: 'keep' },
  { why: 'tail after a crash, but a verified copy exists: lose nothing', when: (s) => s.atOpenTail && s.goodCopy, then: 'reconstruct' },
  { why: 'a crash can only tear what was not yet synced', when: (s) => s.atOpenTail, then: 'truncate-torn-tail' },
  { why: 'corruption under Halt: a human decides', when: (s) => s.strategy === 'halt', then: 'halt' },
  { why: 'corruption with a verified copy: rebuild it', when: (s) => s.goodCopy, then: 'reconstruct' },
  { why: 'a faulty copy is not an absent copy: never drop what a replica may hold', when: (s) => s.heldElsewhere, then: 'escalate' },
  { why: 'SkipCorrupted: keep the rest, record the hole', when: (s) => s.strategy === 'skip', then: 'skip' },
  { why: 'Rollback: truncate before the damage', when: (s) => s.strategy === 'rollback', then: 'rollback' },
  { why: 'PartialReconstruct without a copy: nothing is dropped silently', when: () => true, then: 'escalate' },
];

export function decide(signals: DamageSignals): RepairDecision {
  for (const rule of DECISION_TABLE) {
    if (rule.when(signals)) return rule.then;
  }
  throw new Error('unreachable: the decision table ends with a catch-all rule');
}

/**
 * The signals of entries whose bytes are absent (a missing segment file, entries the catalog
 * recorded as synced that the file no longer holds): no header, no body and no index to check,
 * and not a torn write (a crash never removes synced bytes). What remains to decide on is whether
 * a verified copy exists, whether a replica may hold them, and the strategy.
 */
export function absentEntrySignals(signals: Pick<DamageSignals, 'goodCopy' | 'heldElsewhere' | 'strategy'>): DamageSignals {
  return { headerOk: false, bodyOk: false, indexOk: false, atOpenTail: false, ...signals };
}

/**
 * Whether the strategy leaves corruption as it is even when a verified copy is at hand (Halt).
 * Read off the table, so that the table stays the one place that says what a strategy does:
 * damage to a whole file (header, trailer, a missing file, a stray file, a damaged backup) is
 * left untouched exactly when damaged entries would be.
 */
export function haltsOnCorruption(strategy: RepairStrategy): boolean {
  return decide(absentEntrySignals({ goodCopy: true, heldElsewhere: false, strategy })) === 'halt';
}

/** Decisions that give up acknowledged data (must be named in the report). */
export function dropsData(decision: RepairDecision): boolean {
  return decision === 'skip' || decision === 'rollback';
}

// ---------------------------------------------------------------------------------------------
// Torn write or corruption: where a damaged stretch of a segment lies, and what it looks like.
//
// A crash can only tear what was written after the last completed fdatasync, and the store never
// issues more than tornWindowBytes (groupCommitBytesMax, or one frame when a single frame is
// larger) between two fdatasyncs. So the first byte a crash damaged lies within tornWindowBytes
// of the end of the file, after the last checkpoint, in the open segment. Within that last write
// the page cache may have written pages back in any order: a page that never reached the disk
// reads as zeros (nothing was there before), and the pages after it may hold intact frames. A
// crash never changes a byte into another non-zero byte, and never produces an intact frame out
// of place. Hence the rule:

export interface TornWriteSignals {
  /** The last segment file, with an intact header, no trailer, and not recorded as sealed. */
  readonly inOpenSegment: boolean;
  /**
   * Damage a crash can leave: a frame whose header or body fails its checks, or a file ending
   * inside a frame. Not an intact frame out of place, nor indices skipped between intact frames.
   */
  readonly crashShaped: boolean;
  /** The first damaged byte lies after the last checkpoint and within tornWindowBytes of the end of the file. */
  readonly withinLastWrite: boolean;
  /** An intact, in-sequence frame follows the damage. */
  readonly intactAfter: boolean;
  /** The damaged stretch holds zero bytes up to a sector's end: a page the crash never wrote back. */
  readonly unwrittenSector: boolean;
}

interface TornRule {
  readonly why: string;
  readonly when: (s: TornWriteSignals) => boolean;
  readonly torn: boolean;
}

export const TORN_WRITE_RULES: readonly TornRule[] = [
  { why: 'sealed segments and every segment but the last were synced whole', when: (s) => !s.inOpenSegment, torn: false },
  { why: 'a crash drops bytes; it does not misplace intact frames or skip indices', when: (s) => !s.crashShaped, torn: false },
  { why: 'bytes before the last write were synced: damage there is corruption', when: (s) => !s.withinLastWrite, torn: false },
  { why: 'nothing intact after it: the last write was cut short', when: (s) => !s.intactAfter, torn: true },
  { why: 'intact frames after pages never written back: the last write reached the disk out of order', when: (s) => s.unwrittenSector, torn: true },
  { why: 'intact frames after damage that is not unwritten bytes (a flipped bit): corruption', when: () => true, torn: false },
];

/** Whether damage with these signals is a torn write (roll back from its first byte) or corruption. */
export function isTornWrite(signals: TornWriteSignals): boolean {
  for (const rule of TORN_WRITE_RULES) {
    if (rule.when(signals)) return rule.torn;
  }
  throw new Error('unreachable: the torn-write rules end with a catch-all rule');
}

/**
 * Whether damage starting at firstDamagedOffsetBytes lies within the last write that could have
 * been in flight at a crash: after syncedEndBytes (what a checkpoint recorded as synced) and
 * within tornWindowBytes of the end of the file.
 */
export function withinLastWrite(firstDamagedOffsetBytes: number, fileByteLength: number, syncedEndBytes: number, tornWindowBytes: number): boolean {
  return firstDamagedOffsetBytes >= syncedEndBytes && firstDamagedOffsetBytes >= fileByteLength - tornWindowBytes;
}
