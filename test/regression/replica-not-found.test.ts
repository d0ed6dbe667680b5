// A member that does not keep a log answers ReadFrames with UnknownLogError (NOT_FOUND over gRPC)
// and creates nothing. ReplicaSource must take that as "holds none of it", like an empty answer:
// an adversarial review showed it was taken as "not reached", so the range stayed uncertain and
// the interlock kept skip/rollback from ever giving up entries no member holds.
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeDisk } from '../../src/io/index.js';
import type { SegmentMeta } from '../../src/replication/index.js';
import { ReplicaSource } from '../../src/replication/replica-source.js';
import { TestCluster } from '../support/replication-fakes.js';

const LOG = 'orders';
let cluster: TestCluster;

beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'c']);
});
afterEach(async () => {
  await cluster.close();
});

function sourceOn(): ReplicaSource {
  const meta: SegmentMeta = {
    log: LOG, segmentId: 1, ensemble: ['a', 'c'], ackQuorum: 2, state: 'SEALED', writerEpoch: 1,
    firstIndex: 1, lastIndex: 3, indexCount: 3, byteLength: 0, aggregate: '', createdMs: 1,
  };
  return new ReplicaSource({
    log: LOG, self: 'a', peers: (n) => (n === 'c' ? cluster.node('c').handlers : undefined) as never,
    segmentMeta: async () => meta, tempDir: '/nonexistent', disk: nodeDisk, logger: pino({ level: 'silent' }), entryBytesMax: 1 << 20,
  });
}

describe('a member that lacks the whole log', () => {
  it('a member that keeps the log but not the segment answers empty: certain (not held elsewhere)', async () => {
    await cluster.node('c').store(LOG); // c keeps the log (any other segment), not segment 1
    const source = sourceOn();
    expect((await source.fetchFrames(1, 1, 3)).size).toBe(0);
    expect(source.mayBeHeldElsewhere(1, 1, 3)).toBe(false);
  });

  it('a member that never kept the log is just as certain, and nothing is created on it', async () => {
    const source = sourceOn();
    expect((await source.fetchFrames(1, 1, 3)).size).toBe(0);
    expect(source.mayBeHeldElsewhere(1, 1, 3)).toBe(false);
    expect(cluster.node('c').logs.openLogs()).not.toContain(LOG);
  });
});
