// gRPC clients for the three services, with promise methods, a deadline on every call and the
// channel options that suit bulk transfer on loopback (a 16 MiB flow control window).
import * as grpc from '@grpc/grpc-js';
import { injectTraceContext, tracingEnabled } from '../observability/tracing.js';
import { FetchedSegmentRejectedError, ReplicationError, type FramesAnswer, type PeerApi, type SegmentHolding } from '../replication/index.js';
import type { SegmentStart } from '../wal/index.js';
import { loadProto } from './proto.js';
import { INSECURE, type Transport, channelCredentials } from './security.js';
import type { PeerServiceClient } from './generated/walrecovery/v1/PeerService.js';
import type { WalServiceClient } from './generated/walrecovery/v1/WalService.js';
import type { AdminServiceClient } from './generated/walrecovery/v1/AdminService.js';
import type { ClusterStatus__Output } from './generated/walrecovery/v1/ClusterStatus.js';
import type { ReadResponse__Output } from './generated/walrecovery/v1/ReadResponse.js';
import type { SegmentInfoResponse__Output } from './generated/walrecovery/v1/SegmentInfoResponse.js';
import type { SegmentChunk__Output } from './generated/walrecovery/v1/SegmentChunk.js';
import type { RepairSegmentResponse__Output } from './generated/walrecovery/v1/RepairSegmentResponse.js';
import type { ValidateMessage__Output } from './generated/walrecovery/v1/ValidateMessage.js';
import type { RecoveryMetricsResponse__Output } from './generated/walrecovery/v1/RecoveryMetricsResponse.js';
import type { RecoveryEvent__Output } from './generated/walrecovery/v1/RecoveryEvent.js';
import type { RepairStrategy } from '../recovery/index.js';

export const MESSAGE_BYTES_MAX = 32 * 1024 * 1024;
export const RPC_DEADLINE_MS = 5_000;
export const FORWARDED_METADATA_KEY = 'x-wal-recovery-forwarded';

export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MESSAGE_BYTES_MAX,
  'grpc.max_send_message_length': MESSAGE_BYTES_MAX,
  'grpc-node.flow_control_window': 16 * 1024 * 1024,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2_000,
};

/**
 * Every outgoing call carries the active span's W3C traceparent when tracing is on; with tracing
 * off the interceptor passes the call through untouched (src/observability/tracing.ts).
 */
const traceContextInterceptor: grpc.Interceptor = (options, nextCall) => {
  if (!tracingEnabled()) return new grpc.InterceptingCall(nextCall(options));
  return new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      injectTraceContext(metadata);
      next(metadata, listener);
    },
  });
};

/** The options of every client this module makes: the channel's, and trace propagation. */
const CLIENT_OPTIONS: grpc.ClientOptions = { ...CHANNEL_OPTIONS, interceptors: [traceContextInterceptor] };

/**
 * A generated client, made again (a new connection, so a new TLS handshake that checks the
 * server's certificate against the list) when the revocation list has revoked someone since it
 * was made: a connection opened before a server was revoked is not used again (review of issue
 * 11). The old one is closed; a call still on it fails and is retried like any transient failure.
 */
function madeAgainOnRevocation<T extends grpc.Client>(transport: Transport, make: () => T): () => T {
  let client = make();
  const revoked = transport.kind === 'tls' ? transport.revoked : undefined;
  if (!revoked) return () => client;
  let generation = revoked.generation;
  return () => {
    if (revoked.generation !== generation) {
      generation = revoked.generation;
      client.close();
      client = make();
    }
    return client;
  };
}

export function deadline(ms: number = RPC_DEADLINE_MS): Date {
  return new Date(Date.now() + Math.max(1, Math.min(ms, 600_000)));
}

type Callback<T> = (error: grpc.ServiceError | null, value?: T) => void;

function call<T>(invoke: (callback: Callback<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    invoke((error, value) => {
      if (error) reject(error);
      else resolve(value as T);
    });
  });
}

