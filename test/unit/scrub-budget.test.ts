// Scrub budgets (src/cluster/scrub-budget.ts, the coordinator's duty): nodes whose published risk
// ratio rose get the raised rate, at most boostedNodesMax of them, stale or dead nodes' scores do
// not count, and a node back to normal has its budget removed.
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { Coordinator } from '../../src/cluster/coordinator.js';
import { type PublishedScrubScore, type ScrubBudgetRecord, type ScrubBudgetStore, SCRUB_BUDGET_DEFAULTS, scrubBudgets } from '../../src/cluster/scrub-budget.js';
import { systemClock } from '../../src/io/index.js';

const score = (node: string, riskRatio: number, updatedMs = 1_000): PublishedScrubScore => ({ node, riskRatio, latencyFactor: 1, segmentScoreMax: 0, updatedMs });

describe('scrubBudgets', () => {
  it('raises the highest-risk live nodes with fresh scores, within the cap', () => {
    const scores = [score('a', 1), score('b', 150), score('c', 99), score('d', 400), score('e', 1000, 0), score('f', 999)];
    const live = new Set(['a', 'b', 'c', 'd', 'e']);
    const now = 1_000 + SCRUB_BUDGET_DEFAULTS.scoreStaleMs;
    // e is stale (1 s older than the rest, which are exactly at the limit), f is not live: d and b, the two highest, at twice the rate.
    expect(scrubBudgets(scores, live, now)).toEqual(new Map([['d', 2], ['b', 2]]));
  });
});

class MemoryBudgets implements ScrubBudgetStore {
  scores: PublishedScrubScore[] = [];
  budgets = new Map<string, ScrubBudgetRecord>();
  async publishScore(s: PublishedScrubScore): Promise<void> {
    this.scores = [...this.scores.filter((x) => x.node !== s.node), s];
  }
  async listScores(): Promise<PublishedScrubScore[]> {
    return this.scores;
  }
  async listBudgets(): Promise<ScrubBudgetRecord[]> {
    return [...this.budgets.values()];
  }
  async putBudget(b: ScrubBudgetRecord): Promise<void> {
    this.budgets.set(b.node, b);
  }
  async removeBudget(node: string): Promise<void> {
    this.budgets.delete(node);
  }
  async budgetOf(node: string): Promise<number> {
    return this.budgets.get(node)?.rateMultiplier ?? 1;
  }
}

describe('Coordinator.setScrubBudgets', () => {
  it('a node whose score rises is scrubbed faster, and back at its rate once it falls', async () => {
    const store = new MemoryBudgets();
    const coordinator = new Coordinator({
      self: 'a',
      election: { onChange: () => undefined, start: async () => undefined, stop: async () => undefined },
      directory: { listLogs: async () => [], list: async () => [], update: async () => undefined },
      reports: { list: async () => [], remove: async () => undefined, update: async () => undefined },
      liveMembers: () => ['a', 'b'],
      repairOn: async () => true,
      metrics: { underReplicatedSegments: { set: () => undefined } },
      logger: pino({ level: 'silent' }),
      goneAfterMs: 1000,
      intervalMs: 1000,
      maxRecoveryAttempts: 3,
      clock: systemClock,
      scrubBudgets: store,
    });
    await store.publishScore(score('a', 1, Date.now()));
    await store.publishScore(score('b', 200, Date.now()));
    await coordinator.setScrubBudgets();
    expect(await store.budgetOf('b')).toBe(2);
    expect(await store.budgetOf('a')).toBe(1);
    await store.publishScore(score('b', 1, Date.now()));
    await coordinator.setScrubBudgets();
    expect(await store.budgetOf('b')).toBe(1);
    expect(store.budgets.size).toBe(0);
  });
});
