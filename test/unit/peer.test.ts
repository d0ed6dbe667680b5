// PeerHandlers on one real node (LogStores in a temporary directory, on a disk whose fdatasyncs
// can be held): the writer-facing operations of a log (Replicate, Fence, Seal) against each
// other, and what ReadFrames says about the copy it serves from.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stat } from 'node:fs/promises';
import pino from 'pino';
import { FencedError, NotEpochHolderError, PeerHandlers, type SegmentHolding, UnknownLogError } from '../../src/replication/index.js';
import { toStatus } from '../../src/rpc/status.js';
import { type SegmentStart, aggregateOf, checksumHex, format } from '../../src/wal/index.js';
import { type TestNode, TestCluster, payloadOf, sleep, until } from '../support/replication-fakes.js';

const LOG = 'orders';
const SEGMENT: SegmentStart = { segmentId: 1, firstIndex: 1, createdMs: 1_700_000_000_000 };

let cluster: TestCluster;
let node: TestNode;

function frames(first: number, count: number): Buffer[] {
  return Array.from({ length: count }, (_, i) => format.encodeEntry({ index: first + i, timestampMs: 1_700_000_000_000 + first + i, flags: 0, payload: payloadOf(first + i) }).frame);
}

beforeEach(async () => {
  cluster = await TestCluster.start(['a']);
  node = cluster.node('a');
});

afterEach(async () => {
  await cluster.close();
});

describe('fencing is atomic with writes', () => {
  it('a Replicate queued behind a slow fdatasync when Fence(e2) arrives: the fence answer covers it, or it is refused as fenced', async () => {
    const { handlers } = node;
    expect(await handlers.replicate(LOG, 1, SEGMENT, frames(1, 2), 0)).toEqual({ lastIndex: 2 });

    // Writer of epoch 1 sends 3, then 4; the fdatasync of 3 is slow, so 4 waits in the store's
    // queue (both passed their epoch check against fence 1 on arrival). Then the next writer's
    // Fence(2) arrives.
    node.disk.holdDatasyncs();
    const slow = handlers.replicate(LOG, 1, SEGMENT, frames(3, 1), 2);
    await until(() => node.disk.datasyncsWaiting === 1);
    const queued = handlers.replicate(LOG, 1, SEGMENT, frames(4, 1), 2);
    await sleep(20); // 4 reaches the member before the fence does
    const fence = handlers.fence(LOG, 1, 2);
    // Give a fence answered from memory every chance to answer while the writes are in flight.
    await Promise.race([fence, sleep(200)]);
    node.disk.releaseDatasyncs();
    const [fenced, ...writes] = await Promise.allSettled([fence, slow, queued]);

    expect(fenced.status).toBe('fulfilled');
    const covered = (fenced as PromiseFulfilledResult<SegmentHolding>).value.lastIndex;
    for (const write of writes) {
      // Invariant 8: an acknowledged write is inside the fence answer; otherwise it is refused.
      if (write.status === 'fulfilled') expect(write.value.lastIndex).toBeLessThanOrEqual(covered);
      else expect(write.reason).toBeInstanceOf(FencedError);
    }
    // What the fence reported is what the member holds: the new writer seals from it.
    expect((await node.store(LOG)).segmentRecord(1)?.lastIndex).toBe(covered);
    await expect(handlers.replicate(LOG, 1, SEGMENT, frames(covered + 1, 1), covered)).rejects.toBeInstanceOf(FencedError);
  });
});

