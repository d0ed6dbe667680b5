// WalClient: the package's cluster client. It knows every member (learned from any target),
// sends appends to the log's writer and follows it when it moves, puts a deadline on every call,
// retries what is safe to retry with jittered backoff, coalesces concurrent single appends, and
// reads verified, acknowledged entries from any member.
//
// Exactly-once appends: the client is one session (16 random bytes) and numbers its batches; a
// retry re-sends the same session id and sequence, and the writer answers it with the original
// indices (docs/CLUSTER.md, "Exactly-once appends"). Without sessions an append is never retried:
// a timeout or a cut connection raises AppendOutcomeUnknownError.
//
// Fault model: any member may die, stall or lose its connection at any moment; the writer may
// move; etcd may be briefly out of reach (members answer UNAVAILABLE).
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { APPEND_ENTRIES_MAX, type ReadEntry, SESSION_DEFAULTS } from '../replication/index.js';
import { withSpan } from '../observability/tracing.js';
import { AdminClient, WalClient as WalRpcClient, commonNameOf, sessionOwnerPrefix } from '../rpc/index.js';
import { Coalescer } from './coalescer.js';
import { AppendOutcomeUnknownError, AppendRejectedError, ClientClosedError, ClusterUnreachableError, WalClientError } from './errors.js';
import { type ResolvedClientOptions, type WalClientOptions, resolveClientOptions } from './options.js';

/** Unanswered batches a session may span: half of what the writer remembers per session. */
const SEQUENCE_WINDOW = Math.floor(SESSION_DEFAULTS.batchesPerSessionMax / 2);

export interface AppendRange {
  readonly firstIndex: number;
  readonly lastIndex: number;
}

/**
 * One entry as read: verified by the member that served it (per-entry SHA3), acknowledged. A
 * lost entry (given up by a repair, every copy gone) has lost set, an empty payload and a reason.
 */
export type LogEntry = Omit<ReadEntry, 'session'>;

/** Codes after which the same request may be sent again (with a session, exactly once). */
const TRANSIENT = new Set<number>([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.ABORTED, grpc.status.RESOURCE_EXHAUSTED, grpc.status.CANCELLED, grpc.status.INTERNAL]);
/** Codes that say nothing was appended. */
const REFUSED = new Set<number>([grpc.status.INVALID_ARGUMENT, grpc.status.NOT_FOUND, grpc.status.PERMISSION_DENIED, grpc.status.UNAUTHENTICATED, grpc.status.OUT_OF_RANGE]);
/** Read attempts in a row that make no progress before a read gives up. */
const READ_ATTEMPTS_WITHOUT_PROGRESS_MAX = 6;

function codeOf(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(ms, 60_000))));
}

export class WalClient {
  readonly options: ResolvedClientOptions;
  /** This client's session: 32 hex digits. */
  readonly sessionId: string;
  private nextSequence = 1;
  /** Sequences sent and not yet answered; a new one waits while the oldest is too far behind. */
  private readonly unfinished = new Set<number>();
  private sequenceWaiters: Array<() => void> = [];
  private readonly members = new Map<string, string>(); // node id -> address
  private writerAddress: string | undefined;
  private readonly walClients = new Map<string, WalRpcClient>();
  private readonly adminClients = new Map<string, AdminClient>();
  private readonly coalescer: Coalescer;
  private closed = false;
  private readCursor = 0;
  private refreshing: Promise<void> | undefined;

  private constructor(options: ResolvedClientOptions) {
    this.options = options;
    // With TLS a session id is bound to this client's certificate (src/rpc/security.ts): the
    // nodes refuse it from any other caller.
    const transport = options.transport;
    const name = transport.kind === 'tls' ? commonNameOf(transport.cert) : undefined;
    this.sessionId = name === undefined ? randomBytes(16).toString('hex') : sessionOwnerPrefix(name) + randomBytes(8).toString('hex');
    this.coalescer = new Coalescer({
      lingerUs: options.lingerUs,
      batchBytesMax: options.batchBytesMax,
      batchEntriesMax: options.batchEntriesMax,
      inFlightBatchesMax: options.inFlightBatchesMax,
      send: (payloads) => this.sendBatch(payloads),
      nowUs: () => performance.now() * 1000,
      defer: (fn) => setImmediate(fn),
    });
  }

  /** Connects: asks the targets for the members and the log's writer (within deadlineMs). */
  static async connect(options: WalClientOptions): Promise<WalClient> {
    const client = new WalClient(resolveClientOptions(options));
    try {
      await client.refresh(Date.now() + client.options.connectDeadlineMs);
    } catch (error) {
      client.closeChannels();
      throw error;
    }
    return client;
  }

