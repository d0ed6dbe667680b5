// The Scrubber over a real node's sealed segments (LogStores in a temporary directory, written by
// a LogWriter through the fake network) with an injected checker: a check that fails because its
// worker died passes that segment over (it never holds the others up), and stop() returns while a
// check is in flight.
import { Worker } from 'node:worker_threads';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SeededRandom, nodeDisk } from '../../src/io/index.js';
import { NodeMetrics } from '../../src/observability/index.js';
import { RecoveryMetrics } from '../../src/recovery/index.js';
import { ScrubWorkerError } from '../../src/cluster/errors.js';
import { type ScrubCheck, type ScrubChecker, InThreadScrubChecker, ScrubWorkerPool } from '../../src/cluster/scrub-pool.js';
import type { ScrubResult } from '../../src/cluster/scrub-worker.js';
import { Scrubber } from '../../src/cluster/scrubber.js';
import { ENTRY_BYTES_MAX, SteppingClock, TestCluster, type WriterUnderTest, logMetaOf, payloadOf, silent, startWriter, until } from '../support/replication-fakes.js';

const LOG = 'scrubbed';
const SEGMENT_BYTES = 4096;

let cluster: TestCluster;
let writer: WriterUnderTest | undefined;
const scrubbers: Scrubber[] = [];

/** Fills segments of 4 KiB on a, b and c until `sealed` of them are SEALED in etcd. */
async function sealedSegments(sealed: number): Promise<void> {
  writer = startWriter(cluster, { log: LOG, self: 'a', epoch: 1, segmentBytesMax: SEGMENT_BYTES });
  for (let n = 1; cluster.directory.snapshot(LOG).filter((r) => r.meta.state === 'SEALED').length < sealed; n += 3) {
    await writer.writer.append([payloadOf(n, 1000), payloadOf(n + 1, 1000), payloadOf(n + 2, 1000)]);
  }
}

function scrubberOn(node: string, checker: ScrubChecker, scheduled: string[], { clock = new SteppingClock(), bytesPerSecondMax = 1024 * 1024 * 1024 } = {}): Scrubber {
  const scrubber = new Scrubber({
    self: node,
    logs: cluster.node(node).logs,
    directory: { listLogs: async () => [logMetaOf(LOG, SEGMENT_BYTES)], list: (log) => cluster.directory.list(log) },
    repairs: { schedule: (log, segmentId, _source, why) => void scheduled.push(`${log}/${segmentId}: ${why}`) },
    bytesPerSecondMax,
    passIntervalMs: 20,
    entryBytesMax: ENTRY_BYTES_MAX,
    metrics: new NodeMetrics(new RecoveryMetrics(), { node, cluster: 'test' }),
    logger: silent,
    checker,
    clock,
    random: new SeededRandom(7),
  });
  scrubbers.push(scrubber);
  return scrubber;
}

/** Checks in this thread, except that the first `failing` checks fail as when the worker died. */
class CrashingFirst implements ScrubChecker {
  private readonly inner = new InThreadScrubChecker(nodeDisk);
  calls = 0;
  constructor(private failing: number) {}
  async check(request: ScrubCheck): Promise<ScrubResult> {
    this.calls += 1;
    if (this.failing > 0) {
      this.failing -= 1;
      throw new ScrubWorkerError(request.path, 'the scrub worker exited with code 1 before answering');
    }
    return this.inner.check(request);
  }
  async stop(): Promise<void> {}
}

beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'b', 'c']);
});

afterEach(async () => {
  for (const scrubber of scrubbers.splice(0)) await scrubber.stop();
  writer?.writer.stop();
  writer = undefined;
  await cluster.close();
});

describe('Scrubber', () => {
  it('a check failed by a dead worker is no finding: that segment is passed over, every sealed segment is scrubbed', async () => {
    await sealedSegments(2);
    const checker = new CrashingFirst(1);
    const scheduled: string[] = [];
    const scrubber = scrubberOn('a', checker, scheduled);
    scrubber.start();
    await until(() => scrubber.segmentsScrubbed >= 2);
    expect(scrubber.passes).toBeGreaterThanOrEqual(1);
    expect(scheduled).toEqual([]); // a failed check is no finding: nothing is sent to repair
  });

  it('a segment whose check always kills the worker does not stop the others being scrubbed, pass after pass (regression)', async () => {
    await sealedSegments(3);
    // The first pass checks everything; from then on the check of segment 2 always fails as when
    // its worker dies. Its verification being the oldest, the score order puts it first in every
    // later pass: a pass that ended at the failure never reached the others again.
    const checked = new Map<string, number>();
    const inner = new InThreadScrubChecker(nodeDisk);
    let calls = 0;
    const checker: ScrubChecker = {
      check: async (request) => {
        calls += 1;
        if (calls > 3 && request.segmentId === 2) throw new ScrubWorkerError(request.path, 'the scrub worker exited with code 1 before answering');
        checked.set(`${request.segmentId}`, (checked.get(`${request.segmentId}`) ?? 0) + 1);
        return inner.check(request);
      },
      stop: async () => undefined,
    };
    const scrubber = scrubberOn('a', checker, []);
    const sealed = cluster.directory.snapshot(LOG).filter((r) => r.meta.state === 'SEALED' && r.meta.ensemble.includes('a')).map((r) => r.meta.segmentId);
    expect(sealed).toContain(2);
    for (let pass = 0; pass < 6; pass += 1) await scrubber.pass().catch(() => undefined);
    for (const id of sealed.filter((id) => id !== 2)) expect(checked.get(`${id}`) ?? 0, `segment ${id} checked in most passes`).toBeGreaterThanOrEqual(5);
  });

  it('scrubber stop with a check in flight on a worker that never answers returns, and the check is rejected', async () => {
    await sealedSegments(1);
    const pool = new ScrubWorkerPool({
      spawn: () => new Worker(`require('node:worker_threads').parentPort.on('message', () => undefined);`, { eval: true }),
      fallback: new InThreadScrubChecker(nodeDisk),
      logger: silent,
    });
    const scrubber = scrubberOn('a', pool, []);
    scrubber.start();
    await until(() => pool.spawned === 1);
    await scrubber.stop(); // hung here for ever before: the check was awaited, never rejected
    expect(scrubber.segmentsScrubbed).toBe(0);
  });

  it('a pass held back (its checks slowed by the append throttle) reports its deficit; one at the configured rate reports none', async () => {
    await sealedSegments(3);
    const clock = new SteppingClock();
    // Each check takes 10 s (paced reads at a throttled share): 4 KiB segments at 1 MiB/s are due in ~4 ms.
    const inner = new InThreadScrubChecker(nodeDisk);
    const slow: ScrubChecker = {
      check: async (request) => {
        clock.advance(10_000);
        return inner.check(request);
      },
      stop: async () => undefined,
    };
    const held = scrubberOn('a', slow, [], { clock, bytesPerSecondMax: 1024 * 1024 });
    await held.pass();
    expect(held.segmentsScrubbed).toBeGreaterThanOrEqual(3);
    expect(held.deficitSeconds).toBeGreaterThan(29);
    const free = scrubberOn('b', new InThreadScrubChecker(nodeDisk), [], { bytesPerSecondMax: 1024 * 1024 });
    await free.pass();
    expect(free.segmentsScrubbed).toBeGreaterThanOrEqual(3);
    expect(free.deficitSeconds).toBeLessThan(1);
  });
});