describe('replica group commit', () => {
  it('Replicates queued behind a running write+fdatasync go out in one write and one fdatasync', async () => {
    const { handlers } = node;
    await handlers.replicate(LOG, 1, SEGMENT, frames(1, 2), 0);
    node.disk.holdDatasyncs();
    const slow = handlers.replicate(LOG, 1, SEGMENT, frames(3, 1), 2);
    await until(() => node.disk.datasyncsWaiting === 1);
    const queued = [4, 5, 6].map((i) => handlers.replicate(LOG, 1, SEGMENT, frames(i, 1), 2));
    await sleep(20); // all three reach the member while 3's fdatasync runs
    node.disk.releaseDatasyncs();
    node.disk.holdDatasyncs();
    expect(await slow).toEqual({ lastIndex: 3 });
    await until(() => node.disk.datasyncsWaiting === 1);
    node.disk.releaseDatasyncs();
    node.disk.holdDatasyncs();
    // One fdatasync made all three durable: none of them waits for another.
    const answered = await Promise.race([Promise.all(queued), sleep(1_000).then(() => 'a second fdatasync was needed')]);
    node.disk.releaseDatasyncs();
    expect(answered).toEqual([{ lastIndex: 4 }, { lastIndex: 5 }, { lastIndex: 6 }]);
    const read = await handlers.readFrames(LOG, 1, 1, 6, 0);
    expect(read.frames).toEqual(frames(1, 6));
  });

  it('a refused request in a group refuses only itself; the others are written', async () => {
    const { handlers } = node;
    await handlers.replicate(LOG, 1, SEGMENT, frames(1, 2), 0);
    node.disk.holdDatasyncs();
    const slow = handlers.replicate(LOG, 1, SEGMENT, frames(3, 1), 2);
    await until(() => node.disk.datasyncsWaiting === 1);
    const good = handlers.replicate(LOG, 1, SEGMENT, frames(4, 1), 2);
    const gap = handlers.replicate(LOG, 1, SEGMENT, frames(9, 1), 2);
    const conflicting = handlers.replicate(LOG, 1, SEGMENT, [format.encodeEntry({ index: 4, timestampMs: 1, flags: 0, payload: payloadOf(99) }).frame], 2);
    const next = handlers.replicate(LOG, 1, SEGMENT, frames(5, 2), 2);
    await sleep(20);
    node.disk.releaseDatasyncs();
    const [a, b, c, d, e] = await Promise.allSettled([slow, good, gap, conflicting, next]);
    expect(a).toMatchObject({ status: 'fulfilled', value: { lastIndex: 3 } });
    expect(b).toMatchObject({ status: 'fulfilled', value: { lastIndex: 4 } });
    expect(c).toMatchObject({ status: 'rejected', reason: { reason: 'index-gap' } });
    expect(d).toMatchObject({ status: 'rejected', reason: { reason: 'conflict' } });
    expect(e).toMatchObject({ status: 'fulfilled', value: { lastIndex: 6 } });
    expect((await handlers.readFrames(LOG, 1, 1, 6, 0)).frames).toEqual(frames(1, 6));
  });

  it('a Fence arriving while Replicates are queued closes their group: a Replicate of the old epoch after it is refused', async () => {
    const { handlers } = node;
    await handlers.replicate(LOG, 1, SEGMENT, frames(1, 2), 0);
    node.disk.holdDatasyncs();
    const slow = handlers.replicate(LOG, 1, SEGMENT, frames(3, 1), 2);
    await until(() => node.disk.datasyncsWaiting === 1);
    const before = handlers.replicate(LOG, 1, SEGMENT, frames(4, 1), 2);
    await sleep(20);
    const fence = handlers.fence(LOG, 1, 2);
    await sleep(20); // the fence reaches the member before the next write
    const after = handlers.replicate(LOG, 1, SEGMENT, frames(5, 1), 2);
    node.disk.releaseDatasyncs();
    const [s, b, f, a] = await Promise.allSettled([slow, before, fence, after]);
    expect(s).toMatchObject({ status: 'fulfilled', value: { lastIndex: 3 } });
    expect(b).toMatchObject({ status: 'fulfilled', value: { lastIndex: 4 } });
    expect(f).toMatchObject({ status: 'fulfilled', value: { lastIndex: 4 } });
    expect(a.status).toBe('rejected');
    expect((a as PromiseRejectedResult).reason).toBeInstanceOf(FencedError);
    expect((await node.store(LOG)).segmentRecord(1)?.lastIndex).toBe(4);
  });

  it('a Replicate of a higher epoch queued between two of a lower one raises the fence for the one after it', async () => {
    const { handlers } = node;
    await handlers.replicate(LOG, 1, SEGMENT, frames(1, 2), 0);
    node.disk.holdDatasyncs();
    const slow = handlers.replicate(LOG, 1, SEGMENT, frames(3, 1), 2);
    await until(() => node.disk.datasyncsWaiting === 1);
    const first = handlers.replicate(LOG, 1, SEGMENT, frames(4, 1), 2);
    await sleep(10);
    const higher = handlers.replicate(LOG, 2, SEGMENT, frames(5, 1), 2);
    await sleep(10);
    const older = handlers.replicate(LOG, 1, SEGMENT, frames(6, 1), 2);
    node.disk.releaseDatasyncs();
    const [, a, b, c] = await Promise.allSettled([slow, first, higher, older]);
    expect(a).toMatchObject({ status: 'fulfilled', value: { lastIndex: 4 } });
    expect(b).toMatchObject({ status: 'fulfilled', value: { lastIndex: 5 } });
    expect((c as PromiseRejectedResult).reason).toBeInstanceOf(FencedError);
  });
});

