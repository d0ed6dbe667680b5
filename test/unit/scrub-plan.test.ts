// The damage model and the scrub order (src/cluster/scrub-model.ts, scrub-plan.ts): a detection
// raises its neighbours above the rest, clean verifications and time bring scores back, latency
// that rises makes the node suspect; and the coverage bound holds whatever the scores do.
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/io/index.js';
import { ScrubModel } from '../../src/cluster/scrub-model.js';
import { type PlanItem, ScrubPlan } from '../../src/cluster/scrub-plan.js';

const HOUR = 3_600_000;
const items = (n: number, byteLength = 1000, log = 'l'): PlanItem[] => Array.from({ length: n }, (_, i) => ({ log, segmentId: i + 1, byteLength }));

describe('ScrubModel', () => {
  it('a detection makes its neighbours the most suspect, nearest first, and a clean check clears one', () => {
    const model = new ScrubModel();
    const t0 = 0;
    for (const item of items(20)) {
      model.track(item, t0);
      model.verified(item, t0);
    }
    const t1 = t0 + 24 * HOUR;
    const before = model.segmentScore({ log: 'l', segmentId: 12 }, t1);
    model.detected({ log: 'l', segmentId: 10 }, 'read', t1);
    const score = (id: number): number => model.segmentScore({ log: 'l', segmentId: id }, t1);
    expect(score(11)).toBeGreaterThan(0.4);
    expect(score(11)).toBeGreaterThan(score(12));
    expect(score(12)).toBeGreaterThan(score(13));
    expect(score(13)).toBeGreaterThan(score(15));
    expect(score(12)).toBeGreaterThan(before * 10);
    expect(score(5)).toBeLessThan(score(13));
    model.verified({ log: 'l', segmentId: 11 }, t1 + 1);
    expect(model.segmentScore({ log: 'l', segmentId: 11 }, t1 + 1)).toBeLessThan(0.01);
    // Neighbours of another log are not neighbours.
    model.track({ log: 'm', segmentId: 11 }, t0, t0);
    expect(model.segmentScore({ log: 'm', segmentId: 11 }, t1)).toBeLessThan(0.01);
  });

  it('detections raise the node risk ratio and it decays back over half-lives', () => {
    const model = new ScrubModel({ halfLifeHours: 24 });
    expect(model.nodeScore(0).riskRatio).toBeCloseTo(1, 5);
    model.ioError(0);
    model.detected({ log: 'l', segmentId: 1 }, 'scrub', 0);
    const raised = model.nodeScore(0).riskRatio;
    expect(raised).toBeGreaterThan(1.9);
    expect(model.nodeScore(24 * 20 * HOUR).riskRatio).toBeLessThan(1.01);
    expect(model.nodeScore(0).detections.scrub).toBe(1);
    expect(model.nodeScore(0).ioErrors).toBe(1);
  });

  it('fdatasync latency that rises well above its baseline multiplies the node rate; noise does not', () => {
    const model = new ScrubModel();
    const random = new SeededRandom(3);
    for (let i = 0; i < 2000; i += 1) model.latencySample('fdatasync', 2 * (0.8 + 0.4 * random.next()));
    expect(model.nodeScore(0).latencyFactor).toBe(1);
    for (let i = 0; i < 200; i += 1) model.latencySample('fdatasync', 20 * (0.8 + 0.4 * random.next()));
    const score = model.nodeScore(0);
    expect(score.latencyZ.fdatasync).toBeGreaterThan(6);
    expect(score.latencyFactor).toBe(model.p.latencyFactorMax);
    expect(score.riskRatio).toBeCloseTo(model.p.latencyFactorMax, 5);
  });
});

/** Runs the plan in simulated time at rateBytesPerMs; returns the largest gap between two checks of a segment. */
function runPlan(plan: ScrubPlan<PlanItem>, model: ScrubModel, all: PlanItem[], rateBytesPerMs: number, passes: number, pauseMs: number, onPick?: (item: PlanItem, nowMs: number) => boolean): { maxGapMs: number; checks: Map<number, number> } {
  let now = 0;
  const last = new Map<number, number>(all.map((i) => [i.segmentId, 0]));
  const checks = new Map<number, number>();
  let maxGapMs = 0;
  for (let pass = 0; pass < passes; pass += 1) {
    plan.beginPass(all, now);
    for (let pick = plan.next(now); pick; pick = plan.next(now)) {
      now += pick.item.byteLength / rateBytesPerMs;
      const clean = onPick?.(pick.item, now) ?? true;
      if (clean) model.verified(pick.item, now);
      plan.done(pick, pick.item.byteLength, clean);
      maxGapMs = Math.max(maxGapMs, now - (last.get(pick.item.segmentId) ?? 0));
      last.set(pick.item.segmentId, now);
      checks.set(pick.item.segmentId, (checks.get(pick.item.segmentId) ?? 0) + 1);
    }
    now += pauseMs;
  }
  for (const t of last.values()) maxGapMs = Math.max(maxGapMs, now - pauseMs - t);
  return { maxGapMs, checks };
}

