// The damage model behind predictive scrubbing (docs/SCRUBBING.md explains the choice and every
// parameter). Pure: it takes signals with their times and returns scores; the scrubber, the disk
// observer and the repair service feed it, the scrubber orders its work by it.
//
// Model, per node (one data directory per node: all its logs live under it):
// - A node damage rate lambda_node (damaged copies per node-hour), Gamma-Poisson: prior
//   Gamma(a0, a0 / lambda0), updated by detections (counts) and the hours observed (exposure),
//   both forgotten with a half-life; plus a follow-on term for temporal locality: each detection
//   adds followOnProbability / followOnWindowHours (over half of disks with one latent error
//   develop another within a month, Bairavasundaram 2007), decaying with the same half-life.
// - Per segment, a kernel-smoothed Gamma-Poisson rate around lambda_node / segments held:
//   detections and verified exposure
//   of segments within neighbourRadius (same log, segment ids apart by d) count with weight
//   spatialWeight^d (spatial locality: P(another error within 10 MB | one) ~ 0.5).
// - A burst term: a detection at distance d makes a neighbour last verified before it damaged
//   with probability burstProbability * spatialWeight^(d-1), decaying with the half-life.
// - A latency anomaly: fdatasync and read latencies (log ms), a slow EWMA baseline and a fast
//   EWMA; the z-score of the fast mean against the baseline multiplies lambda_node (a failing
//   disk's latency rises before its errors, Mahdisoltani 2017). I/O errors count as detections.
// A segment's score is P(undetected damage) = 1 - (1 - p_burst) * exp(-lambda_seg * hours since
// its last clean verification). The node's risk ratio is lambda_node * latencyFactor / lambda0.

export interface ScrubModelParams {
  /** Prior damage rate per node-hour (the fleet's background: ~3.5 % of disks a year). */
  readonly lambda0PerNodeHour: number;
  /** P(another error on the node within followOnWindowHours of one), and that window. */
  readonly followOnProbability: number;
  readonly followOnWindowHours: number;
  /** Prior strength (pseudo-detections): how many detections move the rate a long way. */
  readonly priorStrength: number;
  /** Half-life of detections and exposure (temporal locality). */
  readonly halfLifeHours: number;
  /** Neighbours: segments of the same log within this many ids. */
  readonly neighbourRadius: number;
  /** Weight of a neighbour at distance 1 (halved again at each step). */
  readonly spatialWeight: number;
  /** P(a neighbour at distance 1, last verified before a detection, is damaged too). */
  readonly burstProbability: number;
  /** EWMA weights of the latency baseline and of the recent mean. */
  readonly latencyBaselineAlpha: number;
  readonly latencyRecentAlpha: number;
  /** z-score of recent latency above which the node rate is raised, and the most it is raised by. */
  readonly latencyZThreshold: number;
  readonly latencyFactorMax: number;
  /** Samples before the latency baseline is trusted. */
  readonly latencySamplesMin: number;
}

export const SCRUB_MODEL_DEFAULTS: ScrubModelParams = Object.freeze({
  lambda0PerNodeHour: 4e-6,
  followOnProbability: 0.5,
  followOnWindowHours: 30 * 24,
  priorStrength: 2,
  halfLifeHours: 14 * 24,
  neighbourRadius: 3,
  spatialWeight: 0.5,
  burstProbability: 0.5,
  latencyBaselineAlpha: 0.001,
  latencyRecentAlpha: 0.05,
  latencyZThreshold: 3,
  latencyFactorMax: 8,
  latencySamplesMin: 200,
});

export type SignalSource = 'scrub' | 'read' | 'open' | 'repair' | 'request' | 'coordinator';
export type LatencyKind = 'fdatasync' | 'read';

const HOUR_MS = 3_600_000;

interface SegmentState {
  /** Last clean verification (ms, model clock); undefined: never seen verified. */
  verifiedMs: number | undefined;
  /** Time-decayed detections and exposure hours, and when they were last decayed. */
  detections: number;
  exposureHours: number;
  decayedMs: number;
  /** The last detection here (ms), for the burst term of neighbours. */
  lastDetectionMs: number | undefined;
}

/** A latency stream's EWMA state over log(ms). */
class LatencyStat {
  samples = 0;
  baselineMean = 0;
  baselineVar = 0;
  recentMean = 0;

  constructor(private readonly p: ScrubModelParams) {}

  add(ms: number): void {
    const x = Math.log(Math.max(ms, 0.001));
    this.samples += 1;
    if (this.samples === 1) {
      this.baselineMean = x;
      this.recentMean = x;
      return;
    }
    // The baseline adapts fast at first (1/n), then slowly (alpha).
    const a = Math.max(this.p.latencyBaselineAlpha, 1 / this.samples);
    // Once trusted, the baseline takes outliers clamped to 3 sd: a slowing disk shows as a rising
    // z-score for a long while instead of dragging its own baseline (and variance) up.
    const sd = Math.sqrt(this.baselineVar);
    const raw = x - this.baselineMean;
    const d = this.samples > this.p.latencySamplesMin ? Math.max(-3 * sd, Math.min(3 * sd, raw)) : raw;
    this.baselineMean += a * d;
    this.baselineVar = (1 - a) * (this.baselineVar + a * d * d);
    this.recentMean += this.p.latencyRecentAlpha * (x - this.recentMean);
  }

