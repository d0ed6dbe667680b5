// The gRPC server of a node: thin adapters from the three services to the domain code, plus the
// standard health service and server reflection. Every input is validated here or in the domain
// before use; every error leaves through toStatus.
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import type { Logger } from 'pino';
import type { AppendResult } from '../wal/index.js';
import { type RecoveryMetricsSnapshot, type RepairStrategy, type SegmentRepair, parseStrategy } from '../recovery/index.js';
import { BadRequestError, PartialAppendError, SessionOwnerError, type LogMeta, type PeerHandlers, type ReadEntry, type SegmentMeta, type SessionRef } from '../replication/index.js';
import { CHANNEL_OPTIONS, FORWARDED_METADATA_KEY, MESSAGE_BYTES_MAX } from './clients.js';
import { loadProto } from './proto.js';
import { INSECURE, type Transport, authInterceptor, callerNode, isPeerCaller, serverCredentials, sessionRefusal } from './security.js';
import { toStatus } from './status.js';
import { StreamStalledError, WatcherTooSlowError } from './errors.js';
import { decodedService, requireDecoded, tolerantDefinition } from './decode.js';
import { InFlightCalls, type LimitOptions, RPC_LIMITS_DEFAULT, healthWatchInterceptor, limitService } from './limits.js';
import type { WalServiceHandlers } from './generated/walrecovery/v1/WalService.js';
import type { PeerServiceHandlers } from './generated/walrecovery/v1/PeerService.js';
import type { AdminServiceHandlers } from './generated/walrecovery/v1/AdminService.js';
import type { ClusterStatus } from './generated/walrecovery/v1/ClusterStatus.js';
import { serverSpan, tracingEnabled } from '../observability/tracing.js';
import type { ScrubStatus } from './generated/walrecovery/v1/ScrubStatus.js';
import type { SegmentRef__Output } from './generated/walrecovery/v1/SegmentRef.js';
import type { RepairSegmentResponse } from './generated/walrecovery/v1/RepairSegmentResponse.js';
import type { ValidateMessage } from './generated/walrecovery/v1/ValidateMessage.js';

/** One entry as Read streams it: the read path's own type (src/replication/reader.ts). */
export type ReadEntryView = ReadEntry;

export interface ClusterStatusView {
  readonly cluster: string;
  readonly node: string;
  readonly coordinator: string;
  readonly members: ReadonlyArray<{ id: string; address: string; startedMs: number; version: string; metricsUrl: string }>;
  readonly logs: ReadonlyArray<{ meta: LogMeta; writer: string; writerEpoch: number; committedIndex: number; segments: readonly SegmentMeta[] }>;
  /** This node's damage model and every node's published score (docs/SCRUBBING.md). */
  readonly scrub?: ScrubStatusView;
  readonly scrubScores?: ReadonlyArray<{ node: string; riskRatio: number; latencyFactor: number; segmentScoreMax: number; throttleShare: number; deficitSeconds: number; updatedMs: number }>;
}

export interface ScrubStatusView {
  readonly riskRatio: number;
  readonly latencyFactor: number;
  readonly latencyZ: { readonly fdatasync: number; readonly read: number };
  readonly rateMultiplier: number;
  readonly suspectBytes: number;
  readonly ioErrors: number;
  readonly detections: Readonly<Record<string, number>>;
  readonly topSegments: ReadonlyArray<{ log: string; segmentId: number; score: number; lastVerifiedMs: number | undefined }>;
  readonly repairs: number;
  readonly repairsFailed: number;
  readonly throttleShare: number;
  readonly deficitSeconds: number;
}

export interface ValidateMessageView {
  readonly node: string;
  readonly log: string;
  readonly segment: number;
  readonly kind: string;
  readonly entryIndex: number;
  readonly indexCount: number;
  readonly offsetBytes: number;
  readonly expectedChecksum: string;
  readonly actualChecksum: string;
  readonly detail: string;
  readonly done: boolean;
  readonly segmentsChecked: number;
  readonly bytesChecked: number;
}

export interface RecoveryEventMessage {
  readonly timeMs: number;
  readonly node: string;
  readonly log: string;
  readonly segment: number;
  readonly kind: string;
  readonly source: string;
  readonly detail: string;
}