function holding(r: { present: boolean; sealed: boolean; first_index: number; last_index: number; index_count?: number; byte_length?: number; aggregate?: string }): SegmentHolding {
  return {
    present: r.present,
    sealed: r.sealed,
    firstIndex: r.first_index,
    lastIndex: r.last_index,
    indexCount: r.index_count ?? 0,
    byteLength: r.byte_length ?? 0,
    aggregate: r.aggregate ?? '',
  };
}

export class PeerClient implements PeerApi {
  private readonly channel: () => PeerServiceClient;

  private get client(): PeerServiceClient {
    return this.channel();
  }

  constructor(readonly address: string, private readonly deadlineMs = RPC_DEADLINE_MS, transport: Transport = INSECURE) {
    const { proto } = loadProto();
    this.channel = madeAgainOnRevocation(transport, () => new proto.walrecovery.v1.PeerService(address, channelCredentials(transport), CLIENT_OPTIONS));
  }

  async replicate(log: string, epoch: number, segment: SegmentStart, frames: readonly Buffer[], committedIndex: number): Promise<{ lastIndex: number }> {
    const request = { log, epoch, segment: { segment_id: segment.segmentId, first_index: segment.firstIndex, created_ms: segment.createdMs }, frames: [...frames], committed_index: committedIndex };
    const response = await call<{ last_index: number }>((cb) => this.client.Replicate(request, { deadline: deadline(this.deadlineMs) }, cb));
    return { lastIndex: response.last_index };
  }

  async fence(log: string, segmentId: number, epoch: number): Promise<SegmentHolding> {
    const response = await call<{ present: boolean; sealed: boolean; first_index: number; last_index: number }>((cb) =>
      this.client.Fence({ segment: { log, segment_id: segmentId }, epoch }, { deadline: deadline(this.deadlineMs) }, cb),
    );
    return holding(response);
  }

  async seal(log: string, segmentId: number, epoch: number, lastIndex: number, expectedAggregate: string): Promise<SegmentHolding> {
    const response = await call<{ last_index: number; aggregate: string; index_count: number; byte_length: number }>((cb) =>
      this.client.Seal({ segment: { log, segment_id: segmentId }, epoch, last_index: lastIndex, expected_aggregate: expectedAggregate }, { deadline: deadline(this.deadlineMs) }, cb),
    );
    return { present: true, sealed: true, firstIndex: 0, lastIndex: response.last_index, indexCount: response.index_count, byteLength: response.byte_length, aggregate: response.aggregate };
  }

  async readFrames(log: string, segmentId: number, from: number, to: number, bytesMax: number): Promise<FramesAnswer> {
    const response = await call<{ frames: Buffer[]; faulty: number[]; last_index: number; sealed: boolean; aggregate: string }>((cb) =>
      this.client.ReadFrames({ segment: { log, segment_id: segmentId }, from_index: from, to_index: to, bytes_max: bytesMax }, { deadline: deadline(this.deadlineMs) }, cb),
    );
    return { frames: response.frames, faulty: response.faulty, lastIndex: response.last_index, sealed: response.sealed, aggregate: response.aggregate };
  }

  /**
   * What the member holds of a segment, with every per-entry checksum when asked: fetched page by
   * page (a page never nears the message limit). A member whose pages do not follow on from each
   * other is refused; the number of pages is bounded by the entries of the segment.
   */
  async segmentInfo(log: string, segmentId: number, withChecksums: boolean, pageMax = 0): Promise<SegmentHolding & { checksums: string[]; damaged: boolean }> {
    const first = await this.segmentInfoPage(log, segmentId, withChecksums, 0, pageMax);
    const checksums = [...first.checksums];
    let damaged = first.damaged;
    let next = first.next_index;
    while (next !== 0) {
      if (next !== first.first_index + checksums.length || next > first.last_index) throw new ReplicationError(`segment ${segmentId} of log ${log}: ${this.address} sent a checksum page that does not follow on (next ${next})`);
      const page = await this.segmentInfoPage(log, segmentId, withChecksums, next, pageMax);
      if (page.checksums_from_index !== next || page.checksums.length === 0) throw new ReplicationError(`segment ${segmentId} of log ${log}: ${this.address} sent a page from ${page.checksums_from_index} with ${page.checksums.length} checksums for ${next}`);
      checksums.push(...page.checksums);
      damaged ||= page.damaged;
      next = page.next_index;
    }
    return { ...holding(first), checksums, damaged };
  }

