// Entries whose bytes are absent (a missing file, synced entries cut from the open segment) and
// the Halt gate for whole-file damage: both read off the decision table, checked here against
// DESIGN.md section 4 for every strategy and every combination of the remaining signals.
import { describe, expect, it } from 'vitest';
import { REPAIR_STRATEGIES, absentEntrySignals, decide, haltsOnCorruption } from '../../src/recovery/index.js';

const BOOLEANS = [false, true] as const;

describe('absent entries', () => {
  it('are never kept nor cut as a torn tail, whatever the strategy', () => {
    for (const strategy of REPAIR_STRATEGIES)
      for (const goodCopy of BOOLEANS)
        for (const heldElsewhere of BOOLEANS) {
          const decision = decide(absentEntrySignals({ goodCopy, heldElsewhere, strategy }));
          expect(decision).not.toBe('keep');
          expect(decision).not.toBe('truncate-torn-tail');
        }
  });

  it('are rebuilt from a verified copy under every strategy but Halt', () => {
    for (const strategy of REPAIR_STRATEGIES) {
      const decision = decide(absentEntrySignals({ goodCopy: true, heldElsewhere: false, strategy }));
      expect(decision).toBe(strategy === 'halt' ? 'halt' : 'reconstruct');
    }
  });

  it('without a copy: PartialReconstruct escalates, Skip records a hole, Rollback rolls back', () => {
    const without = (strategy: (typeof REPAIR_STRATEGIES)[number]) => decide(absentEntrySignals({ goodCopy: false, heldElsewhere: false, strategy }));
    expect(without('partial')).toBe('escalate');
    expect(without('skip')).toBe('skip');
    expect(without('rollback')).toBe('rollback');
    expect(without('halt')).toBe('halt');
  });

  it('are never dropped while a replica may still hold them (the interlock)', () => {
    for (const strategy of REPAIR_STRATEGIES) {
      const decision = decide(absentEntrySignals({ goodCopy: false, heldElsewhere: true, strategy }));
      expect(['escalate', 'halt']).toContain(decision);
    }
  });
});

describe('haltsOnCorruption', () => {
  it('holds for Halt only', () => {
    expect(REPAIR_STRATEGIES.filter(haltsOnCorruption)).toEqual(['halt']);
  });
});
