// Limits on what callers may hold of a node at once (issue 11, "everything bounded").
//
// Fault model: a caller (even one with a valid identity) opens calls faster than the node can
// serve them, or opens expensive streams and never reads them. Two bounds:
// - per connection, concurrent HTTP/2 streams (grpc-js server option
//   'grpc.max_concurrent_streams'): a caller's further calls wait in its own client for a free
//   stream instead of piling up in the node;
// - per family of expensive calls (those that read whole segments or stream without end), calls
//   in flight across all connections: one more is answered RESOURCE_EXHAUSTED at once (retryable:
//   src/rpc/status.ts isRetryable) and counted, so a flood never queues work without end.
// A family's slot is taken when the handler starts and given back when the call ends in any way
// (answered, failed, cancelled, past its deadline) and its handler's work has settled: a unary
// call's (one request, one answer) once its handler has answered, a server stream's once its
// writer has stopped and the source's step in progress has settled (both run on after the caller
// has gone). Every wait is bounded: a step that never settles by streamStallMsMax after the
// caller went (src/rpc/server.ts streamTo), a call whose caller reads nothing more (and has no
// deadline) by streamStallMsMax after its handler's work settled, a handler that throws at once
// not at all.
import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { toStatus } from './status.js';
import { CallLimitedError } from './errors.js';

export type CallFamily = 'read' | 'fetch' | 'validate' | 'repair' | 'repair-copy' | 'validate-copies' | 'peer-read' | 'append' | 'writer' | 'status';
export const CALL_FAMILIES: readonly CallFamily[] = ['read', 'fetch', 'validate', 'repair', 'repair-copy', 'validate-copies', 'peer-read', 'append', 'writer', 'status'];

/** The families of the calls that are capped; a method not named here is not. */
export const METHOD_FAMILY: Readonly<Record<string, CallFamily>> = {
  'WalService.Read': 'read',
  'PeerService.FetchSegment': 'fetch',
  'AdminService.Validate': 'validate',
  'AdminService.RepairSegment': 'repair',
  // The per-node parts of an admin repair or validate (and the coordinator's retry), called by
  // other nodes: capped apart from the admin calls, so that a peer certificate holding every
  // RepairCopy or ValidateCopies slot cannot keep an admin's RepairSegment or Validate out.
  'PeerService.RepairCopy': 'repair-copy',
  'PeerService.ValidateCopies': 'validate-copies',
  // Up to 4 MiB of frames (ReadFrames) or 64 MiB read for a page of checksums (SegmentInfo).
  'PeerService.ReadFrames': 'peer-read',
  'PeerService.SegmentInfo': 'peer-read',
  // Cheaper calls, capped high: what a flood of them may hold of the node (a queued append, a
  // writer call waiting in its log's chain, an etcd read for a status) is bounded too.
  'WalService.Append': 'append',
  'WalService.AppendStream': 'append',
  'PeerService.Replicate': 'writer',
  'PeerService.Fence': 'writer',
  'PeerService.Seal': 'writer',
  'AdminService.GetClusterStatus': 'status',
  'AdminService.GetRecoveryMetrics': 'status',
};

export interface RpcLimits {
  /** HTTP/2 streams one connection may have open at once. */
  readonly concurrentStreamsPerConnectionMax: number;
  /** Calls of each family in flight at once on this node, all callers together. */
  readonly inFlightCallsMax: Readonly<Record<CallFamily, number>>;
  /**
   * How long a server stream may wait for its reader to take the next message: a caller that
   * stops reading would otherwise keep its slot (and the file or batch behind it) for ever.
   */
  readonly streamStallMsMax: number;
  /** Health Watch streams open at once on this node (health answers without a certificate). */
  readonly healthWatchesMax: number;
}

export const RPC_LIMITS_DEFAULT: RpcLimits = Object.freeze({
  concurrentStreamsPerConnectionMax: 512,
  // status: a follower asks the writer's status on each Read (its committed index), so it is sized with read.
  inFlightCallsMax: Object.freeze({ read: 256, fetch: 16, validate: 8, repair: 16, 'repair-copy': 16, 'validate-copies': 8, 'peer-read': 64, append: 4096, writer: 4096, status: 1024 }),
  streamStallMsMax: 30_000,
  healthWatchesMax: 64,
});

