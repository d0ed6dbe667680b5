// Issue 12, defect found by an adversarial review: a recovery could seal INSIDE an unacknowledged
// session batch (a member holds only the batch's first part: recovery copies a tail in chunks,
// and a member writes a large request in several write+fdatasync steps). The batch's first
// entries became committed without its tag, and the client's retry appended them again.
// Non-last entries of a session batch carry FLAG_BATCH_OPEN; a seal point inside such a batch is
// lowered to just before it, and members refuse to seal there.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LogWriter, type PeerApi } from '../../src/replication/index.js';
import { SESSION_DEFAULTS, SessionGate } from '../../src/replication/sessions.js';
import { format } from '../../src/wal/index.js';
import { ENTRY_BYTES_MAX, SteppingClock, TestCluster, acknowledgedBy, logMetaOf, payloadOf, silent, startWriter } from '../support/replication-fakes.js';

const LOG = 'orders';
const SESSION = 'ab'.repeat(16);

let cluster: TestCluster;
beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'b', 'c']);
});
afterEach(async () => {
  await cluster.close();
});

/**
 * Writer 1 on a acknowledges entries 1..2 on every member, then writes a session batch that only
 * a gets (b and c hold their Replicates) and dies. Writer 2 on b recovers: a answers the fence and
 * the first ReadFrames of the tail copy (copyBytesMax bytes), then becomes unreachable, so b holds
 * only the batch's first part and is the highest member of the fence quorum {b, c}.
 */
async function recoverAfterPartialCopy(batch: readonly Buffer[], segmentBytesMax: number, copyBytesMax?: number): Promise<LogWriter> {
  const w1 = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax, caller: 'A' });
  expect(await w1.writer.append([payloadOf(1), payloadOf(2)])).toEqual({ firstIndex: 1, lastIndex: 2 });
  await acknowledgedBy(w1, ['a', 'b', 'c'], 2);
  cluster.network.fail('b', { kind: 'hold' }, ['replicate']);
  cluster.network.fail('c', { kind: 'hold' }, ['replicate']);
  void w1.writer.append(batch, { session: { sessionId: SESSION, sequence: 1, count: batch.length } }).catch(() => undefined);
  await acknowledgedBy(w1, ['a'], 2 + batch.length);
  cluster.network.kill('A');
  cluster.network.heal('b');
  cluster.network.heal('c');
  const base = cluster.network.resolverFor('b');
  let reads = 0;
  const peers = (id: string): PeerApi | undefined => {
    const peer = base(id);
    if (!peer || id !== 'a') return peer;
    return {
      ...peer,
      readFrames: async (...args: Parameters<PeerApi['readFrames']>) => {
        const answer = await peer.readFrames(...args);
        if (++reads === 1) cluster.network.fail('a', { kind: 'unavailable' });
        return answer;
      },
    };
  };
  const w2 = new LogWriter({
    log: LOG, self: 'b', epoch: 9, logMeta: logMetaOf(LOG, segmentBytesMax), directory: cluster.directory, peers,
    liveMembers: () => ['a', 'b', 'c'], logger: silent, clock: new SteppingClock(), onCommitted: () => undefined,
    groupCommitBytesMax: 256 * 1024, entryBytesMax: ENTRY_BYTES_MAX, ...(copyBytesMax ? { copyBytesMax } : {}),
  });
  await w2.whenReady();
  return w2;
}

/** Retries the batch through a session gate rebuilt from b's log (as log-runtime does); the payload prefixes of the committed log. */
async function retryAndReadLog(w2: LogWriter, batch: readonly Buffer[]): Promise<{ answer: { firstIndex: number; lastIndex: number }; log: string[] }> {
  const store = await cluster.node('b').store(LOG);
  const gate = new SessionGate({
    options: SESSION_DEFAULTS,
    nowMs: () => Date.now(),
    committedIndex: () => w2.committedIndex,
    readEntries: async function* (from, to) {
      const out = [];
      for (let i = from; i <= to; i++) {
        const { frame, timestampMs } = await store.readFrame(i);
        out.push({ index: i, timestampMs, session: format.sessionTagOf(frame) });
      }
      yield out;
    },
  });
  const answer = await gate.append({ sessionId: SESSION, sequence: 1 }, (tag) => w2.append(batch, { session: tag }), batch.length);
  const log: string[] = [];
  for (let i = 1; i <= w2.committedIndex; i++) log.push(format.entryPayloadOf((await store.readFrame(i)).frame).toString('latin1').split(':')[0] as string);
  return { answer, log };
}

