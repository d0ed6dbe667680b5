// Scrub budgets across the cluster (docs/SCRUBBING.md). Each node publishes its damage score
// under scrub/scores/<node> in etcd; the coordinator reads them every round and writes a rate
// multiplier under scrub/budgets/<node> for each node whose risk ratio is at least
// boostRiskRatio (scrub "twice as fast during predicted risk", Mahdisoltani et al., ATC 2017),
// at most boostedNodesMax nodes at once (the highest scores), and removes the others' keys.
// A node reads its multiplier before each pass; a missing or unreadable key means 1.
import type { Clock } from '../io/index.js';
import type { ClusterMetadata, OnMalformedValue } from './metadata.js';

export interface PublishedScrubScore {
  readonly node: string;
  readonly riskRatio: number;
  readonly latencyFactor: number;
  readonly segmentScoreMax: number;
  /** The scrub throttle's share and the pass's deficit (status only; budgets ignore them). */
  readonly throttleShare: number;
  readonly deficitSeconds: number;
  readonly updatedMs: number;
}

export interface ScrubBudgetRecord {
  readonly node: string;
  readonly rateMultiplier: number;
  readonly riskRatio: number;
  readonly updatedMs: number;
}

export interface ScrubBudgetParams {
  /** Risk ratio (node rate over the prior rate) from which a node's scrub rate is raised. */
  readonly boostRiskRatio: number;
  /** The raised rate, as a multiple of the configured one (the cap). */
  readonly boostMultiplier: number;
  /** The most nodes raised at once: client appends share the disks and the network. */
  readonly boostedNodesMax: number;
  /** Scores older than this are ignored (their node stopped publishing). */
  readonly scoreStaleMs: number;
}

export const SCRUB_BUDGET_DEFAULTS: ScrubBudgetParams = Object.freeze({ boostRiskRatio: 100, boostMultiplier: 2, boostedNodesMax: 2, scoreStaleMs: 5 * 60_000 });

export function parseScrubScore(raw: unknown): PublishedScrubScore {
  const r = raw as Partial<PublishedScrubScore> | null;
  if (!r || typeof r.node !== 'string' || typeof r.riskRatio !== 'number' || !Number.isFinite(r.riskRatio)) throw new Error('malformed scrub score');
  return { node: r.node, riskRatio: r.riskRatio, latencyFactor: Number(r.latencyFactor ?? 1), segmentScoreMax: Number(r.segmentScoreMax ?? 0), throttleShare: Number(r.throttleShare ?? 1), deficitSeconds: Number(r.deficitSeconds ?? 0), updatedMs: Number(r.updatedMs ?? 0) };
}

export function parseScrubBudget(raw: unknown): ScrubBudgetRecord {
  const r = raw as Partial<ScrubBudgetRecord> | null;
  if (!r || typeof r.node !== 'string' || typeof r.rateMultiplier !== 'number' || !(r.rateMultiplier >= 1 && r.rateMultiplier <= 16)) throw new Error('malformed scrub budget');
  return { node: r.node, rateMultiplier: r.rateMultiplier, riskRatio: Number(r.riskRatio ?? 0), updatedMs: Number(r.updatedMs ?? 0) };
}

/** Pure: the multiplier of each node to boost, from the published scores. */
export function scrubBudgets(scores: readonly PublishedScrubScore[], live: ReadonlySet<string>, nowMs: number, p: ScrubBudgetParams = SCRUB_BUDGET_DEFAULTS): Map<string, number> {
  const boosted = scores
    .filter((s) => live.has(s.node) && nowMs - s.updatedMs <= p.scoreStaleMs && s.riskRatio >= p.boostRiskRatio)
    .sort((a, b) => b.riskRatio - a.riskRatio || a.node.localeCompare(b.node))
    .slice(0, p.boostedNodesMax);
  return new Map(boosted.map((s) => [s.node, p.boostMultiplier]));
}

