// This node's own store, called as a peer (the writer's sends to itself, its recovery's Fence
// and Seal, catch-up and repair reads) with the same deadline as a remote member's RPC.
//
// Fault model: the local store may hang (an fsync that never returns) or fail for good (a write
// error makes it refuse everything). A remote member that hangs is cut off by its grpc deadline;
// without one here, a writer whose own disk hangs would block, its recovery would wait forever
// on its own Fence, its appends would never answer, and since the process is alive its lease
// (and the writer role) would never move. So a local call past the deadline rejects with a
// DEADLINE_EXCEEDED-shaped error, and the log's store counts as failing until every call that
// overran has settled (a hung fsync that returns) — or, for a store that failed, until a call
// succeeds. LogRuntime gives up the writer role of a log whose store is failing.
//
// The store's operation is never cancelled: it completes or fails on its own; only the caller
// stops waiting for it.
import type { Clock } from '../io/index.js';
import type { FramesAnswer, PeerApi, SegmentHolding } from '../replication/index.js';
import { type SegmentStart, StoreFailedError } from '../wal/index.js';
import { LocalDeadlineExceededError } from './errors.js';

/** Whether this node's own store of a log is failing, and changes of it. */
export interface LocalStoreHealth {
  /** True while calls to the log's store are past their deadline and unsettled, or the store failed. */
  failing(log: string): boolean;
  /** Called on each change of failing(log); returns a function that removes the listener. */
  onChange(listener: (log: string, failing: boolean) => void): () => void;
}

export interface LocalPeerOptions {
  /** The RPC deadline remote calls get (rpcDeadlineMs). */
  readonly deadlineMs: number;
  /** Deadline timers. */
  readonly clock: Clock;
}

export class LocalPeer implements PeerApi, LocalStoreHealth {
  /** Per log: calls that passed their deadline and have not settled yet. */
  private readonly overdue = new Map<string, number>();
  /** Logs whose store refused a call as failed (StoreFailedError), until a call succeeds. */
  private readonly storeFailed = new Set<string>();
  private readonly listeners = new Set<(log: string, failing: boolean) => void>();

  constructor(
    private readonly inner: PeerApi,
    private readonly o: LocalPeerOptions,
  ) {
    if (!(o.deadlineMs > 0)) throw new Error('local peer: deadlineMs must be positive');
  }

  replicate(log: string, epoch: number, segment: SegmentStart, frames: readonly Buffer[], committedIndex: number): Promise<{ lastIndex: number }> {
    return this.call(log, 'Replicate', () => this.inner.replicate(log, epoch, segment, frames, committedIndex));
  }

  fence(log: string, segmentId: number, epoch: number): Promise<SegmentHolding> {
    return this.call(log, 'Fence', () => this.inner.fence(log, segmentId, epoch));
  }

  seal(log: string, segmentId: number, epoch: number, lastIndex: number, expectedAggregate: string): Promise<SegmentHolding> {
    return this.call(log, 'Seal', () => this.inner.seal(log, segmentId, epoch, lastIndex, expectedAggregate));
  }

  readFrames(log: string, segmentId: number, from: number, to: number, bytesMax: number): Promise<FramesAnswer> {
    return this.call(log, 'ReadFrames', () => this.inner.readFrames(log, segmentId, from, to, bytesMax));
  }

  failing(log: string): boolean {
    return (this.overdue.get(log) ?? 0) > 0 || this.storeFailed.has(log);
  }

  onChange(listener: (log: string, failing: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Runs op; its caller gets its answer, or a deadline error once deadlineMs passed first. */
  private call<T>(log: string, method: string, op: () => Promise<T>): Promise<T> {
    let started: Promise<T>;
    try {
      started = op();
    } catch (error) {
      started = Promise.reject(error);
    }
    return new Promise<T>((resolve, reject) => {
      let late = false;
      const cancelTimer = this.o.clock.setTimer(this.o.deadlineMs, () => {
        late = true;
        this.change(log, () => this.overdue.set(log, (this.overdue.get(log) ?? 0) + 1));
        reject(new LocalDeadlineExceededError(method, log, this.o.deadlineMs));
      });
      const settled = (failure: unknown): void => {
        cancelTimer();
        this.change(log, () => {
          if (late) {
            const count = (this.overdue.get(log) ?? 1) - 1;
            if (count > 0) this.overdue.set(log, count);
            else this.overdue.delete(log);
          }
          if (failure instanceof StoreFailedError) this.storeFailed.add(log);
          else if (failure === undefined) this.storeFailed.delete(log);
        });
      };
      started.then(
        (value) => {
          settled(undefined);
          if (!late) resolve(value);
        },
        (error: unknown) => {
          settled(error ?? new Error('rejected without a reason'));
          if (!late) reject(error);
        },
      );
    });
  }

  /** Applies update and tells the listeners if failing(log) changed. */
  private change(log: string, update: () => void): void {
    const before = this.failing(log);
    update();
    const after = this.failing(log);
    if (before === after) return;
    for (const listener of this.listeners) listener(log, after);
  }
}
