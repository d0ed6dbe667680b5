// What the verbs talk to, behind one interface: a local data directory today, a cluster node
// (--target HOST:PORT, over gRPC) in a later issue. A verb never knows which one it has; the
// cluster client plugs in at connect() without touching commands.ts.
import type { Logger } from 'pino';
import type { RepairReport, RepairStrategy } from '../recovery/index.js';
import { type DataDirOptions, type ValidationReport, WalStore, format, checksumHex, inspectDataDir, repairDataDir, validateStore } from '../wal/index.js';
import { ClusterNotBuiltError, UsageError } from './exit.js';
import { AdminClient, INSECURE, type TlsPaths, type Transport, loadTransport } from '../rpc/index.js';
import { WalClient } from '../client/index.js';
import { type Target, type TlsFlags, tlsPathsOf } from './options.js';

export type Endpoint = { readonly kind: 'local'; readonly dataDir: string } | { readonly kind: 'cluster'; readonly target: Target; readonly log: string; readonly tls?: TlsPaths | undefined };

/** The transport to a cluster endpoint: TLS with the caller's identity, or plaintext. */
export async function transportOf(endpoint: Extract<Endpoint, { kind: 'cluster' }>): Promise<Transport> {
  return endpoint.tls ? loadTransport(endpoint.tls) : INSECURE;
}

export type DumpRecord =
  | { readonly index: number; readonly timestampMs: number; readonly checksum: string; readonly payload: Buffer }
  | { readonly index: number; readonly lost: true; readonly reason: string };

export interface AppendRange {
  readonly firstIndex: number;
  readonly lastIndex: number;
}

/** A log opened for appends or reads. Close it, whatever happens. */
export interface LogClient {
  /** Largest payload the log accepts. */
  readonly entryBytesMax: number;
  append(payloads: readonly Buffer[]): Promise<AppendRange>;
  entries(fromIndex: number | undefined, toIndex: number | undefined): AsyncIterable<DumpRecord>;
  close(): Promise<void>;
}

export type OnProgress = ((bytesDone: number, bytesTotal: number) => void) | undefined;

/** Whole-store checks and repairs of a local data directory (not the RPC AdminClient of src/rpc). */
export interface StoreChecks {
  validate(onProgress: OnProgress): Promise<ValidationReport>;
  inspect(): Promise<ValidationReport>;
  repair(strategy: RepairStrategy, dryRun: boolean, onProgress: OnProgress): Promise<RepairReport>;
}

export interface OpenLogOptions {
  readonly logger: Logger;
  /** Create an empty store when there is none (append); readers must not. */
  readonly create: boolean;
  /** Roll size of a new store (an existing store keeps its own). */
  readonly segmentBytesMax?: number;
  readonly backupRetentionCount?: number;
}

export function endpointOf(opts: { dataDir?: string; target?: Target; log?: string } & TlsFlags): Endpoint {
  if (opts.target !== undefined && opts.dataDir !== undefined) throw new UsageError('give --data-dir or --target, not both');
  if (opts.target !== undefined) {
    let tls: TlsPaths | undefined;
    try {
      tls = tlsPathsOf(opts);
    } catch (error) {
      throw new UsageError(error instanceof Error ? error.message : String(error));
    }
    return { kind: 'cluster', target: opts.target, log: opts.log ?? 'default', tls };
  }
  if (opts.log !== undefined) throw new UsageError('--log names a log of a cluster: it goes with --target (a data directory holds one log)');
  if (opts.dataDir === undefined || opts.dataDir === '') throw new UsageError('--data-dir DIR is required (or --target HOST:PORT)');
  return { kind: 'local', dataDir: opts.dataDir };
}