  /** The writer's address as last learned (undefined: not known, appends go to any member). */
  get writer(): string | undefined {
    return this.writerAddress;
  }

  /**
   * Appends one payload or a batch; resolves once the entries are acknowledged (fsynced by an ack
   * quorum). Single payloads from concurrent callers are coalesced into one batch.
   * Throws AppendOutcomeUnknownError when the outcome is unknown, AppendRejectedError when
   * nothing was appended.
   */
  append(payload: Uint8Array | readonly Uint8Array[]): Promise<AppendRange> {
    return withSpan('client.append', { 'wal.payloads': payload instanceof Uint8Array ? 1 : payload.length }, () => this.appendUntraced(payload));
  }

  private async appendUntraced(payload: Uint8Array | readonly Uint8Array[]): Promise<AppendRange> {
    if (this.closed) throw new ClientClosedError();
    if (payload instanceof Uint8Array) {
      const index = await this.coalescer.add(payload);
      return { firstIndex: index, lastIndex: index };
    }
    if (payload.length === 0) throw new WalClientError('append needs at least one payload');
    if (payload.length > APPEND_ENTRIES_MAX) throw new WalClientError(`append takes at most ${APPEND_ENTRIES_MAX} payloads in one call, not ${payload.length}`);
    return this.sendBatch(payload);
  }

  /** Verified, acknowledged entries from..to (to omitted: up to the last acknowledged now), in order. */
  async *read(from: number, to?: number): AsyncGenerator<LogEntry> {
    if (this.closed) throw new ClientClosedError();
    if (!Number.isSafeInteger(from) || from < 1) throw new WalClientError(`read: from must be an index (>= 1), not ${from}`);
    const upper = to ?? 0;
    let next = from;
    let failures = 0;
    for (;;) {
      const address = this.pickReadAddress();
      try {
        const stream = this.wal(address).read(this.options.log, next, upper, { deadlineMs: Math.max(this.options.deadlineMs, 60_000), batchMax: 1024 });
        for await (const message of stream) {
          for (const e of message.entries) {
            if (e.index !== next) throw new WalClientError(`read: member ${address} sent entry ${e.index} where ${next} was due`);
            next += 1;
            failures = 0;
            yield { index: e.index, timestampMs: e.timestamp_ms, payload: e.payload, checksum: e.checksum, lost: e.lost, lostReason: e.lost_reason };
          }
        }
        return;
      } catch (error) {
        const code = codeOf(error);
        failures += 1;
        if (code === undefined || !TRANSIENT.has(code) || failures >= READ_ATTEMPTS_WITHOUT_PROGRESS_MAX || this.closed) throw error;
        this.readCursor += 1; // the next member
        await sleep(this.backoffMs(failures));
      }
    }
  }

  /** Entries from `from` on, as they are acknowledged, until the iterator is returned or signal aborts. */
  async *tail(from: number, signal?: AbortSignal): AsyncGenerator<LogEntry> {
    let next = from;
    while (!this.closed && !signal?.aborted) {
      let got = 0;
      for await (const entry of this.read(next)) {
        yield entry;
        next = entry.index + 1;
        got += 1;
        if (signal?.aborted) return;
      }
      if (got === 0) await sleep(this.options.tailPollMs);
    }
  }

  /** Waits for appends in flight (up to deadlineMs), then closes every connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.race([this.coalescer.drained(), sleep(this.options.deadlineMs)]);
    this.closeChannels();
  }

  // -------------------------------------------------------------------------------------------

  /** Sends one batch as one session batch, retried (exactly once) until the deadline. */
  private async sendBatch(payloads: readonly Uint8Array[]): Promise<AppendRange> {
    const { sessions } = this.options;
    const session = sessions ? { sessionId: this.sessionId, sequence: await this.takeSequence() } : undefined;
    try {
      return await this.sendOnce(payloads, session);
    } finally {
      if (session) this.finishSequence(session.sequence);
    }
  }

  /**
   * The next sequence of this session, once the oldest unanswered one is less than
   * SEQUENCE_WINDOW behind: the writer remembers the last SESSION_DEFAULTS.batchesPerSessionMax
   * outcomes of a session, and a retry older than those can no longer be told (its outcome would
   * be unknown). Later batches wait for a slow one instead of pushing it out.
   */
  private async takeSequence(): Promise<number> {
    for (;;) {
      let oldest = this.nextSequence;
      for (const sequence of this.unfinished) oldest = Math.min(oldest, sequence);
      if (this.nextSequence - oldest < SEQUENCE_WINDOW) break;
      await new Promise<void>((resolve) => this.sequenceWaiters.push(resolve));
    }
    const sequence = this.nextSequence++;
    this.unfinished.add(sequence);
    return sequence;
  }

