// The repair strategy is parsed once, at the RPC edge (src/rpc/server.ts): a RepairSegment call
// hands the node a RepairStrategy (none when the caller sent none: each node then uses its own), and a name that is no
// strategy is answered INVALID_ARGUMENT before the node sees the call. Real gRPC over 127.0.0.1,
// with a stub node that records what it was given.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RepairStrategy } from '../../src/recovery/index.js';
import { AdminClient, type NodeApi, type RpcServer, startRpcServer } from '../../src/rpc/index.js';

let server: RpcServer;
let admin: AdminClient;
const given: Array<RepairStrategy | undefined> = [];

beforeAll(async () => {
  const api = {
    handlers: {},
    logger: pino({ level: 'silent' }),
    repairSegment: async (_log: string, segmentId: number, node: string, strategy: RepairStrategy | undefined) => {
      given.push(strategy);
      return [{ node: node || 'n1', segment: segmentId, decision: 'keep', outcome: 'done', repaired: [], lost: [], truncated: [], bytesWritten: 0, detail: 'stub' }];
    },
  } as unknown as NodeApi;
  server = await startRpcServer(api, { host: '127.0.0.1', port: 0 });
  admin = new AdminClient(`127.0.0.1:${server.port}`);
});
afterAll(async () => {
  admin?.close();
  await server?.stop();
});

describe('RepairSegment: the strategy at the RPC edge', () => {
  it('passes a named strategy on as it is, and none (each node uses its own) when none is sent', async () => {
    given.length = 0;
    await admin.repairSegment({ log: 'l', segmentId: 3, strategy: 'rollback' });
    await admin.repairSegment({ log: 'l', segmentId: 3 });
    expect(given).toEqual(['rollback', undefined]);
  });

  it('answers INVALID_ARGUMENT to a name that is no strategy, without calling the node', async () => {
    given.length = 0;
    // A caller of another version (or a hand-made request) may send any string.
    const error = await admin.repairSegment({ log: 'l', segmentId: 3, strategy: 'sometimes' as RepairStrategy }).catch((e: unknown) => e as grpc.ServiceError);
    expect((error as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((error as grpc.ServiceError).details).toMatch(/repairStrategy: must be one of partial, skip, rollback, halt/);
    expect(given).toEqual([]);
  });
});
