// Where segment files are analysed: in this thread, or in a pool of worker threads (validate).
// Segments are independent, so a store's segments (and their backup copies) can be read and
// hashed on every core at once; inspectStore keeps the results in segment order, so a report is
// the same whichever analyser produced it.
//
// Fault model: a worker thread may fail (an uncaught error, out of memory) or exit at any time.
// Every analysis waiting on it (on any worker, also when an answer cannot be read) is then
// rejected with AnalyzeWorkerError, never left pending and never answered as clean, and the pool
// refuses further work: the caller reports an error.
// Memory: each worker holds at most WINDOW_PER_WORKER analyses at a time (one scan window each),
// so the pool's memory does not grow with the store.
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Disk } from '../io/index.js';
import { type AggregateWire, aggregateFromWire, aggregateToWire } from './aggregate.js';
import { type AnalysisPoint, type AnalyzeOptions, type DamageRange, type SegmentAnalysis, analyzeSegmentFile } from './analyze.js';
import { WalError } from './errors.js';

/** What inspectStore asks of a segment file (no onIntactFrame: the frames stay where they are read). */
export type AnalyzeRequestOptions = Omit<AnalyzeOptions, 'onIntactFrame' | 'resume'>;

export interface SegmentAnalyzer {
  /** How many analyses inspectStore keeps in flight at once (1: one after another). */
  readonly concurrency: number;
  analyze(disk: Disk, path: string, segmentId: number, options: AnalyzeRequestOptions): Promise<SegmentAnalysis>;
  close(): Promise<void>;
}

/** Analyses in the caller's thread, on the caller's disk, one at a time. */
export const inThreadAnalyzer: SegmentAnalyzer = {
  concurrency: 1,
  analyze: (disk, path, segmentId, options) => analyzeSegmentFile(disk, path, segmentId, options),
  close: async () => undefined,
};

export class AnalyzeWorkerError extends WalError {
  constructor(detail: string, options?: ErrorOptions) {
    super(`segment analysis worker failed: ${detail}`, options);
  }
}

// ---------------------------------------------------------------------------------------------
// Messages between the pool and its workers (structured clone: plain data, bigints, Uint8Arrays)

export interface AnalyzeRequest {
  readonly id: number;
  readonly path: string;
  readonly segmentId: number;
  readonly entryBytesMax: number;
  readonly firstIndexHint?: number;
  readonly checkpoint?: { readonly offsetBytes: number; readonly aggregate: bigint; readonly aggregateState?: AggregateWire };
}

type PointWire = Omit<AnalysisPoint, 'aggregate' | 'alternate'> & { readonly aggregate: AggregateWire; readonly alternate?: AggregateWire };
type RangeWire = Omit<DamageRange, 'before'> & { readonly before: PointWire };
export type AnalysisWire = Omit<SegmentAnalysis, 'aggregateState' | 'ranges'> & { readonly aggregateState: AggregateWire; readonly ranges: readonly RangeWire[] };

export type AnalyzeResponse =
  | { readonly id: number; readonly ok: true; readonly analysis: AnalysisWire }
  | { readonly id: number; readonly ok: false; readonly message: string; readonly code?: string };

export function requestOf(id: number, path: string, segmentId: number, o: AnalyzeRequestOptions): AnalyzeRequest {
  const c = o.checkpoint;
  return {
    id,
    path,
    segmentId,
    entryBytesMax: o.entryBytesMax,
    ...(o.firstIndexHint === undefined ? {} : { firstIndexHint: o.firstIndexHint }),
    ...(c ? { checkpoint: { offsetBytes: c.offsetBytes, aggregate: c.aggregate, ...(c.aggregateState ? { aggregateState: aggregateToWire(c.aggregateState) } : {}) } } : {}),
  };
}

export function optionsOf(r: AnalyzeRequest): AnalyzeRequestOptions {
  const c = r.checkpoint;
  return {
    entryBytesMax: r.entryBytesMax,
    ...(r.firstIndexHint === undefined ? {} : { firstIndexHint: r.firstIndexHint }),
    ...(c ? { checkpoint: { offsetBytes: c.offsetBytes, aggregate: c.aggregate, ...(c.aggregateState ? { aggregateState: aggregateFromWire(c.aggregateState) } : {}) } } : {}),
  };
}

export function analysisToWire(a: SegmentAnalysis): AnalysisWire {
  return {
    ...a,
    aggregateState: aggregateToWire(a.aggregateState),
    ranges: a.ranges.map((r) => {
      const { alternate, ...point } = r.before;
      return { ...r, before: { ...point, aggregate: aggregateToWire(point.aggregate), ...(alternate ? { alternate: aggregateToWire(alternate) } : {}) } };
    }),
  };
}

export function analysisFromWire(w: AnalysisWire): SegmentAnalysis {
  return {
    ...w,
    aggregateState: aggregateFromWire(w.aggregateState),
    ranges: w.ranges.map((r) => ({
      ...r,
      before: { ...r.before, aggregate: aggregateFromWire(r.before.aggregate), alternate: r.before.alternate ? aggregateFromWire(r.before.alternate) : undefined },
    })),
  };
}

