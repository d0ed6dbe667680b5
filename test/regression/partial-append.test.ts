// An append whose payloads span two segments, whose first part reached the ack quorum before the
// seal of the first segment missed etcd. An adversarial review showed it was rejected with the
// etcd client's error (UNAVAILABLE, retried by forwarding nodes and clients), and the retry
// appended the first payload a second time. It now fails with PartialAppendError (UNKNOWN, which
// no client of ours retries), naming the indices that were appended.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PartialAppendError } from '../../src/replication/index.js';
import { isRetryable, toStatus } from '../../src/rpc/status.js';
import { format } from '../../src/wal/index.js';
import { TestCluster, type WriterUnderTest, startWriter } from '../support/replication-fakes.js';

const LOG = 'orders';
const SEGMENT_BYTES_SMALL = 4096;
let cluster: TestCluster;
const writers: WriterUnderTest[] = [];

beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'b', 'c']);
});
afterEach(async () => {
  for (const { writer } of writers.splice(0)) writer.stop();
  await cluster.close();
});

describe('an append partly committed across two segments', () => {
  it('fails with PartialAppendError naming what was appended, with a status nobody retries', async () => {
    const handle = startWriter(cluster, { log: LOG, self: 'a', epoch: 1, segmentBytesMax: SEGMENT_BYTES_SMALL });
    writers.push(handle);
    const { writer } = handle;
    await writer.whenReady();
    const first = Buffer.alloc(1500, 'x');
    const second = Buffer.alloc(3000, 'y'); // does not fit after `first`: the append spans two segments
    expect(first.byteLength + second.byteLength + 2 * format.ENTRY_HEADER_BYTES + format.SEGMENT_HEADER_BYTES + format.TRAILER_BYTES).toBeGreaterThan(SEGMENT_BYTES_SMALL);
    cluster.directory.failNext('update'); // the seal of segment 1 misses etcd
    const error = await writer.append([first, second]).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(PartialAppendError);
    expect(error).toMatchObject({ firstIndex: 1, lastIndex: 1, payloads: 2 });
    expect(writer.committedIndex).toBe(1);
    const status = toStatus(error);
    expect(isRetryable(status.code)).toBe(false);
    expect([14, 4, 10]).not.toContain(status.code); // LogRuntime's forwarding retry codes

    // The client appends what was not appended: the log holds each payload once.
    expect(await writer.append([second])).toEqual({ firstIndex: 2, lastIndex: 2 });
    const store = await cluster.node('a').store(LOG);
    // Acknowledged at a quorum of two: a's own copy may still be writing the entry.
    await expect.poll(() => store.lastIndex, { timeout: 10_000 }).toBe(2);
    const log: string[] = [];
    for (let i = 1; i <= 2; i += 1) log.push(Buffer.from((await store.read(i)).payload).subarray(0, 1).toString());
    expect(log).toEqual(['x', 'y']);
  });
});
