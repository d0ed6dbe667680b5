// The read index: per segment, where each entry's frame starts, its length, and the low 32 bits
// of its checksum, so that a read is one positioned read plus one verification. At most
// readIndexSegmentsMax segments are indexed (each holds an open file), and at most
// readIndexBytesMax of memory (READ_INDEX_BYTES_PER_ENTRY per entry: a segment of small entries
// indexes millions), least recently used out; the most recently used index and the open
// segment's stay whatever their size, so a read never rebuilds the index it just built.
//
// Fault model: the index is a cache of what was verified when it was built; nothing in it is
// trusted over the bytes. Every read decodes and verifies the frame again and compares its
// checksum with the one indexed, so a frame damaged (or rewritten, even with recomputed
// checksums) since it was indexed is never served. A sealed segment whose intact entries do not
// add up to its recorded aggregate is indexed with no entry at all. For the open segment only
// durable frames are indexed. A segment file replaced by a repair bumps its version: an index
// built from the old file is discarded, and its handle closed once the last read using it ends.
import { type DiskFile, isNotFound } from '../io/index.js';
import type { Finding } from '../recovery/index.js';
import { type Checksum64, checksumHex } from './checksum.js';
import type { SegmentRecord } from './catalog.js';
import { analyzeSegmentHandle } from './analyze.js';
import { CorruptEntryError, EntryLostError, WalError } from './errors.js';
import { readRange } from './files.js';
import { checkWordOf, decodeFrameAt, frameCheckWordOf, isHoleFrame, segmentFileName } from './format.js';
import type { StoreState } from './store-state.js';

/** Read-index slots of frames written by one writeAndSync, added once they are durable. */
export interface IndexedFrames {
  readonly starts: number[];
  readonly lengths: number[];
  readonly checkWords: number[];
}

export interface ReadIndex {
  /** The segment's file, open for reading (the active segment's own handle while it is open). */
  readonly handle: DiskFile;
  /** Reads using the handle now; a retired index closes it when the last one finishes. */
  users: number;
  retired: boolean;
  /** The handle is closed (or closing): this index can no longer be read through. */
  closed: boolean;
  readonly starts: number[];
  readonly lengths: number[];
  /**
   * The low 32 bits of each entry's checksum when it was indexed (written here, or read and, for
   * a sealed segment, checked against its aggregate). A frame rewritten in place since then, even
   * with recomputed checksums (a lying copy), no longer matches and is not served.
   */
  readonly checkWords: number[];
}

/**
 * Memory of one indexed entry: three array slots (start, length, check word) of 8 bytes each
 * (a double or a tagged pointer in V8 on 64 bits). An estimate that errs high, not a measure.
 */
export const READ_INDEX_BYTES_PER_ENTRY = 24;

/** Estimated memory of one segment's read index. */
export function readIndexBytesOf(readIndex: Pick<ReadIndex, 'starts'>): number {
  return readIndex.starts.length * READ_INDEX_BYTES_PER_ENTRY;
}

/** Scans of the open segment's read index before giving up on catching up with its appends. */
const READ_INDEX_BUILD_ATTEMPTS_MAX = 4;

export interface VerifiedFrame {
  readonly frame: Buffer;
  readonly timestampMs: number;
  readonly checksum: Checksum64;
  readonly segmentId: number;
}

export class ReadIndexCache {
  private readonly indexes = new Map<number, ReadIndex>();
  private readonly builds = new Map<number, Promise<ReadIndex>>();
  /** Bumped when a sealed segment's file is replaced: an index built from the old file is stale. */
  private readonly versions = new Map<number, number>();

  constructor(private readonly state: StoreState) {}

  /** How many segments are indexed now (each holds an open file). */
  get size(): number {
    return this.indexes.size;
  }

  /** Estimated memory of every index cached now. */
  get bytes(): number {
    let bytes = 0;
    for (const readIndex of this.indexes.values()) bytes += readIndexBytesOf(readIndex);
    return bytes;
  }

