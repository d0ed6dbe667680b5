// Exponential backoff with jitter and a maximum, in one place (grpc-js style).
export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly multiplier?: number;
  readonly jitter?: number;
}

export class Backoff {
  private nextMs: number;
  constructor(private readonly options: BackoffOptions) {
    this.nextMs = options.initialMs;
  }
  /** The delay to wait now; grows the next one. */
  next(): number {
    const jitter = this.options.jitter ?? 0.2;
    const delay = this.nextMs * (1 - jitter + Math.random() * 2 * jitter);
    this.nextMs = Math.min(this.options.maxMs, this.nextMs * (this.options.multiplier ?? 2));
    return Math.max(0, Math.min(delay, 2_147_483_647));
  }
  reset(): void {
    this.nextMs = this.options.initialMs;
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
