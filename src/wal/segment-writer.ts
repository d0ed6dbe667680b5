// The open segment's writer: creates a segment, frames appended payloads into it, rolls to a new
// segment at segmentBytesMax, writes and syncs, and seals with a trailer.
//
// Fault model: the process may die at any instant and the disk may tear the last unsynced write.
// Bytes count only once the fdatasync that covers them returned: then the durable state moves up
// and their frames join the read index. Never more than groupCommitBytesMax bytes are written
// between two fdatasyncs (a frame larger than that alone), so a crash can only damage the last
// tornWindowBytesOf(...) bytes of the open segment; recovery on open relies on it. A new segment
// file is created atomically (temp, fsync, rename, fsync the directory) with its header only.
import { newAggregate } from './aggregate.js';
import { checksumHex } from './checksum.js';
import { BatchPartlyDurableError } from './errors.js';
import { writeFileAtomic } from './files.js';
import { ENTRY_HEADER_BYTES, FORMAT_VERSION, SEGMENT_HEADER_BYTES, TRAILER_BYTES, checkWordOf, encodeEntryInto, encodeSegmentHeader, encodeTrailer, logIdOf } from './format.js';
import type { IndexedFrames, ReadIndexCache } from './read-index.js';
import { type ActiveSegment, type StoreState, activeSegment, markDurable } from './store-state.js';

export interface AppendResult {
  readonly firstIndex: number;
  readonly lastIndex: number;
}

/** The identity of a segment as the log's writer chose it (replica mode). */
export interface SegmentStart {
  readonly segmentId: number;
  readonly firstIndex: number;
  readonly createdMs: number;
}

export class SegmentWriter {
  constructor(
    private readonly state: StoreState,
    private readonly readIndexes: ReadIndexCache,
  ) {}

  /**
   * Frames and writes one group commit: each request's payloads, in order, rolling to a new
   * segment where the next frame would not fit. Resolves with each request's index range.
   */
  async writeBatch(requests: ReadonlyArray<readonly Uint8Array[]>, bytes: number): Promise<AppendResult[]> {
    const state = this.state;
    const buf = Buffer.allocUnsafe(bytes);
    const timestampMs = state.options.clock.nowMs();
    const results: AppendResult[] = [];
    let cursor = 0;
    let pendingFrom = 0;
    let active = state.active ?? (await this.createSegment(state.lastIndex + 1));
    let indexed: IndexedFrames = { starts: [], lengths: [], checkWords: [] };
    // Entries sealed into a finished segment by this batch are durable whatever fails after.
    let durableThrough = 0;
    let currentFirst = 0;
    try {
      for (const payloads of requests) {
        const firstIndex = active.lastIndex + 1;
        currentFirst = firstIndex;
        for (const payload of payloads) {
          const frameBytes = ENTRY_HEADER_BYTES + payload.byteLength;
          const segmentBytes = active.byteLength + (cursor - pendingFrom);
          if (active.indexCount > 0 && segmentBytes + frameBytes + TRAILER_BYTES > state.settings.segmentBytesMax) {
            await this.writeAndSync(active, buf.subarray(pendingFrom, cursor), indexed);
            pendingFrom = cursor;
            indexed = { starts: [], lengths: [], checkWords: [] };
            await this.sealActive();
            durableThrough = active.lastIndex;
            active = await this.createSegment(active.lastIndex + 1);
          }
          const index = active.lastIndex + 1;
          const checksum = encodeEntryInto(buf, cursor, { index, timestampMs, flags: 0, payload });
          indexed.starts.push(active.byteLength + (cursor - pendingFrom));
          indexed.lengths.push(frameBytes);
          indexed.checkWords.push(checkWordOf(checksum));
          active.aggregate.addStored(buf, cursor + 8);
          active.lastIndex = index;
          active.indexCount += 1;
          cursor += frameBytes;
        }
        results.push({ firstIndex: Math.min(firstIndex, active.lastIndex), lastIndex: active.lastIndex });
        currentFirst = 0;
      }
      await this.writeAndSync(active, buf.subarray(pendingFrom, cursor), indexed);
    } catch (error) {
      if (durableThrough > 0) throw new BatchPartlyDurableError(durableThrough, results, currentFirst, { cause: error });
      throw error;
    }
    return results;
  }

