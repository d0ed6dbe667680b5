// Requests that do not decode, over TLS (issue 11): the role guard decides first (no certificate:
// UNAUTHENTICATED; a role not allowed: PERMISSION_DENIED, whatever the bytes), then a request that
// is no valid protobuf message is INVALID_ARGUMENT (grpc-js alone answers INTERNAL) and never
// reaches the node. Every method of every service, as admin and without a certificate.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCerts } from '../../src/cli/certs.js';
import { METHOD_ROLES, type NodeApi, type RpcServer, type Transport, loadTransport, startRpcServer } from '../../src/rpc/index.js';
import { callRaw, methodsOf } from '../support/raw-call.js';

let dir = '';
let server: RpcServer;
let admin: Transport;
let ca: Buffer;
let reached = 0;

/** A node that counts every operation that reaches it. */
function stubApi(): NodeApi {
  const count = (): never => {
    reached += 1;
    throw new Error('reached the node');
  };
  return {
    handlers: new Proxy({}, { get: () => async () => count() }),
    logger: pino({ level: 'silent' }),
    ...Object.fromEntries(['append', 'clusterStatus', 'repairSegment', 'repairCopy', 'recoveryMetrics', 'watchEvents'].map((k) => [k, count])),
    read: async function* () {
      yield count();
    },
    validate: async function* () {
      yield count();
    },
    validateCopies: async function* () {
      yield count();
    },
  } as unknown as NodeApi;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-decode-tls-'));
  const certs = await makeCerts({ outDir: join(dir, 'cluster'), nodes: ['n1'] });
  const node = await loadTransport({ ca: certs.ca, cert: certs.nodes['n1']?.cert as string, key: certs.nodes['n1']?.key as string });
  admin = await loadTransport({ ca: certs.ca, ...certs.admin });
  ca = (node as { ca: Buffer }).ca;
  server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, { transport: node });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function codesAs(credentials: grpc.ChannelCredentials): Promise<Record<string, string>> {
  const client = new grpc.Client(`127.0.0.1:${server.port}`, credentials, { 'grpc.ssl_target_name_override': 'n1', 'grpc.default_authority': 'n1' });
  const codes: Record<string, string> = {};
  try {
    // Field 15 with wire type 7: there is no such wire type, no decoder accepts it.
    for (const method of methodsOf()) {
      const { code, details } = await callRaw(client, method, [Buffer.from([0x7f, 0x00])], 10_000);
      codes[method.name] = code === grpc.status.INVALID_ARGUMENT && !/not a valid protobuf message/.test(details) ? `INVALID_ARGUMENT (${details})` : (grpc.status[code] ?? String(code));
    }
  } finally {
    client.close();
  }
  return codes;
}

describe('undecodable requests over TLS', () => {
  it('as admin: INVALID_ARGUMENT where the role may call, PERMISSION_DENIED elsewhere; the node never reached', async () => {
    if (admin.kind !== 'tls') throw new Error('tls only');
    const codes = await codesAs(grpc.credentials.createSsl(admin.ca, admin.key, admin.cert));
    const want = Object.fromEntries(Object.keys(codes).map((m) => [m, METHOD_ROLES[m]?.includes('admin') ? 'INVALID_ARGUMENT' : 'PERMISSION_DENIED']));
    expect(codes).toEqual(want);
    expect(reached).toBe(0);
  });

  it('without a certificate: UNAUTHENTICATED on every method, whatever the bytes', async () => {
    const codes = await codesAs(grpc.credentials.createSsl(ca));
    expect(Object.values(codes).every((c) => c === 'UNAUTHENTICATED'), JSON.stringify(codes)).toBe(true);
    expect(Object.keys(codes).length).toBe(Object.keys(METHOD_ROLES).length);
    expect(reached).toBe(0);
  });
});
