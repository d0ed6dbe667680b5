// Options of a node, with defaults filled and validated once.
import type { Logger } from 'pino';
import { RPC_LIMITS_DEFAULT, type RpcLimits, type TlsPaths } from '../rpc/index.js';
import { InvalidOptionError } from '../wal/index.js';
import { type RepairStrategy, RECOVERY_CONFIG_DEFAULTS } from '../recovery/index.js';

/** TLS to etcd: its server's CA, and this node's client certificate for --client-cert-auth. */
export interface EtcdTlsPaths {
  readonly ca: string;
  readonly cert?: string;
  readonly key?: string;
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface NodeOptions {
  readonly id: string;
  readonly dataDir: string;
  /** HOST:PORT for gRPC (port 0: any free port). */
  readonly listen: string;
  readonly etcd: readonly string[];
  readonly cluster?: string;
  /** HOST:PORT for Prometheus /metrics. */
  readonly metricsListen?: string;
  /** Replication factor and ack quorum of logs this node creates. */
  readonly replicationFactor?: number;
  readonly ackQuorum?: number;
  /**
   * Logs the cluster may hold before this node refuses to create another (default 1,000): each
   * log costs every member memory and file handles, and etcd keys. A soft bound: creates racing
   * on several nodes may pass it by a few.
   */
  readonly logsMax?: number;
  readonly segmentBytesMax?: number;
  readonly entryBytesMax?: number;
  readonly groupCommitBytesMax?: number;
  /** Local backup copies of each sealed segment (replicas are the redundancy: default 0). */
  readonly backupRetentionCount?: number;
  readonly leaseTtlSeconds?: number;
  readonly rpcDeadlineMs?: number;
  readonly catchUpIntervalMs?: number;
  /** What a node does about a damaged copy no replica can rebuild (default partial). */
  readonly repairStrategy?: RepairStrategy;
  /** Background scrub rate of sealed segments; 0 turns the scrubber off. */
  readonly scrubBytesPerSecondMax?: number;
  /** Pause between two scrub passes. */
  readonly scrubIntervalMs?: number;
  /** Scrub reads yield to appends (docs/SCRUBBING.md, "Yielding to appends"); default true. */
  readonly scrubThrottle?: boolean;
  /** A member missing this long is replaced in the ensembles of the sealed segments it held. */
  readonly goneAfterMs?: number;
  readonly coordinatorIntervalMs?: number;
  /** Calls and streams a node serves at once (src/rpc/limits.ts; default RPC_LIMITS_DEFAULT). */
  readonly rpcLimits?: RpcLimits;
  /** PEM files of this node's identity (role peer) and of the cluster CA; absent: plaintext. */
  readonly tls?: TlsPaths;
  /** TLS to etcd (https:// endpoints); absent: etcd3's default for the endpoints' scheme. */
  readonly etcdTls?: EtcdTlsPaths;
  readonly logger?: Logger;
}

export interface ResolvedNodeOptions {
  readonly id: string;
  readonly dataDir: string;
  readonly listen: HostPort;
  readonly etcd: readonly string[];
  readonly cluster: string;
  readonly metricsListen: HostPort | undefined;
  readonly replicationFactor: number;
  readonly ackQuorum: number;
  readonly logsMax: number;
  readonly segmentBytesMax: number;
  readonly entryBytesMax: number;
  readonly groupCommitBytesMax: number;
  readonly backupRetentionCount: number;
  readonly leaseTtlSeconds: number;
  readonly rpcDeadlineMs: number;
  readonly catchUpIntervalMs: number;
  readonly repairStrategy: RepairStrategy;
  readonly scrubBytesPerSecondMax: number;
  readonly scrubIntervalMs: number;
  readonly scrubThrottle: boolean;
  readonly goneAfterMs: number;
  readonly coordinatorIntervalMs: number;
  readonly rpcLimits: RpcLimits;
  readonly tls: TlsPaths | undefined;
  readonly etcdTls: EtcdTlsPaths | undefined;
}

const NAME = /^[A-Za-z0-9._-]{1,63}$/;

export function parseHostPort(option: string, text: string): HostPort {
  const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (!match?.[1] || !Number.isInteger(port) || port > 65535) throw new InvalidOptionError(option, `expected HOST:PORT, got '${text.slice(0, 100)}'`);
  return { host: match[1], port };
}

function int(option: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) throw new InvalidOptionError(option, `must be an integer from ${min} to ${max}, got ${String(value)}`);
  return value;
}

