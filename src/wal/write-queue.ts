// The store's write queue: appends wait here and go out in group commits (as many queued
// appends as fit groupCommitBytesMax share one write and one fdatasync); other writes (replicated
// frames, seal, truncate, installing a segment) run alone, in queue order.
//
// Fault model: a write or fdatasync that fails (EIO, ENOSPC) leaves what was written since the
// last sync anywhere between absent and whole on the medium, and after a failed fdatasync Linux
// may have dropped the dirty pages while reads still show them and a later fdatasync succeeds
// ("fsyncgate"). So the failed request is rejected (StoreWriteError), the open segment is cut
// back to its last synced length and that is synced, the in-memory state goes back to the
// durable one, and the store keeps going (a full disk that frees up needs no restart). If that
// rollback fails too, the store fails: everything queued is rejected with StoreFailedError and
// writes are refused until it is reopened. A WalError thrown by an exclusive write is a refusal
// of that request only (the store is fine).
import { BatchPartlyDurableError, StoreClosedError, StoreFailedError, StorePartialWriteError, StoreWriteError, WalError } from './errors.js';
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
      op.reject(await this.afterWriteFailed(error));
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
      const cause = error instanceof BatchPartlyDurableError ? error.cause : error;
      const failed = await this.afterWriteFailed(cause);
      if (!(error instanceof BatchPartlyDurableError)) {
        for (const request of batch) request.reject(failed);
        return;
      }
      // A rollover sealed the first entries before the failure: those are in the log. An append
      // wholly among them succeeded; one cut there gets an error naming what was appended (a retry
      // of all of it would append those entries twice); the rest failed as a whole.
      const through = error.durableThrough;
      batch.forEach((request, i) => {
        const range = error.results[i] ?? (i === error.results.length && error.currentFirst > 0 ? { firstIndex: error.currentFirst, lastIndex: Number.POSITIVE_INFINITY } : undefined);
        if (range && range.lastIndex <= through) request.resolve(range as AppendResult);
        else if (range && range.firstIndex <= through) request.reject(new StorePartialWriteError(range.firstIndex, through, { cause }));
        else request.reject(failed);
      });
    }
  }

  /**
   * After a write or fdatasync failed: gives up the unsynced tail (never retrying the failed
   * sync: that could acknowledge bytes the disk dropped). Each attempt cuts first, so what its
   * sync makes durable is the length, never dropped bytes. Then, if the failed step was a catalog
   * write (a segment created past a gap, or sealed: open finds such a segment only through the
   * catalog), the catalog is rewritten from the state now served.
   */
  private async afterWriteFailed(cause: unknown): Promise<WalError> {
    const state = this.state;
    const active = state.active;
    let lastError: unknown;
    for (let attempt = 0; attempt < ROLLBACK_ATTEMPTS_MAX; attempt += 1) {
      try {
        if (active) {
          await active.handle.truncate(active.byteLength);
          await active.handle.datasync();
          active.lastIndex = active.durable.lastIndex;
          active.indexCount = active.durable.indexCount;
          active.aggregate = active.durable.aggregate.copy();
        }
        if (state.catalogStale) await state.writeCatalog();
        state.logger.error({ err: cause, log: state.settings.logName, segment: active?.segmentId, offsetBytes: active?.byteLength }, 'failed to write: the unsynced tail is given up and the store keeps going');
        return new StoreWriteError({ cause });
      } catch (error) {
        lastError = error;
      }
    }
    this.failure = cause;
    state.logger.error({ err: lastError, cause, log: state.settings.logName }, 'failed to write, then failed to roll back to the last sync: store refuses writes until reopened');
    return new StoreFailedError({ cause });
  }
}

/** Attempts to cut the open segment back to its last sync after a failed write (afterWriteFailed). */
const ROLLBACK_ATTEMPTS_MAX = 3;
