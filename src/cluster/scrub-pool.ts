// Where the scrubber's checks run. The scrubber sees only ScrubChecker; the node wires a
// ScrubWorkerPool (hashing in a worker thread, so the event loop keeps serving), and tests and the
// simulator wire an InThreadScrubChecker on their own Disk.
//
// Fault model: the worker thread may fail (an uncaught error, a message it cannot deserialise,
// out of memory) or exit at any time. Every check waiting on it is then rejected, never left
// pending (a pending check would stop the scrubber silently and hang its shutdown), and the next
// check starts a new worker. After WORKER_FAILURES_IN_ROW_MAX failures with no answer between
// them, checks run on the fallback checker instead (in this thread), as when no worker exists.
import type { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Disk } from '../io/index.js';
import { ScrubWorkerError } from './errors.js';
import { type ScrubRequest, type ScrubResult, scrubFile } from './scrub-worker.js';

export type ScrubCheck = Omit<ScrubRequest, 'id'>;

export interface ScrubChecker {
  /** Verifies one segment file; rejects (ScrubWorkerError) only when no answer can come. */
  check(request: ScrubCheck): Promise<ScrubResult>;
  /** Rejects every check still waiting and releases the checker's threads. */
  stop(): Promise<void>;
}

/** Worker failures in a row (no answer between them) before checks move to the fallback. */
export const WORKER_FAILURES_IN_ROW_MAX = 3;

/** The compiled worker script beside this module (absent when running from TypeScript sources). */
export function scrubWorkerScriptPath(): string {
  return fileURLToPath(new URL('./scrub-worker.js', import.meta.url));
}

/** Checks in the caller's thread, on the caller's disk. */
export class InThreadScrubChecker implements ScrubChecker {
  constructor(private readonly disk: Disk) {}
  check(request: ScrubCheck): Promise<ScrubResult> {
    return scrubFile(this.disk, { ...request, id: 0 });
  }
  async stop(): Promise<void> {}
}

interface Waiting {
  readonly path: string;
  readonly resolve: (result: ScrubResult) => void;
  readonly reject: (error: ScrubWorkerError) => void;
}

/** One worker thread and the checks sent to it and not yet answered. */
interface Thread {
  readonly worker: Worker;
  readonly waiting: Map<number, Waiting>;
}

export interface ScrubWorkerPoolOptions {
  /** Starts a worker thread running scrub-worker.js (or a stand-in, in tests). */
  readonly spawn: () => Worker;
  /** Where checks go after WORKER_FAILURES_IN_ROW_MAX failures in a row. */
  readonly fallback: ScrubChecker;
  readonly logger: Logger;
}

/** Runs checks in one worker thread at a time, started on first use and again after a failure. */
export class ScrubWorkerPool implements ScrubChecker {
  private thread: Thread | undefined;
  private nextId = 1;
  private failuresInRow = 0;
  private stopped = false;
  /** Worker threads started so far. */
  spawned = 0;

  constructor(private readonly o: ScrubWorkerPoolOptions) {}

  check(request: ScrubCheck): Promise<ScrubResult> {
    if (this.stopped) return Promise.reject(new ScrubWorkerError(request.path, 'the scrub checker is stopped'));
    if (this.failuresInRow >= WORKER_FAILURES_IN_ROW_MAX) return this.o.fallback.check(request);
    let thread: Thread;
    try {
      thread = this.thread ?? this.start();
    } catch (error) {
      this.failuresInRow += 1;
      this.o.logger.error({ err: error, failuresInRow: this.failuresInRow }, 'failed to start the scrub worker');
      return Promise.reject(new ScrubWorkerError(request.path, 'the scrub worker did not start', { cause: error }));
    }
    const id = this.nextId++;
    return new Promise<ScrubResult>((resolve, reject) => {
      thread.waiting.set(id, { path: request.path, resolve, reject });
      thread.worker.postMessage({ ...request, id } satisfies ScrubRequest);
    });
  }

  private start(): Thread {
    const worker = this.o.spawn();
    this.spawned += 1;
    const thread: Thread = { worker, waiting: new Map() };
    this.thread = thread;
    worker.unref(); // a scrub in progress never keeps the process alive
    worker.on('message', (result: ScrubResult) => {
      const waiting = thread.waiting.get(result.id);
      if (!waiting) return;
      thread.waiting.delete(result.id);
      this.failuresInRow = 0;
      waiting.resolve(result);
    });
    worker.on('error', (error: Error) => this.lose(thread, 'failed', error));
    // The answer to some check cannot be read: which one is unknown, so none can be answered.
    worker.on('messageerror', (error: Error) => {
      this.lose(thread, 'sent an answer that cannot be read', error);
      void worker.terminate();
    });
    worker.on('exit', (code: number) => this.lose(thread, `exited with code ${code}`, undefined));
    return thread;
  }

  /** The thread is gone: its waiting checks are rejected, and the next check starts another. */
  private lose(thread: Thread, what: string, cause: unknown): void {
    if (this.thread === thread) {
      this.thread = undefined;
      if (!this.stopped) {
        this.failuresInRow += 1;
        const next = this.failuresInRow >= WORKER_FAILURES_IN_ROW_MAX ? 'scrubbing in the main thread from now on' : 'the next check starts a new worker';
        this.o.logger.error({ err: cause, pending: thread.waiting.size, failuresInRow: this.failuresInRow }, `scrub worker ${what}; ${next}`);
      }
    }
    rejectAll(thread, `the scrub worker ${what} before answering`, cause);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const thread = this.thread;
    this.thread = undefined;
    if (thread) {
      rejectAll(thread, 'the scrub checker stopped before answering', undefined);
      await thread.worker.terminate();
    }
    await this.o.fallback.stop();
  }
}

function rejectAll(thread: Thread, message: string, cause: unknown): void {
  const waiting = [...thread.waiting.values()];
  thread.waiting.clear();
  for (const w of waiting) w.reject(new ScrubWorkerError(w.path, message, cause === undefined ? undefined : { cause }));
}
