// Who holds a writer epoch of a log, from etcd: the node whose candidacy key in the log's writer
// election has that epoch (its create revision plus the floor its value carries; election.ts).
// A member checks every writer call that names its caller (TLS) against it (PeerHandlers).
//
// The binding of an epoch to a node never changes once made (the key's create revision and its
// floor are fixed, and a later key has a higher epoch), so a found holder is cached per
// (log, epoch), for as long as the cache has room.
//
// Fault model: a caller with a valid peer certificate floods writer calls with epochs nobody
// holds (or with the writer's public epoch), each of which would cost one etcd read. Bounds:
// - lookups of one (log, epoch) in progress are shared (a burst costs one read);
// - an epoch no candidacy holds is remembered for EPOCH_UNKNOWN_TTL_MS, and a holder is looked up
//   afresh (a refusal re-checked) at most once per EPOCH_UNKNOWN_TTL_MS: an epoch created since
//   is seen that much later at most (its writer's Fence is refused once and retried, like a
//   member that is briefly unreachable);
// - the reads one caller makes etcd do are rate limited (a token bucket per caller name, at
//   EPOCH_LOOKUPS_PER_SECOND_MAX with a burst of EPOCH_LOOKUPS_BURST_MAX); a call past it is
//   answered RESOURCE_EXHAUSTED (retryable) without reading etcd. A read that finds the caller
//   holding the epoch gives its token back: a writer taking over many logs at once, or writing
//   more logs than the cache keeps, is never limited by its own calls.
import { parseCandidate } from './election.js';
import type { ClusterMetadata } from './metadata.js';
import { EpochLookupsLimitedError, type EpochHolders, ReplicationError } from '../replication/index.js';

/** Holders kept in the cache (a few per log and writer change); also the unknown epochs kept. */
export const EPOCH_HOLDERS_CACHED_MAX = 4096;
/** How long an epoch no candidacy held is answered from memory, and the least time between fresh reads of one. */
export const EPOCH_UNKNOWN_TTL_MS = 250;
/** etcd reads per second one caller's writer calls may cause, and the burst above it. */
export const EPOCH_LOOKUPS_PER_SECOND_MAX = 100;
export const EPOCH_LOOKUPS_BURST_MAX = 200;
/** Callers whose buckets are kept (the CA bounds how many names exist; this bounds memory). */
const CALLER_BUCKETS_MAX = 1024;

interface Lookup {
  readonly holder: string | undefined;
  readonly readAtMs: number;
}

export interface EpochHoldersOptions {
  /** Monotonic milliseconds (the simulator passes its own clock). */
  readonly monotonicMs?: () => number;
  readonly lookupsPerSecondMax?: number;
  readonly lookupsBurstMax?: number;
  /** Counts a lookup by how it was answered. */
  readonly onLookup?: (result: 'etcd' | 'cached' | 'limited') => void;
}

export class EtcdEpochHolders implements EpochHolders {
  private readonly found = new Map<string, Lookup>();
  private readonly unknown = new Map<string, Lookup>();
  private readonly pending = new Map<string, Promise<string | undefined>>();
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();
  private readonly now: () => number;
  private readonly ratePerSecond: number;
  private readonly burst: number;

  constructor(private readonly meta: () => ClusterMetadata | undefined, private readonly options: EpochHoldersOptions = {}) {
    this.now = options.monotonicMs ?? (() => performance.now());
    this.ratePerSecond = options.lookupsPerSecondMax ?? EPOCH_LOOKUPS_PER_SECOND_MAX;
    this.burst = options.lookupsBurstMax ?? EPOCH_LOOKUPS_BURST_MAX;
  }

  async holderOf(log: string, epoch: number, fresh = false, caller?: string): Promise<string | undefined> {
    const key = `${log}\u0000${epoch}`;
    const nowMs = this.now();
    const known = this.found.get(key) ?? this.unknown.get(key);
    const recent = known !== undefined && nowMs - known.readAtMs < EPOCH_UNKNOWN_TTL_MS;
    if (known !== undefined && (recent || (!fresh && known.holder !== undefined))) {
      this.options.onLookup?.('cached');
      return known.holder;
    }
    const inProgress = this.pending.get(key);
    if (inProgress) return inProgress;
    if (caller !== undefined && !this.takeToken(caller, nowMs)) {
      this.options.onLookup?.('limited');
      throw new EpochLookupsLimitedError(log, epoch, caller, this.ratePerSecond);
    }
    this.options.onLookup?.('etcd');
    const lookup = this.read(log, epoch).finally(() => this.pending.delete(key));
    this.pending.set(key, lookup);
    const holder = await lookup;
    // A read that found the caller holding the epoch was a writer doing its job (a node taking
    // over many logs at once, or writing more logs than the cache keeps): it costs no token, or
    // the writer's own Replicate/Fence/Seal would be answered RESOURCE_EXHAUSTED (review of
    // issue 11). Reads of epochs the caller does not hold stay limited.
    if (caller !== undefined && holder === caller) this.returnToken(caller);
    const entry = { holder, readAtMs: this.now() };
    this.found.delete(key);
    this.unknown.delete(key);
    remember(holder === undefined ? this.unknown : this.found, key, entry);
    return holder;
  }

  private async read(log: string, epoch: number): Promise<string | undefined> {
    const meta = this.meta();
    if (!meta) throw new ReplicationError('etcd is not connected yet: the holder of a writer epoch cannot be checked'); // UNAVAILABLE: retried
    const candidates = await meta.list(meta.keys.writerPrefix(log), (raw) => {
      try {
        return parseCandidate(raw);
      } catch {
        return undefined; // a malformed candidacy holds no epoch
      }
    });
    return candidates.find((c) => c.value !== undefined && c.createRevision + c.value.floor === epoch)?.value?.node;
  }

  private returnToken(caller: string): void {
    const bucket = this.buckets.get(caller);
    if (bucket) bucket.tokens = Math.min(this.burst, bucket.tokens + 1);
  }

  private takeToken(caller: string, nowMs: number): boolean {
    const bucket = this.buckets.get(caller) ?? { tokens: this.burst, atMs: nowMs };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((nowMs - bucket.atMs) / 1000) * this.ratePerSecond);
    bucket.atMs = nowMs;
    this.buckets.delete(caller);
    remember(this.buckets, caller, bucket, CALLER_BUCKETS_MAX);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}

/** Sets key last in insertion order, dropping the oldest entry when the map is full. */
function remember<V>(map: Map<string, V>, key: string, value: V, max = EPOCH_HOLDERS_CACHED_MAX): void {
  if (map.size >= max) map.delete(map.keys().next().value as string);
  map.set(key, value);
}
