// What a node does when another node (the log's writer, or a peer catching up or repairing)
// asks it about its copy of a segment. Transport-free: src/rpc adapts it to PeerService.
//
// Fault model: requests may come from a stale writer (refused by epoch), carry damaged or
// hostile frames (each is verified before it is written), or ask for ranges the node does not
// hold. A copy this node holds but cannot verify is reported as faulty, never as absent.
// Segment files are read through the stores' Disk (LogStores.disk), never the file system directly.
import { withSpan } from '../observability/tracing.js';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { DiskError } from '../io/index.js';
import { CorruptEntryError, EntryLostError, IndexOutOfRangeError, type SegmentRecord, type SegmentStart, type WalStore, checksumHex, format } from '../wal/index.js';
import { BadRequestError, NotEpochHolderError } from './errors.js';
import type { FramesAnswer } from './api.js';
import { type LogStores, checkEpoch } from './logs.js';

export const READ_FRAMES_BYTES_MAX = 4 * 1024 * 1024;
export const FETCH_CHUNK_BYTES_DEFAULT = 1024 * 1024;
export const FETCH_CHUNK_BYTES_MAX = 4 * 1024 * 1024;
const INDEX_MAX = Number.MAX_SAFE_INTEGER;
/** Checksums in one SegmentInfo page: about 20 bytes each on the wire, so about 1.3 MB. */
export const SEGMENT_INFO_CHECKSUMS_MAX = 65_536;
/** Frame bytes read for one SegmentInfo page before it ends (the work per call is bounded too). */
export const SEGMENT_INFO_PAGE_BYTES_MAX = 64 * 1024 * 1024;

/** SegmentInfo's answer: what the node holds, and one page of checksums. */
export interface SegmentInfoPage extends SegmentHolding {
  readonly checksums: string[];
  readonly damaged: boolean;
  /** The index of checksums[0]. */
  readonly checksumsFromIndex: number;
  /** Where the next page of checksums starts; 0 when this one reached the last index. */
  readonly nextIndex: number;
}

export interface SegmentHolding {
  readonly present: boolean;
  readonly sealed: boolean;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly indexCount: number;
  readonly byteLength: number;
  readonly aggregate: string;
}

export function holdingOf(record: SegmentRecord | undefined): SegmentHolding {
  if (!record) return { present: false, sealed: false, firstIndex: 0, lastIndex: 0, indexCount: 0, byteLength: 0, aggregate: '' };
  return {
    present: true,
    sealed: record.state === 'sealed',
    firstIndex: record.firstIndex,
    lastIndex: record.lastIndex,
    indexCount: record.indexCount,
    byteLength: record.byteLength,
    aggregate: record.state === 'sealed' ? checksumHex(record.aggregateChecksum) : '',
  };
}

/**
 * Refuses a seal point inside a session batch: an entry this node holds at lastIndex that is
 * followed by more of its batch (FLAG_BATCH_OPEN). Sealing there would commit the batch's first
 * entries without its tag and the client's retry would append them again; a correct writer
 * never asks (src/replication/writer.ts lowers such a point to just before the batch). A copy
 * sealed at lastIndex already is answered as before; an entry that cannot be read is left to
 * sealSegment, as before.
 */
async function refuseInsideSessionBatch(store: WalStore, segmentId: number, lastIndex: number): Promise<void> {
  const record = store.segmentRecord(segmentId);
  if (!record || lastIndex < record.firstIndex || lastIndex > record.lastIndex) return;
  if (record.state === 'sealed' && record.lastIndex === lastIndex) return;
  let frame: Buffer;
  try {
    ({ frame } = await store.readFrame(lastIndex));
  } catch (error) {
    if (error instanceof CorruptEntryError || error instanceof EntryLostError) return;
    throw error;
  }
  if (format.isBatchOpenFrame(frame)) throw new BadRequestError('last_index', `entry ${lastIndex} is inside a session batch (the batch goes on at ${lastIndex + 1}): a segment is never sealed there`);
}

export function checkIndex(field: string, value: number, min = 1): number {
  if (!Number.isSafeInteger(value) || value < min || value > INDEX_MAX) throw new BadRequestError(field, `must be an integer from ${min} to 2^53-1`);
  return value;
}

/**
 * Who holds a writer epoch of a log: the node whose candidacy in the log's writer election has
 * that epoch (its key's create revision plus the floor it carries), undefined when none has.
 * EtcdEpochHolders (src/cluster/epoch-holders.ts) in production.
 */
export interface EpochHolders {
  /**
   * fresh: not from a cache (a refusal is made on what etcd says now). caller: the node asking,
   * whose lookups are rate limited (EpochLookupsLimitedError).
   */
  holderOf(log: string, epoch: number, fresh?: boolean, caller?: string): Promise<string | undefined>;
}

export interface PeerHandlersOptions {
  /** Looked up for every writer call that names its caller (TLS); none: such calls are refused. */
  readonly epochHolders?: EpochHolders;
  /** Counts a writer call refused because its caller does not hold its epoch. */
  readonly onWriterRefused?: (method: string) => void;
}

