// Exponential backoff with jitter and a maximum, in one place (grpc-js style). The jitter comes
// from an injected Random (src/io), so that a simulator replays the same delays from one seed;
// waiting is the caller's Clock.sleep.
import { type Random, clampTimerMs, systemRandom } from '../io/index.js';

export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly multiplier?: number;
  readonly jitter?: number;
}

export class Backoff {
  private nextMs: number;
  constructor(
    private readonly options: BackoffOptions,
    private readonly random: Random = systemRandom,
  ) {
    this.nextMs = options.initialMs;
  }
  /** The delay to wait now; grows the next one. */
  next(): number {
    const jitter = this.options.jitter ?? 0.2;
    const delay = this.nextMs * (1 - jitter + this.random.next() * 2 * jitter);
    this.nextMs = Math.min(this.options.maxMs, this.nextMs * (this.options.multiplier ?? 2));
    return clampTimerMs(delay);
  }
  reset(): void {
    this.nextMs = this.options.initialMs;
  }
}