describe('ReadFrames', () => {
  it('says whether the copy it serves from is sealed, and its aggregate checksum then', async () => {
    const { handlers } = node;
    await handlers.replicate(LOG, 1, SEGMENT, frames(1, 3), 0);
    const open = await handlers.readFrames(LOG, 1, 1, 3, 0);
    expect(open).toMatchObject({ lastIndex: 3, sealed: false, aggregate: '', faulty: [] });
    expect(open.frames.length).toBe(3);
    const sealed = await handlers.seal(LOG, 1, 1, 3, '');
    expect(await handlers.readFrames(LOG, 1, 2, 3, 0)).toMatchObject({ lastIndex: 3, sealed: true, aggregate: sealed.aggregate });
    expect(sealed.aggregate).toMatch(/^[0-9a-f]{16}$/);
    expect(await handlers.readFrames(LOG, 2, 1, 3, 0)).toEqual({ frames: [], faulty: [], lastIndex: 0, sealed: false, aggregate: '' });
  });
});

describe('read-only calls on a log this node does not keep', () => {
  it('answer UnknownLogError (NOT_FOUND) and create nothing; Replicate from a writer creates the log', async () => {
    const { handlers } = node;
    const logDir = node.logs.logDir('nobody-wrote-this');
    await expect(handlers.readFrames('nobody-wrote-this', 1, 1, 3, 0)).rejects.toBeInstanceOf(UnknownLogError);
    await expect(handlers.segmentInfo('nobody-wrote-this', 1, true)).rejects.toBeInstanceOf(UnknownLogError);
    await expect(handlers.openSegmentFile('nobody-wrote-this', 1, 4096)).rejects.toBeInstanceOf(UnknownLogError);
    expect(toStatus(new UnknownLogError('x')).code).toBe(5); // NOT_FOUND
    await expect(stat(logDir)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(node.logs.openLogs()).not.toContain('nobody-wrote-this');

    await handlers.replicate('nobody-wrote-this', 1, SEGMENT, frames(1, 1), 0);
    expect((await stat(logDir)).isDirectory()).toBe(true);
    expect((await handlers.readFrames('nobody-wrote-this', 1, 1, 1, 0)).frames.length).toBe(1);
  });
});

describe('SegmentInfo checksums are paged', () => {
  it('pages of at most countMax that follow on from each other and together hold every checksum once', async () => {
    const { handlers } = node;
    await handlers.replicate(LOG, 1, SEGMENT, frames(1, 10), 0);
    const whole = await handlers.segmentInfo(LOG, 1, true, { countMax: 1_000 });
    expect(whole).toMatchObject({ checksumsFromIndex: 1, nextIndex: 0 });
    expect(whole.checksums.length).toBe(10);
    const pages: string[][] = [];
    let from = 0;
    do {
      const page = await handlers.segmentInfo(LOG, 1, true, { fromIndex: from, countMax: 3 });
      expect(page.checksums.length).toBeLessThanOrEqual(3);
      expect(page.checksumsFromIndex).toBe(from === 0 ? 1 : from);
      pages.push(page.checksums);
      from = page.nextIndex;
    } while (from !== 0 && pages.length < 100);
    expect(pages.map((p) => p.length)).toEqual([3, 3, 3, 1]);
    expect(pages.flat()).toEqual(whole.checksums);
    // Past the last index: an empty last page; without checksums: none at all.
    expect(await handlers.segmentInfo(LOG, 1, true, { fromIndex: 11 })).toMatchObject({ checksums: [], nextIndex: 0 });
    expect(await handlers.segmentInfo(LOG, 1, false)).toMatchObject({ checksums: [], nextIndex: 0, lastIndex: 10 });
    // A page never holds more than the node's own page size, whatever the caller asks.
    await expect(handlers.segmentInfo(LOG, 1, true, { fromIndex: -1 })).rejects.toThrow(/checksums_from_index/);
  });
});

describe('writer calls are bound to the node holding their epoch', () => {
  it('a caller named by its certificate is refused (PERMISSION_DENIED, counted) unless the election gives it the epoch; nothing is created', async () => {
    const refused: string[] = [];
    const holders = { holderOf: async (_log: string, epoch: number) => (epoch === 7 ? 'writer' : undefined) };
    const handlers = new PeerHandlers(node.logs, pino({ level: 'silent' }), { epochHolders: holders, onWriterRefused: (method) => refused.push(method) });
    const logDir = node.logs.logDir('bound');

    // Another peer with the writer's (public) epoch, or with an epoch nobody holds: refused
    // before anything is opened.
    await expect(handlers.seal('bound', 1, 7, 0, '', 'mallory')).rejects.toBeInstanceOf(NotEpochHolderError);
    await expect(handlers.replicate('bound', 7, SEGMENT, frames(1, 1), 1, 'mallory')).rejects.toBeInstanceOf(NotEpochHolderError);
    await expect(handlers.fence('bound', 1, Number.MAX_SAFE_INTEGER, 'writer')).rejects.toBeInstanceOf(NotEpochHolderError);
    expect(toStatus(new NotEpochHolderError('bound', 7, 'mallory', 'writer')).code).toBe(7); // PERMISSION_DENIED
    expect(refused).toEqual(['PeerService.Seal', 'PeerService.Replicate', 'PeerService.Fence']);
    await expect(stat(logDir)).rejects.toMatchObject({ code: 'ENOENT' });

    // The holder is let in (and may create the log).
    expect(await handlers.replicate('bound', 7, SEGMENT, frames(1, 2), 2, 'writer')).toEqual({ lastIndex: 2 });
    await expect(handlers.seal('bound', 1, 7, 0, '', 'mallory')).rejects.toBeInstanceOf(NotEpochHolderError);
    expect((await node.store('bound')).segmentRecord(1)?.lastIndex).toBe(2);
  });
});

describe('the store side refuses what no correct writer sends (defence in depth)', () => {
  it('a different frame at an index already held is refused, not skipped and acknowledged; the same frame again is a retry', async () => {
    const { handlers } = node;
    await handlers.replicate(LOG, 1, SEGMENT, frames(1, 3), 0);
    const forged = format.encodeEntry({ index: 2, timestampMs: 1, flags: 0, payload: Buffer.from('forged') }).frame;
    await expect(handlers.replicate(LOG, 1, SEGMENT, [forged], 0)).rejects.toMatchObject({ reason: 'conflict' });
    expect(await handlers.replicate(LOG, 1, SEGMENT, frames(2, 2), 0)).toEqual({ lastIndex: 3 });
    expect((await handlers.readFrames(LOG, 1, 2, 2, 0)).frames[0]?.equals(frames(2, 1)[0] as Buffer)).toBe(true);
  });

  it('the open segment is not cut below the index the writer said is acknowledged', async () => {
    const { handlers } = node;
    await handlers.replicate(LOG, 1, SEGMENT, frames(1, 5), 4);
    await expect(handlers.seal(LOG, 1, 1, 0, '')).rejects.toMatchObject({ reason: 'below-committed' });
    await expect(handlers.seal(LOG, 1, 2, 3, '')).rejects.toMatchObject({ reason: 'below-committed' });
    expect((await node.store(LOG)).segmentRecord(1)).toMatchObject({ state: 'open', lastIndex: 5 });
    expect(await handlers.seal(LOG, 1, 2, 4, '')).toMatchObject({ lastIndex: 4 }); // the unacknowledged 5 is cut
  });

  it('sealing the open segment with an expected aggregate checks it first', async () => {
    const { handlers } = node;
    const sent = frames(1, 4);
    await handlers.replicate(LOG, 1, SEGMENT, sent, 0);
    const through3 = aggregateOf(format.FORMAT_VERSION, sent.slice(0, 3).map((f) => format.frameChecksumOf(f)));
    await expect(handlers.seal(LOG, 1, 1, 3, checksumHex(through3 ^ 1n))).rejects.toMatchObject({ reason: 'aggregate-mismatch' });
    expect((await node.store(LOG)).segmentRecord(1)).toMatchObject({ state: 'open', lastIndex: 4 });
    expect(await handlers.seal(LOG, 1, 1, 3, checksumHex(through3))).toMatchObject({ lastIndex: 3, aggregate: checksumHex(through3) });
  });
});
