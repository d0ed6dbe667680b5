// Revoked certificates (--tls-revoked), over real TLS on 127.0.0.1 with certificates made by the
// `certs` verb and named the way an operator reads them off with openssl (`-serial`,
// `-fingerprint -sha256`): a listed caller is refused UNAUTHENTICATED (logged and counted), the
// list is re-read when the file changes, a node refuses to connect to a listed server, and a
// list that cannot be read later keeps the last one in force.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CertsLayout } from '../../src/cli/certs.js';
import { BadRequestError } from '../../src/replication/index.js';
import { AdminClient, type NodeApi, type RpcServer, TlsConfigError, type Transport, loadTransport, parseRevocationList, startRpcServer } from '../../src/rpc/index.js';
import { makeCertsWithCli } from '../support/cli.js';

const run = promisify(execFile);
let dir: string;
let certs: CertsLayout;
let server: RpcServer;
let serverTransport: Transport;
let revokedPath: string;
const refused: string[] = [];

async function opensslField(cert: string, flag: string[]): Promise<string> {
  const { stdout } = await run('openssl', ['x509', '-in', cert, '-noout', ...flag]);
  return stdout.trim();
}

async function statusAs(paths: { cert: string; key: string }): Promise<string> {
  const client = new AdminClient(`127.0.0.1:${server.port}`, await loadTransport({ ca: certs.ca, ...paths }));
  try {
    await client.status('', 10_000);
    return 'OK';
  } catch (error) {
    const code = (error as grpc.ServiceError).code;
    // The stub answers INVALID_ARGUMENT: the call got past the guard.
    return code === grpc.status.INVALID_ARGUMENT ? 'reached' : (grpc.status[code] ?? String(code));
  } finally {
    client.close();
  }
}

async function eventually(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-revoked-'));
  certs = await makeCertsWithCli(join(dir, 'certs'), ['n1', 'n2']);
  revokedPath = join(dir, 'revoked.txt');
  // The client certificate by its serial, as openssl prints it ("serial=0A1B...").
  await writeFile(revokedPath, `# revoked on purpose\n${await opensslField(certs.client.cert, ['-serial'])}\n`);
  serverTransport = await loadTransport({ ca: certs.ca, cert: certs.nodes['n1']?.cert as string, key: certs.nodes['n1']?.key as string, revoked: revokedPath });
  const reached = (): never => {
    throw new BadRequestError('test', 'reached');
  };
  const api = { handlers: {}, logger: pino({ level: 'silent' }), clusterStatus: async () => reached() } as unknown as NodeApi;
  server = await startRpcServer(api, { host: '127.0.0.1', port: 0 }, { transport: serverTransport, onRefused: (method, code) => refused.push(`${method}:${code}`) });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  if (serverTransport?.kind === 'tls') serverTransport.revoked?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('revoked certificates', () => {
  it('refuses a listed caller UNAUTHENTICATED and counts it; others pass', async () => {
    refused.length = 0;
    expect(await statusAs(certs.client)).toBe('UNAUTHENTICATED');
    expect(await statusAs(certs.admin)).toBe('reached');
    expect(refused).toEqual(['AdminService.GetClusterStatus:UNAUTHENTICATED']);
  }, 30_000);

  it('re-reads the file when it changes (a SHA-256 fingerprint this time), and keeps the last list when it cannot be read', async () => {
    const fingerprint = await opensslField(certs.admin.cert, ['-fingerprint', '-sha256']);
    await writeFile(revokedPath, `${fingerprint}\n`);
    await eventually(async () => (await statusAs(certs.admin)) === 'UNAUTHENTICATED');
    // No longer listed: un-revoked once the file stayed the same for a poll (a file caught
    // mid-write must not un-revoke anyone; test/unit/revocation-list.test.ts).
    await eventually(async () => (await statusAs(certs.client)) === 'reached');
    await rm(revokedPath);
    await new Promise((r) => setTimeout(r, 1_500)); // past a poll
    expect(await statusAs(certs.admin)).toBe('UNAUTHENTICATED');
    await writeFile(revokedPath, '\n');
    await eventually(async () => (await statusAs(certs.admin)) === 'reached');
  }, 30_000);

  it('a node does not connect to a server whose certificate is listed', async () => {
    const list = join(dir, 'revoked-n1.txt');
    await writeFile(list, `${await opensslField(certs.nodes['n1']?.cert as string, ['-serial'])}\n`);
    const n2 = await loadTransport({ ca: certs.ca, cert: certs.nodes['n2']?.cert as string, key: certs.nodes['n2']?.key as string, revoked: list });
    const client = new AdminClient(`127.0.0.1:${server.port}`, n2);
    await expect(client.status('', 5_000)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    client.close();
    if (n2.kind === 'tls') n2.revoked?.close();
  }, 30_000);

  it('a missing list or a line that names nothing is a clear error at start', async () => {
    await expect(loadTransport({ ca: certs.ca, ...certs.admin, revoked: join(dir, 'nope.txt') })).rejects.toBeInstanceOf(TlsConfigError);
    expect(() => parseRevocationList('01\nnot hex\n')).toThrow(/line 2/);
    expect([...parseRevocationList('serial=00AB\nsha256 Fingerprint=' + 'ab:'.repeat(31) + 'AB\n')]).toEqual(['AB', 'AB'.repeat(32)]);
  });
});
