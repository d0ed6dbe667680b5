// Scrub budgets (src/cluster/scrub-budget.ts, the coordinator's duty): nodes whose published risk
// ratio rose get the raised rate, at most boostedNodesMax of them, stale or dead nodes' scores do
// not count, and a node back to normal has its budget removed.
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { Coordinator } from '../../src/cluster/coordinator.js';
import { type PublishedScrubScore, type ScrubBudgetRecord, type ScrubBudgetStore, SCRUB_BUDGET_DEFAULTS, etcdScrubBudgets, parseScrubScore, scrubBudgets, scrubKeys } from '../../src/cluster/scrub-budget.js';
import { systemClock } from '../../src/io/index.js';
import { type OnMalformedValue, decodeEach, decodeValue } from '../../src/cluster/metadata.js';

const score = (node: string, riskRatio: number, updatedMs = 1_000): PublishedScrubScore => ({ node, riskRatio, latencyFactor: 1, segmentScoreMax: 0, throttleShare: 1, deficitSeconds: 0, updatedMs });

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

/** The part of ClusterMetadata the budget store uses; list decodes each value as EtcdMetadata does. */
function memoryEtcd(): { etcd: Parameters<typeof etcdScrubBudgets>[0]; raw: Map<string, unknown> } {
  const raw = new Map<string, unknown>();
  const versioned = <T>(key: string, value: T) => ({ key, value, createRevision: 1, modRevision: 1, lease: '0' });
  const etcd = {
    keys: { root: '/wal/test/' },
    put: async (key: string, value: unknown) => void raw.set(key, JSON.parse(JSON.stringify(value))),
    delete: async (key: string) => void raw.delete(key),
    get: async <T>(key: string, parse: (v: unknown) => T) => (raw.has(key) ? versioned(key, parse(raw.get(key))) : undefined),
    list: async <T>(prefix: string, parse: (v: unknown) => T, onMalformed?: OnMalformedValue) =>
      decodeEach([...raw.keys()].filter((k) => k.startsWith(prefix)).sort(), (k) => versioned(k, decodeValue(k, JSON.stringify(raw.get(k)), parse)), (k) => k, onMalformed),
  } as unknown as Parameters<typeof etcdScrubBudgets>[0];
  return { etcd, raw };
}

describe('etcdScrubBudgets (scores as published by other nodes)', () => {
  it('a score keeps its throttle share and deficit; one published without them (an older node) reads as share 1, deficit 0', () => {
    expect(parseScrubScore({ ...score('a', 2), throttleShare: 0.25, deficitSeconds: 42 })).toMatchObject({ throttleShare: 0.25, deficitSeconds: 42 });
    expect(parseScrubScore({ node: 'a', riskRatio: 2, latencyFactor: 1, segmentScoreMax: 0, updatedMs: 1 })).toMatchObject({ throttleShare: 1, deficitSeconds: 0 });
  });

  it('a malformed score of one node, or a score naming another node, does not take the others\' budgets away (regression)', async () => {
    const { etcd, raw } = memoryEtcd();
    const store = etcdScrubBudgets(etcd);
    const now = Date.now();
    await store.publishScore(score('a', 500, now));
    // A broken node: its risk ratio serialised as null (Infinity or NaN in JSON), or not JSON of a score at all.
    raw.set(`${scrubKeys.scoresPrefix(etcd)}b`, { node: 'b', riskRatio: null, updatedMs: now });
    raw.set(`${scrubKeys.scoresPrefix(etcd)}c`, 'garbage');
    // A node writing its score under its own key but naming another (to take a boost slot twice).
    raw.set(`${scrubKeys.scoresPrefix(etcd)}d`, score('e', 10_000, now));
    raw.set(`${scrubKeys.scoresPrefix(etcd)}e`, score('e', 1, now));
    const scores = await store.listScores();
    expect(scores.map((s) => [s.node, s.riskRatio])).toEqual([['a', 500], ['e', 1]]);
    expect(scrubBudgets(scores, new Set(['a', 'b', 'c', 'd', 'e']), now)).toEqual(new Map([['a', 2]]));
  });

  it('a budget under one node\'s key naming another node is not in force, and the coordinator removes that key (regression: it raised its key\'s node for ever)', async () => {
    const { etcd, raw } = memoryEtcd();
    const store = etcdScrubBudgets(etcd);
    const now = Date.now();
    // Under a's key, a budget that names b (an old node's record, or a hand-made one).
    raw.set(`${scrubKeys.budgetsPrefix(etcd)}a`, { node: 'b', rateMultiplier: 16, riskRatio: 0, updatedMs: now });
    expect(await store.budgetOf('a')).toBe(1);
    expect((await store.listBudgets()).map((b) => b.node)).toEqual(['a']);
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
    await coordinator.setScrubBudgets(); // no node's score asks for a raise
    expect([...raw.keys()].filter((k) => k.startsWith(scrubKeys.budgetsPrefix(etcd)))).toEqual([]);
    // b's score asks for a raise while b's key holds a budget at that multiplier naming a: written anew.
    raw.set(`${scrubKeys.budgetsPrefix(etcd)}b`, { node: 'a', rateMultiplier: 2, riskRatio: 0, updatedMs: now });
    await store.publishScore(score('b', 500, Date.now()));
    await coordinator.setScrubBudgets();
    expect(await store.budgetOf('b')).toBe(2);
  });
});
