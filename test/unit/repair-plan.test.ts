// The repair planner (src/recovery/repair-plan.ts), checked row by row: every combination of one
// damaged stretch's signals, the copies at hand, the interlock, a damaged header or trailer and
// the strategy; every case of a missing file; the whole-file steps; and, with fast-check, that a
// segment's plan does not depend on the order of its stretches. The expectations come from
// DESIGN.md section 4 and docs/RECOVERY.md (what each strategy may give up), not from the code.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type DamagedStretch,
  type FindingKind,
  type RepairStrategy,
  type SegmentDamage,
  type SegmentStep,
  REPAIR_STRATEGIES,
  availableFromRanges,
  backupsFollowRepair,
  framesWanted,
  planFileRepair,
  planSegmentRepair,
  uncoveredRuns,
} from '../../src/recovery/index.js';

const BOOLEANS = [false, true] as const;
const KIND_SETS: ReadonlyArray<readonly FindingKind[]> = [['checksum-mismatch'], ['bad-entry-header'], ['index-gap'], ['misplaced-entry'], ['checksum-mismatch', 'bad-entry-header']];

function present(stretches: readonly DamagedStretch[], o: Partial<SegmentDamage> = {}): SegmentDamage {
  return { present: true, onlyCatalog: false, structural: false, stretches, syncedLoss: undefined, held: undefined, onlyOpenRecord: false, ...o };
}

interface Row {
  readonly kinds: readonly FindingKind[];
  readonly atOpenTail: boolean;
  readonly endKnown: boolean;
  readonly covered: boolean;
  readonly heldElsewhere: boolean;
  readonly structural: boolean;
  readonly strategy: RepairStrategy;
}

function everyRow(): Row[] {
  const rows: Row[] = [];
  for (const kinds of KIND_SETS)
    for (const atOpenTail of BOOLEANS)
      for (const endKnown of BOOLEANS)
        for (const covered of BOOLEANS)
          for (const heldElsewhere of BOOLEANS)
            for (const structural of BOOLEANS)
              for (const strategy of REPAIR_STRATEGIES) rows.push({ kinds, atOpenTail, endKnown, covered, heldElsewhere, structural, strategy });
  return rows;
}

const ROWS = everyRow();
const STRETCH = { first: 10, last: 14 };

function planRow(r: Row): SegmentStep {
  const stretch: DamagedStretch = { ...STRETCH, kinds: r.kinds, atOpenTail: r.atOpenTail, endKnown: r.endKnown };
  const available = availableFromRanges(r.covered ? [{ first: 1, last: 100 }] : [], r.heldElsewhere ? [STRETCH] : []);
  return planSegmentRepair(present([stretch], { structural: r.structural }), available, r.strategy);
}

function holdsForAll(property: (r: Row, step: SegmentStep) => boolean): void {
  const broken = ROWS.filter((r) => !property(r, planRow(r))).map((r) => `${JSON.stringify(r)} -> ${JSON.stringify(planRow(r))}`);
  expect(broken.slice(0, 5)).toEqual([]);
}

const drops = (s: SegmentStep): boolean => s.step === 'rebuild' && (s.allowHoles || s.cutIndex !== undefined);

