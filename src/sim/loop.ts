// The simulator's event loop: virtual time, a queue of events ordered by (time, sequence), and
// processes that can be killed. Everything the code under test awaits (disk, network, timers)
// completes through this queue, so the order of every interleaving is decided by the seed and
// nothing else. Between two events, every microtask settles (one setImmediate turn: Node drains
// the microtask queue before its check phase), so one event and all the synchronous and
// promise-chained work it triggers form one step.
//
// A killed process's pending events are dropped: its sleeps, timers, disk and network calls
// never settle, so the old incarnation's code stops where it was (as after kill -9) and cannot
// act after its successor started.
import { type Clock, clampTimerMs } from '../io/index.js';

export interface SimProcess {
  readonly name: string;
  readonly incarnation: number;
  alive: boolean;
  /** A paused process (a long GC pause, SIGSTOP) runs none of its events before this time. */
  pausedUntilMs?: number;
}

interface Event {
  atMs: number;
  readonly seq: number;
  readonly owner: SimProcess | undefined;
  readonly run: () => void;
  cancelled: boolean;
}

/** The simulated wall clock starts here (2023-11-14), so timestamps look like real ones. */
export const SIM_EPOCH_MS = 1_700_000_000_000;

export class SimLoop {
  private nowMsValue = 0;
  private seq = 0;
  private readonly heap: Event[] = [];
  /** Events run so far. */
  steps = 0;

  get nowMs(): number {
    return this.nowMsValue;
  }

  /** Runs fn after delayMs of virtual time (in order of scheduling for equal times). */
  schedule(delayMs: number, run: () => void, owner?: SimProcess): () => void {
    const event: Event = { atMs: this.nowMsValue + clampTimerMs(delayMs), seq: this.seq++, owner, run, cancelled: false };
    this.push(event);
    return () => {
      event.cancelled = true;
    };
  }

  /** Resolves after delayMs unless owner is killed first (then never). */
  sleep(delayMs: number, owner?: SimProcess): Promise<void> {
    return new Promise<void>((resolve) => this.schedule(delayMs, resolve, owner));
  }

  /** A Clock for code running in process owner. */
  clockFor(owner: SimProcess): Clock {
    return {
      nowMs: () => SIM_EPOCH_MS + Math.floor(this.nowMsValue), // whole milliseconds, as Date.now()
      monotonicMs: () => this.nowMsValue,
      sleep: (ms: number, signal?: AbortSignal) =>
        new Promise<void>((resolve) => {
          if (signal?.aborted) return resolve();
          const cancel = this.schedule(ms, done, owner);
          function done(): void {
            cancel();
            signal?.removeEventListener('abort', done);
            resolve();
          }
          signal?.addEventListener('abort', done, { once: true });
        }),
      setTimer: (ms: number, fn: () => void) => this.schedule(ms, fn, owner),
    };
  }

  pending(): number {
    return this.heap.length;
  }

  /**
   * Runs events until the queue is empty, virtual time passes untilMs, or stop() says so.
   * Returns the number of events run.
   */
  async run(untilMs: number, stop: () => boolean = () => false): Promise<number> {
    let ran = 0;
    await settle();
    while (this.heap.length > 0 && !stop()) {
      const next = this.heap[0] as Event;
      if (next.atMs > untilMs) break;
      this.pop();
      if (next.cancelled || (next.owner !== undefined && !next.owner.alive)) continue;
      const pausedUntilMs = next.owner?.pausedUntilMs;
      if (pausedUntilMs !== undefined && pausedUntilMs > next.atMs) {
        // Deferred, in its original order among the process's events.
        next.atMs = pausedUntilMs;
        this.push(next);
        continue;
      }
      this.nowMsValue = next.atMs;
      next.run();
      ran += 1;
      this.steps += 1;
      await settle();
    }
    if (this.nowMsValue < untilMs && (this.heap.length === 0 || (this.heap[0] as Event).atMs > untilMs)) this.nowMsValue = untilMs;
    return ran;
  }

  private push(event: Event): void {
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i] as Event, heap[parent] as Event)) break;
      [heap[i], heap[parent]] = [heap[parent] as Event, heap[i] as Event];
      i = parent;
    }
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop() as Event;
    if (heap.length === 0) return;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && before(heap[l] as Event, heap[m] as Event)) m = l;
      if (r < heap.length && before(heap[r] as Event, heap[m] as Event)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m] as Event, heap[i] as Event];
      i = m;
    }
  }
}

function before(a: Event, b: Event): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}

/** Lets every pending microtask (and the chains they start) run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
