// The scrubber: checks the fence files and that each open segment's file is still whole, then
// re-reads every sealed segment this node holds (and its local backup copies), in the background, at a bounded
// rate (scrubBytesPerSecondMax, times the coordinator's multiplier for a suspect node). Each pass
// covers every segment; its order comes from the damage model (scrub-model.ts, scrub-plan.ts,
// docs/SCRUBBING.md): highest P(undetected damage) first, with suspect rescans (the neighbours
// of a fresh detection) interleaved within a share of the bytes. Ties break from a random start
// so that a restart does not always check the same ones first. A copy that does not match etcd's record is handed to
// the repair service. Hashing runs wherever the injected ScrubChecker runs it (a worker thread in
// production: the node keeps serving meanwhile). A check that fails (its worker died) passes that
// segment over for this pass (the next pass, on a new worker, retries it); three in a row fail
// the pass.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Clock, Random } from '../io/index.js';
import { type WalStore, format } from '../wal/index.js';
import type { LogStores, SegmentMeta } from '../replication/index.js';
import type { EtcdSegmentDirectory } from './directory.js';
import type { RepairService } from './repairs.js';
import type { ScrubChecker } from './scrub-pool.js';
import type { Counter, Gauge } from 'prom-client';
import { withSpan } from '../observability/index.js';
import { ScrubModel } from './scrub-model.js';
import { type PlanItem, type ScrubPlanParams, ScrubPlan } from './scrub-plan.js';

export interface ScrubberOptions {
  readonly self: string;
  readonly logs: LogStores;
  readonly directory: Pick<EtcdSegmentDirectory, 'listLogs' | 'list'>;
  readonly repairs: Pick<RepairService, 'schedule'>;
  readonly bytesPerSecondMax: number;
  /** Pause between two passes over everything. */
  readonly passIntervalMs: number;
  readonly entryBytesMax: number;
  /** NodeMetrics in production; the simulator counts nothing. */
  readonly metrics: { readonly scrubBytes: Pick<Counter, 'inc'>; readonly scrubPassSeconds: Pick<Gauge, 'set'> };
  readonly logger: Logger;
  /** Where each segment file is verified (a worker thread in production); stopped with the scrubber. */
  readonly checker: ScrubChecker;
  /** Pauses (rate limit, between passes) and pass durations. */
  readonly clock: Clock;
  /** The random start of the first pass and of each pass's walk over the segments. */
  readonly random: Random;
  /** The node's damage model (fed by reads, repairs and the disk too); default: a model of its own. */
  readonly model?: ScrubModel;
  readonly plan?: Partial<ScrubPlanParams>;
  /** The coordinator's rate multiplier for this node (1: the configured rate); read before each check. */
  readonly rateMultiplier?: () => number;
}

/** Checks that could not run, one after another, that fail a pass (no worker can run at all). */
const CHECK_FAILURES_IN_ROW_MAX = 3;

interface WorkItem extends PlanItem {
  readonly meta: SegmentMeta;
  readonly store: WalStore;
}

export class Scrubber {
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  bytesScrubbed = 0;
  segmentsScrubbed = 0;
  passes = 0;
  /**
   * How far the current pass (or the last, between passes) is behind its schedule at the
   * configured rate, in seconds: its time so far minus its bytes over that rate. 0 when the
   * throttle never held it back; growing under sustained append load that starves it (the
   * coverage bound of docs/SCRUBBING.md is then late by this much, and says so in /metrics).
   */
  deficitSeconds = 0;
  readonly model: ScrubModel;
  private readonly plan: ScrubPlan<WorkItem>;

  constructor(private readonly o: ScrubberOptions) {
    this.model = o.model ?? new ScrubModel();
    this.plan = new ScrubPlan(this.model, o.plan);
  }

  /** Bytes checked by suspect rescans (ahead of the pass) and by the passes themselves. */
  get suspectBytes(): number {
    return this.plan.suspectBytes;
  }

  start(): void {
    if (this.o.bytesPerSecondMax === 0 || this.loop) return;
    this.loop = this.run().catch((error: unknown) => this.o.logger.error({ err: error }, 'scrubber stopped'));
  }

  private async run(): Promise<void> {
    const { clock } = this.o;
    await clock.sleep(this.o.random.next() * this.o.passIntervalMs, this.abort.signal);
    while (!this.abort.signal.aborted) {
      const started = clock.monotonicMs();
      await this.pass().catch((error: unknown) => {
        // Warned, not debug: a pass that fails at every try (a store that cannot list) stops all scrubbing.
        if (!this.abort.signal.aborted) this.o.logger.warn({ err: error }, 'scrub pass failed; the next one retries');
      });
      this.passes += 1;
      this.o.metrics.scrubPassSeconds.set((clock.monotonicMs() - started) / 1000);
      await clock.sleep(this.o.passIntervalMs, this.abort.signal);
    }
  }