describe('repair plan: one damaged stretch, every combination', () => {
  it('covers 5 kinds x 2^5 signals x 4 strategies, each with exactly one step', () => {
    expect(ROWS).toHaveLength(640);
    for (const r of ROWS) expect(['halt', 'escalate', 'keep', 'truncate-torn-tail', 'rebuild']).toContain(planRow(r).step);
  });

  it('a torn write alone is cut whatever the strategy; with a damaged header or trailer the file is rebuilt (or left, under Halt)', () => {
    holdsForAll((r, s) => {
      if (!r.atOpenTail) return true;
      if (!r.structural) return s.step === 'truncate-torn-tail';
      return r.strategy === 'halt' ? s.step === 'halt' : s.step === 'rebuild' && s.decision === 'reconstruct' && !drops(s);
    });
  });

  it('Halt leaves corruption untouched, copy or not', () => {
    holdsForAll((r, s) => r.strategy !== 'halt' || r.atOpenTail || s.step === 'halt');
  });

  it('PartialReconstruct never drops an entry: it rebuilds from a complete verified copy or escalates', () => {
    holdsForAll((r, s) => r.strategy !== 'partial' || !drops(s));
    holdsForAll((r, s) => r.strategy !== 'partial' || r.atOpenTail || (s.step === 'rebuild') === (r.covered && r.endKnown));
  });

  it('a complete verified copy is always used (never a hole, never a rollback) unless Halt', () => {
    holdsForAll((r, s) => !(r.covered && r.endKnown && !r.atOpenTail && r.strategy !== 'halt') || (s.step === 'rebuild' && s.decision === 'reconstruct' && !drops(s)));
  });

  it('the interlock: entries a replica may hold are never dropped, under any strategy', () => {
    holdsForAll((r, s) => !(r.heldElsewhere && !r.atOpenTail && !(r.covered && r.endKnown)) || !drops(s));
  });

  it('SkipCorrupted records a hole; a stretch of unknown end cannot be a hole and is rolled back instead', () => {
    holdsForAll((r, s) => {
      if (r.strategy !== 'skip' || r.atOpenTail || r.heldElsewhere || (r.covered && r.endKnown)) return true;
      return r.endKnown ? s.step === 'rebuild' && s.decision === 'skip' && s.allowHoles && s.cutIndex === undefined : s.step === 'rebuild' && s.decision === 'rollback' && s.cutIndex === STRETCH.first;
    });
  });

  it('Rollback cuts the log at the first damaged index', () => {
    holdsForAll((r, s) => {
      if (r.strategy !== 'rollback' || r.atOpenTail || r.heldElsewhere || (r.covered && r.endKnown)) return true;
      return s.step === 'rebuild' && s.decision === 'rollback' && s.cutIndex === STRETCH.first && !s.allowHoles;
    });
  });

  it('only Skip and Rollback ever give entries up', () => {
    holdsForAll((r, s) => !drops(s) || r.strategy === 'skip' || r.strategy === 'rollback');
  });
});

