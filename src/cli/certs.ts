// Certificates for a secured cluster, made with the openssl command line tool: a CA, one
// certificate per node (role peer, OU=peer, valid for 127.0.0.1, localhost and the node's name),
// and one each for the client and admin roles. Keys are P-256. Roles are the subject's OU
// (src/rpc/security.ts); the node's name is its CN.
// etcd gets a CA of its own (etcd's --client-cert-auth lets in any certificate its CA signed, so
// the gRPC CA must not be it): a server certificate for etcd and one client certificate that
// every node presents to etcd.
// keepExisting (the --keep-existing of a one-shot step that runs on every `docker-compose up`)
// keeps each certificate whose two files exist, and remakes everything a remade CA signs.
import { execFile } from 'node:child_process';
import { access, chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Role } from '../rpc/index.js';

const run = promisify(execFile);

export interface CertsOptions {
  readonly outDir: string;
  readonly nodes: readonly string[];
  /** Extra host names or IP addresses every node certificate is valid for. */
  readonly hosts?: readonly string[];
  readonly days?: number;
  /** Keep certificates (and CAs) whose files exist; make only what is missing. */
  readonly keepExisting?: boolean;
}

export interface IdentityFiles {
  readonly cert: string;
  readonly key: string;
}

export interface CertsLayout {
  readonly ca: string;
  readonly caKey: string;
  readonly nodes: Readonly<Record<string, IdentityFiles>>;
  readonly client: IdentityFiles;
  readonly admin: IdentityFiles;
  /** etcd's own CA, the certificate etcd serves, and the one nodes present to etcd. */
  readonly etcd: { readonly ca: string; readonly caKey: string; readonly server: IdentityFiles; readonly client: IdentityFiles };
}

/** What a certificate is for: a role of the cluster (its OU), or one side of the etcd connection. */
export type CertKind = Role | 'etcd-server' | 'etcd-client';

function extendedKeyUsage(kind: CertKind): string {
  if (kind === 'peer') return 'serverAuth,clientAuth'; // a node serves and calls its peers
  return kind === 'etcd-server' ? 'serverAuth' : 'clientAuth';
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

async function openssl(args: readonly string[], cwd: string): Promise<void> {
  try {
    await run('openssl', [...args], { cwd });
  } catch (error) {
    const e = error as { code?: string; stderr?: string; message?: string };
    if (e.code === 'ENOENT') throw new Error('making certificates needs the openssl command (Debian: apt-get install openssl)');
    throw new Error(`openssl ${args[0] ?? ''} failed: ${(e.stderr ?? e.message ?? '').trim().split('\n').slice(-2).join(' ')}`);
  }
}

/** Makes one certificate signed by the CA in dir (ca.pem, ca.key): `<file>.pem` and `<file>.key`. */
export async function issue(dir: string, file: string, o: { name: string; role: CertKind; sans?: readonly string[]; days: number; ca?: { cert: string; key: string } }): Promise<IdentityFiles> {
  if (!NAME.test(o.name)) throw new Error(`certificate name '${o.name}': letters, digits, '.', '_' and '-' only`);
  const key = `${file}.key`;
  const cert = `${file}.pem`;
  const csr = `${file}.csr`;
  const ext = `${file}.ext`;
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${o.name}/OU=${o.role.startsWith('etcd') ? 'etcd' : o.role}`], dir);
  const sans = [...new Set(o.sans ?? [])]; // --hosts may repeat a default name
  const lines = ['basicConstraints=CA:FALSE', `extendedKeyUsage=${extendedKeyUsage(o.role)}`];
  if (sans.length > 0) lines.push(`subjectAltName=${sans.map((h) => (/^\d+\.\d+\.\d+\.\d+$/.test(h) ? `IP:${h}` : `DNS:${h}`)).join(',')}`);
  await writeFile(join(dir, ext), `${lines.join('\n')}\n`);
  const ca = o.ca ?? { cert: 'ca.pem', key: 'ca.key' };
  await openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', String(o.days), '-out', cert, '-extfile', ext], dir);
  await rm(join(dir, csr), { force: true });
  await rm(join(dir, ext), { force: true });
  await chmod(join(dir, key), 0o600);
  return { cert: join(dir, cert), key: join(dir, key) };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Makes a self-signed CA `<file>.pem` / `<file>.key` unless kept; whether it was made. */
async function makeCa(dir: string, file: string, subject: string, days: number, keep: boolean): Promise<boolean> {
  if (keep && (await exists(join(dir, `${file}.pem`))) && (await exists(join(dir, `${file}.key`)))) return false;
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${file}.key`, '-out', `${file}.pem`, '-subj', `/CN=${subject}`, '-days', String(days)], dir);
  await chmod(join(dir, `${file}.key`), 0o600);
  return true;
}

/** Makes a CA and the certificates of a cluster in outDir; returns where each file is. */
export async function makeCerts(o: CertsOptions): Promise<CertsLayout> {
  const days = o.days ?? 365;
  if (!Number.isSafeInteger(days) || days < 1) throw new Error(`--days must be a positive integer, got ${String(days)}`);
  if (o.nodes.length === 0) throw new Error('at least one node name is needed');
  const dir = o.outDir;
  const hosts = o.hosts ?? [];
  await mkdir(dir, { recursive: true });
  const keep = o.keepExisting === true;
  // A certificate is kept only while its CA is: one a new CA did not sign would be refused.
  const keepSigned = async (file: string, caKept: boolean): Promise<IdentityFiles | undefined> => {
    const files = { cert: join(dir, `${file}.pem`), key: join(dir, `${file}.key`) };
    return keep && caKept && (await exists(files.cert)) && (await exists(files.key)) ? files : undefined;
  };
  const caKept = !(await makeCa(dir, 'ca', 'wal-recovery CA', days, keep));
  const nodes: Record<string, IdentityFiles> = {};
  for (const node of o.nodes) {
    nodes[node] = (await keepSigned(`node-${node}`, caKept)) ?? (await issue(dir, `node-${node}`, { name: node, role: 'peer', sans: ['127.0.0.1', 'localhost', node, ...hosts], days }));
  }
  const client = (await keepSigned('client', caKept)) ?? (await issue(dir, 'client', { name: 'client', role: 'client', days }));
  const admin = (await keepSigned('admin', caKept)) ?? (await issue(dir, 'admin', { name: 'admin', role: 'admin', days }));
  const etcdCa = { cert: 'etcd-ca.pem', key: 'etcd-ca.key' };
  const etcdCaKept = !(await makeCa(dir, 'etcd-ca', 'wal-recovery etcd CA', days, keep));
  const etcdServer = (await keepSigned('etcd-server', etcdCaKept)) ?? (await issue(dir, 'etcd-server', { name: 'etcd', role: 'etcd-server', sans: ['127.0.0.1', 'localhost', 'etcd', ...hosts], days, ca: etcdCa }));
  const etcdClient = (await keepSigned('etcd-client', etcdCaKept)) ?? (await issue(dir, 'etcd-client', { name: 'wal-recovery-node', role: 'etcd-client', days, ca: etcdCa }));
  return {
    ca: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca.key'),
    nodes,
    client,
    admin,
    etcd: { ca: join(dir, etcdCa.cert), caKey: join(dir, etcdCa.key), server: etcdServer, client: etcdClient },
  };
}
