// Recovery after etcd was restored from an older snapshot: two defects the simulator found
// (`node dist/sim/main.js --etcd-restore --seed 511` and `--seed 719`), each with the scenario that
// stalled the log or committed an unacknowledged entry twice before its fix.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FencedError, type SegmentMeta, catchUpLog } from '../../src/replication/index.js';
import { format } from '../../src/wal/index.js';
import { TestCluster, type WriterUnderTest, acknowledgedBy, payloadOf, silent, startWriter, until } from '../support/replication-fakes.js';

const LOG = 'orders';
const SEGMENT_BYTES_SMALL = 4096;
/** The payload byte length of one entry that fills a SEGMENT_BYTES_SMALL segment: the writer seals it right after. */
const FILLING_ENTRY_BYTES = SEGMENT_BYTES_SMALL - format.SEGMENT_HEADER_BYTES - format.TRAILER_BYTES - format.ENTRY_HEADER_BYTES;

let cluster: TestCluster;
const writers: WriterUnderTest[] = [];

beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'b', 'c', 'd']);
});

afterEach(async () => {
  for (const { writer } of writers.splice(0)) writer.stop();
  await cluster.close();
});

describe('a member fenced by a higher epoch than the recovering writer\'s (AVAILABILITY, --etcd-restore --seed 511)', () => {
  // etcd went back to a snapshot: the election's epochs went back with it, and the new writer's
  // own node had persisted the fence of epoch 52 (it had been the writer at 52). Its recovery of a
  // two-member segment [b, c] counted that refusal as a silent member, since the other answer made
  // a fence quorum; it added a joiner (in the simulator one that held later segments and refused
  // the copy) and retried at epoch 40 for ever, as c never accepts 40. A higher epoch wins: the
  // recovery stops with FencedError naming 52, so the election raises its floor past it.
  it('stops with FencedError instead of recovering around the fenced member', async () => {
    const w1 = startWriter(cluster, { log: LOG, self: 'b', epoch: 7, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['b', 'c'], caller: 'B' });
    writers.push(w1);
    expect(await w1.writer.append([payloadOf(1), payloadOf(2)])).toEqual({ firstIndex: 1, lastIndex: 2 });
    await acknowledgedBy(w1, ['b', 'c'], 2);
    cluster.network.kill('B');
    expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'OPEN', ensemble: ['b', 'c'] });
    // A writer of epoch 52 fenced c, then etcd was restored to a snapshot of the epoch-7 days.
    await cluster.network.resolverFor('c', 'C52')('c')?.fence(LOG, 1, 52);
    cluster.network.kill('C52');
    const w2 = startWriter(cluster, { log: LOG, self: 'c', epoch: 40, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c', 'd'] });
    writers.push(w2);
    const failure = await w2.writer.whenReady().then(() => undefined, (error: unknown) => error);
    expect(failure).toBeInstanceOf(FencedError);
    expect((failure as FencedError).fencedEpoch).toBe(52);
    // Nothing was recorded at the stale epoch: no joiner, and the segment is not sealed.
    expect(cluster.directory.segment(LOG, 1).joiners ?? []).toEqual([]);
    expect(cluster.directory.segment(LOG, 1).state).not.toBe('SEALED');
    // With the floor raised past 52, the next writer recovers the segment at 2 and goes on.
    const w3 = startWriter(cluster, { log: LOG, self: 'c', epoch: 80, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c', 'd'] });
    writers.push(w3);
    await w3.writer.whenReady();
    expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', lastIndex: 2, ensemble: ['b', 'c'] });
    expect(await w3.writer.append([payloadOf(3)])).toEqual({ firstIndex: 3, lastIndex: 3 });
  }, 20_000);
});

describe('an unacknowledged tail of a segment whose successor a member holds (DUPLICATE INDEX, --etcd-restore --seed 719)', () => {
  // a held entry 2 of segment 2 alone (never acknowledged); the next writer, with a away, sealed
  // segment 2 empty and acknowledged 2' in segment 3 (2..). etcd then lost both records. The
  // re-derivation found a's open copy of segment 2 (up to 2) and recorded it OPEN with a as its
  // only holder; recovery sealed it at 2, then segment 3 was re-derived at 2.. too: index 2 was
  // in two segments (the unacknowledged entry committed beside the acknowledged one), and the
  // members of each could never catch up on the other. A segment ends where a copy of the next
  // one begins: that point was sealed in etcd before the next segment was created.
  it('re-derives the segment as ending before the next one\'s first index', async () => {
    const w1 = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c'], caller: 'A' });
    writers.push(w1);
    expect(await w1.writer.append([payloadOf(1, FILLING_ENTRY_BYTES)])).toEqual({ firstIndex: 1, lastIndex: 1 });
    expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', lastIndex: 1 });
    // Entry 2 reaches a only: never acknowledged.
    cluster.network.fail('b', { kind: 'hold' }, ['replicate']);
    cluster.network.fail('c', { kind: 'hold' }, ['replicate']);
    void w1.writer.append([payloadOf(2)]).catch(() => undefined);
    const storeA = await cluster.node('a').store(LOG);
    await until(() => storeA.segmentRecord(2)?.lastIndex === 2);
    cluster.network.kill('A');
    cluster.network.heal('b');
    cluster.network.heal('c');
    // The next writer, with a away, seals segment 2 empty and acknowledges 2' in segment 3.
    cluster.network.fail('a', { kind: 'unavailable' });
    const w2 = startWriter(cluster, { log: LOG, self: 'b', epoch: 9, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['b', 'c', 'd'] });
    writers.push(w2);
    expect(await w2.writer.append([payloadOf(20)])).toEqual({ firstIndex: 2, lastIndex: 2 });
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'SEALED', lastIndex: 1 });
    expect(cluster.directory.segment(LOG, 3)).toMatchObject({ state: 'OPEN', firstIndex: 2 });
    await acknowledgedBy(w2, ['b', 'c', 'd'], 2);
    w2.writer.stop();
    // etcd restored to a snapshot taken when segment 1 was the last; a is back.
    cluster.directory.forget(LOG, 3);
    cluster.directory.forget(LOG, 2);
    cluster.network.heal('a');
    const w3 = startWriter(cluster, { log: LOG, self: 'c', epoch: 20, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c', 'd'] });
    writers.push(w3);
    await w3.writer.whenReady();
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'SEALED', firstIndex: 2, lastIndex: 1 });
    expect(cluster.directory.segment(LOG, 3)).toMatchObject({ state: 'SEALED', firstIndex: 2, lastIndex: 2 });
    expect(await w3.writer.append([payloadOf(30)])).toEqual({ firstIndex: 3, lastIndex: 3 });
  }, 20_000);
});

