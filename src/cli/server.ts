// Server verbs: `node` runs one cluster node in this process until SIGINT or SIGTERM.
import { ClusterNode } from '../cluster/index.js';
import { createLogger, disableTracing, enableTracing } from '../observability/index.js';
import type { RepairStrategy } from '../recovery/index.js';
import { type RpcLimits, parseRpcLimits } from '../rpc/index.js';
import { InvalidArgumentError } from 'commander';
import { EXIT_OK, type ExitCode } from './exit.js';
import { checkEtcdTransport, etcdTlsPathsOf, tlsPathsOf } from './options.js';

export interface NodeVerbOptions {
  readonly id: string;
  readonly dataDir: string;
  readonly listen: string;
  readonly etcd: string;
  readonly cluster?: string;
  readonly metricsListen?: string;
  readonly segmentBytes?: number;
  readonly replication?: number;
  readonly logsMax?: number;
  readonly ackQuorum?: number;
  readonly backups?: number;
  /** Parsed by the option's choices() in program.ts. */
  readonly repairStrategy?: RepairStrategy;
  readonly scrubBytesPerSecond?: number;
  readonly scrubIntervalMs?: number;
  /** commander's --no-scrub-throttle: false when given. */
  readonly scrubThrottle?: boolean;
  readonly goneAfterMs?: number;
  readonly rpcLimit?: readonly string[];
  /** OpenTelemetry: OTLP/gRPC collector (tracing is off without it) and the share of traces sampled. */
  readonly otlpEndpoint?: string;
  readonly traceSampleRatio?: number;
  readonly verbose?: boolean;
  readonly tlsCa?: string;
  readonly tlsRevoked?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly insecure?: boolean;
  readonly etcdCa?: string;
  readonly etcdCert?: string;
  readonly etcdKey?: string;
  readonly etcdInsecure?: boolean;
}

/** Resolves on the first SIGINT or SIGTERM (node as PID 1 in a container needs the handler). */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

export async function runNode(o: NodeVerbOptions, print: (line: string) => Promise<void>): Promise<ExitCode> {
  const logger = createLogger({ level: o.verbose ? 'debug' : (process.env['WAL_RECOVERY_LOG_LEVEL'] ?? 'info'), base: { node: o.id } });
  // Checked before anything starts: no TLS files and no --insecure is a usage error (exit 2).
  const tls = tlsPathsOf(o);
  let rpcLimits: RpcLimits | undefined;
  try {
    rpcLimits = o.rpcLimit ? parseRpcLimits(o.rpcLimit) : undefined;
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message); // a usage error (exit 2)
  }
  const etcd = o.etcd.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const etcdTls = etcdTlsPathsOf(o, etcd);
  checkEtcdTransport(o, tls !== undefined, etcdTls !== undefined);
  if (tls && !etcdTls) process.stderr.write(`wal-recovery node ${o.id}: INSECURE etcd (--etcd-insecure): plaintext to ${etcd.join(', ')}; whoever reaches etcd can rewrite segment records, epochs and member addresses\n`);
  // Loud whatever the log level: the node's own warning (src/cluster/node.ts) may be filtered.
  if (!tls) process.stderr.write(`wal-recovery node ${o.id}: INSECURE (--insecure): plaintext gRPC, no caller is authenticated; anyone who reaches ${o.listen} may append, read, fence, seal and repair\n`);
  // Installed before starting: a node still starting (etcd unreachable, say) must stop on
  // SIGTERM too — as PID 1 in a container nothing else would deliver it.
  const signal = untilSignal();
  if (o.otlpEndpoint !== undefined) await enableTracing({ otlpEndpoint: o.otlpEndpoint, sampleRatio: o.traceSampleRatio ?? 0.01, serviceName: `wal-recovery-${o.id}` });
  const starting = ClusterNode.start({
    ...(tls ? { tls } : {}),
    ...(etcdTls ? { etcdTls } : {}),
    id: o.id,
    dataDir: o.dataDir,
    listen: o.listen,
    etcd,
    logger,
    ...(o.cluster !== undefined ? { cluster: o.cluster } : {}),
    ...(o.metricsListen !== undefined ? { metricsListen: o.metricsListen } : {}),
    ...(o.segmentBytes !== undefined ? { segmentBytesMax: o.segmentBytes } : {}),
    ...(o.replication !== undefined ? { replicationFactor: o.replication } : {}),
    ...(o.logsMax !== undefined ? { logsMax: o.logsMax } : {}),
    ...(o.ackQuorum !== undefined ? { ackQuorum: o.ackQuorum } : {}),
    ...(o.backups !== undefined ? { backupRetentionCount: o.backups } : {}),
    ...(o.repairStrategy !== undefined ? { repairStrategy: o.repairStrategy } : {}),
    ...(o.scrubBytesPerSecond !== undefined ? { scrubBytesPerSecondMax: o.scrubBytesPerSecond } : {}),
    ...(o.scrubIntervalMs !== undefined ? { scrubIntervalMs: o.scrubIntervalMs } : {}),
    ...(o.scrubThrottle !== undefined ? { scrubThrottle: o.scrubThrottle } : {}),
    ...(o.goneAfterMs !== undefined ? { goneAfterMs: o.goneAfterMs } : {}),
    ...(rpcLimits ? { rpcLimits } : {}),
  });
  const first = await Promise.race([starting, signal]);
  if (typeof first === 'string') {
    logger.info({ signal: first }, 'stopped before serving');
    // Nothing was acknowledged yet; what start() left open is recovered like after a crash.
    process.exit(0);
  }
  const node = first;
  await print(JSON.stringify({ node: node.id, target: node.address, metrics: node.metricsUrl, pid: process.pid }) + '\n');
  logger.info({ signal: await signal }, 'stopping');
  await node.stop();
  await disableTracing(); // flushes the spans still buffered
  return EXIT_OK;
}
