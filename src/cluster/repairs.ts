// A node's repairs of its own copies of segments (sealed, and open ones in place), from replicas, and the events they
// produce. Detections arrive from the read path, the scrubber, the coordinator and explicit
// requests; each segment is repaired by one task at a time, with bounded attempts and backoff
// between rounds, and never while the node serves other segments any less.
import { spanEvent, withSpan } from '../observability/index.js';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Clock, Disk, Random } from '../io/index.js';
import type { RepairStrategy, SegmentRepair } from '../recovery/index.js';
import { type LogStores, type SegmentDirectory, BadRequestError, UnknownSegmentError, expectationOfMeta } from '../replication/index.js';
import type { ReplicaSourceFor } from './replica-sources.js';
import { Backoff } from './backoff.js';

export type DetectionSource = 'open' | 'read' | 'scrub' | 'request' | 'coordinator';

export interface RecoveryEventView {
  readonly timeMs: number;
  readonly node: string;
  readonly log: string;
  readonly segment: number;
  readonly kind: 'detected' | 'repaired' | 'repair-failed' | 'entries-lost' | 'replica-distrusted';
  readonly source: DetectionSource;
  readonly detail: string;
}

export interface RepairServiceOptions {
  readonly self: string;
  readonly logs: LogStores;
  readonly directory: Pick<SegmentDirectory, 'list'>;
  /** Builds the source of verified copies for one repair (replica-sources.ts). */
  readonly replicaSource: ReplicaSourceFor;
  readonly strategy: RepairStrategy;
  /** Rounds of repair for one detection (each round is up to maxRecoveryAttempts attempts). */
  readonly roundsMax: number;
  readonly logger: Logger;
  /** Records (or clears, with undefined) a repair this node gave up on, for the coordinator. */
  readonly report: (log: string, segmentId: number, failure: { detail: string } | undefined) => Promise<void>;
  /**
   * Whether this node's give-up report of a copy is still in etcd. A held-off detection asks: an
   * etcd restore or wipe that took the report away left nobody to retry the copy for the rest of
   * the hold-off (simulator `--etcd-restore --seed 5125`). Without it, the hold-off is trusted.
   */
  readonly reportExists?: (log: string, segmentId: number) => Promise<boolean>;
  /** Asks another member to check its copy of a segment (it served bytes that failed verification). */
  readonly checkPeer?: (node: string, log: string, segmentId: number) => void;
  /** Seconds from a detection to the repair that made the local copy whole again. */
  readonly onUnavailable?: (seconds: number) => void;
  /** Event times (nowMs); hold-offs, backoff waits and repair durations (monotonicMs, sleep). */
  readonly clock: Clock;
  /** Backoff jitter between repair rounds. */
  readonly random: Random;
  /** The disk tempDir is on (the stores'): replica copies are fetched and verified there. */
  readonly disk: Disk;
}

export const expectationOf = expectationOfMeta;

/** After giving up on a copy, scrub and read detections of it wait this long (the coordinator retries). */
const GIVE_UP_HOLD_OFF_MS = 10 * 60_000;

export class RepairService {
  private readonly events = new EventEmitter();
  private readonly scheduled = new Set<string>();
  private readonly gaveUpAt = new Map<string, number>();
  /** Copies whose held-off detection is checking that the give-up report still exists. */
  private readonly confirming = new Set<string>();
  /** Copies found damaged and not repaired since: counted once in corrupted_segments. */
  private readonly knownDamaged = new Set<string>();
  /** The repair of each copy in progress: the next one waits (both would write the same temp file). */
  private readonly running = new Map<string, Promise<SegmentRepair>>();
  private stopped = false;

  constructor(private readonly o: RepairServiceOptions) {
    this.events.setMaxListeners(64);
  }

  onEvent(listener: (event: RecoveryEventView) => void): () => void {
    this.events.on('event', listener);
    return () => this.events.off('event', listener);
  }

  emit(event: Omit<RecoveryEventView, 'timeMs' | 'node'>): void {
    const full: RecoveryEventView = { timeMs: this.o.clock.nowMs(), node: this.o.self, ...event };
    this.events.emit('event', full);
  }