describe('repair plan: whole segments', () => {
  const none = availableFromRanges([]);

  it('an intact file whose catalog record disagrees: the record is rewritten, whatever the strategy', () => {
    for (const strategy of REPAIR_STRATEGIES) expect(planSegmentRepair(present([], { onlyCatalog: true }), none, strategy)).toEqual({ step: 'rebuild-catalog' });
  });

  it('no damaged stretch and intact header and trailer: kept (its neighbours are repaired); a damaged header alone: rebuilt', () => {
    for (const strategy of REPAIR_STRATEGIES) {
      expect(planSegmentRepair(present([]), none, strategy)).toEqual({ step: 'keep' });
      const structural = planSegmentRepair(present([], { structural: true }), none, strategy);
      expect(structural.step).toBe(strategy === 'halt' ? 'halt' : 'rebuild');
    }
  });

  it('synced entries the open segment lost are decided like absent entries', () => {
    const lost = { first: 20, last: 25 };
    const damage = present([], { syncedLoss: lost });
    expect(framesWanted(damage)).toEqual([lost]);
    expect(planSegmentRepair(damage, none, 'partial').step).toBe('escalate');
    expect(planSegmentRepair(damage, availableFromRanges([lost]), 'partial')).toMatchObject({ step: 'rebuild', decision: 'reconstruct' });
    expect(planSegmentRepair(damage, none, 'skip')).toMatchObject({ step: 'rebuild', decision: 'skip', allowHoles: true });
    expect(planSegmentRepair(damage, none, 'rollback')).toMatchObject({ step: 'rebuild', decision: 'rollback', cutIndex: 20 });
  });

  it('the earliest rollback sets the cut; one escalation or one halt decides the whole segment', () => {
    const a: DamagedStretch = { first: 30, last: 31, kinds: ['checksum-mismatch'], atOpenTail: false, endKnown: true };
    const b: DamagedStretch = { first: 12, last: 12, kinds: ['bad-entry-header'], atOpenTail: false, endKnown: true };
    expect(planSegmentRepair(present([a, b]), none, 'rollback')).toMatchObject({ step: 'rebuild', cutIndex: 12 });
    expect(planSegmentRepair(present([a, b]), availableFromRanges([], [{ first: 30, last: 30 }]), 'skip').step).toBe('escalate');
    expect(planSegmentRepair(present([a, b]), availableFromRanges([{ first: 12, last: 12 }]), 'partial').step).toBe('escalate');
  });

  it('copies are asked for the damaged stretches and lost synced entries, never for a torn write', () => {
    const torn: DamagedStretch = { first: 40, last: 44, kinds: ['bad-entry-header'], atOpenTail: true, endKnown: true };
    const flip: DamagedStretch = { first: 5, last: 5, kinds: ['checksum-mismatch'], atOpenTail: false, endKnown: true };
    const between: DamagedStretch = { first: 8, last: 7, kinds: ['bad-entry-header'], atOpenTail: false, endKnown: true };
    expect(framesWanted(present([torn, flip, between], { syncedLoss: { first: 50, last: 51 } }))).toEqual([{ first: 5, last: 5 }, { first: 50, last: 51 }]);
  });

  it('a plan does not depend on the order of the stretches', () => {
    const stretch = fc.record({
      first: fc.integer({ min: 1, max: 60 }),
      length: fc.integer({ min: 0, max: 4 }),
      kinds: fc.constantFrom(...KIND_SETS),
      atOpenTail: fc.boolean(),
      endKnown: fc.boolean(),
    }).map((s): DamagedStretch => ({ first: s.first, last: s.first + s.length - 1, kinds: s.kinds, atOpenTail: s.atOpenTail, endKnown: s.endKnown }));
    const range = fc.integer({ min: 1, max: 60 }).chain((first) => fc.integer({ min: first, max: first + 5 }).map((last) => ({ first, last })));
    fc.assert(
      fc.property(fc.array(stretch, { maxLength: 5 }), fc.array(range, { maxLength: 4 }), fc.array(range, { maxLength: 2 }), fc.boolean(), fc.constantFrom(...REPAIR_STRATEGIES), (stretches, covered, held, structural, strategy) => {
        const available = availableFromRanges(covered, held);
        const forward = planSegmentRepair(present(stretches, { structural }), available, strategy);
        const backward = planSegmentRepair(present([...stretches].reverse(), { structural }), available, strategy);
        const shape = (s: SegmentStep): unknown => (s.step === 'rebuild' ? s : s.step);
        expect(shape(backward)).toEqual(shape(forward));
      }),
      { numRuns: 300 },
    );
  });
});