  /** Reads entry `index` of segment `record` through its index, verified. */
  async readFrame(index: number, record: SegmentRecord): Promise<VerifiedFrame> {
    let readIndex = await this.forSegment(record);
    // Retired (evicted, or replaced by a repair) between its lookup and now: its handle may be
    // closed. Take the current one; the check and users += 1 below run with no await between.
    for (let attempt = 0; readIndex.closed && attempt < READ_INDEX_BUILD_ATTEMPTS_MAX; attempt += 1) readIndex = await this.forSegment(this.state.segmentRecord(record.segmentId) ?? record);
    if (readIndex.closed) throw new WalError(`segment ${record.segmentId} kept changing while it was read; try again`);
    const slot = index - record.firstIndex;
    const start = readIndex.starts[slot];
    const length = readIndex.lengths[slot];
    if (start === undefined || length === undefined || start < 0) {
      throw this.corrupt(index, record.segmentId, undefined, 'entry could not be located: the bytes around it are damaged');
    }
    if (length === 0) throw new EntryLostError(index, record.segmentId, 'recorded as lost by a repair');
    readIndex.users += 1;
    let frame: Buffer;
    try {
      frame = await readRange(readIndex.handle, start, length);
    } finally {
      readIndex.users -= 1;
      if (readIndex.retired && readIndex.users === 0 && !readIndex.closed) {
        readIndex.closed = true;
        await readIndex.handle.close().catch(() => undefined);
      }
    }
    const decoded = decodeFrameAt(frame, 0, this.state.settings.entryBytesMax);
    if (decoded.kind !== 'entry' || !decoded.bodyOk || decoded.header.index !== index || decoded.frameByteLength !== length) {
      const detail = decoded.kind === 'entry' && !decoded.bodyOk ? 'entry checksum does not match its bytes' : 'entry header is damaged';
      throw this.corrupt(index, record.segmentId, start, detail, decoded.kind === 'entry' ? decoded : undefined);
    }
    if (checkWordOf(decoded.header.checksum) !== readIndex.checkWords[slot]) {
      throw this.corrupt(index, record.segmentId, start, 'entry was rewritten since it was indexed: its checksum is not the one recorded');
    }
    return { frame, timestampMs: decoded.header.timestampMs, checksum: decoded.header.checksum, segmentId: record.segmentId };
  }

  /** The segment's index, from the cache or built (readers arriving meanwhile share one build). */
  async forSegment(record: SegmentRecord): Promise<ReadIndex> {
    const cached = this.indexes.get(record.segmentId);
    if (cached) {
      this.indexes.delete(record.segmentId); // re-insert: most recently used last
      this.indexes.set(record.segmentId, cached);
      return cached;
    }
    const building = this.builds.get(record.segmentId);
    if (building) return building;
    const version = this.versions.get(record.segmentId) ?? 0;
    const build = this.build(record, version).finally(() => {
      if (this.builds.get(record.segmentId) === build) this.builds.delete(record.segmentId);
    });
    this.builds.set(record.segmentId, build);
    return build;
  }

  /** A new open segment: indexed from its first frame through its writer handle. */
  async addOpenSegment(segmentId: number, handle: DiskFile): Promise<void> {
    this.indexes.set(segmentId, { handle, users: 0, retired: false, closed: false, starts: [], lengths: [], checkWords: [] });
    await this.evict();
  }

  /** Frames of the open segment that just became durable join its index (if it is cached). */
  addDurableFrames(segmentId: number, indexed: IndexedFrames): void {
    const readIndex = this.indexes.get(segmentId);
    if (!readIndex) return;
    readIndex.starts.push(...indexed.starts);
    readIndex.lengths.push(...indexed.lengths);
    readIndex.checkWords.push(...indexed.checkWords);
  }