/**
 * c misses the end of segment 1 (entry 4), which writer a seals at 4 on a and b; with withNext,
 * entry 5 is acknowledged in segment 2. Then a's process dies and the coordinator replaces c
 * (gone) by d in segment 1's ensemble; c is back. Returns segment 1's record from before its seal
 * (OPEN, ensemble a b c), for an etcd restored to a snapshot of those days.
 */
async function formerMemberMissesTheEnd(withNext: boolean): Promise<SegmentMeta> {
  const w1 = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c'], caller: 'A' });
  writers.push(w1);
  expect(await w1.writer.append([payloadOf(1), payloadOf(2), payloadOf(3)])).toEqual({ firstIndex: 1, lastIndex: 3 });
  await acknowledgedBy(w1, ['a', 'b', 'c'], 3);
  const openRecord = cluster.directory.segment(LOG, 1);
  expect(openRecord).toMatchObject({ state: 'OPEN', ensemble: ['a', 'b', 'c'] });
  cluster.network.fail('c', { kind: 'unavailable' });
  const rest = FILLING_ENTRY_BYTES - 3 * (format.ENTRY_HEADER_BYTES + 48);
  expect(await w1.writer.append([payloadOf(4, rest)])).toEqual({ firstIndex: 4, lastIndex: 4 });
  expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', lastIndex: 4 });
  if (withNext) {
    expect(await w1.writer.append([payloadOf(5)])).toEqual({ firstIndex: 5, lastIndex: 5 });
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'OPEN', firstIndex: 5, ensemble: ['a', 'b'] });
    await acknowledgedBy(w1, ['a', 'b'], 5);
  }
  w1.writer.stop();
  cluster.network.kill('A');
  cluster.directory.edit(LOG, 1, (meta) => ({ ...meta, ensemble: ['a', 'b', 'd'], formerMembers: ['c'] }));
  cluster.network.heal('c');
  expect((await cluster.node('c').store(LOG)).segmentRecord(1)).toMatchObject({ state: 'open', lastIndex: 3 });
  return openRecord;
}