/** What the services need of a node. */
export interface NodeApi {
  readonly handlers: PeerHandlers;
  readonly logger: Logger;
  append(log: string, payloads: readonly Uint8Array[], options: { createIfMissing: boolean; forwarded: boolean; deadlineMs: number; session?: SessionRef | undefined }): Promise<AppendResult>;
  read(log: string, from: number, to: number, batchMax: number): AsyncGenerator<ReadEntryView[]>;
  clusterStatus(log: string): Promise<ClusterStatusView>;
  repairSegment(log: string, segmentId: number, node: string, strategy: RepairStrategy | undefined, dryRun: boolean): Promise<Array<SegmentRepair & { node: string }>>;
  validate(log: string, node: string): AsyncGenerator<ValidateMessageView>;
  /** The per-node part of an admin repair (PeerService.RepairCopy): this node's copy, its own strategy. */
  repairCopy(log: string, segmentId: number, dryRun: boolean): Promise<Array<SegmentRepair & { node: string }>>;
  /** The per-node part of an admin Validate (PeerService.ValidateCopies): this node's copies. */
  validateCopies(log: string): AsyncGenerator<ValidateMessageView>;
  recoveryMetrics(): RecoveryMetricsSnapshot & { node: string };
  watchEvents(log: string, listener: (event: RecoveryEventMessage) => void): () => void;
}

export interface RpcServer {
  readonly port: number;
  setServing(serving: boolean): void;
  stop(): Promise<void>;
}

const DEFAULT_DEADLINE_MS = 30_000;

function remainingMs(call: { getDeadline(): grpc.Deadline }): number {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : Number(deadline);
  if (!Number.isFinite(at)) return DEFAULT_DEADLINE_MS;
  return Math.max(0, at - Date.now());
}

function fail(error: unknown, logger: Logger, method: string): Partial<grpc.StatusObject> {
  const status = toStatus(error);
  if (status.code === grpc.status.INTERNAL) logger.error({ err: error, method }, 'failed to serve a call');
  return { code: status.code, details: status.details };
}

function ref(segment: SegmentRef__Output | null): { log: string; segmentId: number } {
  if (!segment) throw new BadRequestError('segment', 'is required');
  return { log: segment.log, segmentId: segment.segment_id };
}

function unary<Req, Res>(logger: Logger, method: string, handle: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    // A span continuing the caller's trace when tracing is on (src/observability/tracing.ts).
    const handled = tracingEnabled() ? serverSpan(method, call.metadata, spanAttributes(logger, call.request), () => handle(call.request, call)) : handle(call.request, call);
    handled.then(
      (response) => callback(null, response),
      (error: unknown) => callback(fail(error, logger, method)),
    );
  };
}

/** The serving node and the request's log, on a server span. */
function spanAttributes(logger: Logger, request: unknown): Record<string, string> {
  const node = (logger.bindings() as { node?: unknown }).node;
  const log = (request as { log?: unknown } | null)?.log;
  return { 'wal.node': typeof node === 'string' ? node : '', ...(typeof log === 'string' ? { 'wal.log': log } : {}) };
}

const GONE = Symbol('gone');
const STALLED = Symbol('stalled');

/** Whether the call can no longer be written to (cancelled, past its deadline, failed or closed). */
function isGone(call: grpc.ServerWritableStream<unknown, unknown>): boolean {
  return call.cancelled || call.destroyed || call.writableEnded;
}

/** Read answers stay far below the message limit, so entries of any allowed size can be read. */
export const READ_RESPONSE_BYTES_MAX = 4 * 1024 * 1024;
/** Events a watcher may leave unread before it is dropped. */
export const WATCH_UNREAD_EVENTS_MAX = 1_000;

/** Splits each batch of entries into runs of at most bytesMax payload bytes (one entry at least). */
export async function* byBytes(source: AsyncIterable<readonly ReadEntryView[]>, bytesMax: number): AsyncGenerator<ReadEntryView[]> {
  for await (const batch of source) {
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < batch.length; i += 1) {
      const size = (batch[i] as ReadEntryView).payload.byteLength + 64; // the fields around it
      if (i > start && bytes + size > bytesMax) {
        yield batch.slice(start, i);
        start = i;
        bytes = 0;
      }
      bytes += size;
    }
    if (start < batch.length) yield batch.slice(start);
  }
}

