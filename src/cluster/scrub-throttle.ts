// The scrub throttle: scrubbing yields to client appends (docs/SCRUBBING.md, "Yielding to
// appends"). Pure logic on an injected clock; the node feeds it the latency of every fdatasync on
// its disk (the append path's one disk wait, timed from call to continuation, so event-loop delay
// from CPU contention shows in it too) and the scrub reads ask it for their rate.
//
// The controller is AIMD on the scrub byte rate, against a baseline measured with scrubbing paused:
// - probe: scrubbing pauses for probeMs; the quantile of the fdatasync latencies seen meanwhile is
//   the baseline; measured again when appends resume after an idle window, when a window with
//   scrubbing on is faster than staleBelow * baseline (scrubbing only adds latency: the load
//   changed), and every reprobeEveryMs while appends run;
// - run: every windowMs, the same quantile of that window is compared with the baseline; above
//   baseline * (1 + riseAllowed) the rate share is multiplied by decreaseFactor (never below
//   shareMin: a pass always ends, and the deficit says how late); else it grows by increaseShare;
// - a window with fewer than samplesMin latencies means appends are (nearly) idle: full rate, so
//   the coverage bound holds exactly as without a throttle when nothing competes.

export interface ScrubThrottleParams {
  /** Length of a pause that measures the baseline. */
  readonly probeMs: number;
  /** Time between two baseline pauses while appends run. */
  readonly reprobeEveryMs: number;
  /** Length of a window whose latency is compared with the baseline. */
  readonly windowMs: number;
  /** Latencies a window (or a probe) needs to say anything; fewer: appends are idle. */
  readonly samplesMin: number;
  /** The latency quantile compared (the goal is on client append p99). */
  readonly quantile: number;
  /** How far above the baseline a window may be before the rate falls (the goal allows 10 %). */
  readonly riseAllowed: number;
  /** Multiplicative decrease of the rate share. */
  readonly decreaseFactor: number;
  /** Additive increase of the rate share per quiet window. */
  readonly increaseShare: number;
  /** The lowest rate share under load (> 0: a pass always ends). */
  readonly shareMin: number;
  /** A window's quantile below staleBelow * baseline makes the baseline stale (probe again). */
  readonly staleBelow: number;
  /** Latencies kept per window at most (a bounded buffer; the rest are dropped). */
  readonly samplesMax: number;
}

export const SCRUB_THROTTLE_DEFAULTS: ScrubThrottleParams = Object.freeze({
  probeMs: 500,
  reprobeEveryMs: 15_000,
  windowMs: 500,
  // Group commit makes fdatasyncs few: 16 appenders at ~100 appends/s gave well under 20 per
  // 500 ms (at 20 the throttle read that load as idle). With a handful, the p99 is the maximum.
  samplesMin: 4,
  quantile: 0.99,
  riseAllowed: 0.05,
  decreaseFactor: 0.5,
  increaseShare: 0.05,
  shareMin: 1 / 64,
  staleBelow: 0.8,
  samplesMax: 10_000,
});

export type ScrubThrottlePhase = 'probe' | 'run';

export interface ScrubThrottleView {
  readonly phase: ScrubThrottlePhase;
  /** Share of the configured scrub rate allowed now (0 while probing). */
  readonly share: number;
  /** The baseline latency quantile (ms), or undefined when none was measured. */
  readonly baselineMs: number | undefined;
  /** The last window's latency quantile (ms), or undefined when it was idle. */
  readonly lastWindowMs: number | undefined;
  readonly decreases: number;
  readonly probes: number;
}

/** The value at quantile q of the samples (nearest rank; sorts a copy). */
export function quantileOf(samples: readonly number[], q: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN;
}

export class ScrubThrottle {
  readonly p: ScrubThrottleParams;
  private phase: ScrubThrottlePhase = 'run';
  private share = 1;
  private samples: number[] = [];
  private phaseEndMs: number;
  private nextProbeMs: number;
  private baselineMs: number | undefined;
  private lastWindowMs: number | undefined;
  decreases = 0;
  probes = 0;

