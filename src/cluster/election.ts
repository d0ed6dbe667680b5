// Leader election on an etcd prefix (the standard recipe): each candidate creates a key under the
// prefix bound to its session lease; the key with the lowest create revision is the leader, and
// that revision is the leader's epoch. A later leader always has a higher epoch, so the epoch
// fences every older one. Candidates watch the prefix and re-evaluate on any change.
//
// The epoch floor (issue 8 #9): an etcd restored from an older snapshot, or wiped, counts
// revisions again from below the epochs the members have persisted as fences, so every new
// leader would be fenced for good. An election with a floor key therefore campaigns with the
// floor in force (its candidacy value carries it, and the create is conditional on the floor key
// being unchanged), and a leader's epoch is its key's create revision plus that floor. The floor
// only rises, so within one etcd history a later key has a higher epoch; a leader fenced by a
// higher epoch raises the floor past it and campaigns again (outbid), so the next epoch is above
// every fence met. (An epoch no member has seen yet may be issued again after a restore: the
// operator's `etcdutl snapshot restore --bump-revision` closes that window; see CLUSTER.md.)
//
// Fault model: etcd may fail any call (a blip, a restart). A candidacy that failed to be created
// is tried again with backoff for as long as the lease it is bound to lives: a node never sits
// out an election because one call failed. A candidate may resign (its store is failing): its key
// is deleted, with the same retries, and it campaigns no more until it rejoins.
import type { Lease } from 'etcd3';
import type { Logger } from 'pino';
import type { Clock, Random } from '../io/index.js';
import { Backoff } from './backoff.js';
import type { ClusterMetadata, MetadataLease } from './metadata.js';

export interface Leadership {
  readonly leader: string;
  readonly epoch: number;
  /** The leader's election key: writes conditional on leadership compare its create revision. */
  readonly key: string;
  /** The election key's create revision (the epoch without the floor). */
  readonly createRevision: number;
}

/** A candidacy key's value: the node, and the epoch floor in force when the key was created. */
export interface Candidate {
  readonly node: string;
  readonly floor: number;
}

/** What a candidacy needs of a lease: its id (etcd3's Lease in production). */
export interface CandidateLease {
  grant(): Promise<string>;
}

/** What an election needs of etcd (ClusterMetadata through etcdElectionStore). */
export interface ElectionStore<L extends CandidateLease> {
  /** Creates key bound to lease unless it exists; undefined when it existed already. */
  create(key: string, value: unknown, lease: L): Promise<number | undefined>;
  delete(key: string): Promise<void>;
  watchPrefix(prefix: string, onChange: () => void): Promise<() => Promise<void>>;
  /** The key under prefix with the lowest create revision, if any. */
  leader(prefix: string): Promise<Leadership | undefined>;
  /** The epoch floor under floorKey (0 when absent) and its mod revision (0 when absent). */
  readFloor?(floorKey: string): Promise<{ floor: number; modRevision: number }>;
  /** create, only while floorKey is still at floorModRevision; undefined when not created. */
  createAtFloor?(key: string, value: unknown, lease: L, floorKey: string, floorModRevision: number): Promise<number | undefined>;
  /** Whether key exists. */
  exists?(key: string): Promise<boolean>;
  /** Raises the floor under floorKey to at least floor (compare-and-swap). */
  raiseFloor?(floorKey: string, floor: number): Promise<void>;
}

/** What an election needs of the node's etcd session (NodeSession in production). */
export interface ElectionSession<L extends CandidateLease> {
  readonly member: { readonly id: string };
  /** Called with each new lease (the first and every one after a loss). */
  onLease(listener: (lease: L) => void): void;
  onLost(listener: () => void): void;
  currentLease(): L | undefined;
}

/** Backoff between attempts to create (or, resigning, delete) a candidacy key. */
export const CAMPAIGN_BACKOFF = Object.freeze({ initialMs: 100, maxMs: 2_000 });

