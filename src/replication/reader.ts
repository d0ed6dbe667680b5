// The read path of one log on one node: which entries a node may serve, and from which copy.
//
// Rules (docs/CLUSTER.md, "What a read may return"):
// 1. An index is served only once it is acknowledged: up to the last index of its SEALED record
//    in etcd, or, in the OPEN (or RECOVERING) segment, up to the committed index the writer
//    reported. Nothing past that, whatever a copy holds.
// 2. The segment an index belongs to is the one etcd's records say, never whichever local
//    segment happens to contain that index: a member that missed a failover can hold a cut,
//    never-acknowledged entry at the same index in a segment etcd sealed lower.
// 3. A sealed copy (local or remote) whose last index or aggregate differs from the record is
//    not read from (a stale or lying copy); a local one is reported for repair at once. A copy
//    still open (not caught up) may serve indices up to the record's end: every frame of a
//    segment comes from the one writer that created it.
// 4. Records are re-read from etcd before serving from a segment the cache does not show
//    SEALED, so a stale cache cannot widen rule 1.
//
// Fault model: local and remote copies may be damaged (each frame is verified), stale or lying
// (rule 3); etcd and members may be unreachable (the read fails with NoVerifiedCopyError or the
// directory's error, never with wrong bytes).
import type { Logger } from 'pino';
import { CorruptEntryError, EntryLostError, IndexOutOfRangeError, type WalStore, checksumHex, format } from '../wal/index.js';
import type { PeerResolver, SegmentDirectory } from './api.js';
import { BadRequestError, NoVerifiedCopyError, NotWriterError } from './errors.js';
import type { SegmentMeta } from './metadata.js';

/** One entry as a reader receives it (a hole says lost). */
export interface ReadEntry {
  readonly index: number;
  readonly timestampMs: number;
  readonly payload: Buffer;
  readonly checksum: string;
  readonly lost: boolean;
  readonly lostReason: string;
  /** Set on the last entry of a session's batch (its payload is the client's, without the tag). */
  readonly session?: format.SessionTag | undefined;
}

export interface LogReaderContext {
  readonly log: string;
  readonly self: string;
  readonly store: WalStore;
  readonly directory: SegmentDirectory;
  readonly peers: PeerResolver;
  readonly logger: Logger;
  /** What this node knows is committed without asking (exact on the ready writer). */
  readonly localCommitted: () => number;
  /** Asks the log's writer for its committed index (undefined: no writer elsewhere to ask). */
  readonly writerCommitted: () => Promise<number | undefined>;
  /** A local copy (sealed or open) is damaged, or a sealed one disagrees with its record: repair it from the replicas. */
  readonly onDamage: (segmentId: number, detail: string) => void;
}

export const READ_FETCH_BYTES_MAX = 4 * 1024 * 1024;
export const READ_BATCH_DEFAULT = 256;
export const READ_BATCH_MAX = 4096;
/** A batch ends once it holds this many payload bytes (a Read call holds about one batch at a time). */
export const READ_BATCH_BYTES_MAX = 4 * 1024 * 1024;

type Records = ReadonlyArray<{ meta: SegmentMeta; modRevision?: number }>;

export class LogReader {
  private records: Records = [];

  constructor(private readonly ctx: LogReaderContext) {}

  /** Records read from etcd elsewhere (catch-up shares its list). */
  setRecords(records: Records): void {
    this.records = mergeRecords(this.records, records);
  }

  /** The last index known acknowledged without asking anyone: sealed records and what the writer reported. */
  committedIndex(): number {
    let sealed = 0;
    for (const { meta } of this.records) if (meta.state === 'SEALED' && meta.lastIndex > sealed) sealed = meta.lastIndex;
    return Math.max(this.ctx.localCommitted(), sealed);
  }

  /** The committed index, asking the writer when this node's own knowledge may be behind. */
  async knownCommitted(wanted: number): Promise<number> {
    const local = this.committedIndex();
    if (wanted !== 0 && wanted <= local) return local;
    try {
      return Math.max(local, (await this.ctx.writerCommitted()) ?? 0);
    } catch (error) {
      // This node is the writer and cannot say yet (issue 9 #6): UNAVAILABLE, never a short answer.
      if (error instanceof NotWriterError) throw error;
      return local; // the writer elsewhere did not answer: what this node knows is a lower bound
    }
  }

