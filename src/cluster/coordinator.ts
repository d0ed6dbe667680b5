// The coordinator: one node at a time (etcd election, failover when its lease ends) looks after
// the cluster as a whole. It
// - restores replication: a member gone longer than goneAfterMs is replaced, in the ensemble of
//   every sealed segment it held, by a live node outside that ensemble (compare-and-swap on the
//   segment's record); the new member's catch-up copies the segment, verified against etcd;
// - finishes repairs nodes could not: a node records a repair it gave up on under reports/ in
//   etcd; the coordinator retries it (RepairSegment on that node) with backoff, up to
//   maxRecoveryAttempts rounds, then marks it abandoned and raises an alert-worthy event;
// - raises the scrub rate of nodes whose damage score rose (scrub-budget.ts, docs/SCRUBBING.md).
// The two duties run as independent loops: a repair retry that is slow (each waits at most
// reportRetryDeadlineMs, and at most repairConcurrencyMax run at once, across rounds) never
// delays restoring replication away from a member that is gone. A round waited for longer than
// roundDeadlineMs, or of a term that ended, acts no more on its stale view (CoordinatorRound).
// All its state is in etcd, so a new coordinator picks up where the last one stopped.
//
// Fault model: the coordinator may die at any time (its duties are idempotent and re-derived
// from etcd); etcd may be briefly unreachable (a round fails and the next one retries); members
// come and go while it works (every change is a CAS on the record it read).
import type { Logger } from 'pino';
import type { Gauge } from 'prom-client';
import type { Clock } from '../io/index.js';
import { type SegmentMeta } from '../replication/index.js';
import type { EtcdSegmentDirectory } from './directory.js';
import type { Election } from './election.js';
import type { ClusterMetadata, Versioned } from './metadata.js';
import { type ScrubBudgetParams, type ScrubBudgetStore, SCRUB_BUDGET_DEFAULTS, scrubBudgets } from './scrub-budget.js';

export interface RepairReportRecord {
  readonly log: string;
  readonly segmentId: number;
  readonly node: string;
  readonly state: 'failed' | 'abandoned';
  readonly detail: string;
  readonly attempts: number;
  readonly updatedMs: number;
}

export function parseRepairReport(raw: unknown): RepairReportRecord {
  const r = raw as Partial<RepairReportRecord> | null;
  if (!r || typeof r.log !== 'string' || typeof r.node !== 'string' || typeof r.segmentId !== 'number') throw new Error('malformed repair report');
  return { log: r.log, segmentId: r.segmentId, node: r.node, state: r.state === 'abandoned' ? 'abandoned' : 'failed', detail: String(r.detail ?? ''), attempts: Number(r.attempts ?? 0), updatedMs: Number(r.updatedMs ?? 0) };
}

/** The repair reports under reports/ in etcd (etcdRepairReports in production). */
export interface RepairReportStore {
  list(): Promise<Array<Versioned<RepairReportRecord>>>;
  /** Deletes the report if it is still at modRevision. */
  remove(key: string, modRevision: number): Promise<void>;
  /** Replaces the report if it is still at modRevision. */
  update(key: string, value: RepairReportRecord, modRevision: number): Promise<void>;
}

export function etcdRepairReports(etcd: ClusterMetadata): RepairReportStore {
  return {
    list: () => etcd.list(etcd.keys.reportsPrefix(), parseRepairReport),
    remove: (key, modRevision) => etcd.deleteIfUnchanged(key, modRevision),
    update: async (key, value, modRevision) => {
      await etcd.compareAndSwap(key, value, modRevision);
    },
  };
}

/**
 * The node's side of reports/: records (or, with undefined, clears) a repair this node gave up
 * on, for the coordinator (RepairServiceOptions.report).
 */
export function etcdRepairReporter(etcd: ClusterMetadata, self: string, clock: Pick<Clock, 'nowMs'>): (log: string, segmentId: number, failure: { detail: string } | undefined) => Promise<void> {
  return async (log, segmentId, failure) => {
    const key = etcd.keys.report(log, segmentId, self);
    if (!failure) await etcd.delete(key);
    else await etcd.put(key, { log, segmentId, node: self, state: 'failed', detail: failure.detail, attempts: 0, updatedMs: clock.nowMs() } satisfies RepairReportRecord);
  };
}