export function parseCandidate(raw: unknown): Candidate {
  if (typeof raw === 'string' && raw.length > 0) return { node: raw, floor: 0 }; // no floor
  const v = raw as Partial<Candidate> | null;
  if (!v || typeof v.node !== 'string' || v.node.length === 0 || !Number.isSafeInteger(v.floor) || (v.floor as number) < 0) throw new Error('malformed candidate');
  return { node: v.node, floor: v.floor as number };
}

export function parseEpochFloor(raw: unknown): number {
  if (!Number.isSafeInteger(raw) || (raw as number) < 0) throw new Error('malformed epoch floor');
  return raw as number;
}

/**
 * The highest epoch floor ever written: epochs are the floor plus an etcd revision and must stay
 * exact as JS numbers (at most 2^53 - 1), so a floor leaves room for 2^32 revisions above it.
 */
export const EPOCH_FLOOR_MAX = Number.MAX_SAFE_INTEGER - 2 ** 32;

/**
 * The floor a leader fenced at fencedEpoch raises to (outbid): at least the fence, and at least
 * double its epoch (a remote refusal does not say by how much it was fenced). Undefined when that
 * is beyond EPOCH_FLOOR_MAX or not an exact integer: no campaign can go past it, and no epoch
 * that is not a safe integer is ever written to etcd.
 */
export function outbidFloor(epoch: number, fencedEpoch: number): number | undefined {
  const floor = Math.max(fencedEpoch, 2 * epoch);
  return Number.isSafeInteger(floor) && floor >= 0 && floor <= EPOCH_FLOOR_MAX ? floor : undefined;
}

/** Attempts at a compare-and-swap of the floor that lost a race before giving up (the caller retries). */
const FLOOR_RAISE_ATTEMPTS_MAX = 8;

/** The current leader of an election prefix, if any. */
export async function currentLeader<L extends MetadataLease>(meta: ClusterMetadata<L>, prefix: string): Promise<Leadership | undefined> {
  const first = await meta.firstCreated(prefix, parseCandidate);
  if (!first) return undefined;
  const epoch = first.createRevision + first.value.floor;
  if (!Number.isSafeInteger(epoch)) throw new Error(`the writer epoch of ${first.key} (${first.createRevision} + floor ${first.value.floor}) is beyond 2^53-1`);
  return { leader: first.value.node, epoch, key: first.key, createRevision: first.createRevision };
}

async function readFloor<L extends MetadataLease>(meta: ClusterMetadata<L>, floorKey: string): Promise<{ floor: number; modRevision: number }> {
  const record = await meta.get(floorKey, parseEpochFloor);
  return record ? { floor: record.value, modRevision: record.modRevision } : { floor: 0, modRevision: 0 };
}

export async function raiseFloor<L extends MetadataLease>(meta: ClusterMetadata<L>, floorKey: string, floor: number): Promise<void> {
  if (!Number.isSafeInteger(floor) || floor < 0 || floor > EPOCH_FLOOR_MAX) throw new Error(`refused to raise the epoch floor ${floorKey} to ${String(floor).slice(0, 40)}: beyond ${EPOCH_FLOOR_MAX}`);
  for (let attempt = 0; attempt < FLOOR_RAISE_ATTEMPTS_MAX; attempt += 1) {
    const current = await readFloor(meta, floorKey);
    if (current.floor >= floor) return;
    const done = current.modRevision === 0 ? await meta.create(floorKey, floor) : await meta.compareAndSwap(floorKey, floor, current.modRevision);
    if (done !== undefined) return;
  }
  throw new Error(`failed to raise the epoch floor ${floorKey} to ${floor}: it kept changing`);
}

