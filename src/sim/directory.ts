// A simulated etcd behind the cluster layer's seam (ClusterMetadata, src/cluster/metadata.ts):
// one revision counter; keys with create and mod revisions; create-only puts, guarded creates and
// compare-and-swap (etcd transactions); leases with a TTL that expire in virtual time and delete
// their keys; prefix watches whose events arrive late; and the faults: outages (every call fails),
// one node cut from etcd (its calls fail, so its keepalives stop and its lease expires while its
// process believes it still holds it), answers lost after a write applied, the space quota alarm
// (NOSPACE: creates, puts, compare-and-swaps and lease grants fail while reads, deletes and
// keepalives pass, so leases stay alive while nothing new can be written), and restore from an
// older snapshot (an etcd restored from backup or wiped: keys, leases and revisions go back).
//
// The client side of a lease (SimLease) keeps it alive every third of its TTL from the node's own
// process, and reports it lost as etcd3 does: when a keepalive is told the lease is gone, or when
// no keepalive succeeded for twice the TTL. A paused or cut-off node therefore learns late.
import type { SeededRandom } from '../io/index.js';
import { type ClusterMetadata, ClusterKeys, type KeyGuard, EtcdSegmentDirectory, type MetadataLease, type Versioned, decodeEach, decodeValue } from '../cluster/index.js';
import { type SegmentDirectory, type SegmentMeta, parseSegmentMeta } from '../replication/index.js';
import type { SimLoop, SimProcess } from './loop.js';

export class SimEtcdUnavailableError extends Error {
  override readonly name = 'SimEtcdUnavailableError';
  readonly code = 14;
}

/** What etcd answers a write while its space quota alarm is raised (RESOURCE_EXHAUSTED). */
export class SimEtcdNoSpaceError extends Error {
  override readonly name = 'SimEtcdNoSpaceError';
  readonly code = 8;
  constructor() {
    super('etcdserver: mvcc: database space exceeded');
  }
}

interface KeyRecord {
  readonly value: string;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly lease: string;
}

interface LeaseRecord {
  readonly id: string;
  readonly ttlMs: number;
  expiresAtMs: number;
}

interface Watch {
  readonly prefix: string;
  readonly onChange: (key: string, deleted: boolean) => void;
  readonly owner: SimProcess;
}

export interface SimEtcdSnapshot {
  readonly revision: number;
  readonly kv: ReadonlyMap<string, KeyRecord>;
  readonly leases: ReadonlyMap<string, { readonly id: string; readonly ttlMs: number }>;
}

/** Watch events arrive this late at most (usually within a few milliseconds). */
const WATCH_LAG_MS_MAX = 400;

export class SimEtcd {
  readonly keys = new ClusterKeys('sim');
  revision = 0;
  private kv = new Map<string, KeyRecord>();
  private leases = new Map<string, LeaseRecord>();
  /** Lease ids are never reused, even across a restore (etcd draws them at random). */
  private leaseIdNext = 1;
  private readonly watches = new Set<Watch>();
  /** While true, every call fails. */
  down = false;
  /** Nodes whose calls fail (cut from etcd while the rest of the cluster reaches it). */
  readonly unreachable = new Set<string>();
  /**
   * The space quota alarm (NOSPACE): while true, calls that add data (create, put, compare-and-
   * swap, lease grant) fail; reads, deletes, revokes and keepalives pass, as in etcd.
   */
  noSpace = false;
  /** Probability that a write applied but its answer was lost. */
  lostAnswerProbability = 0;
  calls = 0;

  constructor(readonly loop: SimLoop, private readonly random: SeededRandom) {}

  /** The metadata seam as code on node, in process caller, sees it. */
  metadataFor(node: string, caller: SimProcess): ClusterMetadata<SimLease> {
    const call = <T>(fn: () => T, mutates = false): Promise<T> => this.call(node, caller, fn, mutates);
    const write = <T>(fn: () => T): Promise<T> => this.call(node, caller, fn, true, true);
    return {
      keys: this.keys,
      lease: (ttlSeconds) => new SimLease(this, node, caller, ttlSeconds * 1000),
      get: (key, parse) => call(() => this.read(key, parse)),
      list: (prefix, parse, onMalformed) => call(() => decodeEach(this.range(prefix), ([key]) => this.read(key, parse) as Versioned<ReturnType<typeof parse>>, ([key]) => key, onMalformed)),
      firstCreated: (prefix, parse) =>
        call(() => {
          const first = this.range(prefix).sort((a, b) => a[1].createRevision - b[1].createRevision)[0];
          return first ? this.read(first[0], parse) : undefined;
        }),
      create: (key, value, lease) => write(() => (this.kv.has(key) ? undefined : this.put(key, value, lease?.idIfGranted()))),
      createWhile: (key, value, guards) =>
        write(() => {
          const holds = (guard: KeyGuard): boolean => ('createRevision' in guard ? this.kv.get(guard.key)?.createRevision === guard.createRevision : (this.kv.get(guard.key)?.modRevision ?? 0) === guard.modRevision);
          return this.kv.has(key) || !guards.every(holds) ? undefined : this.put(key, value, undefined);
        }),
      createWhileUnchanged: (key, value, lease, guardKey, guardModRevision) =>
        write(() => (this.kv.has(key) || (this.kv.get(guardKey)?.modRevision ?? 0) !== guardModRevision ? undefined : this.put(key, value, lease.idIfGranted()))),
      compareAndSwap: (key, value, modRevision) => write(() => (this.kv.get(key)?.modRevision === modRevision ? this.put(key, value, undefined) : undefined)),
      put: (key, value, lease) => write(() => void this.put(key, value, lease?.idIfGranted())),
      delete: (key) => call(() => this.remove(key), true),
      deleteIfUnchanged: (key, modRevision) => call(() => (this.kv.get(key)?.modRevision === modRevision ? this.remove(key) : undefined), true),
      watchPrefix: (prefix, onChange) =>
        call(() => {
          const watch: Watch = { prefix, onChange, owner: caller };
          this.watches.add(watch);
          return async () => void this.watches.delete(watch);
        }),
    };
  }

