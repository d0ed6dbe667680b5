// PeerClient.segmentInfo pages through a member's checksums (issue 11: a huge segment never makes
// an answer over the message limit) and refuses a member whose pages do not follow on from each
// other, instead of looping or stitching a wrong list. Real gRPC over 127.0.0.1 with a stub member
// serving a segment of many entries.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SegmentInfoPage } from '../../src/replication/index.js';
import { type NodeApi, PeerClient, type RpcServer, startRpcServer } from '../../src/rpc/index.js';
import { MESSAGE_BYTES_MAX } from '../../src/rpc/clients.js';

// 2 million checksums: about 36 MB as one answer (18 bytes each), over the 32 MiB message limit.
const ENTRIES = 2_000_000;
const FIRST = 7;
let lie = false;
let pagesServed = 0;
let server: RpcServer;
let client: PeerClient;

const checksumOf = (index: number): string => index.toString(16).padStart(16, '0');

function stubApi(): NodeApi {
  return {
    logger: pino({ level: 'silent' }),
    handlers: {
      segmentInfo: async (_log: string, _segment: number, withChecksums: boolean, page: { fromIndex?: number; countMax?: number }): Promise<SegmentInfoPage> => {
        pagesServed += 1;
        const last = FIRST + ENTRIES - 1;
        const from = Math.max(page.fromIndex || FIRST, FIRST) + (lie && (page.fromIndex ?? 0) > 0 ? 1 : 0);
        const count = Math.min(page.countMax || 65_536, 65_536, last - from + 1);
        const checksums = withChecksums ? Array.from({ length: count }, (_, i) => checksumOf(from + i)) : [];
        const next = withChecksums && from + count <= last ? from + count : 0;
        return { present: true, sealed: true, firstIndex: FIRST, lastIndex: last, indexCount: ENTRIES, byteLength: 1, aggregate: '0'.repeat(16), checksums, damaged: false, checksumsFromIndex: from, nextIndex: next };
      },
    },
  } as unknown as NodeApi;
}

beforeAll(async () => {
  server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 });
  client = new PeerClient(`127.0.0.1:${server.port}`, 30_000);
});
afterAll(async () => {
  client?.close();
  await server?.stop();
});

describe('SegmentInfo checksums in pages', () => {
  it('a segment whose checksums exceed the message limit arrives whole, in order', async () => {
    expect(ENTRIES * 18).toBeGreaterThan(MESSAGE_BYTES_MAX);
    lie = false;
    pagesServed = 0;
    const info = await client.segmentInfo('l', 1, true);
    expect(info.checksums.length).toBe(ENTRIES);
    expect(info.checksums[0]).toBe(checksumOf(FIRST));
    expect(info.checksums[ENTRIES - 1]).toBe(checksumOf(FIRST + ENTRIES - 1));
    expect(info.checksums.every((c, i) => c === checksumOf(FIRST + i))).toBe(true);
    expect(pagesServed).toBe(Math.ceil(ENTRIES / 65_536));
  }, 60_000);

  it('a member whose next page does not start where it said is refused', async () => {
    lie = true;
    const error = await client.segmentInfo('l', 1, true, 1_000).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/page/);
    expect(error).not.toHaveProperty('code', grpc.status.OK);
    lie = false;
  });
});