  /** Queues a repair of this node's copy (deduplicated per segment); returns at once. */
  schedule(log: string, segmentId: number, source: DetectionSource, detail: string): void {
    const key = `${log}/${segmentId}`;
    if (this.scheduled.has(key) || this.stopped) return;
    // A copy this node gave up on is the coordinator's to retry: the scrubber and reads finding
    // it again do not start another round (or another alert) until the hold-off has passed.
    const gaveUp = this.gaveUpAt.get(key);
    if (gaveUp !== undefined && source !== 'request' && this.o.clock.monotonicMs() - gaveUp < GIVE_UP_HOLD_OFF_MS) {
      this.confirmHoldOff(log, segmentId, gaveUp, source, detail);
      return;
    }
    this.scheduled.add(key);
    this.emit({ log, segment: segmentId, kind: 'detected', source, detail });
    const detectedAt = this.o.clock.monotonicMs();
    void (async () => {
      const backoff = new Backoff({ initialMs: 200, maxMs: 5_000 }, this.o.random);
      let detail = 'no attempt made';
      try {
        for (let round = 1; round <= this.o.roundsMax && !this.stopped; round += 1) {
          const result = await this.repairNow(log, segmentId, { strategy: this.o.strategy, dryRun: false, source }).catch((error: unknown) => {
            this.o.logger.warn({ log, segment: segmentId, err: error, round }, 'failed to repair segment');
            detail = error instanceof Error ? error.message : String(error);
            return undefined;
          });
          if (result && (result.outcome === 'done' || result.outcome === 'halted')) {
            this.gaveUpAt.delete(key);
            if (result.outcome === 'done') this.o.onUnavailable?.((this.o.clock.monotonicMs() - detectedAt) / 1000);
            await this.o.report(log, segmentId, undefined).catch(() => undefined);
            return;
          }
          if (result) detail = result.detail;
          await this.o.clock.sleep(backoff.next());
        }
        // Given up for now: the coordinator retries it later (and alerts if it never works).
        // Only once the report is recorded: with etcd out of reach (often why every round failed)
        // nobody else knows of the copy, so the next scrub or read detection must try again.
        this.gaveUpAt.set(key, this.o.clock.monotonicMs());
        if (!this.stopped) {
          await this.o.report(log, segmentId, { detail }).catch((error: unknown) => {
            this.gaveUpAt.delete(key);
            this.o.logger.warn({ err: error, log, segment: segmentId }, 'failed to record a repair report in etcd; the next detection of the copy retries its repair');
          });
        }
      } finally {
        this.scheduled.delete(key);
      }
    })();
  }

  /**
   * A held-off detection: if the give-up report that justified the hold-off is gone from etcd, the
   * hold-off ends and the detection starts a repair. One check per copy at a time; an unanswered or
   * failed check keeps the hold-off (etcd out of reach: the report may well be there).
   */
  private confirmHoldOff(log: string, segmentId: number, gaveUp: number, source: DetectionSource, detail: string): void {
    const key = `${log}/${segmentId}`;
    const exists = this.o.reportExists;
    if (!exists || this.confirming.has(key)) return;
    this.confirming.add(key);
    void exists(log, segmentId)
      .catch(() => true)
      .then((present) => {
        this.confirming.delete(key);
        if (present || this.stopped || this.gaveUpAt.get(key) !== gaveUp) return;
        this.gaveUpAt.delete(key);
        this.o.logger.warn({ log, segment: segmentId }, 'the report of a repair this node gave up on is gone from etcd (restored or wiped?); repairing the copy again');
        this.schedule(log, segmentId, source, detail);
      });
  }

  /** Repairs this node's copy of a segment now (sealed, or open here), or plans it (dryRun), after any repair of it already running. */
  async repairNow(log: string, segmentId: number, options: { strategy: RepairStrategy; dryRun: boolean; source: DetectionSource }): Promise<SegmentRepair> {
    return withSpan('repair', { 'wal.log': log, 'wal.segment': segmentId, 'wal.source': options.source, 'wal.dry_run': options.dryRun }, () => {
      spanEvent('detected', { source: options.source });
      return this.repairNowUntraced(log, segmentId, options);
    });
  }

