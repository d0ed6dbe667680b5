// TLS with client certificates to etcd: a real etcd on 127.0.0.1 serving https only with
// --client-cert-auth, certificates from `wal-recovery certs` (its own etcd CA, etcd's server
// certificate, the nodes' client certificate). A node started with --etcd-ca/--etcd-cert/--etcd-key
// registers and keeps its metadata there; a client without a certificate is turned away by etcd;
// the flags' mistakes are usage errors (exit 2); `certs --keep-existing` keeps what exists.
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { noop } from 'cockatiel';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CertsLayout } from '../../src/cli/certs.js';
import { loadTransport } from '../../src/rpc/index.js';
import { TestCluster, readAll } from '../support/cluster.js';
import { cliProcess, makeCertsWithCli } from '../support/cli.js';
import { EtcdServer } from '../support/etcd.js';

const LOG = 'etcd-tls';
let dir: string;
let certs: CertsLayout;
let etcd: EtcdServer;
let cluster: TestCluster | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-etcd-tls-'));
  certs = await makeCertsWithCli(join(dir, 'certs'), ['n1']);
  etcd = await EtcdServer.start({ tls: { ca: certs.etcd.ca, ...certs.etcd.server, client: certs.etcd.client } });
}, 60_000);

afterAll(async () => {
  await cluster?.dispose();
  await etcd?.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('etcd with --client-cert-auth', () => {
  it('a node with --etcd-ca, --etcd-cert and --etcd-key registers there and keeps its logs\' metadata', async () => {
    expect(etcd.endpoint).toMatch(/^https:\/\/127\.0\.0\.1:/);
    cluster = await TestCluster.start({
      size: 1,
      etcd: etcd.endpoint,
      clientTransport: await loadTransport({ ca: certs.ca, ...certs.client }),
      nodeArgs: (id) => [
        '--replication', '1',
        '--tls-ca', certs.ca, '--tls-cert', certs.nodes[id]?.cert as string, '--tls-key', certs.nodes[id]?.key as string,
        '--etcd-ca', certs.etcd.ca, '--etcd-cert', certs.etcd.client.cert, '--etcd-key', certs.etcd.client.key,
      ],
    });
    const node = cluster.nodes[0];
    if (!node) throw new Error('no node');
    const appended = await node.walClient().append(LOG, [Buffer.from('one'), Buffer.from('two')], { createIfMissing: true, deadlineMs: 20_000 });
    expect(appended).toMatchObject({ firstIndex: 1, lastIndex: 2 });
    const back = await readAll(node.walClient(), LOG);
    expect(back.payloads.map((p) => p.toString())).toEqual(['one', 'two']);
    const { status } = await cluster.logStatus(LOG);
    expect(status.members.map((m) => m.id)).toEqual(['n1']);
  }, 90_000);

  it('turns away a client that trusts etcd\'s CA but presents no certificate', async () => {
    const anonymous = new Etcd3({
      hosts: etcd.endpoint,
      credentials: { rootCertificate: await readFile(certs.etcd.ca) },
      faultHandling: { host: () => noop, global: noop },
      defaultCallOptions: () => ({ deadline: new Date(Date.now() + 3_000) }),
    });
    try {
      await expect(anonymous.get('anything').string()).rejects.toThrow();
    } finally {
      anonymous.close();
    }
    const withCert = new Etcd3({
      hosts: etcd.endpoint,
      credentials: { rootCertificate: await readFile(certs.etcd.ca), certChain: await readFile(certs.etcd.client.cert), privateKey: await readFile(certs.etcd.client.key) },
      faultHandling: { host: () => noop, global: noop },
      defaultCallOptions: () => ({ deadline: new Date(Date.now() + 3_000) }),
    });
    try {
      expect(await withCert.get('anything').string()).toBeNull();
    } finally {
      withCert.close();
    }
  }, 30_000);

  it('flag mistakes are usage errors: TLS files with an http:// endpoint, a certificate without its key, a key without a CA', async () => {
    const base = ['node', '--id', 'x1', '--data-dir', join(dir, 'x1'), '--listen', '127.0.0.1:0', '--insecure'];
    const http = await cliProcess([...base, '--etcd', 'http://127.0.0.1:1', '--etcd-ca', certs.etcd.ca]);
    expect(http.code).toBe(2);
    expect(http.stderr).toMatch(/needs https:\/\/ endpoints/);
    const half = await cliProcess([...base, '--etcd', 'https://127.0.0.1:1', '--etcd-ca', certs.etcd.ca, '--etcd-cert', certs.etcd.client.cert]);
    expect(half.code).toBe(2);
    expect(half.stderr).toMatch(/--etcd-cert and --etcd-key go together/);
    const noCa = await cliProcess([...base, '--etcd', 'https://127.0.0.1:1'], { WAL_ETCD_CERT: certs.etcd.client.cert, WAL_ETCD_KEY: certs.etcd.client.key });
    expect(noCa.code).toBe(2);
    expect(noCa.stderr).toMatch(/go with --etcd-ca/);
  }, 30_000);

  it('certs makes a separate etcd CA, and --keep-existing keeps what exists and remakes only what is missing', async () => {
    const grpcCa = new X509Certificate(await readFile(certs.ca));
    const etcdCa = new X509Certificate(await readFile(certs.etcd.ca));
    expect(grpcCa.fingerprint256).not.toBe(etcdCa.fingerprint256);
    const server = new X509Certificate(await readFile(certs.etcd.server.cert));
    expect(server.checkIssued(etcdCa) && server.verify(etcdCa.publicKey)).toBe(true);
    expect(server.subjectAltName).toMatch(/IP Address:127\.0\.0\.1/);

    const out = join(dir, 'certs');
    const before = { ca: await readFile(certs.ca, 'utf8'), etcdCa: await readFile(certs.etcd.ca, 'utf8'), admin: await readFile(certs.admin.cert, 'utf8') };
    await rm(certs.client.cert);
    const again = await cliProcess(['certs', '--out', out, '--nodes', 'n1,n2', '--keep-existing']);
    expect(again.code, again.stderr).toBe(0);
    const layout = JSON.parse(again.stdout) as CertsLayout;
    expect(await readFile(layout.ca, 'utf8')).toBe(before.ca);
    expect(await readFile(layout.etcd.ca, 'utf8')).toBe(before.etcdCa);
    expect(await readFile(layout.admin.cert, 'utf8')).toBe(before.admin);
    for (const remade of [layout.client.cert, layout.nodes['n2']?.cert as string]) {
      const cert = new X509Certificate(await readFile(remade));
      expect(cert.checkIssued(grpcCa) && cert.verify(grpcCa.publicKey)).toBe(true);
    }
    // Without --keep-existing, everything is new.
    const fresh = await cliProcess(['certs', '--out', out, '--nodes', 'n1']);
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(await readFile(certs.ca, 'utf8')).not.toBe(before.ca);
  }, 60_000);
});
