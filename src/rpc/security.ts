// Transport security and who may call what: the one place that decides (DESIGN section 10).
//
// With TLS, every listener asks for a client certificate. The caller's identity is its
// certificate, verified here against the cluster's CA (signature and validity dates) rather than
// by the TLS handshake, so that a caller without a good certificate gets a gRPC status that says
// why (UNAUTHENTICATED) instead of a failed handshake. Its role is the certificate subject's OU
// (`peer`, `client` or `admin`); each method's allowed roles are in METHOD_ROLES. A role not
// allowed gets PERMISSION_DENIED. Both are logged with the caller's identity and counted.
// Without TLS (`--insecure`) every caller may call everything: the node says so loudly at start.
import { X509Certificate, createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { type PeerCertificate, checkServerIdentity } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { RevocationList } from './revocation.js';
import { RevocationListError, TlsConfigError } from './errors.js';

export type Role = 'peer' | 'client' | 'admin';
export const ROLES: readonly Role[] = ['peer', 'client', 'admin'];

/**
 * Who may call each method. Nodes call each other with `peer` certificates: the peer protocol,
 * and the calls a node forwards for its own callers (an append to the writer, a read, the
 * writer's committed index from GetClusterStatus). Only `admin` calls the AdminService methods
 * that repair, validate or watch: the node an admin calls fans the per-node part out through the
 * peer-only RepairCopy and ValidateCopies, where the receiving node repairs only its own copy
 * with its own --repair-strategy (what it does unasked when it finds damage), so a peer
 * certificate alone can neither choose a strategy nor reach AdminService.RepairSegment.
 */
export const METHOD_ROLES: Readonly<Record<string, readonly Role[]>> = {
  'PeerService.Replicate': ['peer'],
  'PeerService.Fence': ['peer'],
  'PeerService.Seal': ['peer'],
  'PeerService.ReadFrames': ['peer'],
  'PeerService.SegmentInfo': ['peer'],
  'PeerService.FetchSegment': ['peer'],
  'PeerService.RepairCopy': ['peer'],
  'PeerService.ValidateCopies': ['peer'],
  'WalService.Append': ['client', 'admin', 'peer'],
  'WalService.AppendStream': ['client', 'admin'],
  'WalService.Read': ['client', 'admin', 'peer'],
  'AdminService.GetClusterStatus': ['client', 'admin', 'peer'],
  'AdminService.RepairSegment': ['admin'],
  'AdminService.Validate': ['admin'],
  'AdminService.GetRecoveryMetrics': ['admin'],
  'AdminService.WatchRecoveryEvents': ['admin'],
};

/** Paths of the PEM files of one identity, and of the CA that signs the cluster's certificates. */
export interface TlsPaths {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
  /** Serials or SHA-256 fingerprints of revoked certificates, one a line (src/rpc/revocation.ts). */
  readonly revoked?: string | undefined;
}

/** The transport: TLS with an identity, or plaintext (explicitly). */
export type Transport = { readonly kind: 'insecure' } | { readonly kind: 'tls'; readonly ca: Buffer; readonly cert: Buffer; readonly key: Buffer; readonly revoked?: RevocationList };

export const INSECURE: Transport = Object.freeze({ kind: 'insecure' });

/** Reads the PEM files; a missing or unreadable one is a clear error naming it. */
export async function loadTransport(paths: TlsPaths): Promise<Transport> {
  const read = async (what: string, path: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (error) {
      throw new TlsConfigError(`cannot read the TLS ${what} ${path}: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  const transport: Transport = { kind: 'tls', ca: await read('CA certificate', paths.ca), cert: await read('certificate', paths.cert), key: await read('key', paths.key) };
  try {
    new X509Certificate(transport.ca);
    new X509Certificate(transport.cert);
  } catch (error) {
    throw new TlsConfigError(`not a PEM certificate (${paths.ca} or ${paths.cert}): ${error instanceof Error ? error.message : String(error)}`);
  }
  if (paths.revoked === undefined || paths.revoked === '') return transport;
  try {
    return { ...transport, revoked: new RevocationList(paths.revoked) };
  } catch (error) {
    if (error instanceof RevocationListError) throw new TlsConfigError(error.message, { cause: error });
    throw error;
  }
}

/**
 * Checks that a node's own certificate names it: a peer certificate (OU=peer) whose CN is the
 * node's id. Members accept a writer call only from the node holding its epoch, as the caller's
 * CN names it, so a node with another name on its certificate could never write.
 */
export function checkNodeCertificate(transport: Transport, nodeId: string): void {
  if (transport.kind === 'insecure') return;
  const cert = new X509Certificate(transport.cert);
  const name = subjectField(cert.subject, 'CN');
  const role = subjectField(cert.subject, 'OU');
  if (role !== 'peer' || name !== nodeId) {
    throw new TlsConfigError(`the node certificate must name this node (CN=${nodeId}, OU=peer), but it is CN=${name ?? ''}, OU=${role ?? ''}: make it with \`wal-recovery certs --nodes ${nodeId}\``);
  }
}

export function serverCredentials(transport: Transport): grpc.ServerCredentials {
  if (transport.kind === 'insecure') return grpc.ServerCredentials.createInsecure();
  // The client certificate is asked for but not required by the handshake: the guard checks it
  // and answers with a status that says why (grpc-js's createSsl either does not ask for one or
  // fails the handshake, which a caller sees only as UNAVAILABLE).
  // Fixed files. The answers come on the next turn: grpc-js registers the server as a watcher
  // only after it has added its listeners, and an answer given at once would reach no one.
  const provider: CertificateProvider = {
    addCaCertificateListener: (listener) => queueMicrotask(() => listener({ caCertificate: transport.ca })),
    removeCaCertificateListener: () => undefined,
    addIdentityCertificateListener: (listener) => queueMicrotask(() => listener({ certificate: transport.cert, privateKey: transport.key })),
    removeIdentityCertificateListener: () => undefined,
  };
  return grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
}

type CertificateProvider = Parameters<typeof grpc.experimental.createCertificateProviderServerCredentials>[0];

export function channelCredentials(transport: Transport): grpc.ChannelCredentials {
  if (transport.kind === 'insecure') return grpc.credentials.createInsecure();
  const { revoked } = transport;
  if (!revoked) return grpc.credentials.createSsl(transport.ca, transport.key, transport.cert);
  // A node does not talk to a peer whose certificate is revoked: the handshake fails.
  return grpc.credentials.createSsl(transport.ca, transport.key, transport.cert, {
    checkServerIdentity: (host, cert) => checkServerIdentity(host, cert) ?? (revoked.isRevoked(cert) ? new Error(`the certificate of ${host} (CN=${cert.subject?.CN ?? ''}, serial ${cert.serialNumber}) is revoked (${revoked.path})`) : undefined),
  });
}

export interface Identity {
  readonly name: string;
  readonly role: Role;
}

export type Verdict = { readonly ok: true; readonly identity: Identity | undefined } | { readonly ok: false; readonly code: grpc.status; readonly details: string; readonly caller: string };

/** The caller of a call on a TLS listener: its certificate checked against the CA, and its role. */
export function identify(peerCertificate: PeerCertificate | undefined, ca: X509Certificate, nowMs: number, revoked?: RevocationList): { identity: Identity } | { refused: string; caller: string } {
  // grpc-js shows the certificate only when the TLS handshake verified it against the CA, so a
  // foreign or expired one arrives here as none.
  if (!peerCertificate?.raw || peerCertificate.raw.byteLength === 0) return { refused: 'no valid client certificate (none, one the cluster CA did not sign, or one out of its validity dates)', caller: 'anonymous' };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(peerCertificate.raw);
  } catch {
    return { refused: 'the client certificate cannot be parsed', caller: 'unknown' };
  }
  const name = subjectField(cert.subject, 'CN') ?? 'unnamed';
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return { refused: 'the client certificate is not signed by the cluster CA', caller: name };
  if (nowMs < Date.parse(cert.validFrom) || nowMs > Date.parse(cert.validTo)) return { refused: `the client certificate is not valid now (valid ${cert.validFrom} to ${cert.validTo})`, caller: name };
  if (revoked?.isRevoked(cert)) return { refused: `the client certificate is revoked (serial ${cert.serialNumber}, listed in ${revoked.path})`, caller: name };
  const role = subjectField(cert.subject, 'OU');
  if (!role || !(ROLES as readonly string[]).includes(role)) return { refused: `the client certificate names no role (OU=${role ?? ''}; expected one of ${ROLES.join(', ')})`, caller: name };
  return { identity: { name, role: role as Role } };
}

function subjectField(subject: string, field: string): string | undefined {
  for (const line of subject.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0 && line.slice(0, at) === field) return line.slice(at + 1);
  }
  return undefined;
}