/**
 * Writer a (epoch 5) acknowledges entry 1, which fills segment 1; entry 2 then reaches a alone in
 * segment 2 (b and c hold its Replicate) and a's caller is cut off. snapshot: etcd before segment 2;
 * storeA: a's store.
 */
async function entryTwoOnAAlone() {
  const w1 = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c'], caller: 'A', pipelineBatchesMax: 1 });
  writers.push(w1);
  expect(await w1.writer.append([payloadOf(1, FILLING_ENTRY_BYTES)])).toEqual({ firstIndex: 1, lastIndex: 1 });
  const snapshot = cluster.directory.takeSnapshot();
  cluster.network.fail('b', { kind: 'hold' }, ['replicate']);
  cluster.network.fail('c', { kind: 'hold' }, ['replicate']);
  void w1.writer.append([payloadOf(2)]).catch(() => undefined);
  const storeA = await cluster.node('a').store(LOG);
  await until(() => storeA.segmentRecord(2)?.lastIndex === 2);
  cluster.network.kill('A');
  return { w1, snapshot, storeA };
}

async function catchUpC(): Promise<void> {
  const store = await cluster.node('c').store(LOG);
  const result = await catchUpLog({ log: LOG, self: 'c', store, directory: cluster.directory, peers: cluster.network.resolverFor('c'), logger: silent, fetchFile: (from, segmentId, path) => cluster.fetchFile(from, LOG, segmentId, path), tempDir: store.dataDir, disk: cluster.node('c').disk });
  expect(result).toMatchObject({ segmentsSealed: 1, mismatched: [], behind: [] });
}

