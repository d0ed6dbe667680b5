// The order of scrub work (docs/SCRUBBING.md). Pure: a pass over every held segment, highest
// score first (the model's P(undetected damage); with equal rates that is oldest verification
// first), re-sorted when the model learns something (a detection, an I/O error), and suspect
// rescans interleaved: segments whose score is at least suspectScore (the neighbours of a fresh
// detection, every segment of a node whose rate rose) are checked again ahead of the pass, but
// never with more than suspectShare of the bytes scrubbed.
//
// Coverage bound: every pass checks every segment it started with once (or skips one a suspect
// rescan verified during the pass), and the pass advances with at least (1 - suspectShare) of the
// scrub rate; so a pass over B bytes at rate R takes at most (B / (1 - suspectShare) + S) / R
// (S: the largest segment), and no segment waits more than two passes plus the pause between
// them (test/unit/scrub-plan.test.ts checks it under adversarial scores).
import { type ScrubModel, type SegmentKey, segmentKeyString } from './scrub-model.js';

export interface ScrubPlanParams {
  /** P(undetected damage) from which a segment is rescanned ahead of the pass. */
  readonly suspectScore: number;
  /** The most of the scrubbed bytes that suspect rescans may take (0: plain pass order). */
  readonly suspectShare: number;
  /** Full rescoring for suspects at least every this many picks (besides model changes). */
  readonly rescoreEveryPicks: number;
}

export const SCRUB_PLAN_DEFAULTS: ScrubPlanParams = Object.freeze({ suspectScore: 0.002, suspectShare: 0.3, rescoreEveryPicks: 64 });

export interface PlanItem extends SegmentKey {
  readonly byteLength: number;
}

export interface Pick<T extends PlanItem> {
  readonly item: T;
  readonly kind: 'pass' | 'suspect';
}

export class ScrubPlan<T extends PlanItem> {
  readonly p: ScrubPlanParams;
  private remaining: T[] = [];
  private all: T[] = [];
  private sortedAt = -1;
  private suspects: T[] = [];
  private suspectsAt = -1;
  private picks = 0;
  /** The pick of the last rescoring of the pass order and of the suspects. */
  private sortedPick = 0;
  private suspectsPick = 0;
  /** Bytes suspect rescans may still take: earned by pass bytes at suspectShare / (1 - suspectShare). */
  private credit = 0;
  /** Pass bytes of the current pass (the credit's cap). */
  private bytesThisPass = 0;
  suspectBytes = 0;
  passBytes = 0;

  constructor(
    private readonly model: ScrubModel,
    params: Partial<ScrubPlanParams> = {},
  ) {
    this.p = Object.freeze({ ...SCRUB_PLAN_DEFAULTS, ...params });
    if (!(this.p.suspectShare >= 0 && this.p.suspectShare < 1)) throw new Error('scrub plan: suspectShare must be in [0, 1)');
  }

  /** Starts a pass over items (in the base order that breaks ties: a random start, say). */
  beginPass(items: readonly T[], nowMs: number): void {
    for (const item of items) this.model.track(item, nowMs);
    this.model.retain(new Set(items.map(segmentKeyString)));
    this.all = [...items];
    this.remaining = [...items];
    this.sortedAt = -1;
    this.suspectsAt = -1;
    // Credit is earned within a pass and spent within it: banked over quiet passes, it would let
    // suspect rescans (two damaged neighbours that keep making each other suspect) hold a later
    // pass up for as long as those passes took, breaking the coverage bound.
    this.credit = 0;
    this.bytesThisPass = 0;
  }

  passRemaining(): number {
    return this.remaining.length;
  }

  /** The next segment to check, or undefined when the pass is over. */
  next(nowMs: number): Pick<T> | undefined {
    this.picks += 1;
    if (this.remaining.length === 0) return undefined;
    if (this.credit > 0 && this.p.suspectShare > 0) {
      if ((this.suspectsAt !== this.model.version && this.picks - this.suspectsPick >= this.rescoreSpacing()) || this.picks % this.p.rescoreEveryPicks === 0) {
        this.suspectsPick = this.picks;
        this.suspects = this.all.map((item) => ({ item, score: this.model.segmentScore(item, nowMs) })).filter((s) => s.score >= this.p.suspectScore).sort((a, b) => b.score - a.score).map((s) => s.item);
        this.suspectsAt = this.model.version;
      }
      const suspect = this.suspects.shift();
      if (suspect && this.model.segmentScore(suspect, nowMs) >= this.p.suspectScore) return { item: suspect, kind: 'suspect' };
    }
    if (this.sortedAt === -1 || (this.sortedAt !== this.model.version && this.picks - this.sortedPick >= this.rescoreSpacing())) {
      this.sortedPick = this.picks;
      const scored = this.remaining.map((item, order) => ({ item, order, score: this.model.segmentScore(item, nowMs) }));
      scored.sort((a, b) => b.score - a.score || a.order - b.order);
      this.remaining = scored.map((s) => s.item);
      this.sortedAt = this.model.version;
    }
    return { item: this.remaining[0] as T, kind: 'pass' };
  }

  /**
   * Picks between two rescorings on model changes: scoring every segment costs O(n log n), and a
   * storm of signals (a failing disk: an I/O error at every call) changes the model at every pick,
   * which made a pass O(n^2 log n) on the event loop (43 ms a pick at 8,000 segments). Amortised
   * over n / 256 picks, a change still reorders a pass of up to 256 segments at once.
   */
  private rescoreSpacing(): number {
    return Math.ceil(this.all.length / 256);
  }

  /**
   * Records a finished check of a pick (the model hears the finding separately). A suspect rescan
   * that found the copy clean covers it for this pass; a damaged one is checked again in the pass.
   */
  done(pick: Pick<T>, byteLength: number, clean: boolean): void {
    const at = pick.kind === 'pass' || clean ? this.remaining.findIndex((i) => i.log === pick.item.log && i.segmentId === pick.item.segmentId) : -1;
    if (at >= 0) this.remaining.splice(at, 1);
    if (pick.kind === 'suspect') {
      this.credit -= byteLength;
      this.suspectBytes += byteLength;
      return;
    }
    this.passBytes += byteLength;
    this.bytesThisPass += byteLength;
    const share = this.p.suspectShare;
    // Credit is capped at this pass's worth so that a quiet stretch does not bank a long burst.
    this.credit = Math.min(this.credit + (byteLength * share) / (1 - share), Math.max(byteLength, this.bytesThisPass * share));
  }
}