/**
 * Writes every item of source to a server stream with backpressure, then ends the call. A call
 * that is cancelled, passes its deadline, fails or closes emits no 'drain' ever again: every wait
 * (for the source's next item, for 'drain') also ends when the call is gone, and the source is
 * then asked for nothing more and released with iterator.return() (a generator's finally runs, a
 * file stream is destroyed and its descriptor closed) once its step in progress settles.
 * Nothing is written after. The loop ends: every round writes one item, or the source or the
 * call is finished. The promise settles only once the source's step in progress has settled
 * and the source is released, or stallMs after the call went if that step never settles: a capped
 * call's slot (src/rpc/limits.ts) is held until then, since that step (a whole segment checked,
 * for Validate) runs on after the caller has gone. A throw from toMessage or write also releases
 * the source (the file stream behind FetchSegment is closed); a source that threw is finished.
 */
async function streamTo<T, M>(call: grpc.ServerWritableStream<unknown, M>, source: AsyncIterable<T>, toMessage: (item: T) => M, stallMs: number): Promise<void> {
  const iterator = source[Symbol.asyncIterator]();
  let markGone = (): void => undefined;
  const gone = new Promise<typeof GONE>((resolve) => (markGone = () => resolve(GONE)));
  const events = ['cancelled', 'close', 'error'] as const;
  for (const event of events) call.on(event, markGone);
  if (isGone(call)) markGone();
  let sourceDone = false;
  let stepInFlight: Promise<unknown> | undefined;
  try {
    // The source is started even for a call already gone: return() releases only a started
    // source (an eagerly opened file stream's descriptor is closed by its iterator's finally).
    for (;;) {
      const pending = iterator.next();
      pending.catch(() => undefined); // may settle after the call is gone: awaited in finally then
      let next: IteratorResult<T> | typeof GONE;
      try {
        next = await Promise.race([pending, gone]);
      } catch (error) {
        sourceDone = true; // a source that threw is finished (a throw from toMessage or write is not the source's: it is released)
        throw error;
      }
      if (next === GONE) {
        stepInFlight = pending;
        return;
      }
      if (next.done) {
        sourceDone = true;
        if (!isGone(call)) call.end();
        return;
      }
      if (isGone(call)) return;
      if (call.write(toMessage(next.value))) continue;
      let onDrain = (): void => undefined;
      const drained = new Promise<void>((resolve) => (onDrain = resolve));
      call.once('drain', onDrain);
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<typeof STALLED>((resolve) => (timer = setTimeout(() => resolve(STALLED), stallMs)));
      const woke = await Promise.race([drained, gone, stalled]);
      clearTimeout(timer);
      call.off('drain', onDrain);
      if (woke === GONE) return;
      if (woke === STALLED) throw new StreamStalledError(stallMs);
    }
  } finally {
    for (const event of events) call.off(event, markGone);
    if (!sourceDone) await releaseSource(iterator, stepInFlight, stallMs);
  }
}

/**
 * Releases a source the stream stopped taking from: iterator.return() once its step in progress
 * settled. Waited for at most stallMs: a step that never settles (a disk that never answers)
 * would otherwise keep the call's slot for good; the release still happens if the step settles.
 */
async function releaseSource(iterator: AsyncIterator<unknown>, stepInFlight: Promise<unknown> | undefined, stallMs: number): Promise<void> {
  const released = (async () => {
    await stepInFlight?.catch(() => undefined);
    await Promise.resolve(iterator.return?.()).catch(() => undefined);
  })();
  let timer: NodeJS.Timeout | undefined;
  const bounded = new Promise<void>((resolve) => (timer = setTimeout(resolve, stallMs)));
  await Promise.race([released, bounded]);
  clearTimeout(timer);
}

/**
 * streamTo over the source that open() returns, failing the call with the status of any error,
 * open() throwing at once included: a handler that throws before it returns its work would skip
 * its slot's release (src/rpc/limits.ts) and answer UNKNOWN.
 */
