// The one way a node builds a ReplicaSource (replicas as a source of verified copies) for a log:
// for its stores (repair at open and on read) and for its RepairService (one source a repair, so
// that what one repair learns of lying or unreachable members does not outlive it). Fetched copies
// go to a temporary directory under the log's own directory, on the stores' disk.
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