  private async repairNowUntraced(log: string, segmentId: number, options: { strategy: RepairStrategy; dryRun: boolean; source: DetectionSource }): Promise<SegmentRepair> {
    const key = `${log}/${segmentId}`;
    const previous = this.running.get(key);
    const run = (previous ? previous.catch(() => undefined) : Promise.resolve()).then(() => this.repairAlone(log, segmentId, options));
    this.running.set(key, run);
    try {
      const result = await run;
      // Repaired, or nothing to repair (not a member now): a give-up of this copy no longer holds
      // detections off. The coordinator deletes its report after such an answer to its retry; a
      // copy damaged still (the node joins the ensemble again) is nobody else's to repair, and
      // was left damaged for the rest of the hold-off (--etcd-restore --pipeline --seed 1297).
      if (!options.dryRun && (result.outcome === 'done' || result.outcome === 'halted')) this.gaveUpAt.delete(key);
      return result;
    } finally {
      if (this.running.get(key) === run) this.running.delete(key);
    }
  }

  private async repairAlone(log: string, segmentId: number, options: { strategy: RepairStrategy; dryRun: boolean; source: DetectionSource }): Promise<SegmentRepair> {
    const meta = (await this.o.directory.list(log)).find((s) => s.meta.segmentId === segmentId)?.meta;
    if (!meta) throw new UnknownSegmentError(log, segmentId);
    if (!meta.ensemble.includes(this.o.self)) {
      return { segment: segmentId, decision: 'keep', outcome: 'done', repaired: [], lost: [], truncated: [], bytesWritten: 0, detail: `${this.o.self} is not in the segment's ensemble` };
    }
    const store = await this.o.logs.store(log);
    const local = store.segmentRecord(segmentId);
    if (!local) {
      return { segment: segmentId, decision: 'keep', outcome: 'failed', repaired: [], lost: [], truncated: [], bytesWritten: 0, detail: 'not held here yet: catch-up brings it' };
    }
    if (meta.state !== 'SEALED' && local.state !== 'open') {
      throw new BadRequestError('segment_id', `segment ${segmentId} is ${meta.state} and sealed here: it is repaired once its record is sealed`);
    }
    const source = this.o.replicaSource(log, meta);
    const started = this.o.clock.monotonicMs();
    // An open copy (the segment is still written): its damaged entries are rewritten in place
    // from the other members now, not left on fewer copies until the seal.
    const repairing = meta.state !== 'SEALED'
      ? options.dryRun
        ? Promise.resolve<SegmentRepair>({ segment: segmentId, decision: 'reconstruct', outcome: 'planned', repaired: [], lost: [], truncated: [], bytesWritten: 0, detail: 'the open segment would be checked and its damaged entries rewritten from the other members' })
        : store.repairOpenSegment(segmentId, { sources: [source] })
      : store.repairSealedSegment(segmentId, {
        strategy: options.strategy,
        dryRun: options.dryRun,
        sources: [source],
        expected: expectationOf(meta),
        heldElsewhere: (id, first, last) => source.mayBeHeldElsewhere(id, first, last),
        countDamage: !this.knownDamaged.has(`${log}/${segmentId}`),
      });
    const result = await repairing.finally(() => source.cleanup());
    if (!options.dryRun) {
      if (result.outcome === 'done') this.knownDamaged.delete(`${log}/${segmentId}`);
      else if (result.decision !== 'keep') this.knownDamaged.add(`${log}/${segmentId}`);
    }
    for (const node of source.distrusted(segmentId)) {
      this.emit({ log, segment: segmentId, kind: 'replica-distrusted', source: options.source, detail: `replica ${node} served bytes that fail verification` });
      // Its own copy is suspect: have it checked (and repaired) against the record now.
      this.o.checkPeer?.(node, log, segmentId);
    }
    if (!options.dryRun) this.report(log, segmentId, options.source, result, this.o.clock.monotonicMs() - started);
    return result;
  }

  private report(log: string, segment: number, source: DetectionSource, result: SegmentRepair, durationMs: number): void {
    if (result.decision === 'keep') return;
    const ranges = (r: ReadonlyArray<{ first: number; last: number }>): string => r.map((x) => (x.first === x.last ? `${x.first}` : `${x.first}..${x.last}`)).join(', ');
    if (result.lost.length > 0 || result.truncated.length > 0) {
      this.emit({ log, segment, kind: 'entries-lost', source, detail: `lost ${ranges(result.lost)} truncated ${ranges(result.truncated)}: ${result.detail}` });
    }
    if (result.outcome === 'done') this.emit({ log, segment, kind: 'repaired', source, detail: `${result.detail} in ${durationMs.toFixed(1)} ms` });
    else this.emit({ log, segment, kind: 'repair-failed', source, detail: result.detail });
  }

  stop(): void {
    this.stopped = true;
  }
}