export function authorize(method: string, peerCertificate: PeerCertificate | undefined, ca: X509Certificate, nowMs: number, revoked?: RevocationList): Verdict {
  const who = identify(peerCertificate, ca, nowMs, revoked);
  if ('refused' in who) return { ok: false, code: grpc.status.UNAUTHENTICATED, details: `${method}: ${who.refused}`, caller: who.caller };
  const allowed = METHOD_ROLES[method];
  if (!allowed?.includes(who.identity.role)) {
    return { ok: false, code: grpc.status.PERMISSION_DENIED, details: `${method} is not allowed to role ${who.identity.role} (allowed: ${(allowed ?? []).join(', ') || 'none'})`, caller: who.identity.name };
  }
  return { ok: true, identity: who.identity };
}

/**
 * Whether the caller of a call holds the peer role: a node forwarding for its own caller. On a
 * plaintext listener (--insecure) every caller is trusted alike.
 */
export function isPeerCaller(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } }, transport: Transport): boolean {
  if (transport.kind === 'insecure') return true;
  const who = identify(call.getAuthContext().sslPeerCertificate, new X509Certificate(transport.ca), Date.now());
  return 'identity' in who && who.identity.role === 'peer';
}

/**
 * The node a call comes from, as its verified peer certificate names it (the CN, which `certs`
 * sets to the node's id): what binds a writer call to the node holding its epoch. Undefined on a
 * plaintext listener (--insecure), where calls carry no identity. A caller the guard let in
 * without a peer identity (not possible for PeerService) is named '' and so holds no epoch.
 */
