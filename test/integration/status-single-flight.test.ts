// Per-log GetClusterStatus calls share the etcd reads in flight for their log (review of issue 11).
// A call must never be answered from a read that began before it arrived: what was done before
// the call (a log created, an entry acknowledged) is in its answer, as it was when each call read
// etcd itself. A real node and a real etcd on 127.0.0.1; the test holds the first read's answer
// (after it has read etcd) until the later events are done, so the interleaving is certain.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterNode } from '../../src/cluster/index.js';
import { EtcdServer } from '../support/etcd.js';
import { silent } from '../support/replication-fakes.js';

let etcd: EtcdServer | undefined;
let root = '';
let node: ClusterNode | undefined;

beforeAll(async () => {
  etcd = await EtcdServer.start();
  root = await mkdtemp(join(tmpdir(), 'wal-status-sf-'));
  node = await ClusterNode.start({ id: 'n1', dataDir: join(root, 'n1'), listen: '127.0.0.1:0', etcd: [etcd.endpoint], logger: silent, scrubBytesPerSecondMax: 0, replicationFactor: 1, segmentBytesMax: 64 * 1024 });
}, 60_000);

afterAll(async () => {
  await node?.stop().catch(() => undefined);
  await etcd?.dispose();
  if (root) await rm(root, { recursive: true, force: true });
});

type Reader = { readStatusRecords: (log: string) => Promise<unknown> };

/** Holds the answer of the next etcd read of a status (made for real) until release() is called. */
function holdNextRead(n: ClusterNode): { read: Promise<void>; release: () => void } {
  const target = n as unknown as Reader;
  const original = target.readStatusRecords.bind(n);
  let release = (): void => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let done = (): void => undefined;
  const read = new Promise<void>((resolve) => (done = resolve));
  target.readStatusRecords = async (log: string) => {
    target.readStatusRecords = original; // only the next read is held
    const result = await original(log).then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    done();
    await gate;
    if ('error' in result) throw result.error;
    return result.value;
  };
  return { read, release };
}

describe('per-log status shares only reads that began after the call', () => {
  it('a log created before the call is in its answer, though a read that began before its creation was in flight (regression: NOT_FOUND)', async () => {
    const n = node as ClusterNode;
    const held = holdNextRead(n);
    const early = n.clusterStatus('fresh').then(
      () => 'answered',
      (error: Error) => error.name,
    );
    await held.read; // etcd was read: no record of 'fresh' yet
    const appended = await n.append('fresh', [Buffer.from('first')], { createIfMissing: true, forwarded: false, deadlineMs: 10_000 });
    const late = n.clusterStatus('fresh');
    held.release();
    expect(await early).toBe('UnknownLogError'); // began before the log existed: right to say so
    const status = await late;
    expect(status.logs.map((l) => l.meta.log)).toEqual(['fresh']);
    expect(status.logs[0]?.committedIndex).toBeGreaterThanOrEqual(appended.lastIndex);
  }, 60_000);

  it('a segment opened before the call is in its answer; the calls that arrive during one read share one later read', async () => {
    const n = node as ClusterNode;
    await n.append('other', [Buffer.from('x')], { createIfMissing: true, forwarded: false, deadlineMs: 10_000 });
    const segmentsBefore = (await n.clusterStatus('other')).logs[0]?.segments.length ?? 0;
    const held = holdNextRead(n);
    const early = n.clusterStatus('other');
    await held.read;
    // 20 x 8 KiB past a 64 KiB segment size: a later segment is opened (its record in etcd).
    for (let i = 0; i < 20; i += 1) await n.append('other', [Buffer.alloc(8 * 1024, i)], { createIfMissing: false, forwarded: false, deadlineMs: 10_000 });
    const target = n as unknown as Reader;
    const original = target.readStatusRecords.bind(n);
    let reads = 0;
    target.readStatusRecords = (log: string) => {
      reads += 1;
      return original(log);
    };
    try {
      const late = Promise.all(Array.from({ length: 20 }, () => n.clusterStatus('other')));
      held.release();
      expect((await early).logs[0]?.segments.length).toBe(segmentsBefore);
      const answers = await late;
      expect(answers.every((a) => (a.logs[0]?.segments.length ?? 0) > segmentsBefore)).toBe(true);
      expect(reads).toBe(1);
    } finally {
      target.readStatusRecords = original;
    }
  }, 60_000);
});
