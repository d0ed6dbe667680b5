// Evaluation of predictive scrubbing (docs/SCRUBBING.md, `npm run bench -- --only scrub`, or
// `node dist/sim/scrub-eval.js --seed N`): the same scrub byte budget for every policy, latent
// errors injected with the field's locality, time to detection measured. Reproducible from a seed.
//
// Fault model per node (one disk): at a random time an episode starts with a first latent error in
// a random segment; each further error follows with probability followOn (0.5), at a segment
// within 3 of an earlier one (spatial locality), after an exponential delay of mean 3 days
// (temporal locality: most follow-ons within a month). On a failing disk (a share of the
// episodes) fdatasync latency rises fivefold two days before the first error. Clients read
// segments at random; a read of a damaged segment detects it (and counts as found by a read).
// Policies: random-start round-robin (today), staggered (regions interleaved, Schroeder 2010), the
// model's order (ScrubPlan within the same budget), and the model with the coordinator's boost
// (twice the rate while the node's risk ratio is at least 8: extra bytes, reported).
import { SeededRandom } from '../io/index.js';
import { ScrubModel } from '../cluster/scrub-model.js';
import { type PlanItem, type ScrubPlanParams, ScrubPlan } from '../cluster/scrub-plan.js';
import { SCRUB_BUDGET_DEFAULTS } from '../cluster/scrub-budget.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface ScrubEvalOptions {
  readonly seed: number;
  readonly nodes: number;
  readonly segments: number;
  /** One pass over every segment at the base rate. */
  readonly periodMs: number;
  readonly horizonMs: number;
  /** Client reads per segment per hour. */
  readonly readsPerSegmentHour: number;
  readonly failingDiskShare: number;
  /** The plan's parameters for the model policies (default: SCRUB_PLAN_DEFAULTS). */
  readonly plan?: Partial<ScrubPlanParams>;
}

export const SCRUB_EVAL_DEFAULTS: ScrubEvalOptions = { seed: 1, nodes: 24, segments: 1000, periodMs: 7 * DAY, horizonMs: 56 * DAY, readsPerSegmentHour: 0.0005, failingDiskShare: 0.5 };

export type Policy = 'round-robin' | 'staggered' | 'model' | 'model+boost';
export const POLICIES: readonly Policy[] = ['round-robin', 'staggered', 'model', 'model+boost'];

interface Damage {
  readonly segment: number;
  readonly atMs: number;
}

interface Episode {
  readonly damages: readonly Damage[];
  readonly latencyRiseMs: number | undefined;
}

/** The faults of one node: the same for every policy (drawn from the seed and the node only). */
function episodeOf(seed: number, node: number, o: ScrubEvalOptions): Episode {
  const r = new SeededRandom(seed * 1_000_003 + node);
  const start = r.next() * (o.horizonMs - 21 * DAY);
  const damages: Damage[] = [{ segment: Math.floor(r.next() * o.segments), atMs: start }];
  while (r.next() < 0.5 && damages.length < 12) {
    const near = damages[Math.floor(r.next() * damages.length)] as Damage;
    const segment = Math.min(o.segments - 1, Math.max(0, near.segment + Math.round((r.next() * 2 - 1) * 3)));
    if (damages.some((d) => d.segment === segment)) continue;
    damages.push({ segment, atMs: near.atMs + -Math.log(1 - r.next()) * 3 * DAY });
  }
  const failing = r.next() < o.failingDiskShare;
  return { damages, latencyRiseMs: failing ? start - 2 * DAY : undefined };
}

export interface PolicyResult {
  readonly policy: Policy;
  readonly damages: number;
  readonly foundByScrub: number;
  readonly foundByRead: number;
  readonly undetected: number;
  readonly meanTtdHours: number;
  readonly p99TtdHours: number;
  readonly withinPeriodShare: number;
  readonly bytesScrubbed: number;
  /** Bytes above the base budget (boost) and bytes of suspect rescans that found nothing. */
  readonly extraBytes: number;
  readonly falseAlarmBytes: number;
}

function order(policy: Policy, segments: number, random: SeededRandom): number[] {
  const ids = Array.from({ length: segments }, (_, i) => i);
  if (policy === 'round-robin') {
    const start = Math.floor(random.next() * segments);
    return [...ids.slice(start), ...ids.slice(0, start)];
  }
  // Staggered: 16 regions, the first segment of each, then the second of each, ...
  const regions = 16;
  const per = Math.ceil(segments / regions);
  const out: number[] = [];
  for (let k = 0; k < per; k += 1) for (let g = 0; g < regions; g += 1) if (g * per + k < segments) out.push(g * per + k);
  return out;
}

