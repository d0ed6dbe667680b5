// A node's session with etcd: one lease, kept alive, holding the node's member key and its
// election candidacies. When the lease is lost (etcd down longer than the TTL, or a partition),
// everything bound to it is gone; the session grants a new lease, registers again and tells its
// listeners, who campaign again.
import type { Lease } from 'etcd3';
import type { Logger } from 'pino';
import type { Clock, Random } from '../io/index.js';
import { Backoff } from './backoff.js';
import type { ClusterMetadata, MetadataLease } from './metadata.js';

export interface MemberInfo {
  readonly id: string;
  readonly address: string;
  readonly startedMs: number;
  readonly version: string;
  readonly metricsUrl: string;
}

export function parseMemberInfo(raw: unknown): MemberInfo {
  const v = raw as Partial<MemberInfo> | null;
  if (!v || typeof v.id !== 'string' || typeof v.address !== 'string') throw new Error('malformed member record');
  return { id: v.id, address: v.address, startedMs: Number(v.startedMs ?? 0), version: String(v.version ?? ''), metricsUrl: String(v.metricsUrl ?? '') };
}

export class NodeSession<L extends MetadataLease = Lease> {
  private lease: L | undefined;
  private generation = 0;
  private readonly listeners: Array<(lease: L, generation: number) => void> = [];
  private readonly lostListeners: Array<() => void> = [];
  private readonly abort = new AbortController();
  private renewing: Promise<void> | undefined;

  constructor(
    private readonly meta: ClusterMetadata<L>,
    readonly member: MemberInfo,
    private readonly ttlSeconds: number,
    private readonly logger: Logger,
    private readonly clock: Clock,
    private readonly random: Random,
  ) {}

  /** Called with each new lease (the first and every one after a loss). */
  onLease(listener: (lease: L, generation: number) => void): void {
    this.listeners.push(listener);
    if (this.lease) listener(this.lease, this.generation);
  }

  /** Called as soon as the current lease is known lost. */
  onLost(listener: () => void): void {
    this.lostListeners.push(listener);
  }

  currentLease(): L | undefined {
    return this.lease;
  }

  async start(): Promise<void> {
    await this.establish();
  }

  private async establish(): Promise<void> {
    const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 }, this.random);
    while (!this.abort.signal.aborted) {
      try {
        const lease = this.meta.lease(this.ttlSeconds);
        await lease.grant();
        await this.meta.put(this.meta.keys.member(this.member.id), this.member, lease);
        lease.on('lost', (error) => this.handleLost(lease, error));
        this.lease = lease;
        this.generation += 1;
        this.logger.info({ node: this.member.id, generation: this.generation }, 'registered in etcd');
        for (const listener of this.listeners) listener(lease, this.generation);
        return;
      } catch (error) {
        this.logger.warn({ node: this.member.id, err: error }, 'failed to register in etcd; retrying');
        await this.clock.sleep(backoff.next(), this.abort.signal);
      }
    }
  }

  private handleLost(lease: L, error: unknown): void {
    if (lease !== this.lease || this.abort.signal.aborted) return;
    this.lease = undefined;
    this.logger.warn({ node: this.member.id, err: error }, 'etcd lease lost; registering again');
    for (const listener of this.lostListeners) listener();
    this.renewing ??= this.establish().finally(() => {
      this.renewing = undefined;
    });
  }

  /** Revokes the lease (others see this node gone at once) and stops renewing. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.renewing;
    const lease = this.lease;
    this.lease = undefined;
    if (lease) await lease.revoke().catch(() => lease.release());
  }
}
