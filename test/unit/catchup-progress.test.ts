// Catch-up counts progress by what the local copy gained, never by a member answering: a member
// that serves frames below the next index (accepted by the store as a retry, adding nothing) is
// skipped for the pass, and rounds without progress are bounded (issue 9, defect 7: 2,000
// ReadFrames calls in 40 ms against such a member, blocking the writer's start).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeDisk } from '../../src/io/index.js';
import { type CatchUpResult, type PeerApi, type PeerResolver, catchUpLog } from '../../src/replication/index.js';
import { FETCH_ROUNDS_WITHOUT_PROGRESS_MAX } from '../../src/replication/catchup.js';
import { TestCluster, type WriterUnderTest, acknowledgedBy, payloadOf, startWriter } from '../support/replication-fakes.js';

const LOG = 'events';
const SEGMENT_BYTES = 1024 * 1024;

let cluster: TestCluster;
const writers: WriterUnderTest[] = [];

function payloads(from: number, count: number): Buffer[] {
  return Array.from({ length: count }, (_, i) => payloadOf(from + i));
}

/** Segment 1 (a, b, c) is SEALED at 6 in etcd; c holds it open at 3. */
async function memberMissesTheEndOfASegment(): Promise<void> {
  const handle = startWriter(cluster, { log: LOG, self: 'a', epoch: 1, segmentBytesMax: SEGMENT_BYTES });
  writers.push(handle);
  await handle.writer.append(payloads(1, 3));
  await acknowledgedBy(handle, ['a', 'b', 'c'], 3);
  cluster.network.fail('c', { kind: 'unavailable' });
  await handle.writer.append(payloads(4, 3));
  await handle.writer.append(payloads(7, 2));
  cluster.network.heal('c');
  expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', lastIndex: 6 });
  expect((await cluster.node('c').store(LOG)).segmentRecord(1)).toMatchObject({ state: 'open', lastIndex: 3 });
}

/**
 * c's resolver, where each node named in stale answers every ReadFrames with the frame of entry 1
 * (below c's next index, 4), and counts the calls it answered.
 */
function resolverWithStaleMembers(stale: readonly string[], calls: Map<string, number>): PeerResolver {
  const inner = cluster.network.resolverFor('c');
  return (id) => {
    const peer = inner(id);
    if (!peer || !stale.includes(id)) return peer;
    const staleApi: PeerApi = {
      replicate: (...args) => peer.replicate(...args),
      fence: (...args) => peer.fence(...args),
      seal: (...args) => peer.seal(...args),
      readFrames: async (log, segmentId, _from, _to, bytesMax) => {
        calls.set(id, (calls.get(id) ?? 0) + 1);
        return peer.readFrames(log, segmentId, 1, 1, bytesMax);
      },
    };
    return staleApi;
  };
}

async function catchUpWith(peers: PeerResolver): Promise<CatchUpResult> {
  const store = await cluster.node('c').store(LOG);
  return catchUpLog({
    log: LOG,
    self: 'c',
    store,
    directory: cluster.directory,
    peers,
    logger: store.logger,
    fetchFile: (from, segmentId, path) => cluster.fetchFile(from, LOG, segmentId, path),
    tempDir: store.dataDir,
    disk: nodeDisk,
  });
}

beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'b', 'c']);
});

afterEach(async () => {
  for (const { writer } of writers.splice(0)) writer.stop();
  await cluster.close();
});

describe('catch-up progress', () => {
  it('members that serve only frames below the next index end the pass (behind) after a bounded number of ReadFrames calls', async () => {
    await memberMissesTheEndOfASegment();
    const calls = new Map<string, number>();
    const result = await catchUpWith(resolverWithStaleMembers(['a', 'b'], calls));
    expect(result).toEqual({ segmentsSealed: 0, entriesFetched: 0, mismatched: [], behind: [1] });
    // Each stale member is asked once, then skipped for the rest of the pass.
    expect(calls.get('a')).toBe(1);
    expect(calls.get('b')).toBe(1);
    expect((await cluster.node('c').store(LOG)).segmentRecord(1)).toMatchObject({ state: 'open', lastIndex: 3 });
  });

  it('a member that serves only frames below the next index is skipped and the next member completes the segment', async () => {
    await memberMissesTheEndOfASegment();
    const calls = new Map<string, number>();
    const result = await catchUpWith(resolverWithStaleMembers(['a'], calls));
    expect(result).toEqual({ segmentsSealed: 1, entriesFetched: 3, mismatched: [], behind: [] });
    expect(calls.get('a')).toBe(1);
    expect((await cluster.node('c').store(LOG)).segmentRecord(1)).toMatchObject({ state: 'sealed', lastIndex: 6 });
  });

  it('members that fail every ReadFrames are asked for FETCH_ROUNDS_WITHOUT_PROGRESS_MAX rounds, then the segment is left behind', async () => {
    await memberMissesTheEndOfASegment();
    const before = { a: cluster.network.callCount('a', 'readFrames'), b: cluster.network.callCount('b', 'readFrames') };
    cluster.network.fail('a', { kind: 'unavailable' });
    cluster.network.fail('b', { kind: 'unavailable' });
    const result = await catchUpWith(cluster.network.resolverFor('c'));
    expect(result.behind).toEqual([1]);
    expect(cluster.network.callCount('a', 'readFrames') - before.a).toBe(FETCH_ROUNDS_WITHOUT_PROGRESS_MAX);
    expect(cluster.network.callCount('b', 'readFrames') - before.b).toBe(FETCH_ROUNDS_WITHOUT_PROGRESS_MAX);
  });
});