/** Whether this node's give-up report of a copy is in etcd (RepairService's hold-off check). */
export function etcdRepairReportExists(etcd: ClusterMetadata, self: string): (log: string, segmentId: number) => Promise<boolean> {
  return async (log, segmentId) => (await etcd.get(etcd.keys.report(log, segmentId, self), (raw) => raw)) !== undefined;
}

/** How long the coordinator waits for one retried repair (the repair itself may go on). */
export const REPORT_RETRY_DEADLINE_MS = 30_000;
/** Retried repairs the coordinator has in flight at once. */
export const REPAIR_CONCURRENCY_MAX = 4;

export interface CoordinatorOptions {
  readonly self: string;
  /** The coordinator election (its own prefix, the node's session). */
  readonly election: Pick<Election, 'onChange' | 'start' | 'stop'>;
  readonly directory: Pick<EtcdSegmentDirectory, 'listLogs' | 'list' | 'update'>;
  readonly reports: RepairReportStore;
  readonly liveMembers: () => readonly string[];
  /**
   * Asks a node to repair its copy; resolves with whether it is now intact. deadlineMs bounds the
   * call (the coordinator also stops waiting then, whatever the call does).
   */
  readonly repairOn: (node: string, log: string, segmentId: number, deadlineMs: number) => Promise<boolean>;
  readonly metrics: { readonly underReplicatedSegments: Pick<Gauge, 'set'> };
  readonly logger: Logger;
  readonly goneAfterMs: number;
  readonly intervalMs: number;
  readonly maxRecoveryAttempts: number;
  /** Default REPORT_RETRY_DEADLINE_MS. */
  readonly reportRetryDeadlineMs?: number;
  /** Default REPAIR_CONCURRENCY_MAX. */
  readonly repairConcurrencyMax?: number;
  /**
   * How long one round of a duty is waited for before the next round starts (the call goes on;
   * every change it makes is a compare-and-swap). Default: max(ROUND_DEADLINE_MIN_MS, 10 intervals).
   */
  readonly roundDeadlineMs?: number;
  /** Report times (nowMs, stored in etcd); how long members have been missing (monotonicMs); deadlines (setTimer). */
  readonly clock: Clock;
  /** Nodes' published scrub scores and the budgets set for them; absent: no scrub budgets duty. */
  readonly scrubBudgets?: ScrubBudgetStore;
  readonly scrubBudgetParams?: ScrubBudgetParams;
}

const TIMED_OUT = Symbol('timed out');
const ROUND_DEADLINE_MIN_MS = 30_000;

/**
 * A round of a duty, as its loop sees it. A round given up on (past roundDeadlineMs) or of a term
 * that ended may still get its late answers from etcd: with that stale view it starts nothing and
 * writes nothing (a deposed coordinator must not set budgets, move members or start repairs), and
 * it leaves missingSince alone (a member seen back since would look missing from a time long past).
 */
export interface CoordinatorRound {
  /** Its term is current and it was not given up on: it may start work and write what it decided. */
  readonly active: () => boolean;
  /** Its term is current: a retry it started may record its outcome (a compare-and-swap on the report). */
  readonly inTerm: () => boolean;
}

export class Coordinator {
  private leading = false;
  /** Counts leadership terms: each term runs its own loops, which end when the term does. */
  private term = 0;
  private readonly loops = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  /** When each member was first seen missing (cleared when it is back). */
  private readonly missingSince = new Map<string, number>();
  /** Keys of the reports whose retry is in flight, across rounds: at most repairConcurrencyMax. */
  private readonly retrying = new Set<string>();
  /** The round of a direct call (tests): active until stop(). */
  private readonly direct: CoordinatorRound = { active: () => !this.abort.signal.aborted, inTerm: () => !this.abort.signal.aborted };
  private readonly reportRetryDeadlineMs: number;
  private readonly repairConcurrencyMax: number;
  private readonly roundDeadlineMs: number;