  /** The segment directory as code on node, in process caller, sees it (the real EtcdSegmentDirectory). */
  directoryFor(node: string, caller: SimProcess): SegmentDirectory & EtcdSegmentDirectory {
    return new EtcdSegmentDirectory(this.metadataFor(node, caller));
  }

  /** The log's segment records as etcd holds them now (for the checker: no call, no fault). */
  segmentRecords(log: string): Array<{ meta: SegmentMeta; modRevision: number }> {
    return this.range(this.keys.segmentsPrefix(log)).map(([, r]) => ({ meta: parseSegmentMeta(JSON.parse(r.value)), modRevision: r.modRevision }));
  }

  /** The keys under prefix now (for the simulator's own view of membership). */
  keysUnder(prefix: string): string[] {
    return this.range(prefix).map(([key]) => key);
  }

  /** The value of key now, parsed (for the simulator's own view). */
  peek(key: string): unknown {
    const record = this.kv.get(key);
    return record ? JSON.parse(record.value) : undefined;
  }

  /** Writes a key directly (the simulator's set-up, as an operator's etcdctl would). */
  seed(key: string, value: unknown): void {
    this.put(key, value, undefined);
  }

  takeSnapshot(): SimEtcdSnapshot {
    return { revision: this.revision, kv: new Map(this.kv), leases: new Map([...this.leases].map(([id, l]) => [id, { id, ttlMs: l.ttlMs }])) };
  }

  /**
   * etcd restored from an older backup (or, with the empty snapshot, wiped): every write since
   * the snapshot is gone, revisions go back, leases granted since are unknown (their holders
   * learn it at their next keepalive), and the leases in the snapshot get a fresh TTL (as etcd
   * does on restore). Watchers hear of every key that changed.
   */
  restore(snapshot: SimEtcdSnapshot): void {
    const before = this.kv;
    this.revision = snapshot.revision;
    this.kv = new Map(snapshot.kv);
    this.leases = new Map([...snapshot.leases].map(([id, l]) => [id, { id, ttlMs: l.ttlMs, expiresAtMs: this.loop.nowMs + l.ttlMs }]));
    for (const lease of this.leases.values()) this.armExpiry(lease);
    const changed = new Set([...before.keys(), ...this.kv.keys()].filter((key) => before.get(key) !== this.kv.get(key)));
    for (const key of [...changed].sort()) this.notify(key, !this.kv.has(key));
  }

  // --- leases, for SimLease -------------------------------------------------------------------

  grantLease(node: string, caller: SimProcess, ttlMs: number): Promise<string> {
    return this.call(node, caller, () => {
      const lease: LeaseRecord = { id: `lease-${this.leaseIdNext++}`, ttlMs, expiresAtMs: this.loop.nowMs + ttlMs };
      this.leases.set(lease.id, lease);
      this.armExpiry(lease);
      return lease.id;
    }, true, true);
  }

  /** Whether the lease still exists (its TTL refreshed if so). */
  keepAlive(node: string, caller: SimProcess, id: string): Promise<boolean> {
    return this.call(node, caller, () => {
      const lease = this.leases.get(id);
      if (!lease) return false;
      lease.expiresAtMs = this.loop.nowMs + lease.ttlMs;
      this.armExpiry(lease);
      return true;
    });
  }

  revokeLease(node: string, caller: SimProcess, id: string): Promise<void> {
    return this.call(node, caller, () => this.dropLease(id), true);
  }

  private armExpiry(lease: LeaseRecord): void {
    this.loop.schedule(lease.expiresAtMs - this.loop.nowMs, () => {
      if (this.leases.get(lease.id) === lease && lease.expiresAtMs <= this.loop.nowMs) this.dropLease(lease.id);
    });
  }

  private dropLease(id: string): void {
    if (!this.leases.delete(id)) return;
    this.revision += 1;
    for (const [key, record] of [...this.kv]) if (record.lease === id) this.remove(key, false);
  }