/** The election's view of the cluster's metadata (etcd3 in production, SimEtcd in the simulator). */
export function etcdElectionStore<L extends MetadataLease>(meta: ClusterMetadata<L>): ElectionStore<L> {
  return {
    create: (key, value, lease) => meta.create(key, value, lease),
    delete: (key) => meta.delete(key),
    watchPrefix: (prefix, onChange) => meta.watchPrefix(prefix, () => onChange()),
    leader: (prefix) => currentLeader(meta, prefix),
    readFloor: (floorKey) => readFloor(meta, floorKey),
    createAtFloor: (key, value, lease, floorKey, floorModRevision) => meta.createWhileUnchanged(key, value, lease, floorKey, floorModRevision),
    exists: async (key) => (await meta.get(key, (raw) => raw)) !== undefined,
    raiseFloor: (floorKey, floor) => raiseFloor(meta, floorKey, floor),
  };
}

export interface ElectionOptions<L extends CandidateLease> {
  readonly store: ElectionStore<L>;
  readonly prefix: string;
  /** The epoch floor's key (writer elections, whose epochs fence); none: epochs are create revisions. */
  readonly floorKey?: string;
  readonly session: ElectionSession<L>;
  readonly logger: Logger;
  /** Waits between attempts. */
  readonly clock: Clock;
  /** Backoff jitter. */
  readonly random: Random;
}

export class Election<L extends CandidateLease = Lease> {
  private state: Leadership | undefined;
  private unwatch: (() => Promise<void>) | undefined;
  private stopped = false;
  private resigned = false;
  private publishedSelf = false;
  /** This node's candidacy key and the lease it is bound to, once created. */
  private candidacy: { readonly lease: L; readonly key: string } | undefined;
  /** Aborted (and replaced) to cut short a backoff wait when there is news: a lease, resign, stop. */
  private wake = new AbortController();
  /** Campaigns and withdrawals run one at a time, in order: a delete never overtakes a create. */
  private serial: Promise<void> = Promise.resolve();
  private evaluating: Promise<void> = Promise.resolve();
  /** A failed read of the leader waits to be tried again (one retry at a time). */
  private leaderReadRetrying = false;
  private leaderReadBackoff: Backoff | undefined;
  private readonly listeners: Array<(state: Leadership | undefined, isSelf: boolean) => void> = [];

  constructor(private readonly o: ElectionOptions<L>) {}

  get self(): string {
    return this.o.session.member.id;
  }

  /** Called whenever the leader (or its epoch) changes; isSelf says whether it is this node. */
  onChange(listener: (state: Leadership | undefined, isSelf: boolean) => void): void {
    this.listeners.push(listener);
  }

  leadership(): Leadership | undefined {
    return this.state;
  }

  isLeader(): boolean {
    return !this.resigned && this.state?.leader === this.self && this.o.session.currentLease() !== undefined;
  }

  /** Whether this node holds a candidacy key (for its current lease). */
  isCandidate(): boolean {
    const lease = this.o.session.currentLease();
    return lease !== undefined && this.candidacy?.lease === lease;
  }

  async start(): Promise<void> {
    this.unwatch = await this.o.store.watchPrefix(this.o.prefix, () => this.evaluate());
    this.o.session.onLease((lease) => {
      this.nudge(); // a campaign waiting to retry with the lost lease ends now
      void this.inOrder(() => this.campaign(lease));
    });
    this.o.session.onLost(() => {
      this.candidacy = undefined; // its key went with the lease
      this.publish(undefined);
    });
    this.evaluate();
  }