/**
 * The node a writer call (Replicate, Fence, Seal) comes from, as its verified peer certificate
 * names it (TLS); undefined when the call carries no identity: a plaintext listener (--insecure),
 * or this node calling its own store (LocalPeer). Calls without an identity keep the insecure
 * semantics: the epoch alone decides.
 */
export type WriterCaller = string | undefined;

export class PeerHandlers {
  /** The highest index each log's writer reported as acknowledged to clients. */
  private readonly committed = new Map<string, number>();
  /** A copy of this node's found damaged while serving a peer (the node repairs it from the others). */
  onDamage: ((log: string, segmentId: number, detail: string) => void) | undefined;

  constructor(
    private readonly logs: LogStores,
    private readonly logger: Logger,
    private readonly options: PeerHandlersOptions = {},
  ) {}

  /**
   * Binds a writer call to the epoch's holder: a call that names its caller (TLS) is accepted only
   * from the node whose writer candidacy for log holds epoch; others are refused (logged and
   * counted) before anything is opened or written. True when the caller was verified; false when
   * the call carries no identity (insecure semantics). The epoch is checked first either way.
   */
  private async verifyWriter(method: string, log: string, epoch: number, caller: WriterCaller): Promise<boolean> {
    this.logs.logDir(log); // a valid log name
    checkEpoch(epoch);
    if (caller === undefined) return false;
    const holders = this.options.epochHolders;
    // A cached holder that is not the caller is looked up again before refusing (after etcd was
    // restored from an older snapshot an epoch may have been issued anew; CLUSTER.md).
    let holder = await holders?.holderOf(log, epoch, false, caller);
    if (holder !== undefined && holder !== caller) holder = await holders?.holderOf(log, epoch, true, caller);
    if (holder !== undefined && holder === caller) return true;
    this.logger.warn({ method, log, epoch, caller, holder }, 'refused a writer call from a node that does not hold its epoch');
    this.options.onWriterRefused?.(method);
    throw new NotEpochHolderError(log, epoch, caller, holder);
  }

  committedIndex(log: string): number {
    return this.committed.get(log) ?? 0;
  }

  noteCommitted(log: string, index: number): void {
    if (index > this.committedIndex(log)) this.committed.set(log, index);
  }

  async replicate(log: string, epoch: number, segment: SegmentStart, frames: readonly Buffer[], committedIndex: number, caller?: WriterCaller): Promise<{ lastIndex: number }> {
    checkIndex('segment.segment_id', segment.segmentId);
    checkIndex('segment.first_index', segment.firstIndex);
    if (frames.length === 0) throw new BadRequestError('frames', 'at least one frame is needed');
    const verified = await this.verifyWriter('PeerService.Replicate', log, epoch, caller);
    const result = await withSpan('replica.write', { 'wal.log': log, 'wal.segment': segment.segmentId, 'wal.frames': frames.length }, () => this.logs.replicate(log, epoch, segment, frames, { verified }));
    this.noteCommitted(log, Math.min(committedIndex, result.lastIndex));
    return { lastIndex: result.lastIndex };
  }

  async fence(log: string, segmentId: number, epoch: number, caller?: WriterCaller): Promise<SegmentHolding> {
    checkIndex('segment.segment_id', segmentId);
    const verified = await this.verifyWriter('PeerService.Fence', log, epoch, caller);
    // Ordered behind every write that arrived before it: the answer covers all of them.
    return this.logs.withEpoch(log, epoch, async (store) => holdingOf(store.segmentRecord(segmentId)), { verified, checkFile: true });
  }

  async seal(log: string, segmentId: number, epoch: number, lastIndex: number, expectedAggregate: string, caller?: WriterCaller): Promise<SegmentHolding> {
    checkIndex('segment.segment_id', segmentId);
    checkIndex('last_index', lastIndex, 0);
    if (expectedAggregate !== '' && !/^[0-9a-f]{16}$/.test(expectedAggregate)) throw new BadRequestError('expected_aggregate', 'must be 16 lowercase hex digits or empty');
    const verified = await this.verifyWriter('PeerService.Seal', log, epoch, caller);
    // With the recorded aggregate given, a copy sealed past lastIndex is cut to it (verified).
    const expected = expectedAggregate === '' ? undefined : BigInt(`0x${expectedAggregate}`);
    // Never below what this node was told is acknowledged (defence in depth: a correct writer
    // seals at or above it, so only a forged or confused Seal is refused).
    const record = await withSpan('replica.seal', { 'wal.log': log, 'wal.segment': segmentId }, () =>
      this.logs.withEpoch(
        log,
        epoch,
        async (store) => {
          await refuseInsideSessionBatch(store, segmentId, lastIndex);
          return store.sealSegment(segmentId, lastIndex, expected, this.committedIndex(log));
        },
        { verified, checkFile: true },
      ),
    );
    const holding = holdingOf(record);
    if (expectedAggregate !== '' && holding.aggregate !== expectedAggregate) {
      this.logger.error({ log, segment: segmentId, expected: expectedAggregate, actual: holding.aggregate }, 'sealed copy differs from the recorded aggregate checksum');
    }
    return holding;
  }