  // --- the key space --------------------------------------------------------------------------

  private range(prefix: string): Array<[string, KeyRecord]> {
    return [...this.kv.entries()].filter(([key]) => key.startsWith(prefix)).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  private read<T>(key: string, parse: (raw: unknown) => T): Versioned<T> | undefined {
    const r = this.kv.get(key);
    return r ? { key, value: decodeValue(key, r.value, parse), createRevision: r.createRevision, modRevision: r.modRevision, lease: r.lease } : undefined;
  }

  private put(key: string, value: unknown, lease: string | undefined): number {
    if (lease !== undefined && !this.leases.has(lease)) throw new SimEtcdUnavailableError(`etcd: requested lease not found (${lease})`);
    this.revision += 1;
    const createRevision = this.kv.get(key)?.createRevision ?? this.revision;
    this.kv.set(key, { value: JSON.stringify(value), createRevision, modRevision: this.revision, lease: lease ?? '' });
    this.notify(key, false);
    return this.revision;
  }

  private remove(key: string, bump = true): void {
    if (!this.kv.delete(key)) return;
    if (bump) this.revision += 1;
    this.notify(key, true);
  }

  private notify(key: string, deleted: boolean): void {
    for (const watch of this.watches) {
      if (!watch.owner.alive) {
        this.watches.delete(watch);
        continue;
      }
      if (!key.startsWith(watch.prefix)) continue;
      const lagMs = this.random.chance(0.1) ? this.random.next() * WATCH_LAG_MS_MAX : 0.5 + this.random.next() * 2;
      this.loop.schedule(lagMs, () => {
        if (this.watches.has(watch)) watch.onChange(key, deleted);
      }, watch.owner);
    }
  }

  /** mutates: a write (its answer may be lost); grows: it adds data (refused under NOSPACE). */
  private async call<T>(node: string, caller: SimProcess, fn: () => T, mutates = false, grows = false): Promise<T> {
    this.calls += 1;
    await this.loop.sleep(0.2 + this.random.next() * 1.5, caller);
    if (this.down || this.unreachable.has(node)) {
      await this.loop.sleep(this.random.next() * 50, caller);
      throw new SimEtcdUnavailableError('etcd is unavailable');
    }
    if (grows && this.noSpace) throw new SimEtcdNoSpaceError();
    const result = fn();
    if (mutates && this.lostAnswerProbability > 0 && this.random.chance(this.lostAnswerProbability)) throw new SimEtcdUnavailableError('etcd: applied, answer lost');
    await this.loop.sleep(0.2 + this.random.next() * 1.5, caller);
    if (this.unreachable.has(node)) throw new SimEtcdUnavailableError('etcd: answer lost (cut off)');
    return result;
  }
}

/** The client side of a lease (etcd3's Lease with autoKeepAlive), in the node's process. */
export class SimLease implements MetadataLease {
  private id: string | undefined;
  private granting: Promise<string> | undefined;
  private stopped = false;
  private lastAliveMs = 0;
  private readonly lostHandlers: Array<(error: Error) => void> = [];

  constructor(private readonly etcd: SimEtcd, private readonly node: string, private readonly caller: SimProcess, private readonly ttlMs: number) {}

  /** The lease id once granted (puts bound to a lease not granted yet fail, as in etcd3). */
  idIfGranted(): string {
    return this.id ?? 'lease-not-granted';
  }

  grant(): Promise<string> {
    this.granting ??= this.etcd.grantLease(this.node, this.caller, this.ttlMs).then((id) => {
      this.id = id;
      this.lastAliveMs = this.etcd.loop.nowMs;
      this.scheduleKeepAlive();
      return id;
    });
    return this.granting;
  }

  async revoke(): Promise<void> {
    this.stopped = true;
    if (this.id !== undefined) await this.etcd.revokeLease(this.node, this.caller, this.id);
  }

  release(): void {
    this.stopped = true;
  }

  on(_event: 'lost', handler: (error: Error) => void): this {
    this.lostHandlers.push(handler);
    return this;
  }

  private scheduleKeepAlive(): void {
    const loop = this.etcd.loop;
    loop.schedule(this.ttlMs / 3, () => void this.keepAlive(), this.caller);
  }

  private async keepAlive(): Promise<void> {
    if (this.stopped || this.id === undefined) return;
    const loop = this.etcd.loop;
    let alive: boolean | undefined;
    try {
      alive = await this.etcd.keepAlive(this.node, this.caller, this.id);
    } catch {
      alive = undefined; // unknown: etcd could not be asked
    }
    if (this.stopped) return;
    if (alive === true) this.lastAliveMs = loop.nowMs;
    if (alive === false || loop.nowMs - this.lastAliveMs >= 2 * this.ttlMs) {
      this.stopped = true;
      const error = new SimEtcdUnavailableError(alive === false ? 'etcd: lease expired or revoked' : 'etcd: no keepalive answered for twice the TTL');
      for (const handler of this.lostHandlers) handler(error);
      return;
    }
    this.scheduleKeepAlive();
  }
}
