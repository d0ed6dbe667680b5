// Leader election on an etcd prefix (the standard recipe): each candidate creates a key under the
// prefix bound to its session lease; the key with the lowest create revision is the leader, and
// that revision is the leader's epoch. A later leader always has a higher epoch, so the epoch
// fences every older one. Candidates watch the prefix and re-evaluate on any change.
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

export function parseCandidate(raw: unknown): string {
  if (typeof raw !== 'string' || raw.length === 0) throw new Error('malformed candidate');
  return raw;
}

/** The current leader of an election prefix, if any. */
export async function currentLeader<L extends MetadataLease>(meta: ClusterMetadata<L>, prefix: string): Promise<Leadership | undefined> {
  const first = await meta.firstCreated(prefix, parseCandidate);
  return first ? { leader: first.value, epoch: first.createRevision, key: first.key } : undefined;
}

/** The election's view of the cluster's metadata (etcd3 in production, SimEtcd in the simulator). */
export function etcdElectionStore<L extends MetadataLease>(meta: ClusterMetadata<L>): ElectionStore<L> {
  return {
    create: (key, value, lease) => meta.create(key, value, lease),
    delete: (key) => meta.delete(key),
    watchPrefix: (prefix, onChange) => meta.watchPrefix(prefix, () => onChange()),
    leader: (prefix) => currentLeader(meta, prefix),
  };
}

export interface ElectionOptions<L extends CandidateLease> {
  readonly store: ElectionStore<L>;
  readonly prefix: string;
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
        await this.o.store.create(key, this.self, lease);
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
      } catch (error) {
        this.o.logger.debug({ err: error, prefix: this.o.prefix }, 'failed to read the leader');
      }
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