  private finishSequence(sequence: number): void {
    this.unfinished.delete(sequence);
    for (const wake of this.sequenceWaiters.splice(0)) wake();
  }

  private async sendOnce(payloads: readonly Uint8Array[], session: { sessionId: string; sequence: number } | undefined): Promise<AppendRange> {
    const { log, attemptDeadlineMs, createIfMissing } = this.options;
    const endMs = Date.now() + this.options.deadlineMs;
    for (let attempt = 1; ; attempt += 1) {
      const address = this.writerAddress ?? this.anyAddress(attempt);
      try {
        const remainingMs = Math.max(1, Math.min(attemptDeadlineMs, endMs - Date.now()));
        return await this.wal(address).append(log, payloads, { deadlineMs: remainingMs, createIfMissing, session });
      } catch (error) {
        const code = codeOf(error);
        if (code !== undefined && REFUSED.has(code)) throw new AppendRejectedError(log, code, { cause: error });
        // UNKNOWN: partly applied; FAILED_PRECONDITION with a session: too old to tell.
        if (code === undefined || !TRANSIENT.has(code) || !session) throw new AppendOutcomeUnknownError(log, payloads.length, code, { cause: error });
        const waitMs = this.backoffMs(attempt);
        if (Date.now() + waitMs >= endMs) throw new AppendOutcomeUnknownError(log, payloads.length, code, { cause: error });
        this.writerAddress = undefined;
        void this.refresh(Math.min(endMs, Date.now() + attemptDeadlineMs)).catch(() => undefined);
        await sleep(waitMs);
      }
    }
  }

  /** Learns the members and the writer from the first member that answers. */
  private refresh(endMs: number): Promise<void> {
    this.refreshing ??= this.refreshOnce(endMs).finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async refreshOnce(endMs: number): Promise<void> {
    let lastError: unknown;
    for (let round = 1; Date.now() < endMs; round += 1) {
      for (const address of this.candidates()) {
        try {
          const status = await this.admin(address).status(this.options.log, Math.max(1, Math.min(this.options.attemptDeadlineMs, endMs - Date.now())));
          for (const m of status.members) this.members.set(m.id, this.options.dialAddress(m.address));
          const writerId = status.logs.find((l) => l.log === this.options.log)?.writer ?? '';
          this.writerAddress = writerId === '' ? undefined : this.members.get(writerId);
          return;
        } catch (error) {
          // Keep the most telling failure: "connection refused" says more than the deadline of a
          // last attempt squeezed into what was left of the time.
          if (lastError === undefined || codeOf(error) !== grpc.status.DEADLINE_EXCEEDED) lastError = error;
          // An unknown log is an answer: the members are known, the log is created by an append.
          if (codeOf(error) === grpc.status.NOT_FOUND) return;
          if (codeOf(error) === grpc.status.PERMISSION_DENIED || codeOf(error) === grpc.status.UNAUTHENTICATED) throw error;
        }
      }
      await sleep(Math.min(this.backoffMs(round), Math.max(0, endMs - Date.now())));
    }
    throw new ClusterUnreachableError(this.candidates(), { cause: lastError });
  }

  private candidates(): string[] {
    return [...new Set([...this.options.targets, ...this.members.values()])];
  }

  private anyAddress(attempt: number): string {
    const all = this.candidates();
    return all[attempt % all.length] as string;
  }

  private pickReadAddress(): string {
    const all = this.candidates();
    return all[this.readCursor % all.length] as string;
  }

  private backoffMs(attempt: number): number {
    const cap = Math.min(this.options.backoffMaxMs, this.options.backoffInitialMs * 2 ** Math.min(attempt - 1, 16));
    return cap / 2 + Math.random() * (cap / 2);
  }

  private wal(address: string): WalRpcClient {
    return channelOf(this.walClients, address, () => new WalRpcClient(address, this.options.transport));
  }

  private admin(address: string): AdminClient {
    return channelOf(this.adminClients, address, () => new AdminClient(address, this.options.transport));
  }

  private closeChannels(): void {
    for (const c of this.walClients.values()) c.close();
    for (const c of this.adminClients.values()) c.close();
    this.walClients.clear();
    this.adminClients.clear();
  }
}

function channelOf<T>(clients: Map<string, T>, address: string, make: () => T): T {
  const known = clients.get(address);
  if (known) return known;
  const made = make();
  clients.set(address, made);
  return made;
}
