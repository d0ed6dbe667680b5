// Certificates for a secured cluster, made with the openssl command line tool: a CA, one
// certificate per node (role peer, OU=peer, valid for 127.0.0.1, localhost and the node's name),
// and one each for the client and admin roles. Keys are P-256. Roles are the subject's OU
// (src/rpc/security.ts); the node's name is its CN.
import { execFile } from 'node:child_process';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
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
export async function issue(dir: string, file: string, o: { name: string; role: Role; sans?: readonly string[]; days: number; ca?: { cert: string; key: string } }): Promise<IdentityFiles> {
  if (!NAME.test(o.name)) throw new Error(`certificate name '${o.name}': letters, digits, '.', '_' and '-' only`);
  const key = `${file}.key`;
  const cert = `${file}.pem`;
  const csr = `${file}.csr`;
  const ext = `${file}.ext`;
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${o.name}/OU=${o.role}`], dir);
  const sans = o.sans ?? [];
  const lines = ['basicConstraints=CA:FALSE', `extendedKeyUsage=${o.role === 'peer' ? 'serverAuth,clientAuth' : 'clientAuth'}`];
  if (sans.length > 0) lines.push(`subjectAltName=${sans.map((h) => (/^\d+\.\d+\.\d+\.\d+$/.test(h) ? `IP:${h}` : `DNS:${h}`)).join(',')}`);
  await writeFile(join(dir, ext), `${lines.join('\n')}\n`);
  const ca = o.ca ?? { cert: 'ca.pem', key: 'ca.key' };
  await openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', String(o.days), '-out', cert, '-extfile', ext], dir);
  await rm(join(dir, csr), { force: true });
  await rm(join(dir, ext), { force: true });
  await chmod(join(dir, key), 0o600);
  return { cert: join(dir, cert), key: join(dir, key) };
}

/** Makes a CA and the certificates of a cluster in outDir; returns where each file is. */
export async function makeCerts(o: CertsOptions): Promise<CertsLayout> {
  const days = o.days ?? 365;
  if (!Number.isSafeInteger(days) || days < 1) throw new Error(`--days must be a positive integer, got ${String(days)}`);
  if (o.nodes.length === 0) throw new Error('at least one node name is needed');
  const dir = o.outDir;
  await mkdir(dir, { recursive: true });
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=wal-recovery CA', '-days', String(days)], dir);
  await chmod(join(dir, 'ca.key'), 0o600);
  const nodes: Record<string, IdentityFiles> = {};
  for (const node of o.nodes) {
    nodes[node] = await issue(dir, `node-${node}`, { name: node, role: 'peer', sans: ['127.0.0.1', 'localhost', node, ...(o.hosts ?? [])], days });
  }
  const client = await issue(dir, 'client', { name: 'client', role: 'client', days });
  const admin = await issue(dir, 'admin', { name: 'admin', role: 'admin', days });
  return { ca: join(dir, 'ca.pem'), caKey: join(dir, 'ca.key'), nodes, client, admin };
}