describe('ScrubPlan', () => {
  it('coverage bound: under detections every few checks (adversarial suspects), no segment waits more than two passes plus the pause', () => {
    const random = new SeededRandom(11);
    const all = Array.from({ length: 200 }, (_, i) => ({ log: 'l', segmentId: i + 1, byteLength: 500 + Math.floor(random.next() * 1500) }));
    const model = new ScrubModel();
    const plan = new ScrubPlan(model, { suspectShare: 0.3, suspectScore: 0.01 });
    const rate = 10; // bytes per ms
    const pauseMs = 5_000;
    // Every 7th check "finds damage" in a segment of a hot region, so suspects never run out.
    let n = 0;
    const { maxGapMs, checks } = runPlan(plan, model, all, rate, 12, pauseMs, (item, now) => {
      n += 1;
      if (n % 7 !== 0) return true;
      model.detected({ log: 'l', segmentId: 1 + (item.segmentId % 10) }, 'read', now);
      return true;
    });
    const totalBytes = all.reduce((s, i) => s + i.byteLength, 0);
    const largest = Math.max(...all.map((i) => i.byteLength));
    const passMsMax = (totalBytes / (1 - 0.3) + largest) / rate;
    expect(plan.suspectBytes).toBeGreaterThan(0); // suspects did take budget
    expect(plan.suspectBytes).toBeLessThanOrEqual((plan.passBytes * 0.3) / 0.7 + largest);
    expect(maxGapMs).toBeLessThanOrEqual(2 * passMsMax + pauseMs);
    for (const item of all) expect(checks.get(item.segmentId) ?? 0).toBeGreaterThanOrEqual(12);
  });

  it('without signals the pass is oldest-verification first: a stable order, each segment once per pass', () => {
    const model = new ScrubModel();
    const plan = new ScrubPlan(model);
    const all = items(50);
    const { maxGapMs, checks } = runPlan(plan, model, all, 1, 4, 0);
    for (const item of all) expect(checks.get(item.segmentId)).toBe(4);
    expect(plan.suspectBytes).toBe(0);
    expect(maxGapMs).toBeLessThanOrEqual((50 * 1000) / 1 + 1000);
  });

  it('after a detection, the neighbours are checked next, before the rest of the pass', () => {
    const model = new ScrubModel();
    const all = items(40);
    for (const i of all) model.track(i, 0, 0);
    const plan = new ScrubPlan(model);
    const now = 48 * HOUR;
    plan.beginPass(all, now);
    const first = plan.next(now);
    if (!first) throw new Error('no pick');
    plan.done(first, 1000, true);
    model.verified(first.item, now);
    model.detected({ log: 'l', segmentId: 30 }, 'read', now);
    const order: number[] = [];
    for (let k = 0; k < 6; k += 1) {
      const pick = plan.next(now);
      if (!pick) break;
      order.push(pick.item.segmentId);
      model.verified(pick.item, now);
      plan.done(pick, 1000, true);
    }
    expect(order.slice(0, 2).sort()).toEqual([29, 31]);
    expect(new Set(order.slice(2, 4))).toEqual(new Set([28, 32]));
  });

  it('a storm of signals (an I/O error every check) does not rescore every segment at every pick (regression)', () => {
    const model = new ScrubModel();
    const plan = new ScrubPlan(model);
    const n = 2000;
    const all = items(n);
    for (const i of all) model.track(i, 0, 0);
    let scored = 0;
    const score = model.segmentScore.bind(model);
    model.segmentScore = (key, nowMs) => {
      scored += 1;
      return score(key, nowMs);
    };
    let now = HOUR;
    plan.beginPass(all, now);
    let picks = 0;
    for (let pick = plan.next(now); pick && picks < 400; pick = plan.next(now)) {
      now += 10;
      model.ioError(now); // a failing disk: every call an error, each one a model change
      model.verified(pick.item, now);
      plan.done(pick, 1000, true);
      picks += 1;
    }
    // Every pick rescored all n (twice: the pass order and the suspects): 1.6 million; amortised
    // over n / 256 picks, about 400 / 8 * 2 * n.
    expect(scored).toBeLessThanOrEqual(600_000);
  });

  it('credit does not bank across passes: after quiet passes, a segment damaged for good does not hold the next pass up (regression)', () => {
    const model = new ScrubModel();
    const plan = new ScrubPlan(model, { suspectShare: 0.3 });
    const all = items(100);
    const rate = 1; // bytes per ms
    const quietPasses = 30;
    let picks = 0;
    // Quiet passes (no detection), then segments 50 and 51 stay damaged: every check of either
    // finds damage, and each detection makes the other a suspect again (burst term).
    const { maxGapMs, checks } = runPlan(plan, model, all, rate, quietPasses + 2, 0, (item, now) => {
      picks += 1;
      if (picks <= quietPasses * all.length || (item.segmentId !== 50 && item.segmentId !== 51)) return true;
      model.detected(item, 'scrub', now);
      return false;
    });
    const passMsMax = (100 * 1000) / (1 - 0.3) / rate + 1000;
    expect(maxGapMs).toBeLessThanOrEqual(2 * passMsMax);
    for (const item of all) expect(checks.get(item.segmentId) ?? 0).toBeGreaterThanOrEqual(quietPasses + 2);
  });
});