export async function openLog(endpoint: Endpoint, options: OpenLogOptions): Promise<LogClient> {
  if (endpoint.kind === 'cluster') {
    const transport = await transportOf(endpoint);
    const client = await WalClient.connect({
      targets: [endpoint.target.text],
      log: endpoint.log,
      createIfMissing: options.create,
      // A CLI run against a node that is not there says so at once (appends still ride out a failover).
      connectDeadlineMs: 2_000,
      ...(transport.kind === 'tls' ? { tls: { ca: transport.ca, cert: transport.cert, key: transport.key } } : { insecure: true }),
    });
    return new ClusterLog(client);
  }
  const store = await WalStore.open(endpoint.dataDir, {
    logger: options.logger,
    create: options.create,
    ...(options.segmentBytesMax !== undefined ? { segmentBytesMax: options.segmentBytesMax } : {}),
    ...(options.backupRetentionCount !== undefined ? { recovery: { backupRetentionCount: options.backupRetentionCount } } : {}),
  });
  return new LocalLog(store);
}

export interface AdminOptions {
  readonly logger: Logger;
  /** Backup copies each sealed segment should have (default: what the store recorded). */
  readonly backupRetentionCount?: number;
  /** validate: worker threads (default 1, in this thread). */
  readonly threads?: number;
}

export function adminFor(endpoint: Endpoint, options: AdminOptions): StoreChecks {
  if (endpoint.kind === 'cluster') throw new ClusterNotBuiltError(endpoint.target.text, 'this verb works on a data directory only');
  const dataDir = endpoint.dataDir;
  const logger = options.logger;
  const recovery = options.backupRetentionCount !== undefined ? { recovery: { backupRetentionCount: options.backupRetentionCount } } : {};
  const withProgress = (onProgress: OnProgress): DataDirOptions => (onProgress ? { logger, ...recovery, onProgress } : { logger, ...recovery });
  return {
    validate: (onProgress) => validateStore(dataDir, { ...withProgress(onProgress), ...(options.threads !== undefined ? { threads: options.threads } : {}) }),
    inspect: () => inspectDataDir(dataDir, { logger }),
    repair: (strategy, dryRun, onProgress) => repairDataDir(dataDir, { strategy, dryRun }, withProgress(onProgress)),
  };
}

class LocalLog implements LogClient {
  constructor(private readonly store: WalStore) {}

  get entryBytesMax(): number {
    return this.store.settings.entryBytesMax;
  }

  append(payloads: readonly Buffer[]): Promise<AppendRange> {
    return this.store.append(payloads);
  }

  async *entries(fromIndex: number | undefined, toIndex: number | undefined): AsyncIterable<DumpRecord> {
    for await (const item of this.store.entries(fromIndex, toIndex)) {
      if ('lost' in item) {
        yield { index: item.index, lost: true, reason: item.reason };
        continue;
      }
      // Entry carries no checksum; read() verified the stored one, so re-encoding gives it back.
      const { checksum } = format.encodeEntry({ index: item.index, timestampMs: item.timestampMs, flags: 0, payload: item.payload });
      yield { index: item.index, timestampMs: item.timestampMs, checksum: checksumHex(checksum), payload: item.payload };
    }
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

/**
 * A log of a cluster through the package's WalClient: appends go to the writer as session
 * batches (a retry after a timeout or a writer failover is applied exactly once), reads come from
 * any member.
 */
class ClusterLog implements LogClient {
  /** The nodes' default limit less a session tag; a node refuses larger entries with INVALID_ARGUMENT anyway. */
  readonly entryBytesMax = 1024 * 1024 - format.SESSION_TAG_BYTES;

  constructor(private readonly client: WalClient) {}

  append(payloads: readonly Buffer[]): Promise<AppendRange> {
    return this.client.append(payloads);
  }

  async *entries(fromIndex: number | undefined, toIndex: number | undefined): AsyncIterable<DumpRecord> {
    for await (const e of this.client.read(fromIndex ?? 1, toIndex)) {
      if (e.lost) yield { index: e.index, lost: true, reason: e.lostReason };
      else yield { index: e.index, timestampMs: e.timestampMs, checksum: e.checksum, payload: e.payload };
    }
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

/** Cluster status as a node reports it (members, writers, segments with their ensembles). */
export async function clusterStatus(endpoint: Extract<Endpoint, { kind: 'cluster' }>, allLogs: boolean): Promise<unknown> {
  const client = new AdminClient(endpoint.target.text, await transportOf(endpoint));
  try {
    return await client.status(allLogs ? '' : endpoint.log);
  } finally {
    client.close();
  }
}
