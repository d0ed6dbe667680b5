// The one way a node builds a ReplicaSource (replicas as a source of verified copies) for a log:
// for its stores (repair at open and on read) and for its RepairService (one source a repair, so
// that what one repair learns of lying or unreachable members does not outlive it). Fetched copies
// go to a temporary directory under the log's own directory, on the stores' disk; those a crash
// left behind are removed when the node starts (removeLeftoverFetches).
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Disk } from '../io/index.js';
import { type LogStores, type PeerResolver, type SegmentDirectory, type SegmentMeta, ReplicaSource } from '../replication/index.js';

export interface ReplicaSourcesOptions {
  readonly self: string;
  readonly peers: PeerResolver;
  /** Segment records (ensemble, aggregate); undefined until etcd is connected. */
  readonly directory: () => Pick<SegmentDirectory, 'list'> | undefined;
  /** Fetches a whole sealed segment file from a member into path (FetchSegment). */
  readonly fetchFile: (node: string, log: string, segmentId: number, path: string) => Promise<void>;
  readonly logs: Pick<LogStores, 'logDir'>;
  readonly disk: Disk;
  readonly logger: Logger;
  readonly entryBytesMax: number;
}

/** A new ReplicaSource for a log; `known`: a segment record the caller has just read (used as is). */
export type ReplicaSourceFor = (log: string, known?: SegmentMeta) => ReplicaSource;

export function replicaSources(o: ReplicaSourcesOptions): ReplicaSourceFor {
  return (log, known) =>
    new ReplicaSource({
      log,
      self: o.self,
      peers: o.peers,
      segmentMeta: async (id) => (known?.segmentId === id ? known : (await o.directory()?.list(log))?.find((s) => s.meta.segmentId === id)?.meta),
      fetchFile: (node, id, path) => o.fetchFile(node, log, id, path),
      tempDir: o.logs.logDir(log),
      disk: o.disk,
      logger: o.logger,
      entryBytesMax: o.entryBytesMax,
    });
}

/** mkdtemp's names for fetched copies (ReplicaSource: fetch-, catch-up: install-) and its 6-character suffix. */
const FETCH_TEMP_DIR = /^(fetch|install)-[A-Za-z0-9]{6}$/;

/**
 * Removes the temporary directories of fetched copies that a crash left in every log directory
 * under logsDir (each can hold a whole segment, and nothing else ever removes them). Call before
 * the node serves or opens a log: no fetch of this node is in flight then. Every other name stays.
 */
export async function removeLeftoverFetches(disk: Disk, logsDir: string, logger: Logger): Promise<number> {
  const logs = await disk.readdir(logsDir).catch(() => [] as string[]);
  let removed = 0;
  for (const log of logs) {
    const names = await disk.readdir(join(logsDir, log)).catch(() => [] as string[]);
    for (const name of names.filter((n) => FETCH_TEMP_DIR.test(n))) {
      await disk.remove(join(logsDir, log, name));
      removed += 1;
      logger.info({ log, dir: name }, 'removed a fetched copy left by an interrupted repair or catch-up');
    }
  }
  return removed;
}