export function callerNode(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } }, transport: Transport): string | undefined {
  if (transport.kind === 'insecure') return undefined;
  const who = identify(call.getAuthContext().sslPeerCertificate, new X509Certificate(transport.ca), Date.now());
  return 'identity' in who && who.identity.role === 'peer' ? who.identity.name : '';
}

/**
 * The first 8 bytes (16 hex digits) of every session id bound to a certificate's common name:
 * SHA-256 of the name. With TLS a session append is accepted only with a session id that starts
 * with its caller's prefix (checked by the node the client calls; a forwarded append was checked
 * there), so a client cannot claim another's session; the binding needs no state and survives a
 * writer failover. WalClient makes its session ids so.
 */
export function sessionOwnerPrefix(commonName: string): string {
  return createHash('sha256').update(commonName, 'utf8').digest('hex').slice(0, 16);
}

/** The common name (CN) of a PEM certificate, or undefined. */
export function commonNameOf(certPem: Buffer | string): string | undefined {
  return subjectField(new X509Certificate(certPem).subject, 'CN');
}

/**
 * Whether a session append of this call may use sessionId: always on a plaintext listener and
 * for an append a peer forwarded (its node checked it); else the caller's certificate must be
 * the session's owner. Returns the caller's name when it may not.
 */
export function sessionRefusal(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } }, transport: Transport, sessionId: string, forwarded: boolean): string | undefined {
  if (transport.kind === 'insecure' || forwarded) return undefined;
  const who = identify(call.getAuthContext().sslPeerCertificate, new X509Certificate(transport.ca), Date.now());
  if (!('identity' in who)) return who.caller;
  return sessionId.startsWith(sessionOwnerPrefix(who.identity.name)) ? undefined : who.identity.name;
}

