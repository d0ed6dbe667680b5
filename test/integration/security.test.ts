// The secured transport, over real TLS on 127.0.0.1 with certificates made by openssl
// (src/cli/certs.ts): every method of every service, called by every kind of caller, is let
// through or refused exactly as METHOD_ROLES says. A call let through reaches the service (a stub
// node whose every operation fails with INVALID_ARGUMENT, or the request's validation); a call
// refused never does, and answers UNAUTHENTICATED (no certificate, one from another CA, an
// expired one) or PERMISSION_DENIED (a role not allowed).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CertsLayout, issue, makeCerts } from '../../src/cli/certs.js';
import { BadRequestError } from '../../src/replication/index.js';
import { INSECURE, METHOD_ROLES, type NodeApi, type RpcServer, TlsConfigError, type Transport, checkNodeCertificate, loadTransport, startRpcServer } from '../../src/rpc/index.js';
import { loadProto } from '../../src/rpc/proto.js';

let dir: string;
let certs: CertsLayout;
let server: RpcServer;
let refused: string[] = [];
const callers = new Map<string, grpc.ChannelCredentials>();

const REACHED = 'reached the handler';
const reached = (): never => {
  throw new BadRequestError('test', REACHED);
};

/** A node whose every operation fails at once: what matters is whether a call gets there. */
function stubApi(): NodeApi {
  const handlers = new Proxy({}, { get: () => async () => reached() });
  return {
    handlers,
    logger: pino({ level: 'silent' }),
    append: async () => reached(),
    read: async function* () {
      yield reached();
    },
    clusterStatus: async () => reached(),
    repairSegment: async () => reached(),
    validate: async function* () {
      yield reached();
    },
    repairCopy: async () => reached(),
    validateCopies: async function* () {
      yield reached();
    },
    recoveryMetrics: () => reached(),
    watchEvents: () => reached(),
  } as unknown as NodeApi;
}

function tlsCredentials(transport: Transport): grpc.ChannelCredentials {
  if (transport.kind !== 'tls') throw new Error('tls only');
  return grpc.credentials.createSsl(transport.ca, transport.key, transport.cert);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-tls-'));
  certs = await makeCerts({ outDir: join(dir, 'cluster'), nodes: ['n1'] });
  const other = await makeCerts({ outDir: join(dir, 'other'), nodes: ['x1'] });
  const expired = await issue(join(dir, 'cluster'), 'expired', { name: 'old-admin', role: 'admin', days: -1 });
  const nodeTransport = await loadTransport({ ca: certs.ca, cert: certs.nodes['n1']?.cert as string, key: certs.nodes['n1']?.key as string });
  server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, { transport: nodeTransport, onRefused: (method, code) => refused.push(`${method}:${code}`) });
  const as = async (paths: { cert: string; key: string }, ca = certs.ca): Promise<grpc.ChannelCredentials> => tlsCredentials(await loadTransport({ ca, ...paths }));
  callers.set('peer', await as(certs.nodes['n1'] as { cert: string; key: string }));
  callers.set('client', await as(certs.client));
  callers.set('admin', await as(certs.admin));
  callers.set('expired', await as(expired));
  // Its own CA trusts our server? No: it is given ours to trust the server, and presents a
  // certificate our CA never signed.
  callers.set('other-ca', await as(other.admin));
  callers.set('no-certificate', grpc.credentials.createSsl((nodeTransport as { ca: Buffer }).ca));
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

type Outcome = 'reached' | 'UNAUTHENTICATED' | 'PERMISSION_DENIED' | string;

function callOnce(service: 'WalService' | 'PeerService' | 'AdminService', method: string, credentials: grpc.ChannelCredentials): Promise<Outcome> {
  const { proto } = loadProto();
  const Ctor = proto.walrecovery.v1[service] as unknown as grpc.ServiceClientConstructor;
  const client = new Ctor(`127.0.0.1:${server.port}`, credentials, { 'grpc.ssl_target_name_override': 'n1', 'grpc.default_authority': 'n1' }) as unknown as Record<string, (...args: unknown[]) => unknown> & grpc.Client;
  const attrs = Ctor.service[method] as grpc.MethodDefinition<unknown, unknown>;
  const deadline = { deadline: new Date(Date.now() + 10_000) };
  const outcome = (error: grpc.ServiceError | null): Outcome => {
    if (!error) return 'ok';
    // Past the guard: the stub's answer, or the request's validation (the empty requests this
    // test sends fail it for the peer methods), which runs after the guard.
    if (error.code === grpc.status.INVALID_ARGUMENT) return 'reached';
    return grpc.status[error.code] ?? String(error.code);
  };
  return new Promise<Outcome>((resolve) => {
    const finish = (o: Outcome): void => {
      client.close();
      resolve(o);
    };
    const fn = client[method] as (...args: unknown[]) => unknown;
    if (!attrs.requestStream && !attrs.responseStream) {
      fn.call(client, {}, new grpc.Metadata(), deadline, (error: grpc.ServiceError | null) => finish(outcome(error)));
    } else if (attrs.requestStream && !attrs.responseStream) {
      const stream = fn.call(client, new grpc.Metadata(), deadline, (error: grpc.ServiceError | null) => finish(outcome(error))) as grpc.ClientWritableStream<unknown>;
      stream.write({ log: 'l', payloads: [Buffer.from('x')] });
      stream.end();
    } else {
      const stream = fn.call(client, {}, new grpc.Metadata(), deadline) as grpc.ClientReadableStream<unknown>;
      stream.on('data', () => undefined);
      stream.on('error', (error: grpc.ServiceError) => finish(outcome(error)));
      stream.on('end', () => finish('ended without a status error'));
    }
  });
}

