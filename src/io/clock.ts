// The time and randomness seams. Production wires systemClock and systemRandom; the simulator
// wires a virtual clock driven by its event loop and a seeded generator, so that one seed gives
// one trace. Code under src/wal, src/replication, src/cluster and src/recovery reads time and
// randomness only through these (STYLE: no hidden nondeterminism).

export interface Clock {
  /** Wall-clock milliseconds since the epoch (timestamps that are stored or compared across nodes). */
  nowMs(): number;
  /** Monotonic milliseconds (durations only; meaningless across processes). */
  monotonicMs(): number;
  /** Resolves after ms, or at once when signal aborts (never rejects). */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Calls fn after ms; the returned function cancels it. */
  setTimer(ms: number, fn: () => void): () => void;
}

/** Timer delays clamped as Node clamps them (grpc-js style): at most 2^31 - 1 ms, never negative. */
export const TIMER_MS_MAX = 2_147_483_647;

export function clampTimerMs(ms: number): number {
  if (!Number.isFinite(ms) || ms < 0) return 0;
  return Math.min(ms, TIMER_MS_MAX);
}

export const systemClock: Clock = Object.freeze({
  nowMs: () => Date.now(),
  monotonicMs: () => performance.now(),
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const timer = setTimeout(done, clampTimerMs(ms));
      function done(): void {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      }
      signal?.addEventListener('abort', done, { once: true });
    });
  },
  setTimer(ms: number, fn: () => void): () => void {
    const timer = setTimeout(fn, clampTimerMs(ms));
    return () => clearTimeout(timer);
  },
});

export interface Random {
  /** A number in [0, 1). */
  next(): number;
}

export const systemRandom: Random = Object.freeze({ next: () => Math.random() });

/** A seeded generator (xoshiro128**): the simulator's only source of randomness. */
export class SeededRandom implements Random {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    // splitmix32 to spread the seed over the state.
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next() | 1;
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  next(): number {
    return this.nextUint32() / 4_294_967_296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.int(items.length)] as T;
  }

  /** An independent generator derived from this one (for a sub-component). */
  fork(): SeededRandom {
    return new SeededRandom(this.nextUint32());
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
