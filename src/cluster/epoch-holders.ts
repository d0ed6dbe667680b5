// Who holds a writer epoch of a log, from etcd: the node whose candidacy key in the log's writer
// election has that epoch (its create revision plus the floor its value carries; election.ts).
// A member checks every writer call that names its caller (TLS) against it (PeerHandlers).
//
// The binding of an epoch to a node never changes once made (the key's create revision and its
// floor are fixed, and a later key has a higher epoch), so a found holder is cached per
// (log, epoch), for as long as the cache has room. An epoch no candidacy holds is looked up
// again each time: its holder may be a candidacy created since.
import { parseCandidate } from './election.js';
import type { ClusterMetadata } from './metadata.js';
import { type EpochHolders, ReplicationError } from '../replication/index.js';

/** Holders kept in the cache (a few per log and writer change). */
export const EPOCH_HOLDERS_CACHED_MAX = 4096;

export class EtcdEpochHolders implements EpochHolders {
  private readonly cache = new Map<string, string>();

  constructor(private readonly meta: () => ClusterMetadata | undefined) {}

  async holderOf(log: string, epoch: number, fresh = false): Promise<string | undefined> {
    const key = `${log}\u0000${epoch}`;
    const cached = fresh ? undefined : this.cache.get(key);
    if (cached !== undefined) return cached;
    this.cache.delete(key);
    const meta = this.meta();
    if (!meta) throw new ReplicationError('etcd is not connected yet: the holder of a writer epoch cannot be checked'); // UNAVAILABLE: retried
    const candidates = await meta.list(meta.keys.writerPrefix(log), (raw) => {
      try {
        return parseCandidate(raw);
      } catch {
        return undefined; // a malformed candidacy holds no epoch
      }
    });
    const holder = candidates.find((c) => c.value !== undefined && c.createRevision + c.value.floor === epoch)?.value?.node;
    if (holder === undefined) return undefined;
    if (this.cache.size >= EPOCH_HOLDERS_CACHED_MAX) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(key, holder);
    return holder;
  }
}