export const scrubKeys = {
  scoresPrefix: (etcd: Pick<ClusterMetadata, 'keys'>): string => `${etcd.keys.root}scrub/scores/`,
  budgetsPrefix: (etcd: Pick<ClusterMetadata, 'keys'>): string => `${etcd.keys.root}scrub/budgets/`,
};

/** The store the coordinator and the nodes share (etcd in production). */
export interface ScrubBudgetStore {
  publishScore(score: PublishedScrubScore): Promise<void>;
  listScores(): Promise<PublishedScrubScore[]>;
  listBudgets(): Promise<ScrubBudgetRecord[]>;
  putBudget(budget: ScrubBudgetRecord): Promise<void>;
  removeBudget(node: string): Promise<void>;
  budgetOf(node: string): Promise<number>;
}

/**
 * onMalformed hears of each value left out (not JSON, or not a score or budget): the node logs and
 * counts them (wal_recovery_etcd_malformed_values_total).
 */
export function etcdScrubBudgets(etcd: ClusterMetadata, onMalformed: OnMalformedValue = () => undefined): ScrubBudgetStore {
  const scores = scrubKeys.scoresPrefix(etcd);
  const budgets = scrubKeys.budgetsPrefix(etcd);
  return {
    publishScore: (score) => etcd.put(`${scores}${score.node}`, score),
    // Each node's score is its own business: one that is malformed (a broken or other-version
    // node, or anyone with write access to etcd; JSON or not) is left out rather than failing the
    // round for every node (and the status of every log), and a score counts only under its own
    // node's key (one node cannot take boost slots in another's name).
    listScores: async () =>
      (await etcd.list(scores, parseScrubScore, onMalformed))
        .filter((v) => v.key === `${scores}${v.value.node}`)
        .map((v) => v.value),
    // A malformed budget reads as 1 on its node (budgetOf) and must not stop the coordinator's round.
    // A budget is its key's node's, whatever node its value names: so the coordinator removes the
    // key that is there (a value naming another node made it delete that node's key instead, and
    // leave this one raising its node for ever), and a node takes only a budget that names it (one
    // that names another is listed at multiplier 0: in force nowhere, so a raise is written anew).
    listBudgets: async () =>
      (await etcd.list(budgets, parseScrubBudget, onMalformed)).map((v) => {
        const node = v.key.slice(budgets.length);
        return { ...v.value, node, rateMultiplier: v.value.node === node ? v.value.rateMultiplier : 0 };
      }),
    putBudget: (budget) => etcd.put(`${budgets}${budget.node}`, budget),
    removeBudget: (node) => etcd.delete(`${budgets}${node}`),
    budgetOf: async (node) => {
      const budget = (await etcd.get(`${budgets}${node}`, parseScrubBudget).catch(() => undefined))?.value;
      return budget?.node === node ? budget.rateMultiplier : 1;
    },
  };
}

/**
 * The node's side: publishes its score and reads its multiplier every intervalMs (a failed round
 * keeps the last multiplier; the next one retries).
 */
export class ScrubScorePublisher {
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private multiplier = 1;

  constructor(
    private readonly o: {
      readonly node: string;
      readonly store: ScrubBudgetStore;
      readonly score: () => Omit<PublishedScrubScore, 'node' | 'updatedMs'>;
      readonly intervalMs: number;
      readonly clock: Pick<Clock, 'nowMs' | 'sleep'>;
      readonly onError: (error: unknown) => void;
    },
  ) {}

  rateMultiplier(): number {
    return this.multiplier;
  }

  start(): void {
    this.loop ??= (async () => {
      while (!this.abort.signal.aborted) {
        await this.round().catch(this.o.onError);
        await this.o.clock.sleep(this.o.intervalMs, this.abort.signal);
      }
    })();
  }

  async round(): Promise<void> {
    await this.o.store.publishScore({ node: this.o.node, ...this.o.score(), updatedMs: this.o.clock.nowMs() });
    this.multiplier = await this.o.store.budgetOf(this.o.node);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }
}