  private segmentInfoPage(log: string, segmentId: number, withChecksums: boolean, fromIndex: number, countMax: number): Promise<SegmentInfoResponse__Output> {
    const request = { segment: { log, segment_id: segmentId }, with_checksums: withChecksums, checksums_from_index: fromIndex, checksums_max: countMax };
    return call<SegmentInfoResponse__Output>((cb) => this.client.SegmentInfo(request, { deadline: deadline(this.deadlineMs) }, cb));
  }

  fetchSegment(log: string, segmentId: number, chunkBytes: number, deadlineMs = 60_000): AsyncIterable<SegmentChunk__Output> {
    return this.client.FetchSegment({ segment: { log, segment_id: segmentId }, chunk_bytes: chunkBytes }, { deadline: deadline(deadlineMs) });
  }

  /**
   * The bytes of a sealed segment file whose record says it is byteLength long, chunk by chunk.
   * The member is not trusted: a stream that announces another total, sends a chunk out of
   * order or goes past byteLength is cancelled at once and fails with FetchedSegmentRejectedError
   * (a hostile member cannot make this node write more than the record allows). What arrives
   * whole is still verified against the record by the caller before it is installed.
   */
  async *fetchSegmentBounded(log: string, segmentId: number, byteLength: number, chunkBytes: number, deadlineMs = 60_000): AsyncGenerator<Buffer> {
    const stream = this.client.FetchSegment({ segment: { log, segment_id: segmentId }, chunk_bytes: chunkBytes }, { deadline: deadline(deadlineMs) });
    const refuse = (detail: string): FetchedSegmentRejectedError => new FetchedSegmentRejectedError(log, segmentId, this.address, detail);
    let received = 0;
    let finished = false;
    try {
      for await (const chunk of stream as AsyncIterable<SegmentChunk__Output>) {
        if (chunk.total_bytes !== byteLength) throw refuse(`it announces ${chunk.total_bytes} bytes, the record ${byteLength}`);
        if (chunk.offset_bytes !== received) throw refuse(`chunk at offset ${chunk.offset_bytes}, expected ${received}`);
        if (received + chunk.data.byteLength > byteLength) throw refuse(`more than the ${byteLength} bytes of its record`);
        received += chunk.data.byteLength;
        yield chunk.data;
      }
      if (received !== byteLength) throw refuse(`the stream ended after ${received} of ${byteLength} bytes`);
      finished = true;
    } finally {
      // Leaving the loop early does not end the call in grpc-js: cancel it, or the member keeps
      // sending until flow control stalls it at its deadline.
      if (!finished) stream.cancel();
    }
  }

  /** The per-node part of an admin repair: the member repairs its own copy with its own strategy. */
  repairCopy(log: string, segmentId: number, dryRun: boolean, deadlineMs = 300_000): Promise<RepairSegmentResponse__Output> {
    return call<RepairSegmentResponse__Output>((cb) => this.client.RepairCopy({ segment: { log, segment_id: segmentId }, dry_run: dryRun }, { deadline: deadline(deadlineMs) }, cb));
  }

  /** The per-node part of an admin Validate: the member's findings on its own copies. */
  validateCopies(log: string, deadlineMs = 600_000): AsyncIterable<ValidateMessage__Output> {
    return this.client.ValidateCopies({ log, node: '' }, { deadline: deadline(deadlineMs) });
  }

  close(): void {
    this.client.close();
  }
}

