// Options of WalClient, with defaults filled and checked in one place (frozen once).
import { APPEND_ENTRIES_MAX } from '../replication/index.js';
import type { Transport } from '../rpc/index.js';
import { InvalidClientOptionError } from './errors.js';

export interface WalClientOptions {
  /** host:port of one or more members; the client learns the others and the writer from them. */
  readonly targets: readonly string[];
  /** The log to append to and read (default "default"). */
  readonly log?: string;
  /** TLS with the caller's certificate (role client, or admin). One of tls and insecure is required. */
  readonly tls?: { readonly ca: Buffer; readonly cert: Buffer; readonly key: Buffer };
  /** Plaintext, asked for by name (as the CLI's --insecure): anyone on the path may read and change entries. */
  readonly insecure?: boolean;
  /** Whole-operation deadline of an append (every retry included) and of a read's step (default 10 s). */
  readonly deadlineMs?: number;
  /** How long connect() keeps asking the targets (default deadlineMs). */
  readonly connectDeadlineMs?: number;
  /** Deadline of one RPC attempt (default 5 s, at most deadlineMs). */
  readonly attemptDeadlineMs?: number;
  /** Exactly-once appends (default true). Without a session, an append is never retried. */
  readonly sessions?: boolean;
  /** Create the log on the first append when it does not exist (default false). */
  readonly createIfMissing?: boolean;
  /** Longest wait for more single appends to share a batch while a batch is in flight, in microseconds (default 200); with none in flight they go at once. */
  readonly lingerUs?: number;
  /** Payload bytes per coalesced batch (default 1 MiB). */
  readonly batchBytesMax?: number;
  /** Entries per coalesced batch (default 1024). */
  readonly batchEntriesMax?: number;
  /** Coalesced batches in flight at once; more single appends wait and batch up (default 8). */
  readonly inFlightBatchesMax?: number;
  /** Retry backoff: first delay and cap, jittered (defaults 25 ms and 1 s). */
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** How often tail() asks for entries past the last one (default 20 ms). */
  readonly tailPollMs?: number;
  /** Maps a member's advertised address to the one to dial (NAT, a proxy); identity by default. */
  readonly dialAddress?: (advertised: string) => string;
}

export interface ResolvedClientOptions {
  readonly targets: readonly string[];
  readonly log: string;
  readonly transport: Transport;
  readonly deadlineMs: number;
  readonly connectDeadlineMs: number;
  readonly attemptDeadlineMs: number;
  readonly sessions: boolean;
  readonly createIfMissing: boolean;
  readonly lingerUs: number;
  readonly batchBytesMax: number;
  readonly batchEntriesMax: number;
  readonly inFlightBatchesMax: number;
  readonly backoffInitialMs: number;
  readonly backoffMaxMs: number;
  readonly tailPollMs: number;
  readonly dialAddress: (advertised: string) => string;
}

export const CLIENT_DEFAULTS = Object.freeze({
  log: 'default',
  deadlineMs: 10_000,
  attemptDeadlineMs: 5_000,
  sessions: true,
  createIfMissing: false,
  lingerUs: 200,
  batchBytesMax: 1024 * 1024,
  batchEntriesMax: 1024,
  inFlightBatchesMax: 8,
  backoffInitialMs: 25,
  backoffMaxMs: 1_000,
  tailPollMs: 20,
});

function positive(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isFinite(value) || value <= 0 || value > max) throw new InvalidClientOptionError(name, `must be a number in 1..${max}, not ${value}`);
  return value;
}

function transportOf(o: WalClientOptions): ResolvedClientOptions['transport'] {
  if (o.tls && o.insecure) throw new InvalidClientOptionError('insecure', 'goes without tls');
  if (o.tls) return { kind: 'tls', ca: o.tls.ca, cert: o.tls.cert, key: o.tls.key };
  if (o.insecure === true) return { kind: 'insecure' };
  throw new InvalidClientOptionError('tls', 'is required: a certificate with the client role ({ ca, cert, key }), or insecure: true for plaintext');
}

export function resolveClientOptions(o: WalClientOptions): ResolvedClientOptions {
  if (!Array.isArray(o.targets) || o.targets.length === 0) throw new InvalidClientOptionError('targets', 'must name at least one host:port');
  for (const t of o.targets) if (typeof t !== 'string' || !/^[^\s]+:\d{1,5}$/.test(t)) throw new InvalidClientOptionError('targets', `has ${JSON.stringify(t)}, not host:port`);
  const deadlineMs = positive('deadlineMs', o.deadlineMs ?? CLIENT_DEFAULTS.deadlineMs, 600_000);
  const resolved: ResolvedClientOptions = {
    targets: Object.freeze([...new Set(o.targets)]),
    log: o.log ?? CLIENT_DEFAULTS.log,
    transport: transportOf(o),
    deadlineMs,
    connectDeadlineMs: positive('connectDeadlineMs', o.connectDeadlineMs ?? deadlineMs, 600_000),
    attemptDeadlineMs: Math.min(deadlineMs, positive('attemptDeadlineMs', o.attemptDeadlineMs ?? CLIENT_DEFAULTS.attemptDeadlineMs, 600_000)),
    sessions: o.sessions ?? CLIENT_DEFAULTS.sessions,
    createIfMissing: o.createIfMissing ?? CLIENT_DEFAULTS.createIfMissing,
    lingerUs: o.lingerUs === 0 ? 0 : positive('lingerUs', o.lingerUs ?? CLIENT_DEFAULTS.lingerUs, 1_000_000),
    batchBytesMax: positive('batchBytesMax', o.batchBytesMax ?? CLIENT_DEFAULTS.batchBytesMax, 16 * 1024 * 1024),
    batchEntriesMax: positive('batchEntriesMax', o.batchEntriesMax ?? CLIENT_DEFAULTS.batchEntriesMax, APPEND_ENTRIES_MAX),
    inFlightBatchesMax: positive('inFlightBatchesMax', o.inFlightBatchesMax ?? CLIENT_DEFAULTS.inFlightBatchesMax, 16),
    backoffInitialMs: positive('backoffInitialMs', o.backoffInitialMs ?? CLIENT_DEFAULTS.backoffInitialMs, 60_000),
    backoffMaxMs: positive('backoffMaxMs', o.backoffMaxMs ?? CLIENT_DEFAULTS.backoffMaxMs, 60_000),
    tailPollMs: positive('tailPollMs', o.tailPollMs ?? CLIENT_DEFAULTS.tailPollMs, 60_000),
    dialAddress: o.dialAddress ?? ((advertised) => advertised),
  };
  return Object.freeze(resolved);
}
