// The election's candidacy under etcd faults, on fakes of its narrow interfaces (ElectionStore,
// ElectionSession, a lease and a clock whose waits the test releases): a campaign whose create
// fails is retried with backoff until the key exists (issue 9, defect 4: after one etcd blip a
// node was left without a candidacy until its next lease), and stops when the lease is gone, the
// candidate resigns or the election stops. Resigning deletes the key (retried too) and rejoining
// campaigns again.
import { describe, expect, it } from 'vitest';
import { type Clock, SeededRandom } from '../../src/io/index.js';
import { CAMPAIGN_BACKOFF, type CandidateLease, EPOCH_FLOOR_MAX, Election, type ElectionSession, type ElectionStore, type Leadership, outbidFloor, raiseFloor } from '../../src/cluster/election.js';
import type { ClusterMetadata } from '../../src/cluster/metadata.js';
import { silent, until } from '../support/replication-fakes.js';

const PREFIX = 'logs/events/writer/';

class FakeLease implements CandidateLease {
  constructor(readonly id: string) {}
  async grant(): Promise<string> {
    return this.id;
  }
}

class EtcdUnreachable extends Error {
  override readonly name = 'EtcdUnreachable';
}

/** Election keys with create revisions, and calls that fail as when etcd cannot be reached. */
class FakeElectionStore implements ElectionStore<FakeLease> {
  private revision = 0;
  readonly keys = new Map<string, { value: string; createRevision: number; lease: FakeLease | undefined }>();
  private readonly watchers = new Set<() => void>();
  /** Creates that fail before applying; with applied, the next one applies and its answer is lost. */
  createFailures = 0;
  createAppliedAnswerLost = false;
  deleteFailures = 0;
  readonly calls = { create: 0, delete: 0 };
  private createGate: Promise<void> = Promise.resolve();

  /** Creates wait (before applying) until the returned gate is released. */
  holdCreates(): { release: () => void } {
    let release = (): void => undefined;
    this.createGate = new Promise((resolve) => (release = resolve));
    return { release: () => release() };
  }

  /** Reads of the leader that fail before one succeeds. */
  leaderFailures = 0;

  async create(key: string, value: unknown, lease: FakeLease): Promise<number | undefined> {
    this.calls.create += 1;
    await Promise.resolve();
    await this.createGate;
    if (this.createFailures > 0) {
      this.createFailures -= 1;
      throw new EtcdUnreachable('etcd: create failed: unreachable');
    }
    let result: number | undefined;
    if (!this.keys.has(key)) {
      this.revision += 1;
      this.keys.set(key, { value: JSON.stringify(value), createRevision: this.revision, lease });
      this.changed();
      result = this.revision;
    }
    if (this.createAppliedAnswerLost) {
      this.createAppliedAnswerLost = false;
      throw new EtcdUnreachable('etcd: create applied, answer lost');
    }
    return result;
  }

  async delete(key: string): Promise<void> {
    this.calls.delete += 1;
    await Promise.resolve();
    if (this.deleteFailures > 0) {
      this.deleteFailures -= 1;
      throw new EtcdUnreachable('etcd: delete failed: unreachable');
    }
    if (this.keys.delete(key)) this.changed();
  }

  async watchPrefix(_prefix: string, onChange: () => void): Promise<() => Promise<void>> {
    this.watchers.add(onChange);
    return async () => void this.watchers.delete(onChange);
  }

  async leader(prefix: string): Promise<Leadership | undefined> {
    if (this.leaderFailures > 0) {
      this.leaderFailures -= 1;
      throw new EtcdUnreachable('etcd: range failed: unreachable');
    }
    const first = [...this.keys.entries()].filter(([key]) => key.startsWith(prefix)).sort((a, b) => a[1].createRevision - b[1].createRevision)[0];
    return first ? { leader: JSON.parse(first[1].value) as string, epoch: first[1].createRevision, key: first[0], createRevision: first[1].createRevision } : undefined;
  }

