// The simulator's exactly-once check (src/sim/model.ts): every session batch is in the final
// log once, whole and in order, or not at all.
import { describe, expect, it } from 'vitest';
import { Model } from '../../src/sim/model.js';

function check(log: string[], batches: Record<string, string[]>): string[] {
  const model = new Model(() => 0);
  for (const [key, payloads] of Object.entries(batches)) model.sessionBatch(key, payloads);
  model.checkFinal(new Map(log.map((p, i) => [i + 1, p])), log.length);
  return model.violations.map((v) => v.invariant);
}

describe('simulator model: session batches', () => {
  it('a batch once, whole, or absent holds', () => {
    expect(check(['a', 's1', 's2', 'b'], { 'x/1': ['s1', 's2'], 'x/2': ['t1'] })).toEqual([]);
  });
  it('a batch appended twice (a retry not recognised) is session-at-most-once', () => {
    expect(check(['s1', 's2', 'a', 's1', 's2'], { 'x/1': ['s1', 's2'] })).toEqual(['session-at-most-once']);
  });
  it('a batch in part (sealed inside it), or out of order, is session-batch-whole', () => {
    expect(check(['a', 's1'], { 'x/1': ['s1', 's2'] })).toEqual(['session-batch-whole']);
    expect(check(['s2', 's1'], { 'x/1': ['s1', 's2'] })).toEqual(['session-batch-whole']);
  });
});