export interface GuardOptions {
  readonly transport: Transport;
  readonly logger: Logger;
  /** Counts a refusal (a Prometheus counter in production). */
  readonly onRefused?: (method: string, code: 'UNAUTHENTICATED' | 'PERMISSION_DENIED') => void;
}

/** 'WalService.Append' for '/walrecovery.v1.WalService/Append'; undefined for other packages' services (health). */
function methodOfPath(path: string): string | undefined {
  const match = /^\/walrecovery\.v1\.([A-Za-z]+)\/([A-Za-z]+)$/.exec(path);
  return match ? `${match[1]}.${match[2]}` : path.startsWith('/walrecovery.') ? path : undefined;
}

/**
 * Authorizes every call of the project's services when its metadata arrives, before grpc-js
 * reads a byte of its request (a refused caller costs no decoding and no buffered message).
 * Methods missing from METHOD_ROLES are refused to everyone (a new method must be placed in the
 * table). Other services (gRPC health) pass. Undefined on a plaintext listener: every caller may
 * call everything there.
 */
export function authInterceptor(options: GuardOptions): grpc.ServerInterceptor | undefined {
  const { transport } = options;
  if (transport.kind === 'insecure') return undefined;
  const ca = new X509Certificate(transport.ca);
  // The open calls' checks: a re-read that revokes someone ends their idle streams too, not only
  // at their next message.
  const open = new Set<() => boolean>();
  transport.revoked?.onRevoked(() => {
    for (const check of open) check();
  });
  return (descriptor, call) => {
    const method = methodOfPath(descriptor.path);
    if (method === undefined) return new grpc.ServerInterceptingCall(call);
    const refuse = (verdict: { code: grpc.status; details: string; caller: string }): void => {
      options.logger.warn({ method, caller: verdict.caller, peer: call.getPeer(), code: grpc.status[verdict.code], reason: verdict.details }, 'refused a call');
      options.onRefused?.(method, verdict.code === grpc.status.UNAUTHENTICATED ? 'UNAUTHENTICATED' : 'PERMISSION_DENIED');
      call.sendStatus({ code: verdict.code, details: verdict.details, metadata: new grpc.Metadata() });
    };
    // A stream outlives the moment it was authorized: a certificate listed since (the list is
    // re-read while the node runs) ends it UNAUTHENTICATED when the list is re-read, and no
    // message passes either way after (review of issue 11). What an AppendStream appended before
    // stays in the log.
    let admitted: { caller: string; cert: PeerCertificate } | undefined;
    let ended = false;
    const revokedSince = (): boolean => {
      if (ended) return true;
      if (admitted === undefined || !transport.revoked?.isRevoked(admitted.cert)) return false;
      ended = true;
      open.delete(revokedSince);
      refuse({ code: grpc.status.UNAUTHENTICATED, details: `${method}: the client certificate was revoked while the call was open (listed in ${transport.revoked.path})`, caller: admitted.caller });
      return true;
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, pass) => {
            const peerCertificate = call.getAuthContext().sslPeerCertificate;
            const verdict = authorize(method, peerCertificate, ca, Date.now(), transport.revoked);
            if (verdict.ok) {
              // A unary call runs to its answer (its deadline bounds it): ending it UNAUTHENTICATED
              // while it runs would answer an error for an append that may have committed.
              if (transport.revoked && peerCertificate && (descriptor.requestStream || descriptor.responseStream)) {
                admitted = { caller: verdict.identity?.name ?? 'unknown', cert: peerCertificate };
                open.add(revokedSince);
              }
              pass(metadata);
              return;
            }
            // The handler never starts, so the request is never read.
            refuse(verdict);
          },
          onReceiveMessage: (message, pass) => {
            if (!revokedSince()) pass(message);
          },
          onCancel: () => open.delete(revokedSince),
        });
      },
      sendMessage: (message, next) => {
        if (!revokedSince()) next(message);
      },
      sendStatus: (status, next) => {
        open.delete(revokedSince);
        next(status);
      },
    });
  };
}