  /**
   * Creates this node's candidacy key for lease, retrying with backoff until the key exists, the
   * lease is no longer the session's (lost: the next lease campaigns again), the candidate
   * resigned or the election stopped. The lease bounds the loop: an etcd that cannot be reached
   * lets the lease expire within its TTL.
   */
  private async campaign(lease: L): Promise<void> {
    const backoff = new Backoff(CAMPAIGN_BACKOFF, this.o.random);
    for (let attempt = 1; this.campaigning(lease); attempt += 1) {
      try {
        const key = `${this.o.prefix}${this.self}-${await lease.grant()}`;
        // undefined: the key exists already (an earlier attempt applied, its answer lost).
        if (!(await this.createCandidacy(key, lease))) {
          await this.o.clock.sleep(backoff.next(), this.wake.signal); // the floor moved meanwhile: read it again
          continue;
        }
        if (this.campaigning(lease)) {
          this.candidacy = { lease, key };
        } else if (!this.stopped && this.o.session.currentLease() === lease) {
          await this.withdraw(key, lease); // resigned while the create was in flight
        }
        this.evaluate();
        return;
      } catch (error) {
        this.o.logger.warn({ node: this.self, err: error, prefix: this.o.prefix, attempt }, 'failed to campaign; retrying');
        await this.o.clock.sleep(backoff.next(), this.wake.signal);
      }
    }
  }

  /** Creates the candidacy key (under the floor in force, if any); false when the floor moved first. */
  private async createCandidacy(key: string, lease: L): Promise<boolean> {
    const { store, floorKey } = this.o;
    if (floorKey === undefined || !store.readFloor || !store.createAtFloor || !store.exists) {
      await store.create(key, this.self, lease);
      return true;
    }
    const { floor, modRevision } = await store.readFloor(floorKey);
    if (floor > EPOCH_FLOOR_MAX) throw new Error(`the epoch floor ${floor} leaves no room for epochs below 2^53-1; not campaigning`);
    const value: Candidate = { node: this.self, floor };
    if ((await store.createAtFloor(key, value, lease, floorKey, modRevision)) !== undefined) return true;
    return store.exists(key); // created by an earlier attempt whose answer was lost
  }

  /**
   * This node leads but a member fenced it with a higher epoch (etcd went back: restored from an
   * older snapshot, or wiped): the floor is raised to fencedEpoch and this node campaigns again,
   * so that its next epoch is above it. Other candidates whose keys predate the raise are fenced
   * in turn when they lead, and do the same.
   */
  async outbid(fencedEpoch: number): Promise<void> {
    const { store, floorKey } = this.o;
    if (floorKey === undefined || !store.raiseFloor || this.stopped || this.resigned || !this.isLeader()) return;
    const epoch = this.state?.epoch ?? 0;
    if (fencedEpoch <= epoch) return;
    // A remote member's refusal does not say by how much (fencedEpoch is then epoch + 1): the
    // floor at least doubles, so any fence is passed within a few rounds. Never past
    // EPOCH_FLOOR_MAX: a fence that high was not issued by an election (members accept writer
    // calls only from an epoch's holder), and chasing it would end the log's epochs for good.
    const floor = outbidFloor(epoch, fencedEpoch);
    if (floor === undefined) {
      this.o.logger.error({ node: this.self, prefix: this.o.prefix, epoch, fencedEpoch }, 'fenced by an epoch no election can pass (beyond 2^53-1 with room for revisions); not raising the epoch floor');
      return;
    }
    await store.raiseFloor(floorKey, floor);
    this.o.logger.warn({ node: this.self, prefix: this.o.prefix, epoch, fencedEpoch }, 'fenced by a higher epoch while leading (etcd went back?): raised the epoch floor; campaigning again');
    await this.resign();
    this.rejoin();
  }

  private campaigning(lease: L): boolean {
    return !this.stopped && !this.resigned && this.o.session.currentLease() === lease;
  }

  /**
   * Withdraws this node's candidacy: its key is deleted (retried with backoff while the lease
   * lives; a lost lease deletes it anyway) and no campaign runs until rejoin(). Another candidate
   * becomes leader with a higher epoch.
   */
  async resign(): Promise<void> {
    if (this.resigned || this.stopped) return;
    this.resigned = true;
    this.publish(this.state); // listeners hear at once that this node leads no more
    const candidacy = this.candidacy;
    this.candidacy = undefined;
    this.nudge();
    if (candidacy) await this.inOrder(() => this.withdraw(candidacy.key, candidacy.lease));
    this.evaluate();
  }