  /**
   * Entries of the open segment rewritten in place by its repair (open-repair.ts): their slots
   * point at the verified frames now (slots before them that were never indexed stay unknown).
   */
  repairSlots(segmentId: number, firstIndex: number, slots: ReadonlyArray<{ index: number; start: number; length: number; checkWord: number }>): void {
    const readIndex = this.indexes.get(segmentId);
    if (!readIndex) return;
    for (const { index, start, length, checkWord } of slots) {
      const slot = index - firstIndex;
      while (readIndex.starts.length < slot) {
        readIndex.starts.push(-1);
        readIndex.lengths.push(0);
        readIndex.checkWords.push(0);
      }
      readIndex.starts[slot] = start;
      readIndex.lengths[slot] = length;
      readIndex.checkWords[slot] = checkWord;
    }
  }

  /**
   * The open segment's file was written back under its name (open-repair.ts): its index reads
   * through the new handle; the old one is closed once the reads using it end. False when no
   * cached index used the old handle (the caller closes it).
   */
  async swapOpenHandle(segmentId: number, old: DiskFile, handle: DiskFile): Promise<boolean> {
    const cached = this.indexes.get(segmentId);
    if (!cached || cached.handle !== old) return false;
    this.indexes.set(segmentId, { handle, users: 0, retired: false, closed: false, starts: cached.starts, lengths: cached.lengths, checkWords: cached.checkWords });
    await retire(cached);
    return true;
  }

  /** Whether the cached index of the segment reads through this handle. */
  readsThrough(segmentId: number, handle: DiskFile): boolean {
    return this.indexes.get(segmentId)?.handle === handle;
  }

  /** The segment's file was replaced: indexes built (or being built) from the old file go. */
  async invalidate(segmentId: number): Promise<void> {
    this.versions.set(segmentId, (this.versions.get(segmentId) ?? 0) + 1);
    this.builds.delete(segmentId); // a build still running reads the old file
    const cached = this.indexes.get(segmentId);
    this.indexes.delete(segmentId);
    if (cached) await retire(cached);
  }

  /** Closes every index's handle but the open segment's (its writer closes that one). */
  async closeAll(activeHandle: DiskFile | undefined): Promise<void> {
    for (const readIndex of this.indexes.values()) if (readIndex.handle !== activeHandle) await retire(readIndex);
    this.indexes.clear();
  }

  /**
   * Builds a segment's read index from its file, through a read handle of its own (the active
   * segment's writer handle may be closed by a seal meanwhile). For the open segment only synced
   * bytes are indexed, and since frames made durable during the scan are not pushed into an index
   * that is not installed yet, the scan runs again until it caught up with the durable end; the
   * check and the install happen with no await between them, so no durable frame is ever missed.
   */
  private async build(record: SegmentRecord, version: number): Promise<ReadIndex> {
    const state = this.state;
    let handle: DiskFile;
    try {
      handle = await state.layout.disk.open(state.layout.segmentPath(record.segmentId), 'r');
    } catch (error) {
      if (isNotFound(error)) throw this.corrupt(record.firstIndex, record.segmentId, undefined, 'segment file is missing');
      throw error;
    }
    let built: IndexedFrames | undefined;
    let caughtUp = false;
    try {
      for (let attempt = 0; attempt < READ_INDEX_BUILD_ATTEMPTS_MAX && !caughtUp; attempt += 1) {
        const active = state.active?.segmentId === record.segmentId ? state.active : undefined;
        const size = active ? active.byteLength : await handle.byteLength();
        built = await this.scan(handle, active ? state.activeRecord() : record, size, active === undefined);
        const now = state.active?.segmentId === record.segmentId ? state.active : undefined;
        caughtUp = now === active && (now === undefined || now.byteLength === size);
      }
    } catch (error) {
      await handle.close().catch(() => undefined);
      throw error;
    }
    const readIndex: ReadIndex = { handle, users: 0, retired: false, closed: false, ...(built as IndexedFrames) };
    if ((this.versions.get(record.segmentId) ?? 0) !== version) {
      // The file was replaced (repaired) while this index was being built from the old one.
      await handle.close();
      return this.forSegment(state.segmentRecord(record.segmentId) ?? record);
    }
    if (!caughtUp) {
      // Appends kept landing during every scan: serve this read from the index as built, and
      // let the next read build again (never install an index that may miss durable frames).
      readIndex.retired = true;
      return readIndex;
    }
    this.indexes.set(record.segmentId, readIndex);
    await this.evict();
    return readIndex;
  }

