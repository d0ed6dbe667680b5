// A simulated network between the nodes' PeerHandlers: every remote call takes a delay drawn
// from the seed each way, may be dropped (request or reply), and is cut by partitions (one-way
// too). A caller whose request or reply is lost waits out its deadline and gets
// DEADLINE_EXCEEDED, as with grpc-js. Errors a remote handler raises reach the caller as a
// status (src/rpc's toStatus), as over gRPC; calls to the caller's own node go directly, as in
// src/cluster/node.ts.
import type { SeededRandom } from '../io/index.js';
import type { PeerApi, PeerHandlers, PeerResolver, SessionRef } from '../replication/index.js';
import type { AppendResult } from '../wal/index.js';
import { toStatus } from '../rpc/index.js';
import type { SimLoop, SimProcess } from './loop.js';

export const STATUS_DEADLINE_EXCEEDED = 4;
export const STATUS_UNAVAILABLE = 14;
export const RPC_DEADLINE_MS = 5_000;

/** What grpc-js hands a caller when a call fails. */
export class SimServiceError extends Error {
  override readonly name = 'SimServiceError';
  readonly metadata = {};
  constructor(readonly code: number, readonly details: string) {
    super(`${code} ${details}`);
  }
}

export interface NetworkFaults {
  /** Probability that a request or a reply is lost. */
  dropProbability: number;
  delayMsMin: number;
  delayMsMax: number;
  /** Occasional slow messages: probability and extra delay. */
  slowProbability: number;
  slowMsMax: number;
  /**
   * Probability that a request is delivered a second time, up to duplicateMsMax later (after
   * newer requests: duplication and reordering). The caller sees the first answer only.
   */
  duplicateProbability: number;
  duplicateMsMax: number;
}

export const CALM_NETWORK: NetworkFaults = { dropProbability: 0, delayMsMin: 0.05, delayMsMax: 1, slowProbability: 0, slowMsMax: 0, duplicateProbability: 0, duplicateMsMax: 0 };

/** Where a node's live incarnation can be reached. */
export interface Endpoint {
  readonly process: SimProcess;
  readonly handlers: PeerHandlers;
  /** The committed index the node reports (AdminService status). */
  readonly committed: () => number | undefined;
  /** A client append forwarded to this node (WalService Append, marked forwarded). */
  readonly append: (payloads: readonly Uint8Array[], deadlineMs: number, session: SessionRef | undefined) => Promise<AppendResult>;
  /** AdminService RepairSegment of this node's copy (the coordinator's retry, a distrusted replica's check): whether it is intact now. */
  readonly repair: (segmentId: number, source: 'coordinator' | 'request') => Promise<boolean>;
}

export class SimNetwork {
  faults: NetworkFaults = { ...CALM_NETWORK };
  /** "a>b": messages from a to b are lost. */
  private readonly cuts = new Set<string>();
  private readonly endpoints = new Map<string, Endpoint>();
  messages = 0;
  dropped = 0;
  duplicated = 0;

  constructor(private readonly loop: SimLoop, private readonly random: SeededRandom) {}

  attach(node: string, endpoint: Endpoint | undefined): void {
    if (endpoint) this.endpoints.set(node, endpoint);
    else this.endpoints.delete(node);
  }

  cut(from: string, to: string): void {
    this.cuts.add(`${from}>${to}`);
  }

  /** Partitions node from every other (both ways). */
  isolate(node: string, others: readonly string[]): void {
    for (const other of others) {
      if (other === node) continue;
      this.cut(node, other);
      this.cut(other, node);
    }
  }

  healAll(): void {
    this.cuts.clear();
    this.faults = { ...CALM_NETWORK };
  }

  /** The resolver code running in process caller on node self uses. */
  resolverFor(self: string, caller: SimProcess, isLive: (node: string) => boolean): PeerResolver {
    return (id) => {
      if (!isLive(id)) return undefined;
      return this.api(self, id, caller);
    };
  }

  private api(self: string, target: string, caller: SimProcess): PeerApi {
    const via = <T>(call: (h: PeerHandlers) => Promise<T>): Promise<T> => (target === self ? this.local(target, caller, call) : this.viaHandlers(self, target, caller, call));
    // A remote writer call names its node, as a verified peer certificate does (TLS semantics:
    // the member checks that the node holds the epoch); a call to its own store names none.
    const from = target === self ? undefined : self;
    return {
      replicate: (log, epoch, segment, frames, committedIndex) => via((h) => h.replicate(log, epoch, segment, frames.map((f) => Buffer.from(f)), committedIndex, from)),
      fence: (log, segmentId, epoch) => via((h) => h.fence(log, segmentId, epoch, from)),
      seal: (log, segmentId, epoch, lastIndex, expected) => via((h) => h.seal(log, segmentId, epoch, lastIndex, expected, from)),
      readFrames: (log, segmentId, from, to, bytesMax) => via((h) => h.readFrames(log, segmentId, from, to, bytesMax)),
    };
  }