  constructor(private readonly o: CoordinatorOptions) {
    this.reportRetryDeadlineMs = o.reportRetryDeadlineMs ?? REPORT_RETRY_DEADLINE_MS;
    this.repairConcurrencyMax = o.repairConcurrencyMax ?? REPAIR_CONCURRENCY_MAX;
    this.roundDeadlineMs = o.roundDeadlineMs ?? Math.max(ROUND_DEADLINE_MIN_MS, 10 * o.intervalMs);
    if (!(this.reportRetryDeadlineMs > 0) || !Number.isSafeInteger(this.repairConcurrencyMax) || this.repairConcurrencyMax < 1 || !(this.roundDeadlineMs > 0)) {
      throw new Error('coordinator: reportRetryDeadlineMs and roundDeadlineMs must be positive and repairConcurrencyMax at least 1');
    }
  }

  isLeader(): boolean {
    return this.leading;
  }

  async start(): Promise<void> {
    this.o.election.onChange((state, isSelf) => {
      const leading = isSelf && state !== undefined;
      if (leading === this.leading) return;
      this.leading = leading;
      this.o.logger.info({ epoch: state?.epoch }, leading ? 'became the coordinator' : 'no longer the coordinator');
      if (!leading) return;
      // A new term starts its own loops, even while a round of an earlier term is still pending
      // (an etcd call that never answered kept the old loop, and with it every duty, for good:
      // simulator seed --etcd-restore 938).
      this.term += 1;
      const loop: Promise<void> = this.run(this.term)
        .catch((error: unknown) => this.o.logger.error({ err: error }, 'coordinator duties failed'))
        .finally(() => this.loops.delete(loop));
      this.loops.add(loop);
    });
    await this.o.election.start();
  }

  /** The duties, each in its own loop: neither waits for the other. */
  private async run(term: number): Promise<void> {
    this.missingSince.clear(); // a new coordinator starts its own clocks: it never acts early
    await Promise.all([
      this.every(term, 'restore replication', (round) => this.restoreReplication(round)),
      this.every(term, 'retry repair reports', (round) => this.retryReports(round)),
      this.every(term, 'set scrub budgets', (round) => this.setScrubBudgets(round)),
    ]);
  }

  private async every(term: number, duty: string, once: (round: CoordinatorRound) => Promise<unknown>): Promise<void> {
    const inTerm = (): boolean => this.leading && this.term === term && !this.abort.signal.aborted;
    while (inTerm()) {
      let givenUp = false;
      const round: CoordinatorRound = { active: () => !givenUp && inTerm(), inTerm };
      const outcome = await this.withinDeadline(
        once(round).then(
          () => true,
          (error: unknown) => {
            this.o.logger.debug({ err: error, duty }, 'coordinator round failed; the next one retries');
            return false;
          },
        ),
        this.roundDeadlineMs,
      );
      givenUp = true; // a round that goes on (no answer yet) starts and writes nothing more
      if (outcome === TIMED_OUT && !this.abort.signal.aborted) {
        this.o.logger.warn({ duty, deadlineMs: this.roundDeadlineMs }, 'coordinator round got no answer within its deadline; the next one starts (that call goes on, writing nothing more)');
      }
      await this.o.clock.sleep(this.o.intervalMs, this.abort.signal);
    }
  }

  /** One pass of both duties, replication first. Exposed for tests. */
  async round(): Promise<{ reassigned: number; underReplicated: number; retried: number }> {
    const replication = await this.restoreReplication();
    const retried = await this.retryReports();
    return { ...replication, retried };
  }

  /**
   * Replaces members gone longer than goneAfterMs in the ensembles of sealed segments, and
   * completes the ensembles of sealed segments created with fewer members than the log's
   * replication factor (a writer opens a segment on the members live then). Exposed for tests.
   */
  async restoreReplication(round: CoordinatorRound = this.direct): Promise<{ reassigned: number; underReplicated: number }> {
    const live = new Set(this.o.liveMembers());
    const now = this.o.clock.monotonicMs(); // local durations only: missingSince never leaves this process
    let reassigned = 0;
    let underReplicated = 0;
    for (const { log, replicationFactor } of await this.o.directory.listLogs()) {
      for (const { meta, modRevision } of await this.o.directory.list(log)) {
        if (!round.active()) return { reassigned, underReplicated };
        for (const node of meta.ensemble) {
          if (live.has(node)) this.missingSince.delete(node);
          else if (!this.missingSince.has(node)) this.missingSince.set(node, now);
        }
        const gone = meta.ensemble.filter((n) => !live.has(n) && now - (this.missingSince.get(n) ?? now) >= this.o.goneAfterMs);
        // An empty segment holds nothing to copy.
        const short = meta.lastIndex < meta.firstIndex ? 0 : Math.max(0, replicationFactor - meta.ensemble.length);
        if (meta.state !== 'SEALED' || (gone.length === 0 && short === 0)) continue;
        const replaced = await this.reassign(meta, modRevision, gone, short, live, round);
        if (replaced) reassigned += 1;
        else underReplicated += 1;
      }
    }
    if (round.active()) this.o.metrics.underReplicatedSegments.set(underReplicated);
    return { reassigned, underReplicated };
  }