describe('a former member\'s copy sealed short of the record, in a record etcd restored to OPEN (DATA LOSS)', () => {
  // c missed the end of segment 1, which the writer sealed at 4 on a and b; the coordinator then
  // replaced c (gone) by d, and c's catch-up sealed the open copy it held at its own end (3): no
  // replica of record. etcd was restored to a snapshot taken while segment 1 was OPEN with c in
  // its ensemble. Recovery took the lowest sealed point among a, b, c (3) for one that covers
  // every acknowledgement and cut a's and b's copies to it: entry 4, acknowledged, was lost (and
  // segment 2, when there was one, no longer followed segment 1).

  it('recovery seals where the next segment begins, not at a copy sealed below it', async () => {
    const openRecord = await formerMemberMissesTheEnd(true);
    // c's copy as catch-up left it before it fetched the rest for a former member.
    await (await cluster.node('c').store(LOG)).sealSegment(1, 3);
    cluster.directory.forget(LOG, 2);
    cluster.directory.edit(LOG, 1, () => openRecord);
    const w2 = startWriter(cluster, { log: LOG, self: 'b', epoch: 9, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c', 'd'] });
    writers.push(w2);
    await w2.writer.whenReady();
    expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', firstIndex: 1, lastIndex: 4 });
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ firstIndex: 5 });
    for (const node of ['a', 'b']) expect((await cluster.node(node).store(LOG)).segmentRecord(1)).toMatchObject({ state: 'sealed', lastIndex: 4 });
    expect(await w2.writer.append([payloadOf(6)])).toEqual({ firstIndex: 6, lastIndex: 6 });
  }, 20_000);

  it('catch-up of a former member seals its copy where the record does (no next segment to tell)', async () => {
    const openRecord = await formerMemberMissesTheEnd(false);
    await catchUpC();
    expect((await cluster.node('c').store(LOG)).segmentRecord(1)).toMatchObject({ state: 'sealed', lastIndex: 4 });
    cluster.directory.edit(LOG, 1, () => openRecord);
    const w2 = startWriter(cluster, { log: LOG, self: 'b', epoch: 9, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c', 'd'] });
    writers.push(w2);
    await w2.writer.whenReady();
    expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', firstIndex: 1, lastIndex: 4 });
    for (const node of ['a', 'b', 'c']) expect((await cluster.node(node).store(LOG)).segmentRecord(1)).toMatchObject({ state: 'sealed', lastIndex: 4 });
    expect(await w2.writer.append([payloadOf(5)])).toEqual({ firstIndex: 5, lastIndex: 5 });
  }, 20_000);
});

describe('a writer that keeps the election across an etcd restore (DATA LOSS, --etcd-restore --pipeline --seed 1304)', () => {
  // The writer's election key was older than the snapshot, so it kept the election; the records
  // of segments sealed since (2 sealed, 3) went back with etcd (2 OPEN again, 3 gone). With no
  // segment open it opened the next one after its own idea of the last (segment 4 at index 4):
  // records are re-derived only at a writer's start, so nobody re-derived 2 and 3 and their
  // acknowledged entries were in no record for good (the simulator: segments 9-14, n2 serving
  // 474..523 of segment 10). At pipeline depth 1, production's default: the defect is not in the
  // pipelined path. Now the next record's create is conditional on the last one being unchanged,
  // and the writer recovers and re-derives the records first.
  const scenario = async (sameWriter: boolean): Promise<void> => {
    cluster.directory.leaderEpoch = 5;
    const w1 = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c'], guarded: true, pipelineBatchesMax: 1 });
    writers.push(w1);
    expect(await w1.writer.append([payloadOf(1, FILLING_ENTRY_BYTES)])).toEqual({ firstIndex: 1, lastIndex: 1 });
    expect(await w1.writer.append([payloadOf(2)])).toEqual({ firstIndex: 2, lastIndex: 2 });
    const snapshot = cluster.directory.takeSnapshot(); // segment 1 SEALED, segment 2 OPEN
    // Entry 3 fills segment 3: segments 2 and 3 are sealed and no segment is open.
    expect(await w1.writer.append([payloadOf(3, FILLING_ENTRY_BYTES)])).toEqual({ firstIndex: 3, lastIndex: 3 });
    expect(cluster.directory.snapshot(LOG).map((r) => [r.meta.segmentId, r.meta.state])).toEqual([[1, 'SEALED'], [2, 'SEALED'], [3, 'SEALED']]);
    let writer = w1;
    if (!sameWriter) {
      // As n2 in the seed: a writer that took over (segment 3 was its predecessor's last) and has
      // opened no segment yet: its acknowledged index (3) is past segment 2, which it must recover.
      w1.writer.stop();
      cluster.directory.leaderEpoch = 6;
      writer = startWriter(cluster, { log: LOG, self: 'b', epoch: 6, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c'], guarded: true, pipelineBatchesMax: 1 });
      writers.push(writer);
      await writer.writer.whenReady();
      expect(writer.writer.committedIndex).toBe(3);
    }
    cluster.directory.restore(snapshot);
    expect(await writer.writer.append([payloadOf(4)])).toEqual({ firstIndex: 4, lastIndex: 4 });
    expect(writer.failures).toEqual([]);
    expect(cluster.directory.snapshot(LOG).map((r) => [r.meta.segmentId, r.meta.state, r.meta.firstIndex, r.meta.lastIndex])).toEqual([
      [1, 'SEALED', 1, 1],
      [2, 'SEALED', 2, 2],
      [3, 'SEALED', 3, 3],
      [4, 'OPEN', 4, 3],
    ]);
  };

  it('the writer that sealed them re-derives the records etcd lost before it opens the next segment', () => scenario(true), 20_000);

  it('so does a writer that has opened no segment yet (its acknowledged index is past the segment etcd made OPEN again)', () => scenario(false), 20_000);

  it('a record before it that the coordinator rewrote where it ends is no reason to recover', async () => {
    cluster.directory.leaderEpoch = 5;
    const w1 = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c', 'd'], guarded: true, pipelineBatchesMax: 1 });
    writers.push(w1);
    expect(await w1.writer.append([payloadOf(1, FILLING_ENTRY_BYTES)])).toEqual({ firstIndex: 1, lastIndex: 1 });
    const fences = (): number => [...cluster.network.calls.entries()].filter(([key]) => key.endsWith('.fence')).reduce((sum, [, n]) => sum + n, 0);
    const fencedBefore = fences();
    cluster.directory.edit(LOG, 1, (meta) => ({ ...meta, ensemble: ['a', 'b', 'd'], formerMembers: ['c'] }));
    expect(await w1.writer.append([payloadOf(2)])).toEqual({ firstIndex: 2, lastIndex: 2 });
    expect(fences()).toBe(fencedBefore); // no recovery, no re-derivation
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'OPEN', firstIndex: 2 });
  }, 20_000);
});

describe('an empty segment whose only copy is sealed past it, after etcd was wiped (AVAILABILITY, --etcd-restore --pipeline --seed 1260 on 472f0af)', () => {
  // Entry 2 reached a alone (never acknowledged); the next writer, with a away, sealed segment 2
  // empty (its fence quorum held nothing) and went on in segment 3 at index 2. a's copy of
  // segment 2 ended up sealed at 2, past the record (in the simulator no member held the empty
  // segment, so repair could not rebuild a's copy either). etcd was then wiped: the re-derivation
  // of segment 2 found one copy, sealed at 2, while segment 3 begins at 2, and waited for a copy
  // sealed at 1 that nobody would ever hold: no writer became ready again.
  it('re-derives it empty, where the next segment begins', async () => {
    const { storeA } = await entryTwoOnAAlone();
    cluster.network.heal('b');
    cluster.network.heal('c');
    cluster.network.fail('a', { kind: 'unavailable' });
    const w2 = startWriter(cluster, { log: LOG, self: 'b', epoch: 9, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['b', 'c', 'd'], pipelineBatchesMax: 1 });
    writers.push(w2);
    expect(await w2.writer.append([payloadOf(20)])).toEqual({ firstIndex: 2, lastIndex: 2 });
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'SEALED', firstIndex: 2, lastIndex: 1 });
    await acknowledgedBy(w2, ['b', 'c', 'd'], 2);
    w2.writer.stop();
    await storeA.sealSegment(2, 2); // a's copy sealed past the record
    cluster.directory.forget(LOG, 3);
    cluster.directory.forget(LOG, 2);
    cluster.network.heal('a');
    const w3 = startWriter(cluster, { log: LOG, self: 'c', epoch: 20, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c', 'd'], pipelineBatchesMax: 1 });
    writers.push(w3);
    await w3.writer.whenReady();
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'SEALED', firstIndex: 2, lastIndex: 1, indexCount: 0 });
    expect(cluster.directory.segment(LOG, 3)).toMatchObject({ state: 'SEALED', firstIndex: 2, lastIndex: 2 });
    expect(await w3.writer.append([payloadOf(30)])).toEqual({ firstIndex: 3, lastIndex: 3 });
  }, 20_000);
});