describe('repair plan: a missing segment file', () => {
  const held = { first: 100, last: 109 };
  const missing = (o: Partial<SegmentDamage> = {}): SegmentDamage => ({ present: false, onlyCatalog: false, structural: false, stretches: [], syncedLoss: undefined, held, onlyOpenRecord: false, ...o });

  it('unknown contents escalate, Halt halts, and otherwise a whole verified copy is tried first', () => {
    for (const strategy of REPAIR_STRATEGIES) {
      expect(planSegmentRepair(missing({ held: undefined }), availableFromRanges([], [], false), strategy).step).toBe('escalate');
      const first = planSegmentRepair(missing(), availableFromRanges([], [], false), strategy);
      expect(first).toEqual(strategy === 'halt' ? { step: 'halt', detail: expect.any(String) } : { step: 'restore-file', held });
    }
    expect(framesWanted(missing())).toEqual([held]);
  });

  it('with no whole copy: rebuilt entry by entry; what no source holds is decided by the strategy', () => {
    const partly = availableFromRanges([{ first: 100, last: 104 }, { first: 107, last: 109 }]);
    expect(planSegmentRepair(missing(), availableFromRanges([held]), 'partial')).toMatchObject({ step: 'rebuild', decision: 'reconstruct', allowHoles: false });
    expect(planSegmentRepair(missing(), partly, 'partial')).toMatchObject({ step: 'escalate', detail: expect.stringContaining('105..106') });
    expect(planSegmentRepair(missing(), partly, 'skip')).toMatchObject({ step: 'rebuild', decision: 'skip', allowHoles: true });
    expect(planSegmentRepair(missing(), partly, 'rollback')).toMatchObject({ step: 'rebuild', decision: 'rollback', cutIndex: 105 });
    expect(planSegmentRepair(missing(), availableFromRanges([], [{ first: 105, last: 105 }]), 'skip').step).toBe('escalate');
  });

  it('known only from the open record: partial refuses (entries after the checkpoint are unknown), skip and rollback go on', () => {
    const damage = missing({ onlyOpenRecord: true });
    const all = availableFromRanges([held]);
    expect(planSegmentRepair(damage, all, 'partial').step).toBe('escalate');
    expect(planSegmentRepair(damage, all, 'skip').step).toBe('rebuild');
    expect(planSegmentRepair(damage, all, 'rollback').step).toBe('rebuild');
  });
});

describe('repair plan: whole files and backups', () => {
  it('stray files are quarantined and damaged backups rewritten, except under Halt', () => {
    for (const strategy of REPAIR_STRATEGIES) {
      expect(planFileRepair('unexpected-file', strategy)).toBe(strategy === 'halt' ? 'halt' : 'quarantine-file');
      expect(planFileRepair('backup-damaged', strategy)).toBe(strategy === 'halt' ? 'halt' : 'recopy-backup');
    }
  });

  it('backups follow a repair that changed a sealed segment or found them damaged; never a failed repair or a rollback', () => {
    for (const decision of ['reconstruct', 'skip', 'rollback', 'truncate-torn-tail'])
      for (const succeeded of BOOLEANS)
        for (const mustBeSealed of BOOLEANS)
          for (const backupsDamaged of BOOLEANS)
            for (const backupCopies of [0, 1]) {
              const expected = backupCopies > 0 && succeeded && decision !== 'rollback' && ((decision === 'skip' && mustBeSealed) || backupsDamaged);
              expect(backupsFollowRepair({ decision, succeeded, mustBeSealed, backupsDamaged, backupCopies })).toBe(expected);
            }
  });
});

describe('uncoveredRuns', () => {
  it('returns exactly the indices not covered, as maximal disjoint runs in order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 30 }), fc.uniqueArray(fc.integer({ min: 0, max: 40 })), (first, length, coveredList) => {
        const last = first + length - 1;
        const covered = new Set(coveredList);
        const runs = uncoveredRuns(first, last, (i) => covered.has(i));
        const fromRuns = runs.flatMap((r) => Array.from({ length: r.last - r.first + 1 }, (_, k) => r.first + k));
        const expected = Array.from({ length: Math.max(0, length) }, (_, k) => first + k).filter((i) => !covered.has(i));
        expect(fromRuns).toEqual(expected);
        for (let k = 1; k < runs.length; k += 1) expect((runs[k]?.first ?? 0) - (runs[k - 1]?.last ?? 0)).toBeGreaterThan(1);
      }),
    );
  });

  it('a frame covering several indices (a hole frame) covers all of them', () => {
    expect(uncoveredRuns(1, 10, (i) => i === 1 || i === 8, (i) => (i === 1 ? 4 : 1))).toEqual([{ first: 5, last: 7 }, { first: 9, last: 10 }]);
  });
});
