// Parsers for option values, each with its limits named. They throw commander's
// InvalidArgumentError so the message names the option; exit.ts maps it to exit code 2.
import { InvalidArgumentError } from 'commander';
import type { EtcdTlsPaths } from '../cluster/index.js';
import type { TlsPaths } from '../rpc/index.js';

/** Decimal digits accepted in an integer option: enough for Number.MAX_SAFE_INTEGER (16 digits). */
const INTEGER_DIGITS_MAX = 16;
export const PORT_MAX = 65_535;

export function parseInteger(value: string, min: number, max: number): number {
  const digits = value.trim();
  if (!/^[0-9]+$/.test(digits)) throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
  const parsed = digits.length > INTEGER_DIGITS_MAX ? Number.POSITIVE_INFINITY : Number(digits);
  if (!Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
    throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
  }
  return parsed;
}

/** An option parser for commander: integer in [min, max]. */
export function integerIn(min: number, max: number): (value: string) => number {
  return (value) => parseInteger(value, min, max);
}

/** The TLS flags of a verb; each falls back to its environment variable. */
export interface TlsFlags {
  readonly tlsCa?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly tlsRevoked?: string;
  readonly insecure?: boolean;
}

export const TLS_ENV = Object.freeze({ ca: 'WAL_TLS_CA', cert: 'WAL_TLS_CERT', key: 'WAL_TLS_KEY', revoked: 'WAL_TLS_REVOKED', insecure: 'WAL_INSECURE' });

/** WAL_INSECURE=1 (or true) stands for --insecure. */
function insecureOf(flags: TlsFlags, env: NodeJS.ProcessEnv): boolean {
  const value = env[TLS_ENV.insecure]?.trim().toLowerCase();
  return flags.insecure === true || value === '1' || value === 'true';
}

/**
 * The PEM files to use, or undefined for plaintext, which must be asked for explicitly with
 * --insecure (or WAL_INSECURE=1). All three files or none: a partial set is a usage error, as is
 * --insecure together with TLS files, and so is neither (a caller that forgot its certificates
 * must not quietly talk plaintext).
 */
export function tlsPathsOf(flags: TlsFlags, env: NodeJS.ProcessEnv = process.env): TlsPaths | undefined {
  const ca = flags.tlsCa ?? env[TLS_ENV.ca];
  const cert = flags.tlsCert ?? env[TLS_ENV.cert];
  const key = flags.tlsKey ?? env[TLS_ENV.key];
  const revoked = flags.tlsRevoked ?? env[TLS_ENV.revoked];
  const given = [ca, cert, key].filter((v) => v !== undefined && v !== '');
  const insecure = insecureOf(flags, env);
  if (given.length === 0) {
    if (insecure && flags.tlsRevoked !== undefined) throw new InvalidArgumentError('--tls-revoked needs TLS (--tls-ca, --tls-cert and --tls-key), not --insecure');
    if (insecure) return undefined;
    throw new InvalidArgumentError(`TLS is required: give --tls-ca, --tls-cert and --tls-key (or ${TLS_ENV.ca}, ${TLS_ENV.cert}, ${TLS_ENV.key}; \`wal-recovery certs\` makes them), or --insecure (or ${TLS_ENV.insecure}=1) for plaintext`);
  }
  if (insecure) throw new InvalidArgumentError(`--insecure (or ${TLS_ENV.insecure}=1) goes without --tls-ca, --tls-cert and --tls-key (nor their WAL_TLS_* variables)`);
  if (given.length !== 3) throw new InvalidArgumentError(`TLS needs all three of --tls-ca, --tls-cert and --tls-key (or ${TLS_ENV.ca}, ${TLS_ENV.cert}, ${TLS_ENV.key})`);
  return { ca: ca as string, cert: cert as string, key: key as string, ...(revoked !== undefined && revoked !== '' ? { revoked } : {}) };
}

/** The etcd TLS flags of the node verb; each falls back to its environment variable. */
export interface EtcdTlsFlags {
  readonly etcdCa?: string;
  readonly etcdCert?: string;
  readonly etcdKey?: string;
  readonly etcdInsecure?: boolean;
}