/** Fills defaults and checks every limit is a positive integer (an invalid one is a bug here). */
export function resolveRpcLimits(partial: { concurrentStreamsPerConnectionMax?: number; inFlightCallsMax?: Partial<Record<CallFamily, number>>; streamStallMsMax?: number; healthWatchesMax?: number } = {}): RpcLimits {
  const limits: RpcLimits = {
    concurrentStreamsPerConnectionMax: partial.concurrentStreamsPerConnectionMax ?? RPC_LIMITS_DEFAULT.concurrentStreamsPerConnectionMax,
    inFlightCallsMax: Object.freeze({ ...RPC_LIMITS_DEFAULT.inFlightCallsMax, ...partial.inFlightCallsMax }),
    streamStallMsMax: partial.streamStallMsMax ?? RPC_LIMITS_DEFAULT.streamStallMsMax,
    healthWatchesMax: partial.healthWatchesMax ?? RPC_LIMITS_DEFAULT.healthWatchesMax,
  };
  for (const [name, value] of [['concurrentStreamsPerConnectionMax', limits.concurrentStreamsPerConnectionMax], ['streamStallMsMax', limits.streamStallMsMax], ['healthWatchesMax', limits.healthWatchesMax], ...Object.entries(limits.inFlightCallsMax)] as const) {
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`rpc limit ${name} must be a positive integer, got ${String(value)}`);
  }
  return Object.freeze(limits);
}

export interface LimitOptions {
  readonly limits: RpcLimits;
  /** Counts a call answered RESOURCE_EXHAUSTED (wal_recovery_rpc_limited_total{method}). */
  readonly onLimited?: (method: string) => void;
}

/** In-flight calls per family, shared by every service of one server. */
export class InFlightCalls {
  private readonly counts = new Map<CallFamily, number>();

  constructor(readonly options: LimitOptions) {}

  inFlight(family: CallFamily): number {
    return this.counts.get(family) ?? 0;
  }

  /** A release function, or undefined when the family is at its limit. */
  tryAcquire(family: CallFamily): (() => void) | undefined {
    const count = this.inFlight(family);
    if (count >= this.options.limits.inFlightCallsMax[family]) return undefined;
    this.counts.set(family, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.counts.set(family, this.inFlight(family) - 1);
    };
  }
}

/**
 * Resets (RST_STREAM CANCEL) the HTTP/2 stream under a grpc-js server call: its status queued behind
 * messages the caller does not read never goes, and the stream, with those messages, stays for good.
 * grpc-js exposes no cancel on the server side: the stream is found down the interceptor chain.
 */
export function resetStream(call: unknown): void {
  let at = (call as { call?: unknown } | undefined)?.call as { nextCall?: unknown; stream?: { closed?: boolean; close?: (code: number) => void } } | undefined;
  for (let depth = 0; at && !at.stream && depth < 8; depth += 1) at = at.nextCall as typeof at;
  if (at?.stream && !at.stream.closed) at.stream.close?.(http2.constants.NGHTTP2_CANCEL);
}

type AnyCall = { on(event: string, listener: () => void): unknown; emit(event: 'error', status: unknown): boolean };

/** Wraps the handlers of the capped methods of one service; the others are returned as they are. */
export function limitService(serviceName: string, definition: grpc.ServiceDefinition, handlers: grpc.UntypedServiceImplementation, inFlight: InFlightCalls): grpc.UntypedServiceImplementation {
  const limited: grpc.UntypedServiceImplementation = { ...handlers };
  for (const [name, handler] of Object.entries(handlers)) {
    const method = `${serviceName}.${name}`;
    const family = METHOD_FAMILY[method];
    const attrs = definition[name];
    if (family === undefined) continue;
    if (!attrs) throw new Error(`${method}: not in the service definition`);
    // A server-stream handler returns its work (a promise), or nothing when it has none to wait for.
    const run = handler as (call: unknown, callback?: unknown) => PromiseLike<unknown> | void;
    limited[name] = ((call: AnyCall, callback?: (error: grpc.ServiceError | null, value?: unknown) => void) => {
      const release = inFlight.tryAcquire(family);
      if (!release) {
        inFlight.options.onLimited?.(method);
        const error = new CallLimitedError(method, family, inFlight.options.limits.inFlightCallsMax[family]);
        const status = { ...toStatus(error), metadata: new grpc.Metadata() };
        if (attrs.responseStream) call.emit('error', status);
        else callback?.(Object.assign(error, status));
        return;
      }
      // A stream's slot comes back when it closes (answered, failed, cancelled or past its
      // deadline: grpc-js destroys it, and the stream is read or written no further). A unary
      // call's comes back when its handler answers, not when its caller goes: the handler's work
      // (a repair, a status read) runs on after a cancel or a deadline, and freeing its slot
      // then let a caller with short deadlines start any number of them past the cap. So does a
      // server stream's step in progress (a whole segment checked, for Validate and
      // ValidateCopies): its slot comes back once the call has closed and the work its handler
      // returned has settled (src/rpc/server.ts streamTo waits for that step).
      if (attrs.responseStream) {
        let waiting = 2; // the call's end, the handler's work
        let timer: NodeJS.Timeout | undefined;
        const settled = (): void => {
          waiting -= 1;
          if (waiting > 0) return;
          clearTimeout(timer);
          release();
        };
        let closed = false;
        const onEnd = (): void => {
          if (closed) return;
          closed = true;
          settled();
        };
        call.on('close', onEnd);
        call.on('cancelled', onEnd);
        // Work that settled has ended its call (answered or failed it), but the status waits behind
        // the messages not yet taken: a caller with no deadline that reads nothing more never lets
        // the call close, and grpc-js then emits neither 'close' nor 'cancelled'. Its end is taken
        // as reached streamStallMsMax after the work settled (the same bound as a stalled write).
        const workDone = (): void => {
          settled();
          if (!closed) {
            timer = setTimeout(() => {
              resetStream(call); // frees the unread messages it still buffers (else the slot's memory outlives it)
              onEnd();
            }, inFlight.options.limits.streamStallMsMax).unref();
          }
        };
        let work: PromiseLike<unknown> | void;
        try {
          work = run(call);
        } catch (error) {
          onEnd(); // grpc-js answers a handler that throws at once (UNKNOWN): no work runs on
          settled();
          throw error;
        }
        if (work && typeof work.then === 'function') work.then(workDone, workDone);
        else settled();
        return;
      }
      if (attrs.requestStream) {
        call.on('close', release);
        call.on('cancelled', release);
      }
      try {
        return run(call, (error: grpc.ServiceError | null, value?: unknown) => {
          release();
          callback?.(error, value);
        });
      } catch (error) {
        release(); // grpc-js answers a handler that throws at once (UNKNOWN): its callback never comes
        throw error;
      }
    }) as unknown as grpc.UntypedHandleCall;
  }
  return limited;
}

