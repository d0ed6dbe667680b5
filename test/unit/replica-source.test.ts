// ReplicaSource.fetchFrames: frames gathered entry by entry from the other members. A member that
// serves one frame failing verification (or one it was not asked for) is distrusted for the
// segment, and nothing it sent in that repair is kept: the members after it fill those indices.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { nodeDisk } from '../../src/io/index.js';
import type { PeerApi, SegmentMeta } from '../../src/replication/index.js';
import { ReplicaSource } from '../../src/replication/replica-source.js';
import { format } from '../../src/wal/index.js';

const LOG = 'orders';

function frame(index: number, text: string): Buffer {
  return format.encodeEntry({ index, timestampMs: 1, flags: 0, payload: Buffer.from(text) }).frame;
}

function corrupt(buffer: Buffer): Buffer {
  const copy = Buffer.from(buffer);
  copy[copy.length - 1] = (copy[copy.length - 1] as number) ^ 0x01;
  return copy;
}

function sourceOver(answers: Record<string, (from: number, to: number) => Buffer[]>): ReplicaSource {
  const meta: SegmentMeta = {
    log: LOG, segmentId: 1, ensemble: ['a', ...Object.keys(answers)], ackQuorum: 2, state: 'SEALED', writerEpoch: 1,
    firstIndex: 1, lastIndex: 3, indexCount: 3, byteLength: 0, aggregate: '', createdMs: 1,
  };
  return new ReplicaSource({
    log: LOG,
    self: 'a',
    peers: (node) => {
      const serve = answers[node];
      if (!serve) return undefined;
      return { readFrames: async (_log: string, _segment: number, from: number, to: number) => ({ frames: serve(from, to), faulty: [], lastIndex: 3, sealed: true, aggregate: '' }) } as unknown as PeerApi;
    },
    segmentMeta: async () => meta,
    tempDir: '/nonexistent',
    disk: nodeDisk,
    logger: pino({ level: 'silent' }),
    entryBytesMax: 1 << 20,
  });
}

const honest = (from: number, to: number): Buffer[] => Array.from({ length: to - from + 1 }, (_, i) => frame(from + i, `good-${from + i}`));

describe('ReplicaSource.fetchFrames', () => {
  it('drops every frame of a member that served a corrupt one and takes them from the next member', async () => {
    const source = sourceOver({
      b: (from) => [frame(from, `forged-${from}`), corrupt(frame(from + 1, `forged-${from + 1}`))],
      c: honest,
    });
    const frames = await source.fetchFrames(1, 1, 3);
    expect([...frames.keys()].sort()).toEqual([1, 2, 3]);
    for (const [index, bytes] of frames) expect(bytes.equals(frame(index, `good-${index}`))).toBe(true);
    expect(source.distrusted(1)).toEqual(['b']);
  });

  it('distrusts a member that answers with an index it was not asked for, and keeps nothing of it', async () => {
    const source = sourceOver({
      b: (from) => [frame(from, `good-${from}`), frame(99, 'out-of-range')],
      c: honest,
    });
    const frames = await source.fetchFrames(1, 1, 3);
    expect([...frames.keys()].sort()).toEqual([1, 2, 3]);
    expect(frames.has(99)).toBe(false);
    expect(source.distrusted(1)).toEqual(['b']);
  });

  it('keeps an honest member\'s frames', async () => {
    const source = sourceOver({ b: honest, c: honest });
    const frames = await source.fetchFrames(1, 2, 3);
    expect([...frames.keys()].sort()).toEqual([2, 3]);
    expect(source.distrusted(1)).toEqual([]);
  });
});