  async exists(key: string): Promise<boolean> {
    await Promise.resolve();
    return this.keys.has(key);
  }

  /** etcd restored from a snapshot taken before key was created: the key is gone, its lease is not. */
  restoreWithout(key: string): void {
    if (this.keys.delete(key)) this.changed();
  }

  /** Another node's candidacy. */
  addCandidate(node: string): void {
    this.revision += 1;
    this.keys.set(`${PREFIX}${node}-x`, { value: JSON.stringify(node), createRevision: this.revision, lease: undefined });
    this.changed();
  }

  keysOf(node: string): string[] {
    return [...this.keys.keys()].filter((key) => key.startsWith(`${PREFIX}${node}-`));
  }

  private changed(): void {
    for (const watcher of this.watchers) watcher();
  }
}

class FakeSession implements ElectionSession<FakeLease> {
  private lease: FakeLease | undefined;
  private readonly leaseListeners: Array<(lease: FakeLease) => void> = [];
  private readonly lostListeners: Array<() => void> = [];
  constructor(readonly member: { readonly id: string }) {}
  onLease(listener: (lease: FakeLease) => void): void {
    this.leaseListeners.push(listener);
    if (this.lease) listener(this.lease);
  }
  onLost(listener: () => void): void {
    this.lostListeners.push(listener);
  }
  currentLease(): FakeLease | undefined {
    return this.lease;
  }
  grant(lease: FakeLease): void {
    this.lease = lease;
    for (const listener of this.leaseListeners) listener(lease);
  }
  lose(): void {
    this.lease = undefined;
    for (const listener of this.lostListeners) listener();
  }
}

/** Waits last until the test releases them (or their signal aborts); their lengths are recorded. */
class ManualClock implements Clock {
  readonly sleeps: number[] = [];
  private readonly waiting: Array<() => void> = [];
  nowMs(): number {
    return 1_700_000_000_000;
  }
  monotonicMs(): number {
    return 0;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      signal?.addEventListener('abort', () => resolve(), { once: true });
      this.waiting.push(resolve);
    });
  }
  setTimer(): () => void {
    throw new Error('not used by the election');
  }
  get waitingCount(): number {
    return this.waiting.length;
  }
  /** Ends every wait in progress. */
  release(): void {
    for (const resolve of this.waiting.splice(0)) resolve();
  }
}

function electionOf(node: string): { election: Election<FakeLease>; store: FakeElectionStore; session: FakeSession; clock: ManualClock; changes: Array<{ leader: string | undefined; isSelf: boolean }> } {
  const store = new FakeElectionStore();
  const session = new FakeSession({ id: node });
  const clock = new ManualClock();
  const election = new Election({ store, prefix: PREFIX, session, logger: silent, clock, random: new SeededRandom(9) });
  const changes: Array<{ leader: string | undefined; isSelf: boolean }> = [];
  election.onChange((state, isSelf) => changes.push({ leader: state?.leader, isSelf }));
  return { election, store, session, clock, changes };
}

/** Releases the clock's waits until cond holds. */
async function releaseUntil(clock: ManualClock, cond: () => boolean): Promise<void> {
  await until(() => {
    clock.release();
    return cond();
  });
}