export interface AppendOutcome {
  readonly firstIndex: number;
  readonly lastIndex: number;
}

export class WalClient {
  private readonly channel: () => WalServiceClient;

  private get client(): WalServiceClient {
    return this.channel();
  }

  constructor(readonly address: string, transport: Transport = INSECURE) {
    const { proto } = loadProto();
    this.channel = madeAgainOnRevocation(transport, () => new proto.walrecovery.v1.WalService(address, channelCredentials(transport), CLIENT_OPTIONS));
  }

  async append(log: string, payloads: readonly Uint8Array[], options: { createIfMissing?: boolean; deadlineMs?: number; forwarded?: boolean; session?: { sessionId: string; sequence: number } | undefined } = {}): Promise<AppendOutcome> {
    const metadata = new grpc.Metadata();
    if (options.forwarded) metadata.set(FORWARDED_METADATA_KEY, '1');
    const session = options.session ? { session_id: Buffer.from(options.session.sessionId, 'hex'), sequence: options.session.sequence } : {};
    const response = await call<{ first_index: number; last_index: number }>((cb) =>
      this.client.Append({ log, payloads: payloads.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)), create_if_missing: options.createIfMissing ?? false, ...session }, metadata, { deadline: deadline(options.deadlineMs ?? 30_000) }, cb),
    );
    return { firstIndex: response.first_index, lastIndex: response.last_index };
  }

  read(log: string, from: number, to: number, options: { deadlineMs?: number; batchMax?: number } = {}): AsyncIterable<ReadResponse__Output> {
    return this.client.Read({ log, from_index: from, to_index: to, batch_max: options.batchMax ?? 256 }, { deadline: deadline(options.deadlineMs ?? 120_000) });
  }

  waitForReady(deadlineMs: number): Promise<void> {
    return new Promise((resolve, reject) => this.client.waitForReady(deadline(deadlineMs), (error) => (error ? reject(error) : resolve())));
  }

  close(): void {
    this.client.close();
  }
}

export class AdminClient {
  private readonly channel: () => AdminServiceClient;

  private get client(): AdminServiceClient {
    return this.channel();
  }

  constructor(readonly address: string, transport: Transport = INSECURE) {
    const { proto } = loadProto();
    this.channel = madeAgainOnRevocation(transport, () => new proto.walrecovery.v1.AdminService(address, channelCredentials(transport), CLIENT_OPTIONS));
  }

  status(log = '', deadlineMs = RPC_DEADLINE_MS): Promise<ClusterStatus__Output> {
    return call<ClusterStatus__Output>((cb) => this.client.GetClusterStatus({ log }, { deadline: deadline(deadlineMs) }, cb));
  }

  repairSegment(request: { log: string; segmentId: number; node?: string; strategy?: RepairStrategy; dryRun?: boolean }, deadlineMs = 300_000): Promise<RepairSegmentResponse__Output> {
    const message = { log: request.log, segment_id: request.segmentId, node: request.node ?? '', strategy: request.strategy ?? '', dry_run: request.dryRun ?? false };
    return call<RepairSegmentResponse__Output>((cb) => this.client.RepairSegment(message, { deadline: deadline(deadlineMs) }, cb));
  }

  validate(log = '', node = '', deadlineMs = 600_000): AsyncIterable<ValidateMessage__Output> {
    return this.client.Validate({ log, node }, { deadline: deadline(deadlineMs) });
  }

  recoveryMetrics(deadlineMs = RPC_DEADLINE_MS): Promise<RecoveryMetricsResponse__Output> {
    return call<RecoveryMetricsResponse__Output>((cb) => this.client.GetRecoveryMetrics({}, { deadline: deadline(deadlineMs) }, cb));
  }

  /** Streams recovery events until cancelled (the returned stream's cancel()). */
  watchEvents(log = ''): grpc.ClientReadableStream<RecoveryEvent__Output> {
    return this.client.WatchRecoveryEvents({ log });
  }

  close(): void {
    this.client.close();
  }
}
