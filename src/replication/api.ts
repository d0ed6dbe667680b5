// What the write path needs of a node, local or remote. The local node calls its PeerHandlers
// directly; remote ones go through src/rpc's PeerClient. Both throw on failure.
import type { SegmentStart } from '../wal/index.js';
import type { SegmentHolding } from './peer.js';
import type { SegmentMeta } from './metadata.js';

export interface PeerApi {
  replicate(log: string, epoch: number, segment: SegmentStart, frames: readonly Buffer[], committedIndex: number): Promise<{ lastIndex: number }>;
  fence(log: string, segmentId: number, epoch: number): Promise<SegmentHolding>;
  seal(log: string, segmentId: number, epoch: number, lastIndex: number, expectedAggregate: string): Promise<SegmentHolding>;
  readFrames(log: string, segmentId: number, from: number, to: number, bytesMax: number): Promise<FramesAnswer>;
}

/** Frames a member serves of one segment, with what its copy of the segment is. */
export interface FramesAnswer {
  readonly frames: Buffer[];
  /** Indices it holds whose bytes fail verification. */
  readonly faulty: number[];
  /** Its last index of the segment (0 when it does not hold it). */
  readonly lastIndex: number;
  readonly sealed: boolean;
  /** Its aggregate checksum when sealed, else ''. */
  readonly aggregate: string;
}

/** Resolves a node id to something that speaks to it (undefined when it is not a live member). */
export type PeerResolver = (nodeId: string) => PeerApi | undefined;

/** The writer's election key and its create revision (the epoch). */
export interface LeaderGuard {
  readonly key: string;
  readonly epoch: number;
}

/** Segment metadata of one log, kept in etcd, updated by compare-and-swap. */
export interface SegmentDirectory {
  list(log: string): Promise<Array<{ meta: SegmentMeta; modRevision: number }>>;
  /**
   * Creates the record only if none exists and, when leader is given, only while that election
   * key still holds the writer election (one etcd transaction): a deposed writer cannot open a
   * segment. With previousModRevision, only while the record of the segment before is still at
   * that mod revision (etcd restored from an older snapshot, or wiped, took it back). The new
   * mod revision, or undefined when the record existed or a guard failed.
   */
  create(meta: SegmentMeta, leader?: LeaderGuard, previousModRevision?: number): Promise<number | undefined>;
  /** Replaces the record only if it is still at modRevision; the new mod revision, or undefined. */
  update(meta: SegmentMeta, modRevision: number): Promise<number | undefined>;
}