describe('a stale copy of the next segment from an etcd history that was rolled back (COMMITTED ENTRY LOST, review of 530ebf3)', () => {
  // History 1: entry 2 reaches a alone in segment 2 (never acknowledged); writer d, with a away,
  // seals segment 2 empty and opens segment 3 at index 2, whose entry 2' reaches d alone. etcd is
  // restored to before segment 2 existed (history 2): with d away, writer c re-derives segment 2
  // from a's copy, seals it at 2 (entry 2 is now committed, readable, and a session retry of its
  // batch would be answered with index 2) and goes on in segment 3 at index 3. etcd is wiped again
  // and d comes back: d's copy of segment 3 (first index 2, from history 1) must not make the
  // re-derivation record segment 2 empty, dropping the committed entry 2.
  it('re-derives the committed segment, not an empty one', async () => {
    const { w1, snapshot: beforeSegment2 } = await entryTwoOnAAlone();
    w1.writer.stop();
    cluster.network.fail('a', { kind: 'unavailable' });
    // History 1, writer d: segment 2 sealed empty, segment 3 at index 2 reaches d alone.
    cluster.network.heal('b');
    cluster.network.heal('c');
    const w2 = startWriter(cluster, { log: LOG, self: 'd', epoch: 9, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['b', 'c', 'd'], caller: 'D', pipelineBatchesMax: 1 });
    writers.push(w2);
    await w2.writer.whenReady();
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'SEALED', firstIndex: 2, lastIndex: 1 });
    cluster.network.fail('b', { kind: 'hold' }, ['replicate']);
    cluster.network.fail('c', { kind: 'hold' }, ['replicate']);
    void w2.writer.append([payloadOf(21)]).catch(() => undefined);
    const storeD = await cluster.node('d').store(LOG);
    await until(() => storeD.segmentRecord(3)?.lastIndex === 2);
    cluster.network.kill('D');
    w2.writer.stop();
    // History 2: etcd restored to before segment 2; d away.
    cluster.directory.restore(beforeSegment2);
    cluster.network.heal('b');
    cluster.network.heal('c');
    cluster.network.heal('a');
    cluster.network.fail('d', { kind: 'unavailable' });
    const w3 = startWriter(cluster, { log: LOG, self: 'c', epoch: 20, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c'], pipelineBatchesMax: 1 });
    writers.push(w3);
    await w3.writer.whenReady();
    expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'SEALED', firstIndex: 2, lastIndex: 2 });
    expect(await w3.writer.append([payloadOf(30)])).toEqual({ firstIndex: 3, lastIndex: 3 });
    w3.writer.stop();
    // etcd wiped of segments 2 and 3; d back.
    cluster.directory.restore(beforeSegment2);
    cluster.network.heal('d');
    const w4 = startWriter(cluster, { log: LOG, self: 'b', epoch: 30, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['a', 'b', 'c', 'd'], pipelineBatchesMax: 1 });
    writers.push(w4);
    await w4.writer.whenReady().catch(() => undefined);
    const records = cluster.directory.snapshot(LOG).map((r) => [r.meta.segmentId, r.meta.state, r.meta.firstIndex, r.meta.lastIndex]);
    // Entry 2 was committed in segment 2: never recorded away (waiting for d's copy to be told apart is acceptable).
    expect(records.find((r) => r[0] === 2)?.[3] ?? 2).toBe(2);
  }, 20_000);
});

