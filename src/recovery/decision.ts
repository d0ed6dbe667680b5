// The recovery decision table: one pure mapping from the independent signals about a damaged
// entry (or range of entries) to the one action recovery takes. Rules are tried in order and the
// first that matches wins; the last rule matches everything, so every combination has an action.
// test/unit/decision.test.ts enumerates every combination of the inputs.

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
  /** The damage is at the end of the open segment with no intact entry after it. */
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

/** Decisions that give up acknowledged data (must be named in the report). */
export function dropsData(decision: RepairDecision): boolean {
  return decision === 'skip' || decision === 'rollback';
}