function expected(method: string, caller: string): Outcome {
  if (!['peer', 'client', 'admin'].includes(caller)) return 'UNAUTHENTICATED';
  return (METHOD_ROLES[method] ?? []).includes(caller as 'peer') ? 'reached' : 'PERMISSION_DENIED';
}

describe('every method x every caller over TLS', () => {
  it('behaves as METHOD_ROLES says in 100% of the cells, and counts each refusal', async () => {
    const { proto } = loadProto();
    const cells: Array<{ cell: string; got: Outcome; want: Outcome }> = [];
    refused = [];
    // Every service the proto package defines, not a list kept by hand: a service added later
    // is in the table (or refused to everyone) by construction.
    const services = Object.entries(proto.walrecovery.v1)
      .filter(([, value]) => typeof (value as { service?: unknown }).service === 'object')
      .map(([name]) => name as 'WalService' | 'PeerService' | 'AdminService');
    expect([...services].sort()).toEqual(['AdminService', 'PeerService', 'WalService']);
    for (const service of services) {
      const methods = Object.keys((proto.walrecovery.v1[service] as unknown as grpc.ServiceClientConstructor).service);
      for (const name of methods) {
        const method = `${service}.${name}`;
        expect(METHOD_ROLES[method], `${method} is in the table`).toBeDefined();
        for (const [caller, credentials] of callers) {
          cells.push({ cell: `${method} as ${caller}`, got: await callOnce(service, name, credentials), want: expected(method, caller) });
        }
      }
    }
    const wrong = cells.filter((c) => c.got !== c.want).map((c) => `${c.cell}: got ${c.got}, want ${c.want}`);
    expect(wrong).toEqual([]);
    expect(cells.length).toBe(Object.keys(METHOD_ROLES).length * callers.size);
    expect(refused.length).toBe(cells.filter((c) => c.want !== 'reached').length);
  }, 120_000);

  it('only admin repairs, validates or watches; the per-node parts of its fan-out are peer-only', () => {
    // Pinned here, not only read from METHOD_ROLES: a peer certificate alone must not order a
    // repair with a strategy of its choosing (review finding 11).
    for (const method of ['RepairSegment', 'Validate', 'GetRecoveryMetrics', 'WatchRecoveryEvents']) expect(METHOD_ROLES[`AdminService.${method}`]).toEqual(['admin']);
    for (const method of ['RepairCopy', 'ValidateCopies']) expect(METHOD_ROLES[`PeerService.${method}`]).toEqual(['peer']);
  });

  it('a plaintext client against the TLS port fails cleanly (UNAVAILABLE), and the node keeps serving', async () => {
    expect(await callOnce('AdminService', 'GetClusterStatus', grpc.credentials.createInsecure())).toBe('UNAVAILABLE');
    expect(await callOnce('AdminService', 'GetClusterStatus', callers.get('admin') as grpc.ChannelCredentials)).toBe('reached');
  });

  it('unreadable certificate files are a clear error naming the file', async () => {
    await expect(loadTransport({ ca: join(dir, 'nope.pem'), cert: certs.admin.cert, key: certs.admin.key })).rejects.toThrow(/cannot read the TLS CA certificate .*nope\.pem/);
    expect(INSECURE.kind).toBe('insecure');
  });

  it('a node refuses to start with a certificate that does not name it (its writer calls would be refused)', async () => {
    const own = await loadTransport({ ca: certs.ca, cert: certs.nodes['n1']?.cert as string, key: certs.nodes['n1']?.key as string });
    expect(() => checkNodeCertificate(own, 'n1')).not.toThrow();
    expect(() => checkNodeCertificate(own, 'n2')).toThrow(TlsConfigError);
    const admin = await loadTransport({ ca: certs.ca, ...certs.admin });
    expect(() => checkNodeCertificate(admin, 'admin')).toThrow(/OU=peer/);
    expect(() => checkNodeCertificate(INSECURE, 'n2')).not.toThrow();
  });
});