describe('an empty segment no member holds, followed by segments etcd lost too (DATA LOSS, --etcd-restore --pipeline --seed 3033)', () => {
  // Segment 2 was sealed empty (its recovery's fence quorum held nothing; a, holding its only
  // entry, was away) and no member holds it; segment 3 holds the acknowledged entry 2. etcd loses
  // both records. The re-derivation asks the members for segment 2, finds nobody, and stops: the
  // writer must not open segment 2 at index 2 over the acknowledged entry segment 3 holds.
  it('does not open a segment over the indices of a later segment the members hold', async () => {
    const { w1, snapshot: afterSegment1 } = await entryTwoOnAAlone();
    w1.writer.stop();
    cluster.network.heal('b');
    cluster.network.heal('c');
    cluster.network.fail('a', { kind: 'unavailable' });
    const w2 = startWriter(cluster, { log: LOG, self: 'b', epoch: 9, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['b', 'c', 'd'], pipelineBatchesMax: 1 });
    writers.push(w2);
    const acked = payloadOf(20, FILLING_ENTRY_BYTES);
    expect(await w2.writer.append([acked])).toEqual({ firstIndex: 2, lastIndex: 2 });
    expect(cluster.directory.snapshot(LOG).map((r) => [r.meta.segmentId, r.meta.state, r.meta.firstIndex, r.meta.lastIndex])).toEqual([
      [1, 'SEALED', 1, 1],
      [2, 'SEALED', 2, 1],
      [3, 'SEALED', 2, 2],
    ]);
    w2.writer.stop();
    cluster.directory.restore(afterSegment1);
    const w3 = startWriter(cluster, { log: LOG, self: 'c', epoch: 20, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['b', 'c', 'd'], pipelineBatchesMax: 1 });
    writers.push(w3);
    // The members refuse a segment 2 over the index their segment 3 holds (nothing is acknowledged);
    // the writer's recovery then seals its segment 2 empty and re-derives segment 3.
    let appended: unknown;
    for (let attempt = 0; attempt < 5; attempt += 1) {
      appended = await w3.writer.append([payloadOf(30)]).catch((error: unknown) => error);
      expect(appended).not.toEqual({ firstIndex: 2, lastIndex: 2 }); // index 2 is acknowledged in segment 3
      if (!(appended instanceof Error)) break;
    }
    expect(appended).toEqual({ firstIndex: 3, lastIndex: 3 });
    expect(cluster.directory.snapshot(LOG).map((r) => [r.meta.segmentId, r.meta.state, r.meta.firstIndex, r.meta.lastIndex]).slice(0, 3)).toEqual([
      [1, 'SEALED', 1, 1],
      [2, 'SEALED', 2, 1],
      [3, 'SEALED', 2, 2],
    ]);
  }, 20_000);
});