// ---------------------------------------------------------------------------------------------
// The pool

/** Analyses in flight per worker: one being hashed, one queued so the worker never waits. */
export const WINDOW_PER_WORKER = 2;

/** maxYoungGenerationSizeMb of each worker. */
const WORKER_YOUNG_GENERATION_MB = 2;

/** The compiled worker script beside this module (absent when running from TypeScript sources). */
export function analyzeWorkerScriptPath(): string {
  return fileURLToPath(new URL('./analyze-worker.js', import.meta.url));
}

export function availableCores(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

interface Thread {
  readonly worker: Worker;
  readonly waiting: Map<number, { resolve: (a: SegmentAnalysis) => void; reject: (e: Error) => void }>;
}

export interface AnalyzePoolOptions {
  readonly threads: number;
  /** Starts one worker (default: analyze-worker.js beside this module). */
  readonly spawn?: () => Worker;
}

/**
 * Worker threads that analyse segment files on the real file system (nodeDisk: the disk argument
 * is not used; a store on another Disk is analysed in thread).
 */
export class AnalyzePool implements SegmentAnalyzer {
  readonly concurrency: number;
  private readonly threads: Thread[] = [];
  private nextId = 1;
  private failure: AnalyzeWorkerError | undefined;
  private closed = false;

  constructor(options: AnalyzePoolOptions) {
    // A small young generation: a worker's garbage is per-frame scraps, and each semi-space MiB is
    // resident memory (the bench's RSS figure); the old generation is left unbounded, so that a
    // segment with very many damaged ranges is still analysed.
    const spawn = options.spawn ?? (() => new Worker(analyzeWorkerScriptPath(), { resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB } }));
    this.concurrency = options.threads * WINDOW_PER_WORKER;
    for (let i = 0; i < options.threads; i += 1) {
      let worker: Worker;
      try {
        worker = spawn();
      } catch (error) {
        // No pool is returned, so no one would close it: the workers started so far end here
        // (a live worker keeps the process from exiting).
        this.closed = true;
        for (const t of this.threads) void t.worker.terminate();
        throw error;
      }
      const thread: Thread = { worker, waiting: new Map() };
      thread.worker.on('message', (m: AnalyzeResponse) => this.answer(thread, m));
      thread.worker.on('error', (error) => this.fail(`${error instanceof Error ? error.message : String(error)}`, error));
      // An answer that cannot be read: which analysis it was is unknown, so none can be answered.
      thread.worker.on('messageerror', (error) => this.fail(`a worker sent an answer that cannot be read: ${error.message}`, error));
      thread.worker.on('exit', (code) => {
        if (!this.closed) this.fail(`a worker exited (code ${code}) while analysing`);
      });
      this.threads.push(thread);
    }
  }

  analyze(_disk: Disk, path: string, segmentId: number, options: AnalyzeRequestOptions): Promise<SegmentAnalysis> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new AnalyzeWorkerError('the pool is closed'));
    let thread = this.threads[0] as Thread;
    for (const t of this.threads) if (t.waiting.size < thread.waiting.size) thread = t;
    const id = this.nextId;
    this.nextId += 1;
    return new Promise((resolve, reject) => {
      thread.waiting.set(id, { resolve, reject });
      thread.worker.postMessage(requestOf(id, path, segmentId, options));
    });
  }

  private answer(thread: Thread, m: AnalyzeResponse): void {
    const waiting = thread.waiting.get(m.id);
    if (!waiting) return;
    thread.waiting.delete(m.id);
    if (m.ok) {
      waiting.resolve(analysisFromWire(m.analysis));
      return;
    }
    // The analysis threw in the worker (a read error, a missing file): the same error here, with
    // its code, as the in-thread analyser would have thrown.
    waiting.reject(Object.assign(new Error(m.message), m.code === undefined ? {} : { code: m.code }));
  }

  private fail(detail: string, cause?: unknown): void {
    this.failure ??= new AnalyzeWorkerError(detail, cause === undefined ? undefined : { cause });
    for (const thread of this.threads) {
      for (const waiting of thread.waiting.values()) waiting.reject(this.failure);
      thread.waiting.clear();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fail('the pool is closed');
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }
}

/**
 * fn over items with at most `limit` calls in flight; results in item order. onEach runs as each
 * call settles (in completion order). The first rejection rejects the whole, once the calls in
 * flight have settled (no call is left running behind the caller's back).
 */
export async function mapWindowed<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>, onEach?: (item: T, result: R) => void): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed: { error: unknown } | undefined;
  const lane = async (): Promise<void> => {
    while (failed === undefined && next < items.length) {
      const i = next;
      next += 1;
      const item = items[i] as T;
      try {
        const result = await fn(item);
        results[i] = result;
        onEach?.(item, result);
      } catch (error) {
        failed ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  if (failed) throw failed.error;
  return results;
}
