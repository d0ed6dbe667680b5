// The coordinator: one node at a time (etcd election, failover when its lease ends) looks after
// the cluster as a whole. It
// - restores replication: a member gone longer than goneAfterMs is replaced, in the ensemble of
//   every sealed segment it held, by a live node outside that ensemble (compare-and-swap on the
//   segment's record); the new member's catch-up copies the segment, verified against etcd;
// - finishes repairs nodes could not: a node records a repair it gave up on under reports/ in
//   etcd; the coordinator retries it (RepairSegment on that node) with backoff, up to
//   maxRecoveryAttempts rounds, then marks it abandoned and raises an alert-worthy event.
// All its state is in etcd, so a new coordinator picks up where the last one stopped.
//
// Fault model: the coordinator may die at any time (its duties are idempotent and re-derived
// from etcd); etcd may be briefly unreachable (a round fails and the next one retries); members
// come and go while it works (every change is a CAS on the record it read).
import type { Logger } from 'pino';
import type { Clock, Random } from '../io/index.js';
import { type SegmentMeta } from '../replication/index.js';
import type { EtcdSegmentDirectory } from './directory.js';
import { Election, etcdElectionStore } from './election.js';
import type { EtcdMetadata } from './etcd.js';
import type { NodeSession } from './session.js';
import type { NodeMetrics } from '../observability/index.js';

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

export interface CoordinatorOptions {
  readonly self: string;
  readonly etcd: EtcdMetadata;
  readonly session: NodeSession;
  readonly directory: EtcdSegmentDirectory;
  readonly liveMembers: () => readonly string[];
  /** Asks a node to repair its copy; resolves with whether it is now intact. */
  readonly repairOn: (node: string, log: string, segmentId: number) => Promise<boolean>;
  readonly metrics: NodeMetrics;
  readonly logger: Logger;
  readonly goneAfterMs: number;
  readonly intervalMs: number;
  readonly maxRecoveryAttempts: number;
  /** Report times (nowMs, stored in etcd); how long members have been missing (monotonicMs). */
  readonly clock: Clock;
  /** Backoff jitter (the coordinator election's campaign retries). */
  readonly random: Random;
}

export class Coordinator {
  private readonly election: Election;
  private leading = false;
  private loop: Promise<void> | undefined;
  private readonly abort = new AbortController();
  /** When each member was first seen missing (cleared when it is back). */
  private readonly missingSince = new Map<string, number>();

  constructor(private readonly o: CoordinatorOptions) {
    this.election = new Election({ store: etcdElectionStore(o.etcd), prefix: o.etcd.keys.coordinatorPrefix(), session: o.session, logger: o.logger, clock: o.clock, random: o.random });
  }

  isLeader(): boolean {
    return this.leading;
  }

  async start(): Promise<void> {
    this.election.onChange((state, isSelf) => {
      const leading = isSelf && state !== undefined;
      if (leading === this.leading) return;
      this.leading = leading;
      this.o.logger.info({ epoch: state?.epoch }, leading ? 'became the coordinator' : 'no longer the coordinator');
      if (leading) this.loop ??= this.run().finally(() => (this.loop = undefined));
    });
    await this.election.start();
  }

  private async run(): Promise<void> {
    this.missingSince.clear(); // a new coordinator starts its own clocks: it never acts early
    while (this.leading && !this.abort.signal.aborted) {
      try {
        await this.round();
      } catch (error) {
        this.o.logger.debug({ err: error }, 'coordinator round failed; the next one retries');
      }
      await this.o.clock.sleep(this.o.intervalMs, this.abort.signal);
    }
  }

  /** One pass of the coordinator's duties. Exposed for tests. */
  async round(): Promise<{ reassigned: number; underReplicated: number; retried: number }> {
    const live = new Set(this.o.liveMembers());
    const now = this.o.clock.monotonicMs(); // local durations only: missingSince never leaves this process
    let reassigned = 0;
    let underReplicated = 0;
    for (const { log } of await this.o.directory.listLogs()) {
      for (const { meta, modRevision } of await this.o.directory.list(log)) {
        for (const node of meta.ensemble) {
          if (live.has(node)) this.missingSince.delete(node);
          else if (!this.missingSince.has(node)) this.missingSince.set(node, now);
        }
        const gone = meta.ensemble.filter((n) => !live.has(n) && now - (this.missingSince.get(n) ?? now) >= this.o.goneAfterMs);
        if (meta.state !== 'SEALED' || gone.length === 0) continue;
        const replaced = await this.reassign(meta, modRevision, gone, live);
        if (replaced) reassigned += 1;
        else underReplicated += 1;
      }
    }
    this.o.metrics.underReplicatedSegments.set(underReplicated);
    const retried = await this.retryReports();
    return { reassigned, underReplicated, retried };
  }

  /** Replaces gone members of a sealed segment's ensemble by live nodes outside it. */
  private async reassign(meta: SegmentMeta, modRevision: number, gone: readonly string[], live: ReadonlySet<string>): Promise<boolean> {
    const candidates = [...live].filter((n) => !meta.ensemble.includes(n)).sort();
    if (candidates.length === 0) return false;
    const replacements = new Map<string, string>();
    gone.forEach((node, i) => {
      const candidate = candidates[i];
      if (candidate !== undefined) replacements.set(node, candidate);
    });
    const ensemble = meta.ensemble.map((n) => replacements.get(n) ?? n);
    const updated: SegmentMeta = { ...meta, ensemble };
    if ((await this.o.directory.update(updated, modRevision)) === undefined) return false; // changed meanwhile: next round
    this.o.logger.warn({ log: meta.log, segment: meta.segmentId, from: [...replacements.keys()], to: [...replacements.values()] }, 're-replicating a sealed segment away from a member that is gone');
    return replacements.size === gone.length;
  }

  private async retryReports(): Promise<number> {
    const reports = await this.o.etcd.list(this.o.etcd.keys.reportsPrefix(), parseRepairReport);
    let retried = 0;
    for (const { key, value, modRevision } of reports) {
      if (value.state === 'abandoned') continue;
      const backoffMs = Math.min(30_000, 500 * 2 ** value.attempts);
      if (this.o.clock.nowMs() - value.updatedMs < backoffMs) continue;
      retried += 1;
      const intact = await this.o.repairOn(value.node, value.log, value.segmentId).catch(() => false);
      if (intact) {
        await this.o.etcd.client.if(key, 'Mod', '==', modRevision).then(this.o.etcd.client.delete().key(key)).commit();
        this.o.logger.info({ log: value.log, segment: value.segmentId, node: value.node }, 'coordinator finished a repair a node had given up on');
        continue;
      }
      const attempts = value.attempts + 1;
      const state = attempts >= this.o.maxRecoveryAttempts ? 'abandoned' : 'failed';
      await this.o.etcd.compareAndSwap(key, { ...value, attempts, state, updatedMs: this.o.clock.nowMs() }, modRevision);
      if (state === 'abandoned') {
        this.o.logger.error({ log: value.log, segment: value.segmentId, node: value.node, attempts }, `repair abandoned after ${attempts} rounds: ${value.detail} (an operator must choose: repair --strategy skip|rollback)`);
      }
    }
    return retried;
  }

  async stop(): Promise<void> {
    this.leading = false;
    this.abort.abort();
    await this.election.stop();
    await this.loop;
  }
}