function serveStream<T, M>(call: grpc.ServerWritableStream<unknown, M>, logger: Logger, method: string, open: () => AsyncIterable<T>, toMessage: (item: T) => M, stallMs: number): Promise<void> {
  return (async () => streamTo(call, open(), toMessage, stallMs))().catch((error: unknown) => failStream(call, error, logger, method));
}

/** Ends a server stream with the status of error, unless the call is gone already. */
function failStream(call: grpc.ServerWritableStream<unknown, unknown>, error: unknown, logger: Logger, method: string): void {
  const status = fail(error, logger, method);
  if (!isGone(call)) call.emit('error', { ...status, metadata: new grpc.Metadata() });
}

/** The session of an Append (exactly-once), or undefined for none; malformed ones are refused. */
export function sessionOf(request: { session_id?: Buffer | Uint8Array; sequence?: number }): SessionRef | undefined {
  const id = request.session_id;
  if (!id || id.byteLength === 0) {
    if ((request.sequence ?? 0) !== 0) throw new BadRequestError('session_id', 'a sequence needs a session id');
    return undefined;
  }
  if (id.byteLength !== 16) throw new BadRequestError('session_id', `must be 16 bytes, not ${id.byteLength}`);
  const sequence = request.sequence ?? 0;
  if (!Number.isSafeInteger(sequence) || sequence < 1) throw new BadRequestError('sequence', 'must be at least 1 with a session id');
  return { sessionId: Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex'), sequence };
}

/** The session, once the caller may use it (TLS: bound to its certificate); SessionOwnerError if not. */
function ownSession(session: SessionRef | undefined, call: Parameters<typeof sessionRefusal>[0], transport: Transport, forwarded: boolean): SessionRef | undefined {
  if (!session) return undefined;
  const refused = sessionRefusal(call, transport, session.sessionId, forwarded);
  if (refused !== undefined) throw new SessionOwnerError(session.sessionId, refused);
  return session;
}

function walService(api: NodeApi, transport: Transport, stallMs: number): WalServiceHandlers {
  const { logger } = api;
  return {
    Append: unary(logger, 'Append', async (request, call) => {
      // Only a node may mark an append as forwarded (it is then not forwarded again).
      const forwarded = call.metadata.get(FORWARDED_METADATA_KEY)[0] === '1' && isPeerCaller(call, transport);
      const session = ownSession(sessionOf(request), call, transport, forwarded);
      const result = await api.append(request.log, request.payloads, { createIfMissing: request.create_if_missing, forwarded, deadlineMs: remainingMs(call), session });
      return { log: request.log, first_index: result.firstIndex, last_index: result.lastIndex };
    }),
    AppendStream: (call, callback) => {
      let first = 0;
      let last = 0;
      let log = '';
      let payloadCount = 0;
      void (async () => {
        for await (const received of call as AsyncIterable<{ log: string; payloads: Buffer[]; create_if_missing: boolean; session_id: Buffer; sequence: number }>) {
          const message = requireDecoded(received);
          if (log !== '' && message.log !== log) throw new BadRequestError('log', 'every message of one stream must name the same log');
          log = message.log;
          payloadCount += message.payloads.length;
          const result = await api.append(message.log, message.payloads, { createIfMissing: message.create_if_missing, forwarded: false, deadlineMs: remainingMs(call), session: ownSession(sessionOf(message), call, transport, false) });
          if (first === 0) first = result.firstIndex;
          last = result.lastIndex;
        }
        if (first === 0) throw new BadRequestError('payloads', 'the stream carried no entries');
        return { log, first_index: first, last_index: last };
      })().then(
        (response) => callback(null, response),
        // Messages committed before the failure are in the log: the answer says so (UNKNOWN, which
        // no client retries as it is), never a plain failure a client would retry whole.
        (error: unknown) => callback(fail(first === 0 ? error : new PartialAppendError(log, first, last, payloadCount, { cause: error }), logger, 'AppendStream')),
      );
    },
    Read: (call) => {
      const { log, from_index, to_index, batch_max } = call.request;
      const stream = (): Promise<void> =>
        streamTo(call, byBytes(api.read(log, from_index, to_index, batch_max), READ_RESPONSE_BYTES_MAX), (batch) => ({
          entries: batch.map((e) => ({ index: e.index, timestamp_ms: e.timestampMs, payload: e.payload, checksum: e.checksum, lost: e.lost, lost_reason: e.lostReason })),
        }), stallMs);
      return (async () => (tracingEnabled() ? serverSpan('Read', call.metadata, { ...spanAttributes(logger, call.request), 'wal.from_index': from_index, 'wal.to_index': to_index }, stream) : stream()))().catch((error: unknown) => failStream(call, error, logger, 'Read'));
    },
  };
}

function peerService(api: NodeApi, transport: Transport, stallMs: number): PeerServiceHandlers {
  const { handlers, logger } = api;
  // Writer calls carry the calling node (TLS): the member checks that it holds the epoch.
  return {
    Replicate: unary(logger, 'Replicate', async (r, call) => {
      if (!r.segment) throw new BadRequestError('segment', 'is required');
      const segment = { segmentId: r.segment.segment_id, firstIndex: r.segment.first_index, createdMs: r.segment.created_ms };
      return { last_index: (await handlers.replicate(r.log, r.epoch, segment, r.frames, r.committed_index, callerNode(call, transport))).lastIndex };
    }),
    Fence: unary(logger, 'Fence', async (r, call) => {
      const { log, segmentId } = ref(r.segment);
      const h = await handlers.fence(log, segmentId, r.epoch, callerNode(call, transport));
      return { present: h.present, first_index: h.firstIndex, last_index: h.lastIndex, sealed: h.sealed };
    }),
    Seal: unary(logger, 'Seal', async (r, call) => {
      const { log, segmentId } = ref(r.segment);
      const h = await handlers.seal(log, segmentId, r.epoch, r.last_index, r.expected_aggregate, callerNode(call, transport));
      return { last_index: h.lastIndex, aggregate: h.aggregate, index_count: h.indexCount, byte_length: h.byteLength };
    }),
    ReadFrames: unary(logger, 'ReadFrames', async (r) => {
      const { log, segmentId } = ref(r.segment);
      const result = await handlers.readFrames(log, segmentId, r.from_index, r.to_index, r.bytes_max);
      return { frames: result.frames, faulty: result.faulty, last_index: result.lastIndex, sealed: result.sealed, aggregate: result.aggregate };
    }),
    SegmentInfo: unary(logger, 'SegmentInfo', async (r) => {
      const { log, segmentId } = ref(r.segment);
      const h = await handlers.segmentInfo(log, segmentId, r.with_checksums, { fromIndex: r.checksums_from_index, countMax: r.checksums_max });
      return {
        ...{ present: h.present, sealed: h.sealed, first_index: h.firstIndex, last_index: h.lastIndex, index_count: h.indexCount, byte_length: h.byteLength, aggregate: h.aggregate },
        ...{ checksums: h.checksums, damaged: h.damaged, checksums_from_index: h.checksumsFromIndex, next_index: h.nextIndex },
      };
    }),
    FetchSegment: (call) => {
      return (async () => {
        const { log, segmentId } = ref(call.request.segment);
        const file = await handlers.openSegmentFile(log, segmentId, call.request.chunk_bytes);
        if (!file) throw new BadRequestError('segment', `segment ${segmentId} of log ${log} is not sealed here`);
        let offset = 0;
        await streamTo(call, file.chunks, (chunk) => {
          const message = { offset_bytes: offset, data: chunk, total_bytes: file.totalBytes };
          offset += chunk.byteLength;
          return message;
        }, stallMs);
      })().catch((error: unknown) => failStream(call, error, logger, 'FetchSegment'));
    },
    // The per-node parts of the admin fan-out (peer role only; the strategy is this node's own).
    RepairCopy: unary(logger, 'RepairCopy', async (r) => {
      const { log, segmentId } = ref(r.segment);
      return repairResponse(log, segmentId, await api.repairCopy(log, segmentId, r.dry_run));
    }),
    ValidateCopies: (call) => serveStream(call, logger, 'ValidateCopies', () => api.validateCopies(call.request.log), validateMessageToWire, stallMs),
  };
}

function repairResponse(log: string, segmentId: number, results: ReadonlyArray<SegmentRepair & { node: string }>): RepairSegmentResponse {
  return {
    log,
    segment_id: segmentId,
    results: results.map((x) => ({
      node: x.node,
      decision: x.decision,
      outcome: x.outcome,
      repaired: [...x.repaired],
      lost: [...x.lost],
      truncated: [...x.truncated],
      source: x.source ?? '',
      detail: x.detail,
      bytes_written: x.bytesWritten,
    })),
  };
}

function validateMessageToWire(m: ValidateMessageView): ValidateMessage {
  return {
    node: m.node,
    log: m.log,
    segment_id: m.segment,
    kind: m.kind,
    entry_index: m.entryIndex,
    index_count: m.indexCount,
    offset_bytes: m.offsetBytes,
    expected_checksum: m.expectedChecksum,
    actual_checksum: m.actualChecksum,
    detail: m.detail,
    done: m.done,
    segments_checked: m.segmentsChecked,
    bytes_checked: m.bytesChecked,
  };
}

function adminService(api: NodeApi, stallMs: number): AdminServiceHandlers {
  const { logger } = api;
  return {
    RepairSegment: unary(logger, 'RepairSegment', async (r) =>
      // The one parse of the strategy, at this edge: '' (not set) leaves each node its own.
      repairResponse(r.log, r.segment_id, await api.repairSegment(r.log, r.segment_id, r.node, r.strategy === '' ? undefined : parseStrategy(r.strategy), r.dry_run)),
    ),
    Validate: (call) => serveStream(call, logger, 'Validate', () => api.validate(call.request.log, call.request.node), validateMessageToWire, stallMs),
    GetRecoveryMetrics: unary(logger, 'GetRecoveryMetrics', async () => {
      const m = api.recoveryMetrics();
      return {
        node: m.node,
        recovery_attempts: m.recovery_attempts,
        successful_recoveries: m.successful_recoveries,
        failed_recoveries: m.failed_recoveries,
        corrupted_segments: m.corrupted_segments,
        entries_lost: m.entries_lost,
        entries_repaired: m.entries_repaired,
        bytes_repaired: m.bytes_repaired,
        torn_tails_truncated: m.torn_tails_truncated,
      };
    }),
    WatchRecoveryEvents: (call) => {
      let unsubscribe: (() => void) | undefined;
      const stop = (): void => unsubscribe?.();
      // A watcher that does not keep up is dropped (RESOURCE_EXHAUSTED), not buffered for.
      let unread = 0;
      call.on('drain', () => (unread = 0));
      try {
        unsubscribe = api.watchEvents(call.request.log, (e) => {
          if (isGone(call)) return;
          if (call.write({ time_ms: e.timeMs, node: e.node, log: e.log, segment_id: e.segment, kind: e.kind, source: e.source, detail: e.detail })) return;
          unread += 1;
          if (unread <= WATCH_UNREAD_EVENTS_MAX) return;
          stop();
          failStream(call, new WatcherTooSlowError(WATCH_UNREAD_EVENTS_MAX), api.logger, 'WatchRecoveryEvents');
        });
      } catch (error) {
        failStream(call, error, api.logger, 'WatchRecoveryEvents');
        return;
      }
      call.on('cancelled', stop);
      call.on('close', stop);
    },
    GetClusterStatus: unary(api.logger, 'GetClusterStatus', async (r): Promise<ClusterStatus> => {
      const view = await api.clusterStatus(r.log);
      return {
        cluster: view.cluster,
        node: view.node,
        coordinator: view.coordinator,
        ...(view.scrub ? { scrub: scrubStatusToWire(view.scrub) } : {}),
        scrub_scores: (view.scrubScores ?? []).map((n) => ({ node: n.node, risk_ratio: n.riskRatio, latency_factor: n.latencyFactor, segment_score_max: n.segmentScoreMax, throttle_share: n.throttleShare, deficit_seconds: n.deficitSeconds, updated_ms: n.updatedMs })),
        members: view.members.map((m) => ({ id: m.id, address: m.address, started_ms: m.startedMs, version: m.version, metrics_url: m.metricsUrl })),
        logs: view.logs.map((l) => ({
          log: l.meta.log,
          writer: l.writer,
          writer_epoch: l.writerEpoch,
          replication_factor: l.meta.replicationFactor,
          ack_quorum: l.meta.ackQuorum,
          committed_index: l.committedIndex,
          segments: l.segments.map((s) => ({
            segment_id: s.segmentId,
            state: s.state,
            ensemble: [...s.ensemble],
            ack_quorum: s.ackQuorum,
            writer_epoch: s.writerEpoch,
            first_index: s.firstIndex,
            last_index: s.lastIndex,
            index_count: s.indexCount,
            byte_length: s.byteLength,
            aggregate: s.aggregate,
          })),
        })),
      };
    }),
  };
}

export interface RpcSecurity {
  readonly transport: Transport;
  /** Counts a refused call (by method and status). */
  readonly onRefused?: (method: string, code: 'UNAUTHENTICATED' | 'PERMISSION_DENIED') => void;
}

export async function startRpcServer(api: NodeApi, listen: { host: string; port: number }, security: RpcSecurity = { transport: INSECURE }, limitOptions: LimitOptions = { limits: RPC_LIMITS_DEFAULT }): Promise<RpcServer> {
  const { proto, packageDefinition } = loadProto();
  // The role check runs first, before the request is read: a caller refused for who it is costs
  // no decoding, no buffered message and no slot of a capped family.
  const guard = authInterceptor({ transport: security.transport, logger: api.logger, ...(security.onRefused ? { onRefused: security.onRefused } : {}) });
  const server = new grpc.Server({
    ...CHANNEL_OPTIONS,
    'grpc.max_receive_message_length': MESSAGE_BYTES_MAX,
    'grpc.max_concurrent_streams': limitOptions.limits.concurrentStreamsPerConnectionMax,
    interceptors: [...(guard ? [guard] : []), healthWatchInterceptor(limitOptions.limits.healthWatchesMax, limitOptions.onLimited)],
  });
  const inFlight = new InFlightCalls(limitOptions);
  // Requests that do not decode are answered INVALID_ARGUMENT, before the limits.
  const serve = (name: string, loaded: grpc.ServiceDefinition, handlers: object): void => {
    const definition = tolerantDefinition(name, loaded);
    const limited = limitService(name, definition, handlers as grpc.UntypedServiceImplementation, inFlight);
    server.addService(definition, decodedService(definition, limited));
  };
  serve('WalService', proto.walrecovery.v1.WalService.service, walService(api, security.transport, limitOptions.limits.streamStallMsMax));
  serve('PeerService', proto.walrecovery.v1.PeerService.service, peerService(api, security.transport, limitOptions.limits.streamStallMsMax));
  serve('AdminService', proto.walrecovery.v1.AdminService.service, adminService(api, limitOptions.limits.streamStallMsMax));
  const health = new HealthImplementation({ '': 'NOT_SERVING', 'walrecovery.v1.WalService': 'NOT_SERVING' });
  health.addToServer(server);
  // Reflection tells anyone the whole schema: served on a plaintext (development) node only.
  if (security.transport.kind === 'insecure') new ReflectionService(packageDefinition).addToServer(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${listen.host}:${listen.port}`, serverCredentials(security.transport), (error, bound) => (error ? reject(error) : resolve(bound)));
  });
  return {
    port,
    setServing(serving: boolean) {
      const status = serving ? 'SERVING' : 'NOT_SERVING';
      health.setStatus('', status);
      health.setStatus('walrecovery.v1.WalService', status);
    },
    stop() {
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}

function scrubStatusToWire(v: ScrubStatusView): ScrubStatus {
  return {
    risk_ratio: v.riskRatio,
    latency_factor: v.latencyFactor,
    latency_z_fdatasync: v.latencyZ.fdatasync,
    latency_z_read: v.latencyZ.read,
    rate_multiplier: v.rateMultiplier,
    suspect_bytes: Math.round(v.suspectBytes),
    io_errors: v.ioErrors,
    checksum_failures: { ...v.detections },
    top_segments: v.topSegments.map((s) => ({ log: s.log, segment_id: s.segmentId, score: s.score, last_verified_ms: s.lastVerifiedMs ?? 0 })),
    repairs: v.repairs,
    repairs_failed: v.repairsFailed,
    throttle_share: v.throttleShare,
    deficit_seconds: v.deficitSeconds,
  };
}