export const ETCD_TLS_ENV = Object.freeze({ ca: 'WAL_ETCD_CA', cert: 'WAL_ETCD_CERT', key: 'WAL_ETCD_KEY', insecure: 'WAL_ETCD_INSECURE' });

/**
 * Plaintext etcd under a node that speaks TLS is asked for by name (--etcd-insecure or
 * WAL_ETCD_INSECURE=1): whoever reaches etcd can rewrite segment records, epochs and member
 * addresses, which gets around every certificate the gRPC side checks. --insecure (plaintext
 * everywhere) already says so.
 */
export function checkEtcdTransport(flags: EtcdTlsFlags, grpcTls: boolean, etcdTls: boolean, env: NodeJS.ProcessEnv = process.env): void {
  const value = env[ETCD_TLS_ENV.insecure]?.trim().toLowerCase();
  const etcdInsecure = flags.etcdInsecure === true || value === '1' || value === 'true';
  if (etcdTls && etcdInsecure) throw new InvalidArgumentError(`--etcd-insecure (or ${ETCD_TLS_ENV.insecure}=1) goes without --etcd-ca, --etcd-cert and --etcd-key`);
  if (grpcTls && !etcdTls && !etcdInsecure) {
    throw new InvalidArgumentError(`etcd without TLS would let anyone who reaches it rewrite the cluster's records: give --etcd-ca with https:// endpoints (and --etcd-cert, --etcd-key for its --client-cert-auth; or ${ETCD_TLS_ENV.ca}...), or --etcd-insecure (or ${ETCD_TLS_ENV.insecure}=1) for plaintext etcd`);
  }
}

/**
 * TLS to etcd: undefined for none (http:// endpoints), else the CA that signed etcd's server
 * certificate and, for etcd's --client-cert-auth, this node's client certificate and key (both
 * or neither). TLS files need https:// endpoints: etcd3 would otherwise speak TLS to an http://
 * URL, which says the opposite.
 */
export function etcdTlsPathsOf(flags: EtcdTlsFlags, endpoints: readonly string[], env: NodeJS.ProcessEnv = process.env): EtcdTlsPaths | undefined {
  const pick = (flag: string | undefined, name: string): string | undefined => {
    const value = flag ?? env[name];
    return value === undefined || value === '' ? undefined : value;
  };
  const ca = pick(flags.etcdCa, ETCD_TLS_ENV.ca);
  const cert = pick(flags.etcdCert, ETCD_TLS_ENV.cert);
  const key = pick(flags.etcdKey, ETCD_TLS_ENV.key);
  if (ca === undefined && cert === undefined && key === undefined) return undefined;
  if (ca === undefined) throw new InvalidArgumentError(`--etcd-cert and --etcd-key go with --etcd-ca (or ${ETCD_TLS_ENV.ca}), the CA that signed etcd's certificate`);
  if ((cert === undefined) !== (key === undefined)) throw new InvalidArgumentError(`--etcd-cert and --etcd-key go together (or ${ETCD_TLS_ENV.cert} and ${ETCD_TLS_ENV.key})`);
  const plain = endpoints.filter((e) => !e.startsWith('https://'));
  if (plain.length > 0) throw new InvalidArgumentError(`--etcd-ca (TLS to etcd) needs https:// endpoints, got ${plain.join(', ')}`);
  return cert !== undefined && key !== undefined ? { ca, cert, key } : { ca };
}

export interface Target {
  readonly host: string;
  readonly port: number;
  /** As the operator wrote it. */
  readonly text: string;
}

/** HOST:PORT, with HOST a name, an IPv4 address or a bracketed IPv6 address. */
export function parseTarget(value: string): Target {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))\:([0-9]{1,5})$/.exec(value.trim());
  const host = match?.[1];
  const portText = match?.[2];
  if (host === undefined || portText === undefined) throw new InvalidArgumentError('must be HOST:PORT, for example 127.0.0.1:7400');
  const port = Number(portText);
  if (port < 1 || port > PORT_MAX) throw new InvalidArgumentError(`port must be from 1 to ${PORT_MAX}`);
  return { host, port, text: value.trim() };
}
