// A secured cluster end to end: a real etcd, three node processes started with TLS files made
// by `wal-recovery certs`, clients over TLS on 127.0.0.1. Nodes replicate to each other with
// their peer certificates; a client appends and reads with a client certificate; a caller
// without a certificate, or with a role not allowed, is refused with the status that says so;
// the CLI reaches the cluster with --tls-* flags (or WAL_TLS_* variables), and a partial set is
// a usage error (exit 2).
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CertsLayout } from '../../src/cli/certs.js';
import { AdminClient, INSECURE, PeerClient, WalClient, commonNameOf, loadTransport, sessionOwnerPrefix } from '../../src/rpc/index.js';
import { WalClient as SessionClient } from '../../src/client/index.js';
import { loadProto } from '../../src/rpc/proto.js';
import { TestCluster, readAll } from '../support/cluster.js';
import { cliProcess, makeCertsWithCli } from '../support/cli.js';
import { EtcdServer } from '../support/etcd.js';

const LOG = 'secured';
let dir: string;
let etcd: EtcdServer;
let cluster: TestCluster;
let certs: CertsLayout;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-secured-'));
  certs = await makeCertsWithCli(join(dir, 'certs'), ['n1', 'n2', 'n3']);
  etcd = await EtcdServer.start();
  cluster = await TestCluster.start({
    clientTransport: await loadTransport({ ca: certs.ca, ...certs.client }),
    size: 3,
    etcd: etcd.endpoint,
    nodeArgs: (id) => ['--tls-ca', certs.ca, '--tls-cert', certs.nodes[id]?.cert as string, '--tls-key', certs.nodes[id]?.key as string],
  });
}, 120_000);