  /**
   * What this node holds of segmentId and, when asked, one page of its per-entry checksums: from
   * page.fromIndex (the segment's first index when 0), at most SEGMENT_INFO_CHECKSUMS_MAX of them
   * and SEGMENT_INFO_PAGE_BYTES_MAX of frames read (one at least), so that neither the answer nor
   * the work for it grows with the segment. nextIndex is where the next page starts (0: none).
   */
  async segmentInfo(log: string, segmentId: number, withChecksums: boolean, page: { fromIndex?: number; countMax?: number } = {}): Promise<SegmentInfoPage> {
    checkIndex('segment.segment_id', segmentId);
    checkIndex('checksums_from_index', page.fromIndex ?? 0, 0);
    const store = await this.logs.existingStore(log);
    const holding = holdingOf(store.segmentRecord(segmentId));
    const checksums: string[] = [];
    let damaged = false;
    const from = Math.max(page.fromIndex || holding.firstIndex, holding.firstIndex);
    let next = 0;
    if (withChecksums && holding.present && from <= holding.lastIndex) {
      const countMax = Math.min(Math.max(page.countMax || SEGMENT_INFO_CHECKSUMS_MAX, 1), SEGMENT_INFO_CHECKSUMS_MAX);
      let bytesRead = 0;
      for (let index = from; index <= holding.lastIndex; index += 1) {
        if (checksums.length >= countMax || (checksums.length > 0 && bytesRead >= SEGMENT_INFO_PAGE_BYTES_MAX)) {
          next = index;
          break;
        }
        try {
          const { checksum, frame } = await store.readFrame(index);
          checksums.push(checksumHex(checksum));
          bytesRead += frame.byteLength;
        } catch (error) {
          if (!(error instanceof CorruptEntryError || error instanceof EntryLostError)) throw error;
          checksums.push('');
          damaged = true;
        }
      }
    }
    return { ...holding, checksums, damaged, checksumsFromIndex: withChecksums && holding.present ? from : 0, nextIndex: next };
  }

  /** Verified frames of segmentId from..to, up to bytesMax; damaged ones are listed as faulty. */
  async readFrames(log: string, segmentId: number, from: number, to: number, bytesMax: number): Promise<FramesAnswer> {
    checkIndex('segment.segment_id', segmentId);
    checkIndex('from_index', from);
    checkIndex('to_index', to);
    const limit = Math.min(Math.max(bytesMax || READ_FRAMES_BYTES_MAX, 1), READ_FRAMES_BYTES_MAX);
    const store = await this.logs.existingStore(log);
    const record = store.segmentRecord(segmentId);
    if (!record) return { frames: [], faulty: [], lastIndex: 0, sealed: false, aggregate: '' };
    const frames: Buffer[] = [];
    const faulty: number[] = [];
    let bytes = 0;
    const last = Math.min(to, record.lastIndex);
    for (let index = Math.max(from, record.firstIndex); index <= last; index += 1) {
      try {
        const { frame } = await store.readFrame(index);
        if (frames.length > 0 && bytes + frame.byteLength > limit) break;
        frames.push(frame);
        bytes += frame.byteLength;
      } catch (error) {
        if (error instanceof CorruptEntryError || error instanceof EntryLostError) faulty.push(index);
        else if (error instanceof IndexOutOfRangeError) break;
        else throw error;
        if (error instanceof CorruptEntryError) this.onDamage?.(log, segmentId, `a peer's read of entry ${index}: ${error.finding.detail}`);
      }
    }
    const holding = holdingOf(record);
    return { frames, faulty, lastIndex: record.lastIndex, sealed: holding.sealed, aggregate: holding.aggregate };
  }

  /** The file of a sealed segment, as chunks of at most chunkBytes. */
  async openSegmentFile(log: string, segmentId: number, chunkBytes: number): Promise<{ totalBytes: number; chunks: AsyncIterable<Buffer> } | undefined> {
    checkIndex('segment.segment_id', segmentId);
    const store = await this.logs.existingStore(log);
    const record = store.segmentRecord(segmentId);
    if (record?.state !== 'sealed') return undefined;
    const path = join(this.logs.logDir(log), 'segments', format.segmentFileName(segmentId));
    const disk = this.logs.disk;
    const info = await disk.stat(path);
    if (!info) throw new DiskError('ENOENT', 'stat', path); // as a failed stat always did
    const chunkBytesClamped = Math.min(Math.max(chunkBytes || FETCH_CHUNK_BYTES_DEFAULT, 4096), FETCH_CHUNK_BYTES_MAX);
    return { totalBytes: info.byteLength, chunks: disk.readChunks(path, chunkBytesClamped) };
  }
}
