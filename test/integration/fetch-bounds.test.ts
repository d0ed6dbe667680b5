// FetchSegment is capped by the segment's record (issue 11): a member that sends more bytes than
// the record's byte length, announces another total or sends chunks out of order is cut off (its
// stream cancelled, so it stops reading its file) and nothing it sent is installed. Real gRPC over
// 127.0.0.1, with a stub member that serves what the test tells it to.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { fetchSegmentFile } from '../../src/cluster/fetch-segment.js';
import { nodeDisk } from '../../src/io/index.js';
import { FetchedSegmentRejectedError, ReplicaSource, type SegmentMeta } from '../../src/replication/index.js';
import { type NodeApi, PeerClient, type RpcServer, startRpcServer } from '../../src/rpc/index.js';

const LOG = 'fetched';
const RECORD_BYTES = 256 * 1024;
const CHUNK_BYTES = 64 * 1024;

type Behaviour = 'honest' | 'endless' | 'other-total' | 'out-of-order' | 'short';
let behaviour: Behaviour = 'honest';
/** Chunks the member read from its "file" and whether its reader was released (call ended). */
let chunksRead = 0;
let released = false;
let server: RpcServer;
let client: PeerClient;
let dir = '';

const file = Buffer.alloc(RECORD_BYTES, 7);

async function* chunks(): AsyncGenerator<Buffer> {
  try {
    for (let offset = 0; behaviour === 'endless' || offset < RECORD_BYTES; offset += CHUNK_BYTES) {
      chunksRead += 1;
      if (behaviour === 'out-of-order' && offset === CHUNK_BYTES) offset += CHUNK_BYTES;
      if (behaviour === 'short' && offset + CHUNK_BYTES >= RECORD_BYTES) return;
      yield file.subarray(0, CHUNK_BYTES);
    }
  } finally {
    released = true;
  }
}

function stubApi(): NodeApi {
  return {
    logger: pino({ level: 'silent' }),
    handlers: {
      openSegmentFile: async () => ({ totalBytes: behaviour === 'other-total' ? RECORD_BYTES * 4 : RECORD_BYTES, chunks: chunks() }),
    },
  } as unknown as NodeApi;
}

function meta(byteLength = RECORD_BYTES): SegmentMeta {
  return { log: LOG, segmentId: 1, ensemble: ['self', 'member'], ackQuorum: 2, state: 'SEALED', writerEpoch: 1, firstIndex: 1, lastIndex: 10, indexCount: 10, byteLength, aggregate: '0123456789abcdef', createdMs: 1 };
}

beforeAll(async () => {
  server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 });
  client = new PeerClient(`127.0.0.1:${server.port}`);
  dir = await mkdtemp(join(tmpdir(), 'wal-fetch-bounds-'));
});
afterAll(async () => {
  client?.close();
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => {
  chunksRead = 0;
  released = false;
});

describe('FetchSegment bounded by the record', () => {
  it('an honest member: the whole file, exactly as many bytes as the record says', async () => {
    behaviour = 'honest';
    const path = join(dir, 'honest.wal');
    await fetchSegmentFile(client, nodeDisk, meta(), path);
    expect((await readFile(path)).byteLength).toBe(RECORD_BYTES);
  });

  for (const [what, hostile, readMax] of [
    ['sends without end', 'endless', RECORD_BYTES / CHUNK_BYTES + 8],
    ['announces another total', 'other-total', 8],
    ['sends a chunk out of order', 'out-of-order', 8],
    ['ends short of the record', 'short', RECORD_BYTES / CHUNK_BYTES + 1],
  ] as const) {
    it(`a member that ${what} is refused and its stream cancelled`, async () => {
      behaviour = hostile;
      const path = join(dir, `${hostile}.wal`);
      const error = await fetchSegmentFile(client, nodeDisk, meta(), path).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(FetchedSegmentRejectedError);
      // Never more than the record on disk: the cap holds before any byte past it is written.
      expect((await readFile(path)).byteLength).toBeLessThanOrEqual(RECORD_BYTES);
      // The member's reader was released: the call ended, it does not stream on to its deadline.
      await expect.poll(() => released, { timeout: 5_000 }).toBe(true);
      expect(chunksRead).toBeLessThanOrEqual(readMax + 64); // what flow control let through
    });
  }

  it('a refused copy leaves nothing behind in the repair source: no file, no temporary directory', async () => {
    behaviour = 'endless';
    const temp = await mkdtemp(join(dir, 'source-'));
    const source = new ReplicaSource({
      log: LOG,
      self: 'self',
      peers: () => undefined,
      segmentMeta: async () => meta(),
      fetchFile: (_node, _segmentId, path) => fetchSegmentFile(client, nodeDisk, meta(), path),
      tempDir: temp,
      disk: nodeDisk,
      logger: pino({ level: 'silent' }),
      entryBytesMax: 1024 * 1024,
    });
    const path = await source.fetchSegmentFile(1, { segmentId: 1, firstIndex: 1, lastIndex: 10, indexCount: 10, aggregateChecksum: 0x0123456789abcdefn });
    expect(path).toBeUndefined();
    expect(await readdir(temp)).toEqual([]);
    await source.cleanup();
  });

  it('a segment etcd does not record as sealed is not fetched at all', async () => {
    behaviour = 'honest';
    await expect(fetchSegmentFile(client, nodeDisk, { ...meta(), state: 'OPEN' }, join(dir, 'open.wal'))).rejects.toThrow(/not sealed/);
    expect(chunksRead).toBe(0);
  });
});