/** The standard health service's Watch (answered without a certificate, for container health checks). */
const HEALTH_WATCH_PATH = '/grpc.health.v1.Health/Watch';

/**
 * Caps the health Watch streams open at once on this node (all callers together): health answers
 * without a certificate, and each Watch is a stream held until its caller goes away. One more is
 * RESOURCE_EXHAUSTED at once and counted. Health Check (unary) is not capped.
 */
export function healthWatchInterceptor(watchesMax: number, onLimited?: (method: string) => void): grpc.ServerInterceptor {
  let open = 0;
  return (descriptor, call) => {
    if (descriptor.path !== HEALTH_WATCH_PATH) return new grpc.ServerInterceptingCall(call);
    if (open >= watchesMax) {
      onLimited?.('Health.Watch');
      return new grpc.ServerInterceptingCall(call, {
        start: (next) => next({ onReceiveMetadata: () => call.sendStatus({ code: grpc.status.RESOURCE_EXHAUSTED, details: `${watchesMax} health watches are open on this node already; use Check, or retry later`, metadata: new grpc.Metadata() }) }),
      });
    }
    open += 1;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      open -= 1;
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => next({ onCancel: release }),
      sendStatus: (status, next) => {
        release();
        next(status);
      },
    });
  };
}

/** The names of --rpc-limit NAME=N (node verb), each with the limit it sets. */
export const RPC_LIMIT_NAMES: readonly string[] = ['streams-per-connection', 'stream-stall-ms', 'health-watches', ...CALL_FAMILIES.map((f) => `in-flight-${f}`)];

/** Parses NAME=N settings (--rpc-limit) into limits; an unknown name or a bad number throws RangeError. */
export function parseRpcLimits(settings: readonly string[]): RpcLimits {
  const partial: { concurrentStreamsPerConnectionMax?: number; inFlightCallsMax: Partial<Record<CallFamily, number>>; streamStallMsMax?: number; healthWatchesMax?: number } = { inFlightCallsMax: {} };
  for (const setting of settings) {
    const match = /^([a-z-]+)=(\d{1,10})$/.exec(setting.trim());
    if (!match) throw new RangeError(`rpc limit '${setting.slice(0, 60)}': expected NAME=N with NAME one of ${RPC_LIMIT_NAMES.join(', ')}`);
    const [, name, digits] = match as unknown as [string, string, string];
    const value = Number(digits);
    if (name === 'streams-per-connection') partial.concurrentStreamsPerConnectionMax = value;
    else if (name === 'stream-stall-ms') partial.streamStallMsMax = value;
    else if (name === 'health-watches') partial.healthWatchesMax = value;
    else if (name.startsWith('in-flight-') && (CALL_FAMILIES as readonly string[]).includes(name.slice('in-flight-'.length))) partial.inFlightCallsMax[name.slice('in-flight-'.length) as CallFamily] = value;
    else throw new RangeError(`rpc limit '${name}' is unknown: one of ${RPC_LIMIT_NAMES.join(', ')}`);
  }
  return resolveRpcLimits(partial);
}
