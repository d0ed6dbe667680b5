// Leader election on an etcd prefix (the standard recipe): each candidate creates a key under the
// prefix bound to its session lease; the key with the lowest create revision is the leader, and
// that revision is the leader's epoch. A later leader always has a higher epoch, so the epoch
// fences every older one. Candidates watch the prefix and re-evaluate on any change.
import type { Lease } from 'etcd3';
import type { Logger } from 'pino';
import type { EtcdMetadata } from './etcd.js';
import type { NodeSession } from './session.js';

export interface Leadership {
  readonly leader: string;
  readonly epoch: number;
  /** The leader's election key: writes conditional on leadership compare its create revision. */
  readonly key: string;
}

export function parseCandidate(raw: unknown): string {
  if (typeof raw !== 'string' || raw.length === 0) throw new Error('malformed candidate');
  return raw;
}

/** The current leader of an election prefix, if any. */
export async function currentLeader(meta: EtcdMetadata, prefix: string): Promise<Leadership | undefined> {
  const response = await meta.client.getAll().prefix(prefix).sort('Create', 'Ascend').limit(1).exec();
  const kv = response.kvs[0];
  if (!kv) return undefined;
  return { leader: parseCandidate(JSON.parse(kv.value.toString())), epoch: Number(kv.create_revision), key: kv.key.toString() };
}

export class Election {
  private state: Leadership | undefined;
  private unwatch: (() => Promise<void>) | undefined;
  private stopped = false;
  private evaluating: Promise<void> = Promise.resolve();
  private readonly listeners: Array<(state: Leadership | undefined, isSelf: boolean) => void> = [];

  constructor(
    private readonly meta: EtcdMetadata,
    private readonly prefix: string,
    private readonly session: NodeSession,
    private readonly logger: Logger,
  ) {}

  get self(): string {
    return this.session.member.id;
  }

  /** Called whenever the leader (or its epoch) changes; isSelf says whether it is this node. */
  onChange(listener: (state: Leadership | undefined, isSelf: boolean) => void): void {
    this.listeners.push(listener);
  }

  leadership(): Leadership | undefined {
    return this.state;
  }

  isLeader(): boolean {
    return this.state?.leader === this.self && this.session.currentLease() !== undefined;
  }

  async start(): Promise<void> {
    this.unwatch = await this.meta.watchPrefix(this.prefix, () => this.evaluate());
    this.session.onLease((lease) => void this.campaign(lease));
    this.session.onLost(() => this.publish(undefined));
    this.evaluate();
  }

  private async campaign(lease: Lease): Promise<void> {
    try {
      const id = await lease.grant();
      await this.meta.create(`${this.prefix}${this.self}-${id}`, this.self, lease);
    } catch (error) {
      this.logger.warn({ node: this.self, err: error, prefix: this.prefix }, 'failed to campaign; will retry with the next lease');
    }
    this.evaluate();
  }

  /** Re-reads the leader; serialised so that listeners see changes in order. */
  evaluate(): void {
    this.evaluating = this.evaluating.then(async () => {
      if (this.stopped) return;
      try {
        this.publish(await currentLeader(this.meta, this.prefix));
      } catch (error) {
        this.logger.debug({ err: error, prefix: this.prefix }, 'failed to read the leader');
      }
    });
  }

  private publish(next: Leadership | undefined): void {
    const prev = this.state;
    if (prev?.leader === next?.leader && prev?.epoch === next?.epoch) return;
    this.state = next;
    for (const listener of this.listeners) listener(next, next?.leader === this.self);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.unwatch?.();
    await this.evaluating;
  }
}
