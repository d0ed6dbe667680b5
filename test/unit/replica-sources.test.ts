// replicaSources (src/cluster/replica-sources.ts), the one builder of a node's ReplicaSource:
// which members a source asks (the segment's ensemble, from the record the caller passed or from
// the directory, never this node), that a missing directory (etcd not connected yet) asks no one,
// and that each call builds a fresh source (what one repair learns does not leak into the next).
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { replicaSources } from '../../src/cluster/replica-sources.js';
import { nodeDisk } from '../../src/io/index.js';
import type { PeerApi, SegmentDirectory, SegmentMeta } from '../../src/replication/index.js';

function meta(segmentId: number, ensemble: string[]): SegmentMeta {
  return { log: 'orders', segmentId, ensemble, ackQuorum: 2, state: 'SEALED', writerEpoch: 1, firstIndex: 1, lastIndex: 10, indexCount: 10, byteLength: 100, aggregate: '0'.repeat(16), createdMs: 0, formerMembers: [] } as SegmentMeta;
}

function setup(directory: Pick<SegmentDirectory, 'list'> | undefined) {
  const asked: string[] = [];
  const listed: string[] = [];
  const peer = (node: string): PeerApi =>
    ({
      readFrames: async () => {
        asked.push(node);
        return { frames: [], faulty: false };
      },
    }) as unknown as PeerApi;
  const build = replicaSources({
    self: 'n1',
    peers: (node) => peer(node),
    directory: () =>
      directory && {
        list: async (log: string) => {
          listed.push(log);
          return directory.list(log);
        },
      },
    fetchFile: async () => undefined,
    logs: { logDir: (log) => `/nonexistent/${log}` },
    disk: nodeDisk,
    logger: pino({ level: 'silent' }),
    entryBytesMax: 1 << 16,
  });
  return { build, asked, listed };
}

describe('replicaSources', () => {
  it('asks the other members of the ensemble in the record the caller passed, without listing the directory', async () => {
    const { build, asked, listed } = setup({ list: async () => [] });
    await build('orders', meta(7, ['n1', 'n2', 'n3'])).fetchFrames(7, 1, 3);
    expect(asked.sort()).toEqual(['n2', 'n3']);
    expect(listed).toEqual([]);
  });

  it('reads other segments\' records from the directory', async () => {
    const { build, asked, listed } = setup({ list: async () => [{ meta: meta(8, ['n1', 'n4']) }] as Awaited<ReturnType<SegmentDirectory['list']>> });
    await build('orders', meta(7, ['n1', 'n2'])).fetchFrames(8, 1, 3);
    expect(asked).toEqual(['n4']);
    expect(listed).toEqual(['orders']);
  });

  it('asks no one while etcd is not connected (no directory)', async () => {
    const { build, asked } = setup(undefined);
    expect((await build('orders').fetchFrames(7, 1, 3)).size).toBe(0);
    expect(asked).toEqual([]);
  });

  it('gives etcd\'s record of a SEALED segment as its recorded shape, and none of an OPEN one (its end is not final)', async () => {
    const sealed = { ...meta(7, ['n1', 'n2']), aggregate: '00000000000000ab', createdMs: 42 };
    const open = { ...meta(8, ['n1', 'n2']), state: 'OPEN', aggregate: '' } as SegmentMeta;
    const { build } = setup({ list: async () => [{ meta: sealed }, { meta: open }] as Awaited<ReturnType<SegmentDirectory['list']>> });
    const source = build('orders');
    expect(await source.recordedSegment(7)).toEqual({ segmentId: 7, firstIndex: 1, lastIndex: 10, indexCount: 10, aggregateChecksum: 0xabn, byteLength: 100, createdMs: 42 });
    expect(await source.recordedSegment(8)).toBeUndefined();
    expect(await source.recordedSegment(9)).toBeUndefined();
    expect(await setup(undefined).build('orders').recordedSegment(7)).toBeUndefined();
  });

  it('builds a new source at each call', () => {
    const { build } = setup(undefined);
    expect(build('orders')).not.toBe(build('orders'));
  });
});