  /** Verified entries from..to (to 0: the committed end), in batches of at most batchMax entries and about READ_BATCH_BYTES_MAX bytes. */
  async *read(from: number, to: number, batchMax: number): AsyncGenerator<ReadEntry[]> {
    if (!Number.isSafeInteger(from) || from < 1) throw new BadRequestError('from_index', 'must be at least 1');
    if (!Number.isSafeInteger(to) || to < 0) throw new BadRequestError('to_index', 'must be 0 or an index');
    const committed = await this.knownCommitted(to);
    if (to > committed) throw new IndexOutOfRangeError(to, 1, committed);
    const upper = to === 0 ? committed : to;
    const limit = Math.min(Math.max(batchMax || READ_BATCH_DEFAULT, 1), READ_BATCH_MAX);
    if (from <= upper && this.needsFreshRecords(upper)) await this.refresh();
    let index = from;
    while (index <= upper) {
      const batch: ReadEntry[] = [];
      let bytes = 0;
      while (index <= upper && batch.length < limit && bytes < READ_BATCH_BYTES_MAX) {
        const got = await this.readAt(index, Math.min(upper, index + limit - batch.length - 1), committed);
        batch.push(...got);
        for (const entry of got) bytes += entry.payload.byteLength;
        index += got.length;
      }
      yield batch;
    }
  }

  async refresh(): Promise<Records> {
    this.records = mergeRecords(this.records, await this.ctx.directory.list(this.ctx.log));
    return this.records;
  }

  /** Rule 4: the cache does not show every index up to upper in a SEALED record. */
  private needsFreshRecords(upper: number): boolean {
    let sealedEnd = 0;
    for (const { meta } of this.records) if (meta.state === 'SEALED') sealedEnd = Math.max(sealedEnd, meta.lastIndex);
    return upper > sealedEnd;
  }

  /**
   * The record of the segment holding index: the last one starting at or before it. Of two
   * starting at the same index, the later segment: the earlier one was sealed empty (its writer
   * died before its first entry was acknowledged) and holds nothing.
   */
  private recordOf(index: number): SegmentMeta | undefined {
    let found: SegmentMeta | undefined;
    for (const { meta } of this.records) {
      if (meta.firstIndex > index) continue;
      if (found === undefined || meta.firstIndex > found.firstIndex || (meta.firstIndex === found.firstIndex && meta.segmentId > found.segmentId)) found = meta;
    }
    return found;
  }

  /** Rule 1: the last index of segment servable now. */
  private servableEnd(segment: SegmentMeta, committed: number): number {
    return segment.state === 'SEALED' ? segment.lastIndex : committed;
  }

  /** Entries from index (at least one), locally when allowed and verified, else from a member. */
  private async readAt(index: number, upTo: number, committed: number): Promise<ReadEntry[]> {
    let segment = this.recordOf(index);
    if (!segment || index > this.servableEnd(segment, committed)) {
      await this.refresh();
      segment = this.recordOf(index);
    }
    if (!segment || index > this.servableEnd(segment, committed)) {
      throw new NoVerifiedCopyError(this.ctx.log, index, 'no segment record in etcd covers this index yet');
    }
    const end = Math.min(upTo, this.servableEnd(segment, committed));
    let lostReason: string | undefined;
    if (this.localCopyUsable(segment)) {
      try {
        const { frame, timestampMs, checksum, segmentId } = await this.ctx.store.readFrame(index);
        // Rule 2: only from the local copy of the segment etcd names.
        if (segmentId === segment.segmentId) return [{ index, timestampMs, payload: format.entryPayloadOf(frame), checksum: checksumHex(checksum), lost: false, lostReason: '', session: format.sessionTagOf(frame) }];
      } catch (error) {
        if (error instanceof CorruptEntryError) {
          this.ctx.logger.warn({ log: this.ctx.log, entryIndex: index }, 'local copy is damaged; reading the entry from another member');
          // Sealed or open: an acknowledged entry damaged here is repaired from the members now.
          this.ctx.onDamage(segment.segmentId, `read of entry ${index}: ${error.finding.detail}`);
        } else if (error instanceof EntryLostError) {
          lostReason = error.reason;
        } else if (!(error instanceof IndexOutOfRangeError)) {
          throw error;
        }
      }
    }
    const remote = await this.readRemote(segment, index, end);
    if (remote.length > 0) return remote;
    if (lostReason !== undefined) return [{ index, timestampMs: 0, payload: Buffer.alloc(0), checksum: '', lost: true, lostReason }];
    throw new NoVerifiedCopyError(this.ctx.log, index, `no member of segment ${segment.segmentId} served a verified copy`);
  }