afterAll(async () => {
  await cluster?.dispose();
  await etcd?.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('a cluster started with TLS', () => {
  it('replicates among its nodes and serves a client with a client certificate', async () => {
    const [n1, n2] = cluster.nodes;
    const payloads = Array.from({ length: 40 }, (_, i) => Buffer.from(`secured-${i}`));
    let last = 0;
    for (const chunk of [payloads.slice(0, 20), payloads.slice(20)]) {
      last = (await n1?.walClient().append(LOG, chunk, { createIfMissing: true, deadlineMs: 30_000 }))?.lastIndex ?? 0;
    }
    expect(last).toBe(40);
    const back = await readAll(n2?.walClient() as WalClient, LOG);
    expect(back.problems).toEqual([]);
    expect(back.payloads.map((p) => p.toString())).toEqual(payloads.map((p) => p.toString()));
  }, 60_000);

  it('refuses a caller without a certificate (UNAUTHENTICATED) and a client calling an admin method (PERMISSION_DENIED)', async () => {
    const target = cluster.nodes[0]?.target as string;
    // TLS that trusts the cluster CA but presents no certificate of its own.
    const { proto } = loadProto();
    const noCert = new proto.walrecovery.v1.AdminService(target, grpc.credentials.createSsl(await readFile(certs.ca)));
    const refused = await new Promise<grpc.ServiceError | null>((done) => noCert.GetClusterStatus({ log: '' }, { deadline: new Date(Date.now() + 10_000) }, (error) => done(error)));
    expect(refused?.code).toBe(grpc.status.UNAUTHENTICATED);
    noCert.close();
    const bare = new AdminClient(target, INSECURE);
    // Plaintext against the TLS port: the handshake fails, the caller sees UNAVAILABLE.
    await expect(bare.status('')).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    bare.close();
    const asClient = new AdminClient(target, await loadTransport({ ca: certs.ca, ...certs.client }));
    await expect(asClient.repairSegment({ log: LOG, segmentId: 1, node: '' })).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect((await asClient.status(LOG)).logs.length).toBeGreaterThanOrEqual(0); // a client may read the status
    asClient.close();
  }, 60_000);

  it('refuses writer calls from a peer that does not hold the epoch: the writer\'s open segment is not sealed below acknowledged entries', async () => {
    const admin = new AdminClient(cluster.nodes[0]?.target as string, await loadTransport({ ca: certs.ca, ...certs.admin }));
    const status = (await admin.status(LOG)).logs.find((l) => l.log === LOG);
    admin.close();
    const writer = status?.writer as string;
    const epoch = Number(status?.writer_epoch);
    const open = status?.segments.find((s) => s.state !== 'SEALED');
    expect(writer).toMatch(/^n\d$/);
    const others = cluster.nodes.filter((n) => n.id !== writer);
    for (const member of others) {
      // Another node's own peer certificate, the writer's epoch (public in the status): refused.
      const attacker = others.find((n) => n !== member) ?? member;
      const peer = new PeerClient(member.target, 10_000, await loadTransport({ ca: certs.ca, ...(certs.nodes[attacker.id] as { cert: string; key: string }) }));
      await expect(peer.seal(LOG, open?.segment_id ?? 1, epoch, 0, '')).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      await expect(peer.fence(LOG, open?.segment_id ?? 1, Number.MAX_SAFE_INTEGER)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      await expect(peer.fence('never-made', 1, epoch)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      peer.close();
    }
    // Validate of a log the cluster does not have is NOT_FOUND and creates nothing either.
    const asAdmin = new AdminClient(others[0]?.target as string, await loadTransport({ ca: certs.ca, ...certs.admin }));
    await expect((async () => {
      for await (const message of asAdmin.validate('never-made', others[0]?.id as string)) void message;
    })()).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    asAdmin.close();
    for (const member of cluster.nodes) await expect(stat(join(member.dataDir, 'logs', 'never-made'))).rejects.toMatchObject({ code: 'ENOENT' });
    // The writer's own calls still pass: appending and reading everything back works.
    const more = await cluster.nodes[0]?.walClient().append(LOG, [Buffer.from('after')], { deadlineMs: 30_000 });
    expect(more?.lastIndex).toBe(41);
    const back = await readAll(others[0]?.walClient() as WalClient, LOG);
    expect(back.payloads.length).toBe(41);
  }, 60_000);

  it('an admin repair and validate fan out over the peer-only methods; a peer certificate cannot call them on AdminService', async () => {
    const target = cluster.nodes[0]?.target as string;
    const asPeer = new AdminClient(target, await loadTransport({ ca: certs.ca, ...(certs.nodes['n2'] as { cert: string; key: string }) }));
    await expect(asPeer.repairSegment({ log: LOG, segmentId: 1, node: 'n1', dryRun: true })).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect((async () => {
      for await (const message of asPeer.validate(LOG, '')) void message;
    })()).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    asPeer.close();
    const asAdmin = new AdminClient(target, await loadTransport({ ca: certs.ca, ...certs.admin }));
    // Every member's part answered by that member (RepairCopy with n1's peer certificate).
    const repair = await asAdmin.repairSegment({ log: LOG, segmentId: 1, node: '', dryRun: true });
    expect(repair.results.map((r) => r.node).sort()).toEqual(['n1', 'n2', 'n3']);
    expect(repair.results.filter((r) => /not allowed|PERMISSION_DENIED/.test(r.detail))).toEqual([]);
    // A strategy other than the nodes' own is applied only by the node called.
    await expect(asAdmin.repairSegment({ log: LOG, segmentId: 1, node: '', strategy: 'rollback', dryRun: true })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    const findings = [];
    let done = 0;
    for await (const m of asAdmin.validate(LOG, '')) {
      if (m.done) done += 1;
      else findings.push(m);
    }
    expect(done).toBe(1);
    expect(findings).toEqual([]);
    asAdmin.close();
  }, 60_000);

  it('the CLI reaches it with --tls-* flags or WAL_TLS_* variables; a partial set is a usage error', async () => {
    const target = cluster.nodes[1]?.target as string;
    const flags = ['--tls-ca', certs.ca, '--tls-cert', certs.admin.cert, '--tls-key', certs.admin.key];
    const status = await cliProcess(['status', '--target', target, '--log', LOG, '--json', ...flags]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain(LOG);
    const viaEnv = await cliProcess(['validate', '--target', target, '--log', LOG, '--json'], { WAL_TLS_CA: certs.ca, WAL_TLS_CERT: certs.admin.cert, WAL_TLS_KEY: certs.admin.key });
    expect(viaEnv.code, viaEnv.stderr).toBe(0);
    const partial = await cliProcess(['status', '--target', target, '--tls-ca', certs.ca]);
    expect(partial.code).toBe(2);
    expect(partial.stderr).toMatch(/all three of --tls-ca, --tls-cert and --tls-key/);
    const plaintext = await cliProcess(['status', '--target', target, '--insecure']);
    // Plaintext against the TLS port: the handshake fails; one line, exit 2, the node keeps serving.
    expect(plaintext.code).toBe(2);
    expect(plaintext.stderr.trim().split('\n')).toHaveLength(1);
    expect(plaintext.stderr).toMatch(/gRPC status 14/);
    expect((await cliProcess(['status', '--target', target, '--all-logs', ...flags])).code).toBe(0);
  }, 60_000);

  it('binds a session to the client certificate: an id bound to another name is refused (PERMISSION_DENIED), WalClient\'s own ids are accepted (issue 12)', async () => {
    const target = cluster.nodes[1]?.target as string; // not necessarily the writer: checked before forwarding
    const clientName = commonNameOf(await readFile(certs.client.cert)) as string;
    const adminName = commonNameOf(await readFile(certs.admin.cert)) as string;
    expect(clientName).not.toBe(adminName);
    const asClient = new WalClient(target, await loadTransport({ ca: certs.ca, ...certs.client }));
    const asAdmin = new WalClient(target, await loadTransport({ ca: certs.ca, ...certs.admin }));
    const owned = `${sessionOwnerPrefix(clientName)}${'11'.repeat(8)}`;
    const first = await asClient.append(LOG, [Buffer.from('owned-1')], { deadlineMs: 30_000, session: { sessionId: owned, sequence: 1 } });
    // Another certificate cannot claim the session (nor have the owner's batch answered to it).
    await expect(asAdmin.append(LOG, [Buffer.from('claimed')], { deadlineMs: 30_000, session: { sessionId: owned, sequence: 1 } })).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(asClient.append(LOG, [Buffer.from('unbound')], { deadlineMs: 30_000, session: { sessionId: 'ab'.repeat(16), sequence: 1 } })).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect(await asClient.append(LOG, [Buffer.from('owned-1')], { deadlineMs: 30_000, session: { sessionId: owned, sequence: 1 } })).toEqual(first);
    asClient.close();
    asAdmin.close();
    const client = await SessionClient.connect({ targets: [target], log: LOG, tls: { ca: await readFile(certs.ca), cert: await readFile(certs.client.cert), key: await readFile(certs.client.key) } });
    try {
      expect(client.sessionId.startsWith(sessionOwnerPrefix(clientName))).toBe(true);
      expect((await client.append(Buffer.from('through-walclient'))).lastIndex).toBeGreaterThan(first.lastIndex);
    } finally {
      await client.close();
    }
  }, 90_000);
});
