// The store's write queue: appends wait here and go out in group commits (as many queued
// appends as fit groupCommitBytesMax share one write and one fdatasync); other writes (replicated
// frames, seal, truncate, installing a segment) run alone, in queue order.
//
// Fault model: an I/O error while writing leaves the open segment in an unknown state, so the
// store fails: the batch and everything queued behind it are rejected with StoreFailedError, and
// the store refuses writes until it is reopened (recovery on open then sorts the tail out). A
// WalError thrown by an exclusive write is a refusal of that request only (the store is fine).
import { StoreClosedError, StoreFailedError, WalError } from './errors.js';
import type { AppendResult } from './segment-writer.js';
import type { StoreState } from './store-state.js';

interface PendingAppend {
  readonly kind: 'append';
  readonly payloads: readonly Uint8Array[];
  readonly bytes: number;
  readonly resolve: (result: AppendResult) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * A write that runs alone, in queue order (replicated frames, seal, truncate). A WalError it
 * throws rejects that request only; any other error is an I/O failure and fails the store.
 */
interface PendingOp {
  readonly kind: 'op';
  readonly run: () => Promise<void>;
  readonly reject: (error: unknown) => void;
}

type Pending = PendingAppend | PendingOp;

/** Writes one group commit: the payloads of each request, `bytes` framed bytes in all. */
export type BatchWriter = (requests: ReadonlyArray<readonly Uint8Array[]>, bytes: number) => Promise<AppendResult[]>;

export class WriteQueue {
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  /** The I/O error that failed the store; set once, never cleared. */
  failure: unknown;

  constructor(
    private readonly state: StoreState,
    private readonly writeBatch: BatchWriter,
  ) {}

  /** Queues payloads already checked against entryBytesMax (`bytes`: their framed size). */
  append(payloads: readonly Uint8Array[], bytes: number): Promise<AppendResult> {
    const refused = this.refusal();
    if (refused) return Promise.reject(refused);
    return new Promise<AppendResult>((resolve, reject) => {
      this.queue.push({ kind: 'append', payloads, bytes, resolve, reject });
      this.flushing ??= this.flushLoop();
    });
  }

  /** Runs fn alone in the write queue, after every write queued before it. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const refused = this.refusal();
    if (refused) return Promise.reject(refused);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ kind: 'op', run: async () => resolve(await fn()), reject });
      this.flushing ??= this.flushLoop();
    });
  }

  /** Resolves once every write queued so far has finished (or failed). */
  async drain(): Promise<void> {
    await this.flushing;
  }

  /** Why a new write is refused now (closed, or failed), or undefined. */
  refusal(): WalError | undefined {
    if (this.state.closed) return new StoreClosedError();
    if (this.failure !== undefined) return new StoreFailedError({ cause: this.failure });
    return undefined;
  }

  private async flushLoop(): Promise<void> {
    try {
      while (this.queue.length > 0 && this.failure === undefined) {
        const head = this.queue[0] as Pending;
        if (head.kind === 'op') {
          this.queue.shift();
          await this.runOp(head);
          continue;
        }
        await this.runBatch(this.takeBatch());
      }
      for (const request of this.queue.splice(0)) request.reject(new StoreFailedError({ cause: this.failure }));
    } finally {
      this.flushing = undefined;
    }
  }

  private async runOp(op: PendingOp): Promise<void> {
    try {
      await op.run();
      await this.state.maybeCheckpoint();
    } catch (error) {
      if (error instanceof WalError) {
        op.reject(error);
        return;
      }
      this.failure = error;
      this.state.logger.error({ err: error, log: this.state.settings.logName }, 'failed to write: store refuses writes until reopened');
      op.reject(new StoreFailedError({ cause: error }));
    }
  }

  /** The appends at the head of the queue that fit one group commit (at least one). */
  private takeBatch(): { batch: PendingAppend[]; bytes: number } {
    let bytes = 0;
    let take = 0;
    for (let next = this.queue[0]; next?.kind === 'append' && (take === 0 || bytes + next.bytes <= this.state.options.groupCommitBytesMax); next = this.queue[take]) {
      bytes += next.bytes;
      take += 1;
    }
    return { batch: this.queue.splice(0, take) as PendingAppend[], bytes };
  }

  private async runBatch({ batch, bytes }: { batch: PendingAppend[]; bytes: number }): Promise<void> {
    try {
      const results = await this.writeBatch(batch.map((request) => request.payloads), bytes);
      batch.forEach((request, i) => request.resolve(results[i] as AppendResult));
      await this.state.maybeCheckpoint();
    } catch (error) {
      this.failure = error;
      this.state.logger.error({ err: error, log: this.state.settings.logName }, 'failed to append: store refuses writes until reopened');
      for (const request of batch) request.reject(new StoreFailedError({ cause: error }));
    }
  }
}
