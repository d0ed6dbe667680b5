// Coalescing of concurrent single-entry appends into one batch (Kafka producer's linger.ms and
// batch.size): an entry waits at most lingerUs for others to join it, a batch closes at
// batchBytesMax payload bytes or batchEntriesMax entries, and at most inFlightBatchesMax batches
// are in flight; while they are, new entries wait and the next batch grows (up to its caps).
// Pure apart from the two functions it is given for time (nowUs, defer), so tests drive it.

export interface CoalescerOptions {
  readonly lingerUs: number;
  readonly batchBytesMax: number;
  readonly batchEntriesMax: number;
  readonly inFlightBatchesMax: number;
  /** Sends one batch; resolves with the index of its first entry (entries are consecutive). */
  readonly send: (payloads: readonly Uint8Array[]) => Promise<{ firstIndex: number }>;
  /** Microseconds on a monotonic clock. */
  readonly nowUs: () => number;
  /** Runs fn on a later turn of the event loop (setImmediate). */
  readonly defer: (fn: () => void) => void;
}

interface Waiting {
  readonly payload: Uint8Array;
  readonly resolve: (index: number) => void;
  readonly reject: (error: unknown) => void;
}

export class Coalescer {
  private waiting: Waiting[] = [];
  private waitingBytes = 0;
  private firstWaitingAtUs = 0;
  private scheduled = false;
  private inFlight = 0;
  private readonly idle: Array<() => void> = [];

  constructor(private readonly o: CoalescerOptions) {}

  /** Batches sent and not answered yet. */
  get inFlightBatches(): number {
    return this.inFlight;
  }

  /** Appends one payload; resolves with its index once its batch is acknowledged. */
  add(payload: Uint8Array): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      if (this.waiting.length === 0) this.firstWaitingAtUs = this.o.nowUs();
      this.waiting.push({ payload, resolve, reject });
      this.waitingBytes += payload.byteLength;
      if (this.full() || this.o.lingerUs === 0) this.flush();
      else this.schedule();
    });
  }

  /** Resolves once nothing waits and nothing is in flight. */
  drained(): Promise<void> {
    if (this.waiting.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private full(): boolean {
    return this.waiting.length >= this.o.batchEntriesMax || this.waitingBytes >= this.o.batchBytesMax;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.o.defer(() => {
      this.scheduled = false;
      if (this.waiting.length === 0) return;
      // Nothing in flight: the entries go at once (those that arrived in the same turn share the
      // batch). Lingering pays only while a batch is out: a lone append would wait for nothing.
      if (this.inFlight === 0 || this.o.nowUs() - this.firstWaitingAtUs >= this.o.lingerUs) this.flush();
      else this.schedule();
    });
  }

  /** Sends the waiting entries (up to the caps) unless inFlightBatchesMax batches are out already. */
  private flush(): void {
    if (this.inFlight >= this.o.inFlightBatchesMax || this.waiting.length === 0) return;
    let take = 0;
    let bytes = 0;
    while (take < this.waiting.length && take < this.o.batchEntriesMax) {
      const size = (this.waiting[take] as Waiting).payload.byteLength;
      if (take > 0 && bytes + size > this.o.batchBytesMax) break;
      bytes += size;
      take += 1;
    }
    const batch = this.waiting.splice(0, take);
    this.waitingBytes -= bytes;
    if (this.waiting.length > 0) this.firstWaitingAtUs = this.o.nowUs();
    this.inFlight += 1;
    let sent: Promise<{ firstIndex: number }>;
    try {
      sent = this.o.send(batch.map((w) => w.payload));
    } catch (error) {
      sent = Promise.reject(error);
    }
    sent.then(
      ({ firstIndex }) => batch.forEach((w, i) => w.resolve(firstIndex + i)),
      (error: unknown) => batch.forEach((w) => w.reject(error)),
    ).finally(() => {
      this.inFlight -= 1;
      // The entries that waited behind the full window go now: they lingered long enough.
      if (this.waiting.length > 0) {
        if (this.full()) this.flush();
        else this.schedule();
      } else if (this.inFlight === 0) {
        for (const resolve of this.idle.splice(0)) resolve();
      }
    });
  }
}