  /**
   * Keeps at most readIndexSegmentsMax indexes (and open files) and readIndexBytesMax of them,
   * least recently used out first; the most recently used one and the open segment's are kept.
   */
  private async evict(): Promise<void> {
    const { readIndexSegmentsMax, readIndexBytesMax } = this.state.options;
    let bytes = this.bytes;
    const entries = [...this.indexes.entries()];
    const newest = entries[entries.length - 1]?.[1];
    for (const [segmentId, index] of entries) {
      if (this.indexes.size <= readIndexSegmentsMax && bytes <= readIndexBytesMax) return;
      if (segmentId === this.state.active?.segmentId || index === newest) continue; // kept
      // The list is a snapshot and retire() awaits: an entry replaced meanwhile (a repair's
      // reload) is not this one any more, and is neither removed nor left open untracked.
      if (this.indexes.get(segmentId) !== index) continue;
      this.indexes.delete(segmentId);
      bytes -= readIndexBytesOf(index);
      await retire(index);
    }
  }

  /** One pass over a segment's first byteLength bytes: each intact frame's offset and length. */
  private async scan(handle: DiskFile, record: SegmentRecord, byteLength: number, sealed: boolean): Promise<IndexedFrames> {
    const state = this.state;
    const starts: number[] = [];
    const lengths: number[] = [];
    const checkWords: number[] = [];
    const analysis = await analyzeSegmentHandle(handle, record.segmentId, byteLength, {
      entryBytesMax: state.settings.entryBytesMax,
      firstIndexHint: record.firstIndex,
      onIntactFrame: (index, frame, offsetBytes) => {
        const slot = index - record.firstIndex;
        while (starts.length < slot) {
          starts.push(-1);
          lengths.push(0);
          checkWords.push(0);
        }
        const isHole = isHoleFrame(frame);
        starts.push(offsetBytes);
        lengths.push(isHole ? 0 : frame.byteLength);
        checkWords.push(frameCheckWordOf(frame));
      },
    });
    for (const range of analysis.ranges) {
      state.reportFinding({ kind: range.kind, log: state.settings.logName, segment: record.segmentId, entryIndex: range.entryIndex ?? range.prevIndex + 1, offsetBytes: range.offsetBytes, byteLength: range.byteLength, detail: `found while reading: ${range.detail}` });
    }
    if (sealed && record.state === 'sealed' && analysis.ranges.length === 0 && analysis.aggregate !== record.aggregateChecksum) {
      // Entries that each verify but together are not the sealed segment that was recorded
      // (rewritten by something that recomputed checksums): serve none of them.
      starts.fill(-1);
      state.reportFinding({ kind: 'bad-trailer', log: state.settings.logName, segment: record.segmentId, detail: `found while reading: entries do not add up to the recorded aggregate ${checksumHex(record.aggregateChecksum)}` });
    }
    return { starts, lengths, checkWords };
  }

  private corrupt(index: number, segment: number, offsetBytes: number | undefined, detail: string, decoded?: { header: { checksum: Checksum64 }; actualChecksum: Checksum64 }): CorruptEntryError {
    const finding: Finding = {
      kind: decoded ? 'checksum-mismatch' : 'bad-entry-header',
      log: this.state.settings.logName,
      segment,
      entryIndex: index,
      ...(offsetBytes === undefined ? {} : { offsetBytes }),
      ...(decoded ? { expectedChecksum: checksumHex(decoded.header.checksum), actualChecksum: checksumHex(decoded.actualChecksum) } : {}),
      file: `segments/${segmentFileName(segment)}`,
      detail,
    };
    this.state.reportFinding(finding);
    return new CorruptEntryError(index, finding);
  }
}

/** Closes an index's handle now, or when the last read using it finishes. */
export async function retire(readIndex: ReadIndex): Promise<void> {
  readIndex.retired = true;
  if (readIndex.users > 0 || readIndex.closed) return;
  readIndex.closed = true;
  await readIndex.handle.close().catch(() => undefined);
}
