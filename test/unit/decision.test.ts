// The recovery decision table, checked over every combination of its inputs (2^6 signals x 4
// strategies = 256). Each property is derived from DESIGN.md section 4 (torn tail versus
// corruption, the strategies, the cluster interlock), not read off the table, so a reordered or
// edited rule that breaks the design fails here.
import { describe, expect, it } from 'vitest';
import {
  type DamageSignals,
  type RepairDecision,
  DECISION_TABLE,
  REPAIR_STRATEGIES,
  decide,
  dropsData,
} from '../../src/recovery/index.js';

const ALL_DECISIONS: readonly RepairDecision[] = ['keep', 'truncate-torn-tail', 'reconstruct', 'skip', 'rollback', 'halt', 'escalate'];
const BOOLEANS = [false, true] as const;

function everyCombination(): DamageSignals[] {
  const out: DamageSignals[] = [];
  for (const headerOk of BOOLEANS)
    for (const bodyOk of BOOLEANS)
      for (const indexOk of BOOLEANS)
        for (const atOpenTail of BOOLEANS)
          for (const goodCopy of BOOLEANS)
            for (const heldElsewhere of BOOLEANS)
              for (const strategy of REPAIR_STRATEGIES) out.push({ headerOk, bodyOk, indexOk, atOpenTail, goodCopy, heldElsewhere, strategy });
  return out;
}

const COMBINATIONS = everyCombination();
const intact = (s: DamageSignals): boolean => s.headerOk && s.bodyOk && s.indexOk;
const label = (s: DamageSignals): string => JSON.stringify(s);

/** Checks one property over every combination and names the first combinations that break it. */
function holdsForAll(property: (s: DamageSignals, d: RepairDecision) => boolean): void {
  const broken = COMBINATIONS.filter((s) => !property(s, decide(s))).map((s) => `${label(s)} -> ${decide(s)}`);
  expect(broken.slice(0, 5)).toEqual([]);
}

describe('decision table: every combination of its inputs', () => {
  it('enumerates 256 distinct combinations over the 4 strategies', () => {
    expect(REPAIR_STRATEGIES).toHaveLength(4);
    expect(COMBINATIONS).toHaveLength(256);
    expect(new Set(COMBINATIONS.map(label)).size).toBe(256);
  });

  it('gives every combination exactly one action, the first matching rule, deterministically', () => {
    for (const s of COMBINATIONS) {
      const d = decide(s);
      expect(ALL_DECISIONS).toContain(d);
      expect(decide({ ...s })).toBe(d);
      const first = DECISION_TABLE.find((rule) => rule.when(s));
      expect(first, label(s)).toBeDefined();
      expect(first?.then).toBe(d);
    }
  });

  it('keeps an entry if and only if it is intact (header, body and index all ok)', () => {
    holdsForAll((s, d) => (d === 'keep') === intact(s));
  });

  it('never touches an intact entry, whatever the position, copies or strategy', () => {
    holdsForAll((s, d) => !intact(s) || d === 'keep');
  });

  it('drops nothing when a verified copy exists: never skip, rollback or truncate', () => {
    holdsForAll((s, d) => !s.goodCopy || !['skip', 'rollback', 'truncate-torn-tail'].includes(d));
  });

  it('rebuilds only from a verified copy', () => {
    holdsForAll((s, d) => d !== 'reconstruct' || s.goodCopy);
  });

  it('truncates a torn tail without a copy under every strategy', () => {
    holdsForAll((s, d) => intact(s) || !s.atOpenTail || s.goodCopy || d === 'truncate-torn-tail');
  });

  it('truncates only a torn tail: damage anywhere else is corruption, never silently cut', () => {
    holdsForAll((s, d) => d !== 'truncate-torn-tail' || (s.atOpenTail && !intact(s)));
  });

  it('under Halt, never drops or rewrites data that is not the torn tail: it halts', () => {
    holdsForAll((s, d) => s.strategy !== 'halt' || s.atOpenTail || intact(s) || d === 'halt');
    holdsForAll((s, d) => s.strategy !== 'halt' || s.atOpenTail || !['skip', 'rollback', 'truncate-torn-tail', 'reconstruct'].includes(d));
  });

  it('halts only under Halt', () => {
    holdsForAll((s, d) => d !== 'halt' || s.strategy === 'halt');
  });

  it('never skips or rolls back an entry a replica may hold (a faulty copy is not an absent copy)', () => {
    holdsForAll((s, d) => !s.heldElsewhere || (d !== 'skip' && d !== 'rollback'));
  });

  it('PartialReconstruct never drops data', () => {
    holdsForAll((s, d) => s.strategy !== 'partial' || !dropsData(d));
  });

  it('SkipCorrupted never rolls back, Rollback never records holes', () => {
    holdsForAll((s, d) => s.strategy !== 'skip' || d !== 'rollback');
    holdsForAll((s, d) => s.strategy !== 'rollback' || d !== 'skip');
  });

  it('gives up data only through the chosen strategy', () => {
    holdsForAll((s, d) => d !== 'skip' || s.strategy === 'skip');
    holdsForAll((s, d) => d !== 'rollback' || s.strategy === 'rollback');
  });

  it('applies Skip and Rollback to unrecoverable corruption that no replica may hold', () => {
    const unrecoverable = (s: DamageSignals): boolean => !intact(s) && !s.atOpenTail && !s.goodCopy && !s.heldElsewhere;
    holdsForAll((s, d) => !unrecoverable(s) || s.strategy !== 'skip' || d === 'skip');
    holdsForAll((s, d) => !unrecoverable(s) || s.strategy !== 'rollback' || d === 'rollback');
  });

  it('reports corruption it may not drop instead of keeping it silently', () => {
    holdsForAll((s, d) => intact(s) || d !== 'keep');
  });
});

describe('dropsData', () => {
  it('is true exactly for skip and rollback', () => {
    for (const d of ALL_DECISIONS) expect(dropsData(d), d).toBe(d === 'skip' || d === 'rollback');
  });
});