describe('election campaign under etcd faults', () => {
  it('a campaign whose create fails (an etcd blip) is retried with backoff until the candidacy key exists', async () => {
    const { election, store, session, clock, changes } = electionOf('a');
    await election.start();
    store.createFailures = 3;
    session.grant(new FakeLease('1'));
    await releaseUntil(clock, () => election.isLeader());
    expect(store.calls.create).toBe(4);
    expect(store.keysOf('a')).toEqual([`${PREFIX}a-1`]);
    expect(election.isCandidate()).toBe(true);
    expect(changes.at(-1)).toEqual({ leader: 'a', isSelf: true });
    // Three waits, growing (jitter of +-20 % around 100, 200, 400 ms).
    expect(clock.sleeps).toHaveLength(3);
    clock.sleeps.forEach((ms, i) => {
      const base = CAMPAIGN_BACKOFF.initialMs * 2 ** i;
      expect(ms).toBeGreaterThanOrEqual(base * 0.8);
      expect(ms).toBeLessThanOrEqual(base * 1.2);
    });
    await election.stop();
  });

  it('a create applied by etcd whose answer was lost ends the retries: the retry finds the key', async () => {
    const { election, store, session, clock } = electionOf('a');
    await election.start();
    store.createAppliedAnswerLost = true;
    session.grant(new FakeLease('1'));
    await releaseUntil(clock, () => election.isLeader());
    expect(store.calls.create).toBe(2);
    expect(store.keysOf('a')).toEqual([`${PREFIX}a-1`]);
    await election.stop();
  });

  it('a campaign that keeps failing stops retrying once its lease is lost, and the next lease campaigns', async () => {
    const { election, store, session, clock } = electionOf('a');
    await election.start();
    store.createFailures = Number.MAX_SAFE_INTEGER;
    const first = new FakeLease('1');
    session.grant(first);
    await releaseUntil(clock, () => store.calls.create >= 3);
    session.lose();
    clock.release();
    await until(() => clock.waitingCount === 0);
    const callsAtLoss = store.calls.create;
    for (let i = 0; i < 5; i += 1) {
      clock.release();
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(store.calls.create - callsAtLoss).toBeLessThanOrEqual(1); // at most the attempt in flight
    store.createFailures = 0;
    session.grant(new FakeLease('2'));
    await releaseUntil(clock, () => election.isLeader());
    expect(store.keysOf('a')).toEqual([`${PREFIX}a-2`]);
    await election.stop();
  });

  it('stop() ends a campaign waiting to retry', async () => {
    const { election, store, session, clock } = electionOf('a');
    await election.start();
    store.createFailures = Number.MAX_SAFE_INTEGER;
    session.grant(new FakeLease('1'));
    await until(() => clock.waitingCount === 1);
    await election.stop(); // would hang if the campaign's wait were not cut short
    const calls = store.calls.create;
    clock.release();
    await new Promise((resolve) => setImmediate(resolve));
    expect(store.calls.create).toBe(calls);
  });

  it('a follower whose campaign failed still ends with a candidacy, so it takes over when the leader goes (no node left without one)', async () => {
    const { election, store, session, clock, changes } = electionOf('b');
    store.addCandidate('a');
    await election.start();
    store.createFailures = 2;
    session.grant(new FakeLease('7'));
    await releaseUntil(clock, () => election.isCandidate());
    expect(election.isLeader()).toBe(false);
    store.keys.delete(`${PREFIX}a-x`); // a's lease expired
    election.evaluate(); // the watch would say so
    await until(() => election.isLeader());
    expect(changes.at(-1)).toEqual({ leader: 'b', isSelf: true });
    await election.stop();
  });
});

describe('election leader reads under etcd faults', () => {
  it('a read of the leader that fails is retried until one succeeds: a candidate whose predecessor\'s key went while it could not reach etcd learns it leads', async () => {
    const { election, store, session, clock, changes } = electionOf('b');
    store.addCandidate('a');
    await election.start();
    session.grant(new FakeLease('7'));
    await releaseUntil(clock, () => election.isCandidate());
    expect(election.isLeader()).toBe(false);
    store.leaderFailures = 3;
    store.keys.delete(`${PREFIX}a-x`); // a's lease expired while b was cut from etcd
    election.evaluate(); // the one watch event there is
    await releaseUntil(clock, () => election.isLeader());
    expect(store.leaderFailures).toBe(0);
    expect(changes.at(-1)).toEqual({ leader: 'b', isSelf: true });
    await election.stop();
  });
});

describe('election after etcd went back', () => {
  // `--etcd-restore --seed 1270`: etcd was restored to a snapshot older than n1's candidacy key
  // but not older than the lease it is bound to (n1's first). The key was gone, the lease lived
  // on (its keepalives passed), so no lease loss made n1 campaign again, and the election still
  // counted the vanished key as its candidacy: n1 never stood for the writer role again.
  it('a candidacy key that vanished while its lease lives is created again', async () => {
    const { election, store, session, clock } = electionOf('b');
    store.addCandidate('a');
    await election.start();
    session.grant(new FakeLease('7'));
    await releaseUntil(clock, () => election.isCandidate());
    expect(store.keysOf('b')).toEqual([`${PREFIX}b-7`]);
    store.restoreWithout(`${PREFIX}b-7`);
    await releaseUntil(clock, () => store.keysOf('b').length === 1);
    expect(store.keysOf('b')).toEqual([`${PREFIX}b-7`]);
    expect(election.isCandidate()).toBe(true);
    // And it leads once the older candidate goes.
    store.restoreWithout(`${PREFIX}a-x`);
    await until(() => election.isLeader());
    await election.stop();
  });
});

describe('election resign and rejoin', () => {
  it('resign deletes the candidacy key, retrying through etcd failures, and listeners hear at once that this node leads no more', async () => {
    const { election, store, session, clock, changes } = electionOf('a');
    await election.start();
    session.grant(new FakeLease('1'));
    await until(() => election.isLeader());
    store.addCandidate('b');
    store.deleteFailures = 2;
    const resigned = election.resign();
    expect(election.isLeader()).toBe(false);
    expect(changes.at(-1)).toEqual({ leader: 'a', isSelf: false });
    await releaseUntil(clock, () => store.keysOf('a').length === 0);
    await resigned;
    expect(store.calls.delete).toBe(3);
    await until(() => changes.at(-1)?.leader === 'b');
    expect(changes.at(-1)).toEqual({ leader: 'b', isSelf: false });
    // No campaign while resigned, even with a new lease.
    session.grant(new FakeLease('2'));
    await new Promise((resolve) => setImmediate(resolve));
    expect(store.keysOf('a')).toEqual([]);
    election.rejoin();
    await until(() => election.isCandidate());
    expect(store.keysOf('a')).toEqual([`${PREFIX}a-2`]);
    expect(election.isLeader()).toBe(false); // b's key is older
    await election.stop();
  });

  it('resigning while a create is in flight withdraws the key that create made', async () => {
    const { election, store, session } = electionOf('a');
    await election.start();
    const gate = store.holdCreates();
    session.grant(new FakeLease('1'));
    await until(() => store.calls.create === 1);
    const resigned = election.resign();
    gate.release();
    await resigned;
    await until(() => store.calls.delete === 1);
    expect(store.keysOf('a')).toEqual([]);
    expect(election.isCandidate()).toBe(false);
    expect(election.isLeader()).toBe(false);
    await election.stop();
  });
});

describe('epoch bounds', () => {
  it('outbid never raises the floor past EPOCH_FLOOR_MAX, and no floor that is not a safe integer is written', async () => {
    expect(outbidFloor(10, 11)).toBe(20);
    expect(outbidFloor(10, 1_000)).toBe(1_000);
    expect(outbidFloor(10, Number.MAX_SAFE_INTEGER)).toBeUndefined();
    expect(outbidFloor(EPOCH_FLOOR_MAX, EPOCH_FLOOR_MAX + 1)).toBeUndefined();
    expect(outbidFloor(2 ** 52, 2 ** 52 + 1)).toBeUndefined();
    const writes: unknown[] = [];
    const meta = {
      get: async () => undefined,
      create: async (_key: string, value: unknown) => (writes.push(value), 1),
      compareAndSwap: async (_key: string, value: unknown) => (writes.push(value), 2),
    } as unknown as ClusterMetadata;
    await expect(raiseFloor(meta, 'floor', Number.MAX_SAFE_INTEGER)).rejects.toThrow(/refused to raise/);
    await expect(raiseFloor(meta, 'floor', 2 ** 60)).rejects.toThrow(/refused to raise/);
    expect(writes).toEqual([]);
    await raiseFloor(meta, 'floor', 1_000);
    expect(writes).toEqual([1_000]);
  });
});
