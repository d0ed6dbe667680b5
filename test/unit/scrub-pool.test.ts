// ScrubWorkerPool with real worker threads (stand-in scripts, eval'd): a worker that fails or
// exits with checks in flight gets every one of them rejected, never left pending (the scrubber
// would stop silently and its shutdown would hang), and the next check runs on a new worker.
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { ScrubWorkerError } from '../../src/cluster/errors.js';
import { type ScrubCheck, type ScrubChecker, ScrubWorkerPool, WORKER_FAILURES_IN_ROW_MAX } from '../../src/cluster/scrub-pool.js';
import type { ScrubResult } from '../../src/cluster/scrub-worker.js';
import { silent } from '../support/replication-fakes.js';

/** Answers every request with a clean result whose fileByteLength is the segment id. */
const ANSWERS = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (r) => parentPort.postMessage({ id: r.id, ok: true, clean: true, sealed: true, firstIndex: 1, lastIndex: 1, indexCount: 1, aggregate: 'ab', fileByteLength: r.segmentId, error: '' }));
`;
/** Throws (an uncaught error in the worker) once it has two requests. */
const THROWS = `
const { parentPort } = require('node:worker_threads');
let seen = 0;
parentPort.on('message', () => { seen += 1; if (seen === 2) throw new Error('scrub worker bug'); });
`;
/** Exits with code 3 at its first request. */
const EXITS = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', () => process.exit(3));
`;
/** Answers its first request and exits with code 3 at its second. */
const ANSWERS_ONCE = `
const { parentPort } = require('node:worker_threads');
let seen = 0;
parentPort.on('message', (r) => {
  seen += 1;
  if (seen > 1) process.exit(3);
  parentPort.postMessage({ id: r.id, ok: true, clean: true, sealed: true, firstIndex: 1, lastIndex: 1, indexCount: 1, aggregate: 'ab', fileByteLength: r.segmentId, error: '' });
});
`;
/** Never answers. */
const SILENT = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', () => undefined);
`;

function request(segmentId: number): ScrubCheck {
  return { path: `/data/logs/x/segments/${segmentId}.wal`, segmentId, entryBytesMax: 1024 };
}

class RecordingFallback implements ScrubChecker {
  readonly checked: number[] = [];
  stopped = false;
  async check(r: ScrubCheck): Promise<ScrubResult> {
    this.checked.push(r.segmentId);
    return { id: 0, ok: true, clean: true, sealed: true, firstIndex: 1, lastIndex: 1, indexCount: 1, aggregate: 'fb', fileByteLength: 0, error: '' };
  }
  async stop(): Promise<void> {
    this.stopped = true;
  }
}

/** A pool whose n-th worker runs scripts[n] (the last one for every worker after). */
function poolOf(scripts: readonly string[], fallback: ScrubChecker = new RecordingFallback()): ScrubWorkerPool {
  let started = 0;
  return new ScrubWorkerPool({
    spawn: () => new Worker(scripts[Math.min(started++, scripts.length - 1)] as string, { eval: true }),
    fallback,
    logger: silent,
  });
}

const pools: ScrubWorkerPool[] = [];
function track(pool: ScrubWorkerPool): ScrubWorkerPool {
  pools.push(pool);
  return pool;
}

afterEach(async () => {
  for (const pool of pools.splice(0)) await pool.stop();
});

describe('ScrubWorkerPool', () => {
  it('scrub worker crash rejects pending checks and the next check runs on a new worker', async () => {
    const pool = track(poolOf([THROWS, ANSWERS]));
    await Promise.all([
      expect(pool.check(request(1))).rejects.toBeInstanceOf(ScrubWorkerError),
      expect(pool.check(request(2))).rejects.toMatchObject({ name: 'ScrubWorkerError', path: request(2).path, cause: { message: 'scrub worker bug' } }),
    ]);
    expect(await pool.check(request(7))).toMatchObject({ ok: true, fileByteLength: 7 });
    expect(pool.spawned).toBe(2);
  });

  it('scrub worker exit rejects the pending check and the next check runs on a new worker', async () => {
    const pool = track(poolOf([EXITS, ANSWERS]));
    await expect(pool.check(request(1))).rejects.toThrow(/exited with code 3/);
    expect(await pool.check(request(5))).toMatchObject({ fileByteLength: 5 });
    expect(pool.spawned).toBe(2);
  });

  it('stop with a check in flight on a worker that never answers rejects it instead of hanging', async () => {
    const pool = track(poolOf([SILENT]));
    const rejected = expect(pool.check(request(1))).rejects.toThrow(/stopped before answering/);
    await pool.stop();
    await rejected;
    await expect(pool.check(request(2))).rejects.toThrow(/stopped/);
  });

  it(`after ${WORKER_FAILURES_IN_ROW_MAX} worker failures in a row, checks run on the fallback`, async () => {
    const fallback = new RecordingFallback();
    const pool = track(poolOf([EXITS], fallback));
    for (let i = 0; i < WORKER_FAILURES_IN_ROW_MAX; i += 1) await expect(pool.check(request(i + 1))).rejects.toBeInstanceOf(ScrubWorkerError);
    expect(await pool.check(request(9))).toMatchObject({ aggregate: 'fb' });
    expect(fallback.checked).toEqual([9]);
    expect(pool.spawned).toBe(WORKER_FAILURES_IN_ROW_MAX);
    await pool.stop();
    expect(fallback.stopped).toBe(true);
  });

  it('an answer resets the failure count: a worker that fails now and then is always restarted', async () => {
    const fallback = new RecordingFallback();
    const pool = track(poolOf([ANSWERS_ONCE], fallback));
    for (let round = 1; round <= WORKER_FAILURES_IN_ROW_MAX + 1; round += 1) {
      expect(await pool.check(request(2))).toMatchObject({ fileByteLength: 2 });
      await expect(pool.check(request(3))).rejects.toThrow(/exited with code 3/);
    }
    expect(fallback.checked).toEqual([]);
    expect(pool.spawned).toBe(WORKER_FAILURES_IN_ROW_MAX + 1);
  });
});
