// Defects found by an adversarial review of issue 9 (joiners) and issue 12 (no seal inside a
// session batch), each with the scenario that lost or duplicated data before its fix.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LogWriter, NoVerifiedCopyError, type PeerApi, type PeerResolver, SESSION_DEFAULTS, SessionGate, SessionTableRebuildingError } from '../../src/replication/index.js';
import { format } from '../../src/wal/index.js';
import { ENTRY_BYTES_MAX, SteppingClock, TestCluster, type WriterUnderTest, acknowledgedBy, logMetaOf, payloadOf, silent, startWriter } from '../support/replication-fakes.js';

const LOG = 'orders';
const SEGMENT_BYTES_SMALL = 4096;
/** The payload byte length of one entry that fills a SEGMENT_BYTES_SMALL segment: the writer seals it right after. */
const FILLING_ENTRY_BYTES = SEGMENT_BYTES_SMALL - format.SEGMENT_HEADER_BYTES - format.TRAILER_BYTES - format.ENTRY_HEADER_BYTES;

let cluster: TestCluster;
const writers: WriterUnderTest[] = [];
const others: LogWriter[] = [];

beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'b', 'c', 'd']);
});

afterEach(async () => {
  for (const { writer } of writers.splice(0)) writer.stop();
  for (const writer of others.splice(0)) writer.stop();
  await cluster.close();
});

/** A resolver for self whose peer `node` becomes unavailable right after it answered one Fence. */
function goneAfterFirstFence(self: string, node: string): PeerResolver {
  const base = cluster.network.resolverFor(self);
  let fences = 0;
  return (id) => {
    const peer = base(id);
    if (!peer || id !== node) return peer;
    return {
      ...peer,
      fence: async (...args: Parameters<PeerApi['fence']>) => {
        const answer = await peer.fence(...args);
        if (++fences === 1) cluster.network.fail(node, { kind: 'unavailable' });
        return answer;
      },
    };
  };
}

describe('a segment record re-derived after etcd was restored (DATA LOSS)', () => {
  // Before the fix the re-derived OPEN record named only the members that answered, with the
  // log's ack quorum: a two-member record [b, c] of ack quorum 2 has a fence quorum of one. With b
  // gone after the re-derivation, c (which lacked the acknowledged 3..4) answered alone, d joined,
  // and the segment was sealed at 2: entries acknowledged to clients were gone from the log.
  it('a holder that answered the re-derivation and then went away: the recovery does not seal below what it held', async () => {
    const live = ['a', 'b', 'c'];
    const w1 = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => live, caller: 'A' });
    writers.push(w1);
    // Segment 1 holds one entry that fills it (sealed and recorded); segment 2 is open on a, b, c.
    expect(await w1.writer.append([payloadOf(1, FILLING_ENTRY_BYTES)])).toEqual({ firstIndex: 1, lastIndex: 1 });
    expect(await w1.writer.append([payloadOf(2)])).toEqual({ firstIndex: 2, lastIndex: 2 });
    await acknowledgedBy(w1, ['a', 'b', 'c'], 2);
    cluster.network.fail('c', { kind: 'hold' }, ['replicate']);
    // 3..4 acknowledged by a and b (an ack quorum of [a, b, c]); c never gets them.
    expect(await w1.writer.append([payloadOf(3), payloadOf(4)])).toEqual({ firstIndex: 3, lastIndex: 4 });
    cluster.network.kill('A');
    cluster.network.heal('c');
    expect(cluster.directory.segment(LOG, 2).ensemble).toEqual(['a', 'b', 'c']);
    // etcd is restored from a snapshot taken before segment 2 was created; a is down.
    cluster.directory.forget(LOG, 2);
    cluster.network.fail('a', { kind: 'unavailable' });
    const w2 = new LogWriter({
      log: LOG, self: 'c', epoch: 9, logMeta: logMetaOf(LOG, SEGMENT_BYTES_SMALL), directory: cluster.directory,
      peers: goneAfterFirstFence('c', 'b'), liveMembers: () => ['b', 'c', 'd'], logger: silent, clock: new SteppingClock(),
      onCommitted: () => undefined, groupCommitBytesMax: 256 * 1024, entryBytesMax: ENTRY_BYTES_MAX,
    });
    others.push(w2);
    await w2.whenReady().catch(() => undefined);
    const record = cluster.directory.segment(LOG, 2);
    // Never sealed short of the acknowledged 3..4 (it waits for b or a instead).
    if (record.state === 'SEALED') expect(record.lastIndex).toBeGreaterThanOrEqual(4);
    w2.stop();
    // b is back: the next writer seals at 4 and the log goes on at 5.
    cluster.network.heal('b');
    const w3 = startWriter(cluster, { log: LOG, self: 'c', epoch: 11, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['b', 'c', 'd'] });
    writers.push(w3);
    await w3.writer.whenReady();
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'SEALED', lastIndex: 4 });
    expect(await w3.writer.append([payloadOf(5)])).toEqual({ firstIndex: 5, lastIndex: 5 });
  }, 20_000);
});