  /**
   * Writes bytes at the end of the open segment and syncs them. Only then do they count: the
   * durable state moves up to the in-memory one, and their frames join the read index (a read
   * never sees a frame a crash could still take away, nor a slot whose bytes are not there).
   *
   * Never more than groupCommitBytesMax bytes between two fdatasyncs (a frame larger than that
   * alone): recovery relies on it to tell the write a crash tore from corruption (tornWindowBytesOf).
   * A larger batch is written in several write + fdatasync steps, split between frames.
   */
  async writeAndSync(active: ActiveSegment, bytes: Buffer, indexed?: IndexedFrames): Promise<void> {
    let from = 0;
    for (const to of this.syncStepEnds(active, bytes.byteLength, indexed)) {
      let written = from;
      while (written < to) {
        const { bytesWritten } = await active.handle.write(bytes, written, to - written, active.byteLength + written);
        if (bytesWritten <= 0) throw new Error(`write of segment ${active.segmentId} made no progress`);
        written += bytesWritten;
      }
      await active.handle.datasync();
      from = to;
    }
    if (bytes.byteLength === 0) await active.handle.datasync();
    active.byteLength += bytes.byteLength;
    markDurable(active);
    if (indexed) this.readIndexes.addDurableFrames(active.segmentId, indexed);
  }

  /**
   * Where each write + fdatasync step of writeAndSync ends (offsets into its bytes): frames in
   * order, as many as fit groupCommitBytesMax, at least one per step.
   */
  private syncStepEnds(active: ActiveSegment, byteLength: number, indexed: IndexedFrames | undefined): number[] {
    const stepBytesMax = this.state.options.groupCommitBytesMax;
    if (byteLength === 0) return [];
    if (byteLength <= stepBytesMax) return [byteLength];
    // Only frames are ever written in more than one step; anything else is a trailer (64 bytes).
    if (indexed === undefined) throw new Error(`bug: ${byteLength} bytes that are not frames exceed one write step`);
    const ends: number[] = [];
    let stepStart = 0;
    let frameEnd = 0;
    indexed.starts.forEach((start, i) => {
      const frameStart = start - active.byteLength;
      frameEnd = frameStart + (indexed.lengths[i] as number);
      if (frameStart > stepStart && frameEnd - stepStart > stepBytesMax) {
        ends.push(frameStart);
        stepStart = frameStart;
      }
    });
    if (frameEnd !== byteLength) throw new Error('bug: the frames indexed do not cover the bytes written');
    ends.push(byteLength);
    return ends;
  }

  /** Creates the next segment (or the one the log's writer named) and makes it the open one. */
  async createSegment(firstIndex: number, start?: SegmentStart): Promise<ActiveSegment> {
    const state = this.state;
    const last = state.segments[state.segments.length - 1];
    const segmentId = start?.segmentId ?? (last?.segmentId ?? 0) + 1;
    const createdMs = start?.createdMs ?? state.options.clock.nowMs();
    const header = encodeSegmentHeader({ segmentId, firstIndex, createdMs, logId: logIdOf(state.settings.logName), logName: state.settings.logName, formatVersion: FORMAT_VERSION });
    const path = state.layout.segmentPath(segmentId);
    await writeFileAtomic(state.layout.disk, path, state.layout.segmentsDir, header);
    const handle = await state.layout.disk.open(path, 'r+');
    const active = activeSegment({ segmentId, firstIndex, createdMs, handle, byteLength: SEGMENT_HEADER_BYTES, lastIndex: firstIndex - 1, indexCount: 0, aggregate: newAggregate(FORMAT_VERSION) });
    state.active = active;
    state.segments.push(state.activeRecord());
    await this.readIndexes.addOpenSegment(segmentId, handle);
    return active;
  }

  /** Writes the open segment's trailer, records it sealed, and schedules its backups. */
  async sealActive(): Promise<void> {
    const state = this.state;
    const active = state.active;
    if (!active) return;
    const trailer = encodeTrailer({
      segmentId: active.segmentId,
      firstIndex: active.firstIndex,
      lastIndex: active.lastIndex,
      indexCount: active.indexCount,
      aggregateChecksum: active.aggregate.value(),
      entriesByteLength: active.byteLength - SEGMENT_HEADER_BYTES,
    });
    await this.writeAndSync(active, trailer);
    // A sealed record keeps the aggregate's value only (the running state is an open segment's).
    const { aggregateState: _running, ...sealed } = state.activeRecord();
    state.segments[state.segments.length - 1] = { ...sealed, state: 'sealed' };
    state.active = undefined;
    // The read index (if cached) keeps reading through the segment's handle; else close it.
    if (!this.readIndexes.readsThrough(active.segmentId, active.handle)) await active.handle.close();
    await state.writeCatalog();
    state.logger.debug({ log: state.settings.logName, segment: active.segmentId, aggregate: checksumHex(active.aggregate.value()) }, 'sealed segment');
    state.scheduleBackup(active.segmentId);
  }
}