  /** How far the recent mean is above the baseline, in baseline standard deviations (0 until trusted). */
  z(): number {
    if (this.samples < this.p.latencySamplesMin) return 0;
    const sd = Math.max(Math.sqrt(this.baselineVar), 0.05);
    return (this.recentMean - this.baselineMean) / sd;
  }
}

export interface SegmentKey {
  readonly log: string;
  readonly segmentId: number;
}

export interface NodeScrubScore {
  /** lambda_node * latencyFactor / lambda0: 1 is the fleet's background. */
  readonly riskRatio: number;
  readonly latencyFactor: number;
  readonly latencyZ: { readonly fdatasync: number; readonly read: number };
  readonly detections: Readonly<Record<SignalSource, number>>;
  readonly ioErrors: number;
  readonly repairs: number;
  readonly repairsFailed: number;
}

export class ScrubModel {
  readonly p: ScrubModelParams;
  private readonly segments = new Map<string, Map<number, SegmentState>>();
  private nodeDetections = 0;
  private nodeExposureHours = 0;
  /** Detections decayed by the half-life, unlike nodeDetections not offset by exposure. */
  private followOnDetections = 0;
  private nodeDecayedMs: number | undefined;
  private readonly latency: Record<LatencyKind, LatencyStat>;
  private readonly counts: Record<SignalSource, number> = { scrub: 0, read: 0, open: 0, repair: 0, request: 0, coordinator: 0 };
  private ioErrors = 0;
  private repairs = 0;
  private repairsFailed = 0;
  /** Bumped by every signal that can reorder the work (detections, I/O errors, latency shifts). */
  version = 0;
  private lastLatencyFactor = 1;

  constructor(params: Partial<ScrubModelParams> = {}) {
    this.p = Object.freeze({ ...SCRUB_MODEL_DEFAULTS, ...params });
    this.latency = { fdatasync: new LatencyStat(this.p), read: new LatencyStat(this.p) };
  }

  private decay(nowMs: number, sinceMs: number): number {
    return 0.5 ** (Math.max(0, nowMs - sinceMs) / HOUR_MS / this.p.halfLifeHours);
  }

  private state(key: SegmentKey, nowMs: number): SegmentState {
    let log = this.segments.get(key.log);
    if (!log) this.segments.set(key.log, (log = new Map()));
    let s = log.get(key.segmentId);
    if (!s) log.set(key.segmentId, (s = { verifiedMs: undefined, detections: 0, exposureHours: 0, decayedMs: nowMs, lastDetectionMs: undefined }));
    const f = this.decay(nowMs, s.decayedMs);
    s.detections *= f;
    s.exposureHours *= f;
    s.decayedMs = nowMs;
    return s;
  }

  private decayNode(nowMs: number): void {
    if (this.nodeDecayedMs !== undefined && nowMs > this.nodeDecayedMs) {
      const f = this.decay(nowMs, this.nodeDecayedMs);
      this.nodeExposureHours = (this.nodeExposureHours + (nowMs - this.nodeDecayedMs) / HOUR_MS) * f;
      this.nodeDetections *= f;
      this.followOnDetections *= f;
    }
    this.nodeDecayedMs = Math.max(nowMs, this.nodeDecayedMs ?? nowMs);
  }

  /** A segment the node holds, first seen (or seen again after a restart) with its last verification if known. */
  track(key: SegmentKey, nowMs: number, verifiedMs?: number): void {
    const s = this.state(key, nowMs);
    if (s.verifiedMs === undefined && verifiedMs !== undefined) s.verifiedMs = verifiedMs;
  }

  /** Forgets segments no longer held (deleted, moved away). */
  retain(held: ReadonlySet<string>): void {
    for (const [log, segments] of this.segments) {
      for (const id of segments.keys()) if (!held.has(segmentKeyString({ log, segmentId: id }))) segments.delete(id);
      if (segments.size === 0) this.segments.delete(log);
    }
  }

  /** A clean verification (scrub, or a repair that installed verified bytes). */
  verified(key: SegmentKey, nowMs: number): void {
    const s = this.state(key, nowMs);
    this.decayNode(nowMs);
    if (s.verifiedMs !== undefined) s.exposureHours += Math.max(0, nowMs - s.verifiedMs) / HOUR_MS;
    s.verifiedMs = nowMs;
  }

  /** A checksum failure (or missing/mismatched copy) found in this segment by source. */
  detected(key: SegmentKey, source: SignalSource, nowMs: number): void {
    const s = this.state(key, nowMs);
    this.decayNode(nowMs);
    s.detections += 1;
    s.lastDetectionMs = nowMs;
    this.nodeDetections += 1;
    this.followOnDetections += 1;
    this.counts[source] += 1;
    this.version += 1;
  }

