// The WalService Append adapters on a real gRPC server (127.0.0.1) over a fake node: a session is
// passed through and checked, only a peer may mark an append forwarded, and an AppendStream whose
// later message fails after earlier ones committed answers UNKNOWN with the committed range
// (a plain failure would invite a retry of the whole stream: duplicates, issue 12).
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { PeerHandlers, QuorumUnavailableError, type SessionRef } from '../../src/replication/index.js';
import { CHANNEL_OPTIONS, type NodeApi, type RpcServer, loadProto, startRpcServer } from '../../src/rpc/index.js';
import { WalClient as WalRpcClient } from '../../src/rpc/index.js';

const silent = pino({ level: 'silent' });
let server: RpcServer | undefined;
const calls: Array<{ payloads: number; forwarded: boolean; session: SessionRef | undefined }> = [];
let next = 1;

function notUsed(): never {
  throw new Error('not used by this test');
}

beforeAll(async () => {
  const api: NodeApi = {
    handlers: undefined as unknown as PeerHandlers,
    logger: silent,
    append: async (_log, payloads, options) => {
      calls.push({ payloads: payloads.length, forwarded: options.forwarded, session: options.session });
      if (payloads[0]?.toString() === 'fail') throw new QuorumUnavailableError('x', 1, 2);
      const firstIndex = next;
      next += payloads.length;
      return { firstIndex, lastIndex: next - 1 };
    },
    read: notUsed,
    clusterStatus: notUsed,
    repairSegment: notUsed,
    validate: notUsed,
    repairCopy: notUsed,
    validateCopies: notUsed,
    recoveryMetrics: notUsed,
    watchEvents: notUsed,
  };
  server = await startRpcServer(api, { host: '127.0.0.1', port: 0 });
});

afterAll(async () => {
  await server?.stop();
});

describe('Append and AppendStream adapters', () => {
  it('passes a session through and refuses a malformed one', async () => {
    const client = new WalRpcClient(`127.0.0.1:${server?.port}`);
    try {
      const session = { sessionId: '0f'.repeat(16), sequence: 7 };
      await client.append('x', [Buffer.from('a')], { session, forwarded: true });
      expect(calls.at(-1)).toEqual({ payloads: 1, forwarded: true, session }); // plaintext: every caller is trusted alike
      await expect(client.append('x', [Buffer.from('a')], { session: { sessionId: '0f'.repeat(16), sequence: 0 } })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    } finally {
      client.close();
    }
  });

  it('an AppendStream that fails after committing earlier messages answers UNKNOWN with the committed range', async () => {
    const { proto } = loadProto();
    const raw = new proto.walrecovery.v1.WalService(`127.0.0.1:${server?.port}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    try {
      const error = await new Promise<grpc.ServiceError | undefined>((resolve) => {
        const stream = raw.AppendStream({ deadline: new Date(Date.now() + 5_000) }, (e) => resolve(e ?? undefined));
        stream.write({ log: 'x', payloads: [Buffer.from('ok-1'), Buffer.from('ok-2')] });
        stream.write({ log: 'x', payloads: [Buffer.from('fail')] });
        stream.end();
      });
      expect(error?.code).toBe(grpc.status.UNKNOWN);
      expect(error?.details).toMatch(/the first 2 of 3 payloads were appended/);
    } finally {
      raw.close();
    }
  });
});