describe('session table rebuild that skips an unreadable entry (DUPLICATE, at the TTL boundary)', () => {
  // The rebuild skipped an unreadable entry once nowMs - start >= ttlMs, but the sessions it had
  // read (seen at its start) are forgotten only once nowMs - start > ttlMs. At exactly ttlMs a
  // session was still remembered without the batch whose tag was the skipped entry: its retry was
  // taken for new and appended a second time.
  it('a retry of the batch whose tag is the skipped entry is not appended again while its session is remembered', async () => {
    const S = 'a1'.repeat(16);
    let now = 0;
    const gate = new SessionGate({
      options: { ...SESSION_DEFAULTS, ttlMs: 60_000 },
      nowMs: () => now,
      committedIndex: () => 100,
      readEntries: async function* (from, to) {
        for (let index = from; index <= to; index += 1) {
          // Entry 50 is the tag of S's batch 3 (no member serves it verified); 80 is batch 4's.
          if (index === 50) throw new NoVerifiedCopyError(LOG, 50, 'no member served a verified copy');
          yield [index === 80 ? { index, timestampMs: 1, session: { sessionId: S, sequence: 4, count: 1 } } : { index, timestampMs: 1 }];
        }
      },
    });
    let appended = 0;
    const append = async (): Promise<{ firstIndex: number; lastIndex: number }> => ({ firstIndex: 101 + appended, lastIndex: 101 + appended++ });
    await expect(gate.append({ sessionId: S, sequence: 3 }, append, 1)).rejects.toBeInstanceOf(SessionTableRebuildingError);
    now = 60_000;
    // S is remembered (batch 4 is answered from the table)...
    const retry = await gate.append({ sessionId: S, sequence: 3 }, append, 1).catch((error: unknown) => error);
    // ...so batch 3, whose outcome the table cannot know, must not be appended a second time.
    expect(appended).toBe(0);
    expect(retry).toBeInstanceOf(SessionTableRebuildingError);
    // Once S is forgotten (idle past its TTL), the entry is skipped and appends go on.
    now = 60_001;
    expect(await gate.append({ sessionId: S, sequence: 5 }, append, 1)).toEqual({ firstIndex: 101, lastIndex: 101 });
    expect(gate.skipped).toEqual([50]);
  });
});