  /** One pass over every sealed segment this node holds, from a random starting point. */
  async pass(): Promise<number> {
    // The fence files first: a few bytes each, and a lost one matters at the next restart.
    await this.o.logs.checkFences();
    const work: WorkItem[] = [];
    for (const { log } of await this.o.directory.listLogs()) {
      const store = await this.o.logs.store(log);
      // The open segment: only that its file is still there, whole (reads verify its entries).
      const problem = await store.openSegmentFileProblem();
      if (problem) {
        this.o.logger.warn({ log, segment: problem.segmentId }, `scrub found a damaged open copy: ${problem.detail}`);
        this.model.detected({ log, segmentId: problem.segmentId }, 'scrub', this.o.clock.nowMs());
        this.o.repairs.schedule(log, problem.segmentId, 'scrub', problem.detail);
      }
      for (const { meta } of await this.o.directory.list(log)) {
        if (meta.state === 'SEALED' && meta.ensemble.includes(this.o.self) && store.segmentRecord(meta.segmentId)?.state === 'sealed') work.push({ log, segmentId: meta.segmentId, byteLength: meta.byteLength, meta, store });
      }
    }
    const start = work.length === 0 ? 0 : Math.floor(this.o.random.next() * work.length);
    this.plan.beginPass([...work.slice(start), ...work.slice(0, start)], this.o.clock.nowMs());
    let damaged = 0;
    let failedInRow = 0;
    const passBegan = this.o.clock.monotonicMs();
    let passBytes = 0;
    const behind = (): void => {
      const scheduledMs = (passBytes / this.nominalRate()) * 1000;
      this.deficitSeconds = Math.max(0, (this.o.clock.monotonicMs() - passBegan - scheduledMs) / 1000);
    };
    this.deficitSeconds = 0;
    for (let pick = this.plan.next(this.o.clock.nowMs()); pick && !this.abort.signal.aborted; pick = this.plan.next(this.o.clock.nowMs())) {
      const { log, meta, store } = pick.item;
      const began = this.o.clock.monotonicMs();
      const path = join(this.o.logs.logDir(log), 'segments', format.segmentFileName(meta.segmentId));
      let result: Awaited<ReturnType<ScrubChecker['check']>>;
      try {
        result = await withSpan('scrub.check', { 'wal.log': log, 'wal.segment': meta.segmentId, 'wal.order': pick.kind }, () => this.o.checker.check({ path, segmentId: meta.segmentId, entryBytesMax: this.o.entryBytesMax }));
        failedInRow = 0;
      } catch (error) {
        // A check that could not run (its worker died) is no finding. It is passed over for this
        // pass, not retried first: its verification being the oldest, the score order would put
        // a segment that kills every worker first in each pass, and a pass that ended there
        // would never reach the others again. Several in a row (no worker can run) fail the pass.
        failedInRow += 1;
        if (this.abort.signal.aborted || failedInRow >= CHECK_FAILURES_IN_ROW_MAX) throw error;
        this.o.logger.warn({ log, segment: meta.segmentId, err: error }, 'scrub check could not run; passed over until the next pass');
        this.plan.done(pick, meta.byteLength, false);
        await this.o.clock.sleep(Math.max(0, (meta.byteLength / this.o.bytesPerSecondMax) * 1000 - (this.o.clock.monotonicMs() - began)), this.abort.signal);
        continue;
      }
      this.bytesScrubbed += result.fileByteLength;
      passBytes += result.fileByteLength;
      behind();
      this.segmentsScrubbed += 1;
      this.o.metrics.scrubBytes.inc(result.fileByteLength);
      const matches = result.ok && result.clean && result.sealed && result.firstIndex === meta.firstIndex && result.lastIndex === meta.lastIndex && result.aggregate === meta.aggregate;
      this.plan.done(pick, result.fileByteLength, matches);
      if (!matches) {
        damaged += 1;
        const why = !result.ok ? result.error : !result.clean ? 'damaged bytes' : `does not match its record (aggregate ${result.aggregate}, recorded ${meta.aggregate})`;
        this.o.logger.warn({ log, segment: meta.segmentId, order: pick.kind }, `scrub found a damaged copy: ${why}`);
        // A check that could not run (its worker died) is handled above; !ok here is a file it could not read.
        this.model.detected({ log, segmentId: meta.segmentId }, 'scrub', this.o.clock.nowMs());
        this.o.repairs.schedule(log, meta.segmentId, 'scrub', why);
      } else {
        this.model.verified({ log, segmentId: meta.segmentId }, this.o.clock.nowMs());
        await this.checkBackups(log, meta, store);
      }
      // Rate limit: a segment of B bytes is worth B / rate seconds, whatever it took (a throttled
      // check, its reads paced below this rate, took longer already).
      const budgetMs = (result.fileByteLength / this.nominalRate()) * 1000;
      await this.o.clock.sleep(Math.max(0, budgetMs - (this.o.clock.monotonicMs() - began)), this.abort.signal);
    }
    return damaged;
  }

  /** The configured rate times the coordinator's multiplier (before the throttle's share). */
  private nominalRate(): number {
    return this.o.bytesPerSecondMax * Math.max(1, this.o.rateMultiplier?.() ?? 1);
  }

  /**
   * The local backup copies of a segment whose own copy just verified: each must match the
   * record too; damaged, missing or different ones are written again from the segment.
   */
  private async checkBackups(log: string, meta: SegmentMeta, store: WalStore): Promise<void> {
    const damaged: number[] = [];
    for (const [i, path] of store.backupPaths(meta.segmentId).entries()) {
      const result = await this.o.checker.check({ path, segmentId: meta.segmentId, entryBytesMax: this.o.entryBytesMax });
      this.bytesScrubbed += result.fileByteLength;
      const matches = result.ok && result.clean && result.sealed && result.firstIndex === meta.firstIndex && result.lastIndex === meta.lastIndex && result.aggregate === meta.aggregate;
      if (!matches) damaged.push(i + 1);
    }
    if (damaged.length === 0) return;
    this.o.logger.warn({ log, segment: meta.segmentId, copies: damaged }, 'scrub found damaged or missing backup copies');
    await store.recopyBackups(meta.segmentId, damaged).catch((error: unknown) => this.o.logger.warn({ log, segment: meta.segmentId, err: error }, 'failed to write backup copies again'));
  }

  /** Stops the checker first: a check in flight is rejected rather than awaited (it may never answer). */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.o.checker.stop();
    await this.loop;
  }
}
