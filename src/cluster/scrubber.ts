// The scrubber: re-reads every sealed segment this node holds, in the background, at a bounded
// rate (scrubBytesPerSecondMax), starting each pass at a random segment so that a restart does
// not always check the same ones first. A copy that does not match etcd's record is handed to
// the repair service. Hashing runs in a worker thread; the node keeps serving meanwhile.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { format } from '../wal/index.js';
import type { LogStores } from '../replication/index.js';
import { sleep } from './backoff.js';
import type { EtcdSegmentDirectory } from './directory.js';
import type { RepairService } from './repairs.js';
import { type ScrubRequest, type ScrubResult, scrubFile } from './scrub-worker.js';
import type { NodeMetrics } from '../observability/index.js';

export interface ScrubberOptions {
  readonly self: string;
  readonly logs: LogStores;
  readonly directory: EtcdSegmentDirectory;
  readonly repairs: RepairService;
  readonly bytesPerSecondMax: number;
  /** Pause between two passes over everything. */
  readonly passIntervalMs: number;
  readonly entryBytesMax: number;
  readonly metrics: NodeMetrics;
  readonly logger: Logger;
}

/** Runs scrub requests in one worker thread, or in this thread where no compiled worker exists. */
class ScrubRunner {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly waiting = new Map<number, (result: ScrubResult) => void>();

  constructor(logger: Logger) {
    const path = join(fileURLToPath(new URL('.', import.meta.url)), 'scrub-worker.js');
    if (!existsSync(path)) return; // running from TypeScript sources (tests): scrub in-thread
    try {
      this.worker = new Worker(path);
      this.worker.unref();
      this.worker.on('message', (result: ScrubResult) => {
        this.waiting.get(result.id)?.(result);
        this.waiting.delete(result.id);
      });
      this.worker.on('error', (error) => {
        logger.error({ err: error }, 'scrub worker failed; scrubbing in the main thread');
        this.worker = undefined;
      });
    } catch (error) {
      logger.warn({ err: error }, 'failed to start the scrub worker; scrubbing in the main thread');
    }
  }

  run(request: Omit<ScrubRequest, 'id'>): Promise<ScrubResult> {
    const id = this.nextId++;
    if (!this.worker) return scrubFile({ ...request, id });
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.worker?.postMessage({ ...request, id });
    });
  }

  async stop(): Promise<void> {
    await this.worker?.terminate();
  }
}

export class Scrubber {
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private runner: ScrubRunner | undefined;
  bytesScrubbed = 0;
  segmentsScrubbed = 0;
  passes = 0;

  constructor(private readonly o: ScrubberOptions) {}

  start(): void {
    if (this.o.bytesPerSecondMax === 0 || this.loop) return;
    this.runner = new ScrubRunner(this.o.logger);
    this.loop = this.run().catch((error: unknown) => this.o.logger.error({ err: error }, 'scrubber stopped'));
  }

  private async run(): Promise<void> {
    await sleep(Math.random() * this.o.passIntervalMs, this.abort.signal);
    while (!this.abort.signal.aborted) {
      const started = performance.now();
      await this.pass().catch((error: unknown) => this.o.logger.debug({ err: error }, 'scrub pass failed; the next one retries'));
      this.passes += 1;
      this.o.metrics.scrubPassSeconds.set((performance.now() - started) / 1000);
      await sleep(this.o.passIntervalMs, this.abort.signal);
    }
  }

  /** One pass over every sealed segment this node holds, from a random starting point. */
  async pass(): Promise<number> {
    const work: Array<{ log: string; meta: Awaited<ReturnType<EtcdSegmentDirectory['list']>>[number]['meta'] }> = [];
    for (const { log } of await this.o.directory.listLogs()) {
      const store = await this.o.logs.store(log);
      for (const { meta } of await this.o.directory.list(log)) {
        if (meta.state === 'SEALED' && meta.ensemble.includes(this.o.self) && store.segmentRecord(meta.segmentId)?.state === 'sealed') work.push({ log, meta });
      }
    }
    const start = work.length === 0 ? 0 : Math.floor(Math.random() * work.length);
    let damaged = 0;
    for (let i = 0; i < work.length && !this.abort.signal.aborted; i += 1) {
      const { log, meta } = work[(start + i) % work.length] as (typeof work)[number];
      const began = performance.now();
      const path = join(this.o.logs.logDir(log), 'segments', format.segmentFileName(meta.segmentId));
      const result = await (this.runner as ScrubRunner).run({ path, segmentId: meta.segmentId, entryBytesMax: this.o.entryBytesMax });
      this.bytesScrubbed += result.fileByteLength;
      this.segmentsScrubbed += 1;
      this.o.metrics.scrubBytes.inc(result.fileByteLength);
      const matches = result.ok && result.clean && result.sealed && result.firstIndex === meta.firstIndex && result.lastIndex === meta.lastIndex && result.aggregate === meta.aggregate;
      if (!matches) {
        damaged += 1;
        const why = !result.ok ? result.error : !result.clean ? 'damaged bytes' : `does not match its record (aggregate ${result.aggregate}, recorded ${meta.aggregate})`;
        this.o.logger.warn({ log, segment: meta.segmentId }, `scrub found a damaged copy: ${why}`);
        this.o.repairs.schedule(log, meta.segmentId, 'scrub', why);
      }
      // Rate limit: a segment of B bytes is worth B / rate seconds, whatever it took.
      const budgetMs = (result.fileByteLength / this.o.bytesPerSecondMax) * 1000;
      await sleep(Math.max(0, budgetMs - (performance.now() - began)), this.abort.signal);
    }
    return damaged;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    await this.runner?.stop();
  }
}