  /** Asks node to for its committed index, as a non-writer asks the writer. */
  askCommitted(from: string, to: string, caller: SimProcess): Promise<number | undefined> {
    return this.remote(from, to, caller, async (endpoint) => endpoint.committed());
  }

  /** Forwards a client's append from node from to the writer's node to. */
  forwardAppend(from: string, to: string, caller: SimProcess, payloads: readonly Uint8Array[], deadlineMs: number, session: SessionRef | undefined): Promise<AppendResult> {
    // With a session the writer dedupes a repeated batch: such a call may be delivered twice.
    return this.remote(from, to, caller, (endpoint) => endpoint.append(payloads, deadlineMs, session), session !== undefined);
  }

  /** RepairSegment on node to, asked by node from (the coordinator, or a repair that distrusts to's copy). */
  repairOn(from: string, to: string, caller: SimProcess, segmentId: number, source: 'coordinator' | 'request', deadlineMs: number): Promise<boolean> {
    return this.remote(from, to, caller, (endpoint) => endpoint.repair(segmentId, source), false, deadlineMs);
  }

  private local<T>(node: string, caller: SimProcess, call: (h: PeerHandlers) => Promise<T>): Promise<T> {
    const endpoint = this.endpoints.get(node);
    if (!endpoint || endpoint.process !== caller) return new Promise<T>(() => undefined); // our own process is gone
    return call(endpoint.handlers);
  }

  private viaHandlers<T>(from: string, to: string, caller: SimProcess, call: (h: PeerHandlers) => Promise<T>): Promise<T> {
    return this.remote(from, to, caller, (endpoint) => call(endpoint.handlers), true);
  }

  private delayMs(): number {
    const f = this.faults;
    let ms = f.delayMsMin + this.random.next() * (f.delayMsMax - f.delayMsMin);
    if (f.slowProbability > 0 && this.random.chance(f.slowProbability)) ms += this.random.next() * f.slowMsMax;
    return ms;
  }

  private lost(from: string, to: string): boolean {
    if (this.cuts.has(`${from}>${to}`)) return true;
    return this.faults.dropProbability > 0 && this.random.chance(this.faults.dropProbability);
  }

  /** Delivers a request again later, to whatever incarnation of the target is live then. */
  private maybeDuplicate<T>(to: string, call: (endpoint: Endpoint) => Promise<T>): void {
    const f = this.faults;
    if (f.duplicateProbability === 0 || !this.random.chance(f.duplicateProbability)) return;
    this.duplicated += 1;
    const target = this.endpoints.get(to);
    this.loop.schedule(
      this.delayMs() + this.random.next() * f.duplicateMsMax,
      () => {
        const endpoint = this.endpoints.get(to);
        if (endpoint?.process.alive) call(endpoint).then(ignore, ignore);
      },
      endpoint0(target),
    );
  }

  /**
   * A call from one node to another. Peer-protocol requests (duplicable) may be delivered twice;
   * a forwarded client append is not (its retries are the client's business: issue 12), unless
   * it carries a session (exactly-once appends: the writer answers a repeat with the original).
   */
  private remote<T>(from: string, to: string, caller: SimProcess, call: (endpoint: Endpoint) => Promise<T>, duplicable = false, deadlineMs = RPC_DEADLINE_MS): Promise<T> {
    this.messages += 1;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        cancelDeadline();
        fn();
      };
      const cancelDeadline = this.loop.schedule(deadlineMs, () => settle(() => reject(new SimServiceError(STATUS_DEADLINE_EXCEEDED, `call to ${to}: deadline exceeded`))), caller);
      if (this.lost(from, to)) {
        this.dropped += 1;
        return;
      }
      this.loop.schedule(this.delayMs(), () => {
        const endpoint = this.endpoints.get(to);
        if (!endpoint || !endpoint.process.alive) {
          // Connection refused: the caller learns it after a round trip.
          this.loop.schedule(this.delayMs(), () => settle(() => reject(new SimServiceError(STATUS_UNAVAILABLE, `${to} is unavailable`))), caller);
          return;
        }
        const reply = (fn: () => void): void => {
          if (this.lost(to, from)) {
            this.dropped += 1;
            return;
          }
          this.loop.schedule(this.delayMs(), () => settle(fn), caller);
        };
        call(endpoint).then(
          (value) => reply(() => resolve(value)),
          (error: unknown) => {
            const status = toStatus(error);
            reply(() => reject(new SimServiceError(status.code, status.details)));
          },
        );
        if (duplicable) this.maybeDuplicate(to, call);
      }, endpoint0(this.endpoints.get(to)));
    });
  }
}

/** A handler's answer to a duplicate goes nowhere; only that it ran matters. */
function ignore(): void {}

/** The handler runs in the target's process: if it dies before the request arrives, nothing runs. */
function endpoint0(endpoint: Endpoint | undefined): SimProcess | undefined {
  return endpoint?.process;
}