describe('an empty segment no member holds, with the later segments\' holders not in the new ensemble (DATA LOSS, review)', () => {
  it('does not acknowledge an index a later segment the members hold already has', async () => {
    await cluster.close();
    cluster = await TestCluster.start(['a', 'b', 'c', 'd', 'e', 'f']);
    const { w1, snapshot: afterSegment1 } = await entryTwoOnAAlone();
    w1.writer.stop();
    cluster.network.heal('b');
    cluster.network.heal('c');
    cluster.network.fail('a', { kind: 'unavailable' });
    const w2 = startWriter(cluster, { log: LOG, self: 'b', epoch: 9, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['b', 'c', 'd'], pipelineBatchesMax: 1 });
    writers.push(w2);
    expect(await w2.writer.append([payloadOf(20, FILLING_ENTRY_BYTES)])).toEqual({ firstIndex: 2, lastIndex: 2 });
    expect(cluster.directory.segment(LOG, 3)).toMatchObject({ state: 'SEALED', firstIndex: 2, lastIndex: 2, ensemble: ['b', 'c', 'd'] });
    w2.writer.stop();
    // etcd restored: records 2 and 3 gone; b, c, d not registered again yet (they answer, known from segment 1's record).
    cluster.directory.restore(afterSegment1);
    const w3 = startWriter(cluster, { log: LOG, self: 'e', epoch: 20, segmentBytesMax: SEGMENT_BYTES_SMALL, live: () => ['e', 'f'], pipelineBatchesMax: 1 });
    writers.push(w3);
    const appended = await w3.writer.append([payloadOf(30)]).catch((error: unknown) => error);
    const records = cluster.directory.snapshot(LOG).map((r) => [r.meta.segmentId, r.meta.state, r.meta.firstIndex, r.meta.lastIndex, r.meta.ensemble.join('')]);
    // Index 2 is acknowledged in segment 3 (on b, c, d): before the fix e and f took a new entry 2 in a new segment 2.
    expect(appended).toEqual({ firstIndex: 3, lastIndex: 3 });
    expect(records.slice(0, 3)).toEqual([
      [1, 'SEALED', 1, 1, 'abc'],
      [2, 'SEALED', 2, 1, 'abc'],
      [3, 'SEALED', 2, 2, 'bc'],
    ]);
  }, 20_000);
});