function runNode(policy: Policy, node: number, o: ScrubEvalOptions): { ttds: number[]; byRead: number; undetected: number; bytes: number; extra: number; falseAlarm: number; damages: number } {
  const episode = episodeOf(o.seed, node, o);
  const random = new SeededRandom(o.seed * 7 + node * 13 + 1);
  const stepMs = o.periodMs / o.segments; // one segment (1 byte unit) per step at the base rate
  const damagedAt = new Map<number, number>(); // segment -> damage time, while undetected
  const pending = [...episode.damages].sort((a, b) => a.atMs - b.atMs);
  const ttds: number[] = [];
  let byRead = 0;
  let bytes = 0;
  let extra = 0;
  let falseAlarm = 0;
  const model = new ScrubModel();
  const plan = new ScrubPlan<PlanItem>(model, o.plan ?? {});
  const items: PlanItem[] = Array.from({ length: o.segments }, (_, i) => ({ log: 'l', segmentId: i, byteLength: 1 }));
  // Every segment verified once at a random time in the period before the start (steady state).
  for (const item of items) model.track(item, 0, -random.next() * o.periodMs);
  const readEveryMs = HOUR / (o.readsPerSegmentHour * o.segments);
  let nextReadMs = -Math.log(1 - random.next()) * readEveryMs;
  let nextLatencyMs = 0;
  let passOrder: number[] = [];
  let now = 0;
  const detect = (segment: number, source: 'scrub' | 'read'): void => {
    const at = damagedAt.get(segment);
    if (at === undefined) return;
    damagedAt.delete(segment);
    if (source === 'scrub') ttds.push(now - at);
    else byRead += 1;
    if (policy.startsWith('model')) {
      model.detected({ log: 'l', segmentId: segment }, source, now);
      model.repairEnded({ log: 'l', segmentId: segment }, true, now);
    }
  };
  const advanceTo = (t: number): void => {
    while (pending.length > 0 && (pending[0] as Damage).atMs <= t) {
      const d = pending.shift() as Damage;
      if (!damagedAt.has(d.segment)) damagedAt.set(d.segment, d.atMs);
    }
    while (nextReadMs <= t) {
      now = nextReadMs;
      detect(Math.floor(random.next() * o.segments), 'read');
      nextReadMs += -Math.log(1 - random.next()) * readEveryMs;
    }
    if (policy.startsWith('model')) {
      // fdatasync samples every 10 minutes of simulated time (a real node takes thousands).
      for (; nextLatencyMs <= t; nextLatencyMs += 10 * 60_000) {
        const slow = episode.latencyRiseMs !== undefined && nextLatencyMs >= episode.latencyRiseMs;
        model.latencySample('fdatasync', (slow ? 10 : 2) * Math.exp((random.next() - 0.5) * 0.4));
      }
    }
    now = t;
  };
  if (policy === 'model' || policy === 'model+boost') plan.beginPass(items, 0);
  while (now < o.horizonMs) {
    let segment: number;
    let suspect = false;
    if (policy === 'model' || policy === 'model+boost') {
      let pick = plan.next(now);
      if (!pick) {
        plan.beginPass(items, now);
        pick = plan.next(now) as NonNullable<typeof pick>;
      }
      segment = pick.item.segmentId;
      suspect = pick.kind === 'suspect';
      const boosted = policy === 'model+boost' && model.nodeScore(now).riskRatio >= SCRUB_BUDGET_DEFAULTS.boostRiskRatio;
      const dt = boosted ? stepMs / SCRUB_BUDGET_DEFAULTS.boostMultiplier : stepMs;
      if (boosted) extra += 1 - dt / stepMs;
      advanceTo(now + dt);
      const clean = !damagedAt.has(segment);
      if (suspect && clean) falseAlarm += 1;
      detect(segment, 'scrub');
      model.verified(pick.item, now);
      plan.done(pick, 1, true);
    } else {
      if (passOrder.length === 0) passOrder = order(policy, o.segments, random);
      segment = passOrder.shift() as number;
      advanceTo(now + stepMs);
      detect(segment, 'scrub');
    }
    bytes += 1;
  }
  return { ttds, byRead, undetected: damagedAt.size + pending.length, bytes, extra, falseAlarm, damages: episode.damages.length };
}

function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

export function evaluate(options: Partial<ScrubEvalOptions> = {}): PolicyResult[] {
  const o = { ...SCRUB_EVAL_DEFAULTS, ...options };
  return POLICIES.map((policy) => {
    const ttds: number[] = [];
    let byRead = 0;
    let undetected = 0;
    let bytes = 0;
    let extra = 0;
    let falseAlarm = 0;
    let damages = 0;
    for (let node = 0; node < o.nodes; node += 1) {
      const r = runNode(policy, node, o);
      ttds.push(...r.ttds);
      byRead += r.byRead;
      undetected += r.undetected;
      bytes += r.bytes;
      extra += r.extra;
      falseAlarm += r.falseAlarm;
      damages += r.damages;
    }
    ttds.sort((a, b) => a - b);
    const mean = ttds.reduce((s, x) => s + x, 0) / Math.max(1, ttds.length);
    return {
      policy,
      damages,
      foundByScrub: ttds.length,
      foundByRead: byRead,
      undetected,
      meanTtdHours: mean / HOUR,
      p99TtdHours: percentile(ttds, 0.99) / HOUR,
      withinPeriodShare: ttds.filter((t) => t <= o.periodMs).length / Math.max(1, ttds.length),
      bytesScrubbed: bytes,
      extraBytes: extra,
      falseAlarmBytes: falseAlarm,
    };
  });
}

const isMain = process.argv[1]?.endsWith('scrub-eval.js') ?? false;
if (isMain) {
  const arg = (name: string): number | undefined => {
    const i = process.argv.indexOf(`--${name}`);
    return i < 0 ? undefined : Number(process.argv[i + 1]);
  };
  const suspectScore = arg('suspect-score');
  const results = evaluate({ seed: arg('seed') ?? 1, ...(arg('nodes') !== undefined ? { nodes: arg('nodes') as number } : {}), ...(suspectScore !== undefined ? { plan: { suspectScore } } : {}) });
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}