  constructor(nowMs: number, params: Partial<ScrubThrottleParams> = {}) {
    this.p = { ...SCRUB_THROTTLE_DEFAULTS, ...params };
    if (!(this.p.shareMin > 0 && this.p.shareMin <= 1)) throw new RangeError(`shareMin ${this.p.shareMin} must be in (0, 1]`);
    if (!(this.p.decreaseFactor > 0 && this.p.decreaseFactor < 1)) throw new RangeError(`decreaseFactor ${this.p.decreaseFactor} must be in (0, 1)`);
    this.phaseEndMs = nowMs + this.p.windowMs;
    // The first window with load has no baseline: it starts a probe at once.
    this.nextProbeMs = nowMs;
  }

  /** One fdatasync latency on this node (ms). */
  sample(ms: number, nowMs: number): void {
    this.advance(nowMs);
    if (this.samples.length < this.p.samplesMax && Number.isFinite(ms)) this.samples.push(ms);
  }

  /** The share of the configured scrub rate allowed now: 0 while probing, else in [shareMin, 1]. */
  shareNow(nowMs: number): number {
    this.advance(nowMs);
    return this.phase === 'probe' ? 0 : this.share;
  }

  view(nowMs: number): ScrubThrottleView {
    this.advance(nowMs);
    return { phase: this.phase, share: this.phase === 'probe' ? 0 : this.share, baselineMs: this.baselineMs, lastWindowMs: this.lastWindowMs, decreases: this.decreases, probes: this.probes };
  }

  private advance(nowMs: number): void {
    // Bounded: one step per phase end passed, and a long silence (no calls) restarts a window.
    for (let steps = 0; nowMs >= this.phaseEndMs && steps < 4; steps += 1) {
      if (nowMs >= this.phaseEndMs + 2 * Math.max(this.p.windowMs, this.p.probeMs)) {
        this.idleGap(nowMs);
        return;
      }
      if (this.phase === 'probe') this.endProbe();
      else this.endWindow();
    }
  }

  private endProbe(): void {
    if (this.samples.length >= this.p.samplesMin) this.baselineMs = quantileOf(this.samples, this.p.quantile);
    this.samples = [];
    this.phase = 'run';
    this.nextProbeMs = this.phaseEndMs + this.p.reprobeEveryMs;
    this.phaseEndMs += this.p.windowMs;
  }

  private endWindow(): void {
    const loaded = this.samples.length >= this.p.samplesMin;
    const resumed = loaded && this.lastWindowMs === undefined;
    this.lastWindowMs = loaded ? quantileOf(this.samples, this.p.quantile) : undefined;
    this.samples = [];
    const endedMs = this.phaseEndMs;
    if (!loaded) {
      this.share = 1; // appends idle: nothing to yield to
    } else if (this.baselineMs !== undefined && (this.lastWindowMs ?? 0) > this.baselineMs * (1 + this.p.riseAllowed)) {
      this.share = Math.max(this.p.shareMin, this.share * this.p.decreaseFactor);
      this.decreases += 1;
    } else if (this.baselineMs !== undefined) {
      this.share = Math.min(1, this.share + this.p.increaseShare);
    }
    const stale = this.baselineMs === undefined || (this.lastWindowMs ?? Infinity) < this.baselineMs * this.p.staleBelow;
    if (loaded && (stale || resumed || endedMs >= this.nextProbeMs)) {
      this.phase = 'probe';
      this.probes += 1;
      this.phaseEndMs = endedMs + this.p.probeMs;
      // A new load (none measured, or its character changed): resume lower than the share the
      // old baseline allowed, rather than at it.
      if (stale || resumed) this.share = Math.max(this.p.shareMin, this.share * this.p.decreaseFactor);
    } else {
      this.phaseEndMs = endedMs + this.p.windowMs;
    }
  }

  /** No call for a long time: nothing was measured meanwhile; a fresh window starts now. */
  private idleGap(nowMs: number): void {
    this.samples = [];
    this.phase = 'run';
    this.share = 1;
    this.lastWindowMs = undefined;
    this.phaseEndMs = nowMs + this.p.windowMs;
  }
}