describe('a former member\'s prefix-sealed copy after etcd was restored (DATA LOSS)', () => {
  // Catch-up seals a non-member's open copy at its own last index (catchup.ts: "keep the verified
  // prefix, sealed"), below the record. Once etcd lost the record, rederiveNextRecord took the
  // sealed copies "that agree with the most others": a tie between that prefix and a member's copy
  // went to the node sorted first. Here b's prefix (2) won over c's copy (4) and the record said
  // SEALED at 2: entries 3..4, acknowledged, were gone from the log. Now the next segment's first
  // index decides between sealed points that differ.
  it('a tie between a former member\'s prefix and a member\'s copy does not seal the segment short', async () => {
    const live = ['a', 'b', 'c'];
    const w1 = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => live, caller: 'A' });
    writers.push(w1);
    expect(await w1.writer.append([payloadOf(1, FILLING_ENTRY_BYTES)])).toEqual({ firstIndex: 1, lastIndex: 1 });
    expect(await w1.writer.append([payloadOf(2)])).toEqual({ firstIndex: 2, lastIndex: 2 });
    await acknowledgedBy(w1, ['a', 'b', 'c'], 2);
    cluster.network.fail('b', { kind: 'unavailable' }, ['replicate', 'seal']);
    // 3..4 acknowledged by a and c; b failed, so the writer seals segment 2 at 4 on a and c.
    expect(await w1.writer.append([payloadOf(3), payloadOf(4)])).toEqual({ firstIndex: 3, lastIndex: 4 });
    expect(await w1.writer.append([payloadOf(5)])).toEqual({ firstIndex: 5, lastIndex: 5 });
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'SEALED', lastIndex: 4 });
    cluster.network.kill('A');
    cluster.network.heal('b');
    // The coordinator replaced b (gone) by d; b came back and its catch-up sealed its prefix.
    cluster.directory.edit(LOG, 2, (meta) => ({ ...meta, ensemble: ['a', 'c', 'd'], formerMembers: ['b'] }));
    await (await cluster.node('b').store(LOG)).sealSegment(2, 2);
    // etcd restored from a snapshot taken after segment 1 was recorded; a is down.
    cluster.directory.forget(LOG, 3);
    cluster.directory.forget(LOG, 2);
    cluster.network.fail('a', { kind: 'unavailable' });
    const w2 = startWriter(cluster, { log: LOG, self: 'c', epoch: 9, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['b', 'c', 'd'] });
    writers.push(w2);
    await w2.writer.whenReady();
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'SEALED', lastIndex: 4 });
    expect(cluster.directory.segment(LOG, 3)).toMatchObject({ state: 'SEALED', firstIndex: 5, lastIndex: 5 });
    expect(await w2.writer.append([payloadOf(6)])).toEqual({ firstIndex: 6, lastIndex: 6 });
  }, 20_000);
});

describe('a writer recovering an earlier segment of its own after etcd was restored (AVAILABILITY)', () => {
  // Found by `node dist/sim/main.js --etcd-restore --seed 712`. The writer had sealed segment 1
  // and acknowledged entries in segment 2; etcd went back to a snapshot where segment 1 was still
  // OPEN. The writer's recovery of segment 1 took the point its members are sealed at (1), then
  // refused it as "below the acknowledged index 3": that index is in segment 2. Every batch
  // retried the recovery and failed: the log took no append while the writer kept its epoch.
  it('seals the earlier segment where its members are sealed and goes on', async () => {
    const w = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c'] });
    writers.push(w);
    expect(await w.writer.append([payloadOf(1, FILLING_ENTRY_BYTES)])).toEqual({ firstIndex: 1, lastIndex: 1 });
    expect(await w.writer.append([payloadOf(2), payloadOf(3)])).toEqual({ firstIndex: 2, lastIndex: 3 });
    await acknowledgedBy(w, ['a', 'b', 'c'], 3);
    // etcd restored: segment 1 as it was before its seal, segment 2 unknown.
    cluster.directory.edit(LOG, 1, (meta) => ({ ...meta, state: 'OPEN', lastIndex: 0, indexCount: 0, byteLength: 0, aggregate: '' }));
    cluster.directory.forget(LOG, 2);
    // The seal of segment 2 (it fills) misses etcd: the next batch recovers first.
    cluster.directory.failNext('update');
    expect(await w.writer.append([payloadOf(4, FILLING_ENTRY_BYTES - 2 * (format.ENTRY_HEADER_BYTES + 48))])).toEqual({ firstIndex: 4, lastIndex: 4 });
    expect(await w.writer.append([payloadOf(5)])).toEqual({ firstIndex: 5, lastIndex: 5 });
    expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', lastIndex: 1 });
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'SEALED', firstIndex: 2, lastIndex: 4 });
  }, 20_000);
});
