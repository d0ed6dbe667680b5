// A simulated etcd for segment records and writer elections: one revision counter, create-only
// puts and updates conditional on the mod revision (etcd's compare-and-swap), outages during
// which calls fail (after a delay, and optionally after applying: the answer is lost), and
// restore from an older snapshot (an etcd restored from backup: records and epochs go back).
import type { SeededRandom } from '../io/index.js';
import { type SegmentDirectory, type SegmentMeta, parseSegmentMeta } from '../replication/index.js';
import type { SimLoop, SimProcess } from './loop.js';

export class SimEtcdUnavailableError extends Error {
  override readonly name = 'SimEtcdUnavailableError';
  readonly code = 14;
}

interface Snapshot {
  readonly revision: number;
  readonly records: ReadonlyMap<string, { value: string; modRevision: number }>;
}

export class SimEtcd {
  revision = 0;
  private records = new Map<string, { value: string; modRevision: number }>();
  /** While true, every call fails. */
  down = false;
  /** Probability that a call applied but its answer was lost. */
  lostAnswerProbability = 0;
  calls = 0;

  constructor(private readonly loop: SimLoop, private readonly random: SeededRandom) {}

  /** The directory as code in process caller sees it. */
  directoryFor(caller: SimProcess): SegmentDirectory {
    return {
      list: (log) => this.call(caller, () => this.snapshotOf(log)),
      create: (meta, leader) =>
        this.call(caller, () => {
          if (this.records.has(keyOf(meta.log, meta.segmentId))) return undefined;
          // The election key of that epoch must still be the leader's (etcd: a transaction).
          if (leader && leader.epoch !== this.leaderEpoch) return undefined;
          return this.put(meta);
        }, true),
      update: (meta, modRevision) => this.call(caller, () => (this.records.get(keyOf(meta.log, meta.segmentId))?.modRevision === modRevision ? this.put(meta) : undefined), true),
    };
  }

  /** The epoch of the election key that holds the writer election now. */
  leaderEpoch = 0;

  /** A new leader: its epoch is the create revision of its election key. */
  nextEpoch(): number {
    this.revision += 1;
    this.leaderEpoch = this.revision;
    return this.revision;
  }

  snapshotOf(log: string): Array<{ meta: SegmentMeta; modRevision: number }> {
    const prefix = `${log}/`;
    return [...this.records.entries()]
      .filter(([key]) => key.startsWith(prefix))
      .map(([, r]) => ({ meta: parseSegmentMeta(JSON.parse(r.value)), modRevision: r.modRevision }))
      .sort((a, b) => a.meta.segmentId - b.meta.segmentId);
  }

  takeSnapshot(): Snapshot {
    return { revision: this.revision, records: new Map(this.records) };
  }

  /** etcd restored from an older backup: everything written since the snapshot is gone. */
  restore(snapshot: Snapshot): void {
    this.revision = snapshot.revision;
    this.records = new Map(snapshot.records);
  }

  private put(meta: SegmentMeta): number {
    this.revision += 1;
    this.records.set(keyOf(meta.log, meta.segmentId), { value: JSON.stringify(meta), modRevision: this.revision });
    return this.revision;
  }

  private async call<T>(caller: SimProcess, fn: () => T, mutates = false): Promise<T> {
    this.calls += 1;
    await this.loop.sleep(0.2 + this.random.next() * 1.5, caller);
    if (this.down) {
      await this.loop.sleep(this.random.next() * 50, caller);
      throw new SimEtcdUnavailableError('etcd is unavailable');
    }
    const result = fn();
    if (mutates && this.lostAnswerProbability > 0 && this.random.chance(this.lostAnswerProbability)) throw new SimEtcdUnavailableError('etcd: applied, answer lost');
    await this.loop.sleep(0.2 + this.random.next() * 1.5, caller);
    return result;
  }
}

function keyOf(log: string, segmentId: number): string {
  return `${log}/${String(segmentId).padStart(20, '0')}`;
}