export function resolveNodeOptions(o: NodeOptions): ResolvedNodeOptions {
  if (!NAME.test(o.id)) throw new InvalidOptionError('id', 'must be 1 to 63 characters of A-Z a-z 0-9 . _ -');
  const cluster = o.cluster ?? 'default';
  if (!NAME.test(cluster)) throw new InvalidOptionError('cluster', 'must be 1 to 63 characters of A-Z a-z 0-9 . _ -');
  if (o.etcd.length === 0) throw new InvalidOptionError('etcd', 'at least one etcd endpoint is needed');
  for (const endpoint of o.etcd) {
    if (!/^https?:\/\/[^\s/]+(:\d+)?\/?$/.test(endpoint)) throw new InvalidOptionError('etcd', `expected http://HOST:PORT, got '${endpoint.slice(0, 100)}'`);
    if (o.etcdTls && !endpoint.startsWith('https://')) throw new InvalidOptionError('etcd', `TLS to etcd needs https:// endpoints, got '${endpoint.slice(0, 100)}'`);
  }
  const replicationFactor = int('replicationFactor', o.replicationFactor ?? 3, 1, 15);
  const ackQuorum = int('ackQuorum', o.ackQuorum ?? Math.floor(replicationFactor / 2) + 1, 1, replicationFactor);
  return Object.freeze({
    id: o.id,
    dataDir: o.dataDir,
    listen: parseHostPort('listen', o.listen),
    etcd: [...o.etcd],
    cluster,
    metricsListen: o.metricsListen ? parseHostPort('metricsListen', o.metricsListen) : undefined,
    replicationFactor,
    ackQuorum,
    logsMax: int('logsMax', o.logsMax ?? 1_000, 1, 1_000_000),
    segmentBytesMax: int('segmentBytesMax', o.segmentBytesMax ?? 64 * 1024 * 1024, 4096, 1024 * 1024 * 1024),
    entryBytesMax: int('entryBytesMax', o.entryBytesMax ?? 1024 * 1024, 1, 16 * 1024 * 1024),
    groupCommitBytesMax: int('groupCommitBytesMax', o.groupCommitBytesMax ?? 4 * 1024 * 1024, 4096, 16 * 1024 * 1024),
    backupRetentionCount: int('backupRetentionCount', o.backupRetentionCount ?? 0, 0, 255),
    leaseTtlSeconds: int('leaseTtlSeconds', o.leaseTtlSeconds ?? 3, 2, 60),
    rpcDeadlineMs: int('rpcDeadlineMs', o.rpcDeadlineMs ?? 5_000, 100, 600_000),
    catchUpIntervalMs: int('catchUpIntervalMs', o.catchUpIntervalMs ?? 2_000, 100, 600_000),
    repairStrategy: o.repairStrategy ?? RECOVERY_CONFIG_DEFAULTS.repairStrategy,
    scrubBytesPerSecondMax: int('scrubBytesPerSecondMax', o.scrubBytesPerSecondMax ?? 16 * 1024 * 1024, 0, 4 * 1024 * 1024 * 1024),
    scrubIntervalMs: int('scrubIntervalMs', o.scrubIntervalMs ?? 30_000, 100, 86_400_000),
    scrubThrottle: o.scrubThrottle ?? true,
    goneAfterMs: int('goneAfterMs', o.goneAfterMs ?? 30_000, 0, 86_400_000),
    coordinatorIntervalMs: int('coordinatorIntervalMs', o.coordinatorIntervalMs ?? 2_000, 100, 600_000),
    rpcLimits: o.rpcLimits ?? RPC_LIMITS_DEFAULT,
    tls: o.tls,
    etcdTls: o.etcdTls,
  });
}
