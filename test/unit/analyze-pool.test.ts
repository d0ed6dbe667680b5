// validate with a pool of worker threads (AnalyzePool) reports exactly what the single-thread path
// reports, on damaged stores, and a worker that dies is an error, never a clean report. The
// workers run the compiled analyze-worker.js (dist/, built by `npm run build` / pretest).
import { existsSync } from 'node:fs';
import { mkdtemp, open, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AnalyzePool, AnalyzeWorkerError, mapWindowed } from '../../src/wal/analyze-pool.js';
import { type ValidationReport, validateStore } from '../../src/wal/offline.js';
import { WalStore } from '../../src/wal/store.js';
import { segmentFileName } from '../../src/wal/format.js';
import { StoreLayout } from '../../src/wal/files.js';
import { nodeDisk } from '../../src/io/index.js';

const WORKER_SCRIPT = join(import.meta.dirname, '../../dist/wal/analyze-worker.js');
const spawnWorker = (): Worker => new Worker(WORKER_SCRIPT);

let dir: string;

beforeAll(() => {
  if (!existsSync(WORKER_SCRIPT)) throw new Error(`${WORKER_SCRIPT} is missing: run npm run build first`);
});

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-pool-'));
  // 8 KiB segments with one backup copy each: about 12 sealed segments and an open one.
  const store = await WalStore.open(dir, { logger: pino({ level: 'silent' }), segmentBytesMax: 8 * 1024, recovery: { backupRetentionCount: 1 } });
  for (let i = 0; i < 20; i += 1) await store.append(Array.from({ length: 10 }, (_, k) => Buffer.from(`entry-${i}-${k}-${'y'.repeat(400)}`)));
  await store.close();
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function overwrite(path: string, offset: number, bytes: Buffer): Promise<void> {
  const file = await open(path, 'r+');
  try {
    await file.write(bytes, 0, bytes.length, offset);
  } finally {
    await file.close();
  }
}

const segmentPath = (id: number): string => join(dir, 'segments', segmentFileName(id));
const withoutTime = (r: ValidationReport): ValidationReport => ({ ...r, durationMs: 0 });

async function bothWays(): Promise<{ single: ValidationReport; pooled: ValidationReport }> {
  const single = await validateStore(dir, { threads: 1 });
  const pooled = await validateStore(dir, { threads: 3, spawnWorker });
  return { single, pooled };
}

describe('validate with a worker pool', () => {
  it('reports a damaged store exactly as the single-thread path does', async () => {
    await overwrite(segmentPath(2), 1000, Buffer.from([0xff])); // a flipped byte in an entry
    await overwrite(segmentPath(4), 2048, Buffer.alloc(1024)); // a zeroed block
    await overwrite(segmentPath(6), 0, Buffer.alloc(16)); // a damaged header
    await unlink(segmentPath(8)); // a lost file
    await overwrite(new StoreLayout(nodeDisk, dir).backupPath(3, 1), 3000, Buffer.from([0x00, 0x01])); // a damaged backup copy
    const { single, pooled } = await bothWays();
    expect(single.ok).toBe(false);
    expect(single.findings.map((f) => f.segment)).toEqual(expect.arrayContaining([2, 3, 4, 6, 8]));
    expect(single.findings.some((f) => f.kind === 'backup-damaged' && f.segment === 3)).toBe(true);
    expect(withoutTime(pooled)).toEqual(withoutTime(single));
  });

  it('reports a store without its catalog (no records; a header and first entry damaged) as the single-thread path does', async () => {
    await unlink(join(dir, 'CATALOG'));
    // The header and the first entry: only the hint says where segment 5 starts.
    await overwrite(segmentPath(5), 0, Buffer.alloc(128 + 64));
    await overwrite(segmentPath(7), 500, Buffer.from([0xee, 0xee]));
    const { single, pooled } = await bothWays();
    expect(single.findings.some((f) => f.segment === 5 && f.kind === 'bad-header')).toBe(true);
    const [four, five] = [4, 5].map((id) => pooled.segments.find((s) => s.segment === id));
    expect(five?.firstIndex).toBe((four?.lastIndex ?? 0) + 1);
    expect(withoutTime(pooled)).toEqual(withoutTime(single));
  });

  it('reports a clean store as clean either way', async () => {
    const { single, pooled } = await bothWays();
    expect(single.ok).toBe(true);
    expect(withoutTime(pooled)).toEqual(withoutTime(single));
  });

  it('fails with AnalyzeWorkerError, not a clean report, when a worker exits while analysing', async () => {
    const exits = (): Worker => new Worker(`require('node:worker_threads').parentPort.on('message', () => process.exit(3));`, { eval: true });
    await expect(validateStore(dir, { threads: 2, spawnWorker: exits })).rejects.toThrow(AnalyzeWorkerError);
  });

  it('fails with AnalyzeWorkerError when a worker throws', async () => {
    const throws = (): Worker => new Worker(`require('node:worker_threads').parentPort.on('message', () => { throw new Error('worker bug'); });`, { eval: true });
    await expect(validateStore(dir, { threads: 2, spawnWorker: throws })).rejects.toThrow(/worker bug/);
  });

  it('terminates the workers it started when starting another fails (regression: the first was left running, and kept the process alive)', async () => {
    const started: Worker[] = [];
    const spawnSome = (): Worker => {
      if (started.length === 1) throw new Error('cannot start a thread (EAGAIN)');
      const worker = spawnWorker();
      started.push(worker);
      return worker;
    };
    await expect(validateStore(dir, { threads: 2, spawnWorker: spawnSome })).rejects.toThrow(/EAGAIN/);
    expect(started).toHaveLength(1);
    const first = started[0] as Worker;
    // threadId is -1 once the thread has exited.
    await expect.poll(() => first.threadId, { timeout: 5_000 }).toBe(-1);
  });

  it('fails with AnalyzeWorkerError when an answer cannot be read (messageerror), instead of waiting for it for ever', async () => {
    const workers: Worker[] = [];
    // Never answers: the answer it sent is the one that could not be read.
    const silentWorker = (): Worker => {
      const worker = new Worker(`require('node:worker_threads').parentPort.on('message', () => undefined);`, { eval: true });
      workers.push(worker);
      return worker;
    };
    const pool = new AnalyzePool({ threads: 1, spawn: silentWorker });
    try {
      const analysis = pool.analyze(undefined as never, segmentPath(1), 1, { entryBytesMax: 1024 });
      const outcome = Promise.race([analysis.then(() => 'answered', (error: unknown) => error), new Promise((resolve) => setTimeout(() => resolve('still waiting'), 2_000))]);
      (workers[0] as Worker).emit('messageerror', new Error('could not deserialize'));
      expect(await outcome).toBeInstanceOf(AnalyzeWorkerError);
    } finally {
      await pool.close();
    }
  });

  it('answers an analysis that throws in the worker with the same error code (a missing file)', async () => {
    const pool = new AnalyzePool({ threads: 1, spawn: spawnWorker });
    try {
      await expect(pool.analyze(undefined as never, join(dir, 'nope.wal'), 1, { entryBytesMax: 1024 })).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await pool.close();
    }
  });
});

describe('mapWindowed', () => {
  it('keeps results in item order and never more than the limit in flight', async () => {
    let inFlight = 0;
    let most = 0;
    const out = await mapWindowed([5, 1, 4, 2, 3], 2, async (x) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, x));
      inFlight -= 1;
      return x * 10;
    });
    expect(out).toEqual([50, 10, 40, 20, 30]);
    expect(most).toBe(2);
  });
});