  /**
   * Replaces gone members of a sealed segment's ensemble by live nodes outside it, then adds up
   * to short more. Whether the ensemble is whole afterwards.
   */
  private async reassign(meta: SegmentMeta, modRevision: number, gone: readonly string[], short: number, live: ReadonlySet<string>, round: CoordinatorRound): Promise<boolean> {
    const candidates = [...live].filter((n) => !meta.ensemble.includes(n)).sort();
    if (candidates.length === 0) return false;
    const replacements = new Map<string, string>();
    gone.forEach((node, i) => {
      const candidate = candidates[i];
      if (candidate !== undefined) replacements.set(node, candidate);
    });
    const added = candidates.slice(replacements.size, replacements.size + short);
    const ensemble = [...meta.ensemble.map((n) => replacements.get(n) ?? n), ...added];
    // The replaced members may come back with their copies: they stay repair sources and
    // protected holders (src/replication/replica-source.ts).
    const formerMembers = [...new Set([...(meta.formerMembers ?? []), ...replacements.keys()])];
    const updated: SegmentMeta = { ...meta, ensemble, formerMembers };
    if (!round.active()) return false;
    if ((await this.o.directory.update(updated, modRevision)) === undefined) return false; // changed meanwhile: next round
    if (replacements.size > 0) this.o.logger.warn({ log: meta.log, segment: meta.segmentId, from: [...replacements.keys()], to: [...replacements.values()] }, 're-replicating a sealed segment away from a member that is gone');
    if (added.length > 0) this.o.logger.warn({ log: meta.log, segment: meta.segmentId, added }, 'completing the ensemble of a sealed segment created short');
    return replacements.size === gone.length && added.length === short;
  }

  /**
   * Raises the scrub rate of the nodes with the highest risk ratios (at least boostRiskRatio, at
   * most boostedNodesMax of them) and lowers the others back. Exposed for tests.
   */
  async setScrubBudgets(round: CoordinatorRound = this.direct): Promise<Map<string, number>> {
    const store = this.o.scrubBudgets;
    if (!store) return new Map();
    const params = this.o.scrubBudgetParams ?? SCRUB_BUDGET_DEFAULTS;
    const now = this.o.clock.nowMs();
    const scores = await store.listScores();
    const wanted = scrubBudgets(scores, new Set(this.o.liveMembers()), now, params);
    const current = new Map((await store.listBudgets()).map((b) => [b.node, b.rateMultiplier]));
    for (const [node, rateMultiplier] of wanted) {
      if (current.get(node) === rateMultiplier) continue;
      if (!round.active()) return wanted;
      const riskRatio = scores.find((s) => s.node === node)?.riskRatio ?? 0;
      await store.putBudget({ node, rateMultiplier, riskRatio, updatedMs: now });
      this.o.logger.warn({ node, riskRatio, rateMultiplier }, 'raising the scrub rate of a node whose damage score rose');
    }
    for (const node of current.keys()) {
      if (wanted.has(node)) continue;
      if (!round.active()) return wanted;
      await store.removeBudget(node);
      this.o.logger.info({ node }, 'scrub rate of a node back to its configured rate');
    }
    return wanted;
  }