  /** Campaigns again (with the session's current lease) after resign(). */
  rejoin(): void {
    if (!this.resigned || this.stopped) return;
    this.resigned = false;
    const lease = this.o.session.currentLease();
    this.nudge();
    if (lease) void this.inOrder(() => this.campaign(lease));
    else this.evaluate();
  }

  private inOrder(step: () => Promise<void>): Promise<void> {
    const run = this.serial.then(step);
    this.serial = run.catch(() => undefined);
    return run;
  }

  private nudge(): void {
    this.wake.abort();
    this.wake = new AbortController();
  }

  private async withdraw(key: string, lease: L): Promise<void> {
    const backoff = new Backoff(CAMPAIGN_BACKOFF, this.o.random);
    for (let attempt = 1; this.resigned && !this.stopped && this.o.session.currentLease() === lease; attempt += 1) {
      try {
        await this.o.store.delete(key);
        this.o.logger.info({ node: this.self, prefix: this.o.prefix }, 'resigned from the election');
        return;
      } catch (error) {
        this.o.logger.warn({ node: this.self, err: error, prefix: this.o.prefix, attempt }, 'failed to resign from the election; retrying');
        await this.o.clock.sleep(backoff.next(), this.wake.signal);
      }
    }
  }

  /** Re-reads the leader; serialised so that listeners see changes in order. */
  evaluate(): void {
    this.evaluating = this.evaluating.then(async () => {
      if (this.stopped) return;
      try {
        this.publish(await this.o.store.leader(this.o.prefix));
        await this.confirmCandidacy();
        this.leaderReadBackoff?.reset();
      } catch (error) {
        this.o.logger.debug({ err: error, prefix: this.o.prefix }, 'failed to read the leader; retrying');
        this.retryEvaluate();
      }
    });
  }

  /**
   * etcd restored from a snapshot older than this node's candidacy key but not older than its
   * lease: the key is gone while the lease lives on, so no lease loss makes this node campaign
   * again. A change under the prefix that leaves this node not leading with its key checks that
   * the key still exists, and campaigns again if not.
   */
  private async confirmCandidacy(): Promise<void> {
    const candidacy = this.candidacy;
    const { store } = this.o;
    if (!candidacy || !store.exists || this.state?.key === candidacy.key) return;
    if (await store.exists(candidacy.key)) return;
    if (this.candidacy !== candidacy || !this.campaigning(candidacy.lease)) return;
    this.candidacy = undefined;
    this.o.logger.warn({ node: this.self, prefix: this.o.prefix, key: candidacy.key }, 'this node\'s candidacy key is gone though its lease is current here (etcd went back?); campaigning again');
    void this.inOrder(() => this.campaign(candidacy.lease));
  }

  /**
   * A read of the leader that failed (etcd out of reach) is tried again with backoff until one
   * succeeds: the watch event that asked for it does not come again, so a node that became the
   * leader while it could not reach etcd would otherwise never learn it, and nobody would write.
   */
  private retryEvaluate(): void {
    if (this.leaderReadRetrying || this.stopped) return;
    this.leaderReadRetrying = true;
    this.leaderReadBackoff ??= new Backoff(CAMPAIGN_BACKOFF, this.o.random);
    void this.o.clock.sleep(this.leaderReadBackoff.next(), this.wake.signal).then(() => {
      this.leaderReadRetrying = false;
      this.evaluate();
    });
  }

  /** Tells the listeners of a change of leader, epoch, or of whether it is this node (resigned: never). */
  private publish(next: Leadership | undefined): void {
    const prev = this.state;
    const isSelf = next?.leader === this.self && !this.resigned;
    if (prev?.leader === next?.leader && prev?.epoch === next?.epoch && this.publishedSelf === isSelf) return;
    this.state = next;
    this.publishedSelf = isSelf;
    for (const listener of this.listeners) listener(next, isSelf);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.nudge();
    await this.unwatch?.();
    await this.serial;
    await this.evaluating;
  }
}