  repairEnded(key: SegmentKey, ok: boolean, nowMs: number): void {
    if (ok) {
      this.repairs += 1;
      this.verified(key, nowMs); // its bytes were just verified against etcd's record
    } else this.repairsFailed += 1;
  }

  /** An I/O error on this node's disk (any file): evidence against the node, not one segment. */
  ioError(nowMs: number): void {
    this.decayNode(nowMs);
    this.nodeDetections += 1;
    this.followOnDetections += 1;
    this.ioErrors += 1;
    this.version += 1;
  }

  latencySample(kind: LatencyKind, ms: number): void {
    this.latency[kind].add(ms);
    const factor = this.latencyFactor();
    // Reorder only on a real shift (a quarter of the range), not on every sample.
    if (Math.abs(factor - this.lastLatencyFactor) >= (this.p.latencyFactorMax - 1) / 4) {
      this.lastLatencyFactor = factor;
      this.version += 1;
    }
  }

  private latencyFactor(): number {
    const z = Math.max(this.latency.fdatasync.z(), this.latency.read.z());
    if (z <= this.p.latencyZThreshold) return 1;
    // Linear from 1 at the threshold to the maximum at twice the threshold.
    return Math.min(this.p.latencyFactorMax, 1 + ((z - this.p.latencyZThreshold) / this.p.latencyZThreshold) * (this.p.latencyFactorMax - 1));
  }

  /** lambda_node times the latency factor (damage per node-hour). */
  nodeRate(nowMs: number): number {
    this.decayNode(nowMs);
    const { priorStrength: a0, lambda0PerNodeHour: l0 } = this.p;
    const posterior = (a0 + this.nodeDetections) / (a0 / l0 + this.nodeExposureHours);
    const followOn = (this.followOnDetections * this.p.followOnProbability) / this.p.followOnWindowHours;
    return (posterior + followOn) * this.latencyFactor();
  }

  private segmentCount(): number {
    let n = 0;
    for (const segments of this.segments.values()) n += segments.size;
    return Math.max(1, n);
  }

  /** P(undetected damage) of one segment now. */
  segmentScore(key: SegmentKey, nowMs: number): number {
    const lambdaNode = this.nodeRate(nowMs) / this.segmentCount();
    const { priorStrength: a0, neighbourRadius: r, spatialWeight: w } = this.p;
    const log = this.segments.get(key.log);
    const self = log?.get(key.segmentId);
    let detections = 0;
    let exposure = 0;
    let notBurst = 1;
    for (let d = -r; d <= r; d += 1) {
      const n = log?.get(key.segmentId + d);
      if (!n) continue;
      const weight = w ** Math.abs(d);
      const f = this.decay(nowMs, n.decayedMs);
      detections += weight * n.detections * f;
      exposure += weight * n.exposureHours * f;
      // A neighbour's detection after this segment's last verification may have hit it too.
      if (d !== 0 && n.lastDetectionMs !== undefined && (self?.verifiedMs === undefined || self.verifiedMs < n.lastDetectionMs)) {
        notBurst *= 1 - this.p.burstProbability * w ** (Math.abs(d) - 1) * this.decay(nowMs, n.lastDetectionMs);
      }
    }
    // Follow-on damage near a detection: followOnProbability within the window, spread over the
    // neighbourhood by the spatial kernel (its weights sum to kernelSum).
    const kernelSum = 1 + (2 * w * (1 - w ** r)) / (1 - w);
    const followOnLocal = (detections * this.p.followOnProbability) / kernelSum / this.p.followOnWindowHours;
    const lambda = (a0 + detections) / (a0 / lambdaNode + exposure) + followOnLocal;
    const sinceHours = self?.verifiedMs === undefined ? 0 : Math.max(0, nowMs - self.verifiedMs) / HOUR_MS;
    return 1 - notBurst * Math.exp(-lambda * sinceHours);
  }

  lastVerifiedMs(key: SegmentKey): number | undefined {
    return this.segments.get(key.log)?.get(key.segmentId)?.verifiedMs;
  }

  nodeScore(nowMs: number): NodeScrubScore {
    const latencyFactor = this.latencyFactor();
    return {
      riskRatio: this.nodeRate(nowMs) / this.p.lambda0PerNodeHour,
      latencyFactor,
      latencyZ: { fdatasync: this.latency.fdatasync.z(), read: this.latency.read.z() },
      detections: { ...this.counts },
      ioErrors: this.ioErrors,
      repairs: this.repairs,
      repairsFailed: this.repairsFailed,
    };
  }

  /** The n highest-scored segments (status, the admin API). */
  topSegments(nowMs: number, n: number): Array<SegmentKey & { score: number; lastVerifiedMs: number | undefined }> {
    const all: Array<SegmentKey & { score: number; lastVerifiedMs: number | undefined }> = [];
    for (const [log, segments] of this.segments) {
      for (const [segmentId, s] of segments) all.push({ log, segmentId, score: this.segmentScore({ log, segmentId }, nowMs), lastVerifiedMs: s.verifiedMs });
    }
    return all.sort((a, b) => b.score - a.score).slice(0, n);
  }
}

export function segmentKeyString(key: SegmentKey): string {
  return `${key.log}/${key.segmentId}`;
}