  /**
   * Retries the repairs nodes gave up on whose backoff has passed, at most repairConcurrencyMax
   * at once (counting retries that earlier rounds started and still wait for), each waited for at
   * most reportRetryDeadlineMs. How many it started. Exposed for tests.
   */
  async retryReports(round: CoordinatorRound = this.direct): Promise<number> {
    const due = (await this.o.reports.list()).filter(({ value }) => {
      if (value.state === 'abandoned') return false;
      const backoffMs = Math.min(30_000, 500 * 2 ** value.attempts);
      return this.o.clock.nowMs() - value.updatedMs >= backoffMs;
    });
    let next = 0;
    let started = 0;
    const worker = async (): Promise<void> => {
      // A round given up on starts no more (the next round lists again): rounds that overlap
      // would otherwise each run repairConcurrencyMax retries.
      while (round.active() && this.retrying.size < this.repairConcurrencyMax) {
        const report = due[next++];
        if (!report) return;
        if (this.retrying.has(report.key)) continue; // an earlier round's retry of it still runs
        started += 1;
        await this.retryReport(report, round).catch((error: unknown) => this.o.logger.debug({ err: error, log: report.value.log }, 'failed to retry a repair report; the next round retries'));
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.repairConcurrencyMax, due.length) }, worker));
    return started;
  }

  private async retryReport(report: Versioned<RepairReportRecord>, round: CoordinatorRound): Promise<void> {
    const { key, value } = report;
    const deadlineMs = this.reportRetryDeadlineMs;
    // Its key stays taken until the outcome is written (or that write's wait ended): a round that
    // listed the report before the write would otherwise start the same repair again.
    this.retrying.add(key);
    try {
      const outcome = await this.withinDeadline(this.o.repairOn(value.node, value.log, value.segmentId, deadlineMs), deadlineMs);
      // Stopped or deposed: a new coordinator retries it. A round given up on in this term still
      // records the outcome (a compare-and-swap on the report it read), so that a repair that never
      // answers is counted and abandoned after maxRecoveryAttempts.
      if (!round.inTerm()) return;
      // etcd may not answer: the wait for the write is bounded too, or the key would stay taken.
      await this.withinDeadline(
        this.recordOutcome(report, outcome, deadlineMs).then(
          () => true,
          (error: unknown) => {
            this.o.logger.debug({ err: error, log: value.log }, 'failed to record a repair retry; the next round retries');
            return false;
          },
        ),
        deadlineMs,
      );
    } finally {
      this.retrying.delete(key);
    }
  }

  private async recordOutcome({ key, value, modRevision }: Versioned<RepairReportRecord>, outcome: boolean | typeof TIMED_OUT, deadlineMs: number): Promise<void> {
    if (outcome === true) {
      await this.o.reports.remove(key, modRevision);
      this.o.logger.info({ log: value.log, segment: value.segmentId, node: value.node }, 'coordinator finished a repair a node had given up on');
      return;
    }
    const attempts = value.attempts + 1;
    const state = attempts >= this.o.maxRecoveryAttempts ? 'abandoned' : 'failed';
    const detail = outcome === TIMED_OUT ? `${value.detail} (the coordinator's retry got no answer within ${deadlineMs} ms)` : value.detail;
    await this.o.reports.update(key, { ...value, attempts, state, detail, updatedMs: this.o.clock.nowMs() }, modRevision);
    if (state === 'abandoned') {
      this.o.logger.error({ log: value.log, segment: value.segmentId, node: value.node, attempts }, `repair abandoned after ${attempts} rounds: ${detail} (an operator must choose: repair --strategy skip|rollback)`);
    }
  }

  /** Whether the repair left the copy intact (a failed call: false), or TIMED_OUT after deadlineMs or at stop. The call goes on. */
  private withinDeadline(call: Promise<boolean>, deadlineMs: number): Promise<boolean | typeof TIMED_OUT> {
    return new Promise((resolve) => {
      if (this.abort.signal.aborted) return resolve(TIMED_OUT);
      const done = (value: boolean | typeof TIMED_OUT): void => {
        cancelTimer();
        this.abort.signal.removeEventListener('abort', onAbort);
        resolve(value);
      };
      const onAbort = (): void => done(TIMED_OUT);
      const cancelTimer = this.o.clock.setTimer(deadlineMs, () => done(TIMED_OUT));
      this.abort.signal.addEventListener('abort', onAbort, { once: true });
      call.then(done, () => done(false));
    });
  }

  async stop(): Promise<void> {
    this.leading = false;
    this.abort.abort();
    await this.o.election.stop();
    await Promise.all(this.loops);
  }
}