  /** Rule 3 for the local copy. */
  private localCopyUsable(segment: SegmentMeta): boolean {
    const local = this.ctx.store.segmentRecord(segment.segmentId);
    if (!local) return false;
    if (local.state !== 'sealed' || segment.state !== 'SEALED') return true;
    if (local.lastIndex === segment.lastIndex && checksumHex(local.aggregateChecksum) === segment.aggregate) return true;
    this.ctx.onDamage(segment.segmentId, `the local copy is sealed at ${local.lastIndex} (${checksumHex(local.aggregateChecksum)}), etcd records ${segment.lastIndex} (${segment.aggregate})`);
    return false;
  }

  private async readRemote(segment: SegmentMeta, index: number, end: number): Promise<ReadEntry[]> {
    for (const node of segment.ensemble) {
      if (node === this.ctx.self) continue;
      const peer = this.ctx.peers(node);
      if (!peer) continue;
      try {
        const answer = await peer.readFrames(this.ctx.log, segment.segmentId, index, end, READ_FETCH_BYTES_MAX);
        // Rule 3 for a remote copy.
        if (segment.state === 'SEALED' && answer.sealed && (answer.lastIndex !== segment.lastIndex || answer.aggregate !== segment.aggregate)) continue;
        const entries = verifyFrames(answer.frames, index, end);
        if (entries.length > 0) return entries;
      } catch (error) {
        this.ctx.logger.debug({ log: this.ctx.log, peer: node, entryIndex: index, err: error }, 'failed to read from a member');
      }
    }
    return [];
  }
}

/**
 * The newer of two lists, record by record: etcd answers can arrive out of order (a catch-up's
 * list issued before a seal may land after a read's list issued after it), and a record must
 * never go back to a state it left (rule 4). A list without revisions replaces the cache.
 */
function mergeRecords(cached: Records, fresh: Records): Records {
  if (fresh.some((r) => r.modRevision === undefined) || cached.some((r) => r.modRevision === undefined)) return fresh;
  const byId = new Map<number, { meta: SegmentMeta; modRevision?: number }>();
  for (const r of cached) byId.set(r.meta.segmentId, r);
  for (const r of fresh) {
    const old = byId.get(r.meta.segmentId);
    if (!old || (old.modRevision ?? 0) <= (r.modRevision ?? 0)) byId.set(r.meta.segmentId, r);
  }
  return [...byId.values()].sort((a, b) => a.meta.segmentId - b.meta.segmentId);
}

/** Decodes frames fetched from a member, keeping the verified run first..end. */
function verifyFrames(frames: readonly Buffer[], first: number, end: number): ReadEntry[] {
  const entries: ReadEntry[] = [];
  for (const frame of frames) {
    const decoded = format.decodeFrameAt(frame, 0, frame.byteLength);
    const expected = first + entries.length;
    if (expected > end || decoded.kind !== 'entry' || !decoded.bodyOk || decoded.frameByteLength !== frame.byteLength || decoded.header.index !== expected) break;
    entries.push({
      index: decoded.header.index,
      timestampMs: decoded.header.timestampMs,
      payload: format.entryPayloadOf(frame),
      checksum: checksumHex(decoded.header.checksum),
      lost: false,
      lostReason: '',
      session: format.sessionTagOf(frame),
    });
  }
  return entries;
}