describe('a recovery never seals inside a session batch', () => {
  it('3-entry batch, the copy cut after its first entry: sealed before the batch, the retry appended once', async () => {
    const batch = [payloadOf(100, 2000), payloadOf(101, 2000), payloadOf(102, 2000)];
    const w2 = await recoverAfterPartialCopy(batch, 1 << 20, 2500);
    try {
      expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', lastIndex: 2 });
      const { answer, log } = await retryAndReadLog(w2, batch);
      expect(answer).toEqual({ firstIndex: 3, lastIndex: 5 });
      expect(log).toEqual(['entry-1', 'entry-2', 'entry-100', 'entry-101', 'entry-102']);
    } finally {
      w2.stop();
    }
  });

  it('80 x 60 KB batch with the default 4 MiB copy chunk: sealed before the batch, the retry appended once', async () => {
    const batch = Array.from({ length: 80 }, (_, i) => payloadOf(100 + i, 60_000));
    const w2 = await recoverAfterPartialCopy(batch, 64 << 20);
    try {
      expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', lastIndex: 2 });
      const { answer, log } = await retryAndReadLog(w2, batch);
      expect(answer).toEqual({ firstIndex: 3, lastIndex: 82 });
      expect(log.filter((p) => p === 'entry-100')).toHaveLength(1);
      expect(log).toHaveLength(82);
    } finally {
      w2.stop();
    }
  });

  it('flags every entry of a session batch but its last with FLAG_BATCH_OPEN, and nothing else', async () => {
    const w = startWriter(cluster, { log: LOG, self: 'a', epoch: 1, segmentBytesMax: 1 << 20 });
    await w.writer.append([payloadOf(1)]);
    await w.writer.append([payloadOf(2), payloadOf(3), payloadOf(4)], { session: { sessionId: SESSION, sequence: 1, count: 3 } });
    await w.writer.append([payloadOf(5)], { session: { sessionId: SESSION, sequence: 2, count: 1 } });
    await acknowledgedBy(w, ['a'], 5);
    const store = await cluster.node('a').store(LOG);
    const flags: number[] = [];
    for (let i = 1; i <= 5; i++) flags.push(format.isBatchOpenFrame((await store.readFrame(i)).frame) ? 1 : 0);
    expect(flags).toEqual([0, 1, 1, 0, 0]);
    w.writer.stop();
  });

  it('a member refuses to seal an open segment at an entry that continues a session batch', async () => {
    const w = startWriter(cluster, { log: LOG, self: 'a', epoch: 1, segmentBytesMax: 1 << 20 });
    await w.writer.append([payloadOf(1), payloadOf(2), payloadOf(3)], { session: { sessionId: SESSION, sequence: 1, count: 3 } });
    await acknowledgedBy(w, ['c'], 3);
    w.writer.stop();
    const c = cluster.node('c').handlers;
    await c.fence(LOG, 1, 2);
    await expect(c.seal(LOG, 1, 2, 2, '')).rejects.toThrow(/inside a session batch/);
    await expect(c.seal(LOG, 1, 2, 1, '')).rejects.toThrow(/inside a session batch/);
    expect((await c.seal(LOG, 1, 2, 3, '')).lastIndex).toBe(3);
  });
});

describe('FLAG_BATCH_OPEN in the frame format', () => {
  it('decodes alone, and a frame that also carries FLAG_HOLE or FLAG_SESSION is refused as a bad header', () => {
    const tag = { sessionId: SESSION, sequence: 1, count: 2 };
    const open = format.encodeEntry({ index: 7, timestampMs: 1, flags: format.FLAG_BATCH_OPEN, payload: payloadOf(7) }).frame;
    const decoded = format.decodeFrameAt(open, 0, ENTRY_BYTES_MAX);
    expect(decoded).toMatchObject({ kind: 'entry', bodyOk: true, header: { index: 7, flags: format.FLAG_BATCH_OPEN } });
    expect(format.isBatchOpenFrame(open)).toBe(true);
    expect(format.sessionTagOf(open)).toBeUndefined();
    const both = format.encodeEntry({ index: 7, timestampMs: 1, flags: format.FLAG_BATCH_OPEN, payload: payloadOf(7), session: tag }).frame;
    expect(format.decodeFrameAt(both, 0, ENTRY_BYTES_MAX)).toMatchObject({ kind: 'bad', reason: 'bad-entry-header' });
    const hole = format.encodeEntry({ index: 7, timestampMs: 1, flags: format.FLAG_BATCH_OPEN | format.FLAG_HOLE, payload: format.encodeHolePayload(1, 'x') }).frame;
    expect(format.decodeFrameAt(hole, 0, ENTRY_BYTES_MAX)).toMatchObject({ kind: 'bad', reason: 'bad-entry-header' });
  });
});
