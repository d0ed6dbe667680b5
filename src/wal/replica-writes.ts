// Replica mode: the log's writer chose segment boundaries, indices and timestamps and encoded
// the frames; this store verifies every frame and writes it verbatim, so sealed segments are
// byte-identical on every replica. Also: sealing at the point the writer chose (cutting what was
// never acknowledged) and putting in place a whole sealed segment fetched from a replica.
//
// Fault model: a request from a peer may be malformed, stale, retried or out of order; it is
// refused with ReplicaRejectedError (the store is fine) before anything is written. Frames are
// verified before any segment is created. A cut before sealing keeps the cut bytes in quarantine
// and makes the lowered state durable in the catalog before the file shrinks. A fetched segment
// is synced, verified and renamed in within the write queue, so what was checked is what a crash
// leaves and no write runs between the check and the rename.
import { newAggregate } from './aggregate.js';
import { type Checksum64, checksumHex } from './checksum.js';
import type { SegmentRecord } from './catalog.js';
import { analyzeSegmentHandle, segmentRecordOf } from './analyze.js';
import { ReplicaRejectedError, StoreClosedError, WalError } from './errors.js';
import { FLAG_HOLE, SEGMENT_HEADER_BYTES, type Trailer, decodeFrameAt, frameCheckWordOf } from './format.js';
import type { IndexedFrames, ReadIndexCache } from './read-index.js';
import type { AppendResult, SegmentStart, SegmentWriter } from './segment-writer.js';
import { cutToQuarantine, putSegmentCopyInPlace, verifySegmentCopy } from './segment-files.js';
import type { SegmentExpectation } from './sources.js';
import { type ActiveSegment, type StoreState, markDurable } from './store-state.js';
import type { WriteQueue } from './write-queue.js';

export class ReplicaWrites {
  constructor(
    private readonly state: StoreState,
    private readonly queue: WriteQueue,
    private readonly writer: SegmentWriter,
    private readonly readIndexes: ReadIndexCache,
    /** Cuts a sealed copy down to a lower point, verified (SealedSegmentRepair.cutSealedCopy). */
    private readonly cutSealed: (record: SegmentRecord, lastIndex: number, expectedAggregate: Checksum64) => Promise<SegmentRecord>,
  ) {}

  /**
   * Appends frames encoded by the writer to segment `start.segmentId`, creating it on its first
   * frame. Frames at indices already held are skipped when they are the very frames held (a
   * retried request) and refused when they differ (a forged or conflicting write is never
   * acknowledged as held); the rest must follow on.
   */
  async appendFrames(start: SegmentStart, frames: readonly Buffer[]): Promise<AppendResult> {
    const [outcome] = await this.appendFrameGroups([{ start, frames }]);
    if (outcome instanceof Error) throw outcome;
    return outcome as AppendResult;
  }

  /**
   * Group commit of replicated frames: the requests, in order, each checked as appendFrames
   * checks it, and everything they add written with one write and one fdatasync (several when
   * the bytes exceed groupCommitBytesMax, as writeAndSync splits them). Each request's outcome is
   * its range or the refusal (a WalError) that refused it alone, leaving nothing of it written;
   * the others go on. An I/O failure rejects the whole group (none of it is acknowledged; what
   * reached the disk is given up by the write queue's rollback or found held by a retry).
   */
  appendFrameGroups(requests: ReadonlyArray<{ readonly start: SegmentStart; readonly frames: readonly Buffer[] }>): Promise<Array<AppendResult | WalError>> {
    return this.queue.exclusive(async () => {
      const state = this.state;
      const outcomes: Array<AppendResult | WalError> = [];
      // Accepted and not yet written: frames of `pendingActive`, from its durable end on.
      let pendingActive: ActiveSegment | undefined;
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let indexed: IndexedFrames = { starts: [], lengths: [], checkWords: [] };
      const flush = async (): Promise<void> => {
        if (!pendingActive || pending.length === 0) return;
        const active = pendingActive;
        const bytes = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, pendingBytes);
        const frames = indexed;
        pending = [];
        pendingBytes = 0;
        indexed = { starts: [], lengths: [], checkWords: [] };
        pendingActive = undefined;
        try {
          await this.writer.writeAndSync(active, bytes, frames);
        } catch (error) {
          // Never taken for one request's refusal: the requests before it count on these bytes.
          if (error instanceof WalError) throw new Error(`group write of segment ${active.segmentId} failed`, { cause: error });
          throw error;
        }
      };
      for (const { start, frames } of requests) {
        try {
          // Every frame is verified before anything is created: a bad request leaves no segment behind.
          const decodedFrames = frames.map((frame) => decodeFrameAt(frame, 0, state.settings.entryBytesMax));
          decodedFrames.forEach((decoded, i) => {
            if (decoded.kind !== 'entry' || !decoded.bodyOk || decoded.frameByteLength !== frames[i]?.byteLength || (decoded.header.flags & FLAG_HOLE) !== 0) {
              throw new ReplicaRejectedError('bad-frame', 'a frame failed verification on arrival', state.lastIndex);
            }
          });
          let active = state.active;
          if (!active || active.segmentId !== start.segmentId) {
            await flush();
            const head = decodedFrames[0];
            active = await this.startSegment(start, head?.kind === 'entry' ? head.header.index : undefined);
          }
          const accepted: Buffer[] = [];
          let next = active.lastIndex + 1;
          for (const [i, frame] of frames.entries()) {
            const decoded = decodedFrames[i];
            if (decoded?.kind !== 'entry') throw new ReplicaRejectedError('bad-frame', 'a frame failed verification on arrival', active.lastIndex);
            if (decoded.header.index < next) {
              // A held frame is compared with the file: what this group holds back is written first.
              await flush();
              await this.checkHeld(active, decoded.header.index, frame);
              continue;
            }
            if (decoded.header.index !== next) throw new ReplicaRejectedError('index-gap', `frame ${decoded.header.index} arrived but ${next} is next`, active.lastIndex);
            accepted.push(frame);
            next += 1;
          }
          const firstIndex = active.lastIndex + 1;
          if (accepted.length === 0) {
            outcomes.push({ firstIndex, lastIndex: active.lastIndex });
            continue;
          }
          pendingActive = active;
          let offset = active.byteLength + pendingBytes;
          for (const frame of accepted) {
            indexed.starts.push(offset);
            indexed.lengths.push(frame.byteLength);
            indexed.checkWords.push(frameCheckWordOf(frame));
            offset += frame.byteLength;
            active.aggregate.addStored(frame, 8);
            active.lastIndex += 1;
            active.indexCount += 1;
            pending.push(frame);
            pendingBytes += frame.byteLength;
          }
          outcomes.push({ firstIndex, lastIndex: active.lastIndex });
        } catch (error) {
          // A refusal refuses this request only; an I/O error fails the group (and the store's tail).
          if (!(error instanceof WalError) || error instanceof StoreClosedError) throw error;
          outcomes.push(error);
        }
      }
      await flush();
      return outcomes;
    });
  }

  /** Refuses a frame at an index the open segment holds unless it is byte for byte the one held. */
  private async checkHeld(active: ActiveSegment, index: number, frame: Buffer): Promise<void> {
    const conflict = (why: string): ReplicaRejectedError => new ReplicaRejectedError('conflict', `frame ${index} differs from the one held here (${why})`, active.lastIndex);
    const slot = index - active.firstIndex;
    if (slot < 0) throw conflict(`segment ${active.segmentId} starts at ${active.firstIndex}`);
    const readIndex = await this.readIndexes.forSegment(this.state.activeRecord());
    const start = readIndex.starts[slot];
    const length = readIndex.lengths[slot];
    if (start === undefined || length === undefined || start < 0) throw conflict('the held frame cannot be located');
    if (length !== frame.byteLength || readIndex.checkWords[slot] !== frameCheckWordOf(frame)) throw conflict('another checksum or length');
    const held = Buffer.alloc(length);
    const { bytesRead } = await active.handle.read(held, 0, length, start);
    if (bytesRead !== length || !held.equals(frame)) throw conflict('other bytes');
  }

  /** The aggregate checksum of the open segment's entries up to lastIndex, from the file. */
  private async activeAggregateThrough(active: ActiveSegment, lastIndex: number): Promise<Checksum64> {
    if (lastIndex === active.lastIndex) return active.aggregate.value();
    const readIndex = await this.readIndexes.forSegment(this.state.activeRecord());
    const sum = Buffer.alloc(8);
    const aggregate = newAggregate(active.aggregate.formatVersion);
    for (let slot = 0; slot <= lastIndex - active.firstIndex; slot += 1) {
      const start = readIndex.starts[slot];
      if (start === undefined || start < 0) throw new WalError(`cannot locate entry ${active.firstIndex + slot} to check the aggregate`);
      const { bytesRead } = await active.handle.read(sum, 0, 8, start + 8);
      if (bytesRead !== 8) throw new WalError(`cannot read entry ${active.firstIndex + slot} to check the aggregate`);
      aggregate.addStored(sum, 0);
    }
    return aggregate.value();
  }

  /** Opens segment `start` for the writer's frames, if it fits after what this replica holds. */
  private async startSegment(start: SegmentStart, firstFrameIndex: number | undefined): Promise<ActiveSegment> {
    const state = this.state;
    const active = state.active;
    if (active) throw new ReplicaRejectedError('segment-mismatch', `segment ${active.segmentId} is still open here, cannot start ${start.segmentId}`, active.lastIndex);
    const last = state.segments[state.segments.length - 1];
    if (last && last.segmentId >= start.segmentId) {
      throw new ReplicaRejectedError('segment-mismatch', `segment ${start.segmentId} is already sealed here`, state.lastIndex);
    }
    const followsOn = start.firstIndex === state.lastIndex + 1;
    if (!followsOn && !(state.options.allowSegmentGaps && start.firstIndex > state.lastIndex)) {
      throw new ReplicaRejectedError('index-gap', `segment ${start.segmentId} starts at ${start.firstIndex} but this replica ends at ${state.lastIndex}`, state.lastIndex);
    }
    if (firstFrameIndex !== undefined && firstFrameIndex !== start.firstIndex) {
      throw new ReplicaRejectedError('index-gap', `segment ${start.segmentId} starts at ${start.firstIndex} but its first frame is ${firstFrameIndex}`, state.lastIndex);
    }
    const gapped = (last?.segmentId ?? 0) + 1 !== start.segmentId;
    const created = await this.writer.createSegment(start.firstIndex, start);
    // Open finds segments created after the catalog by probing consecutive ids: one that
    // skips ids must be in the catalog before it holds an entry.
    if (gapped) await state.writeCatalog();
    return created;
  }

  /**
   * Seals segment segmentId at lastIndex: entries after it (written but never acknowledged by a
   * quorum) are cut off and kept in quarantine. Idempotent for a segment already sealed there.
   * With the recorded aggregate given, a copy sealed past lastIndex is cut to it (verified), and
   * the open segment is sealed only when its entries up to lastIndex add up to it.
   * The open segment is never cut below keepThrough (the highest index this member was told is
   * acknowledged): those entries are on an ack quorum, and no correct writer seals below them.
   */
  sealSegment(segmentId: number, lastIndex: number, expectedAggregate?: Checksum64, keepThrough = 0): Promise<SegmentRecord> {
    return this.queue.exclusive(async () => {
      const state = this.state;
      const active = state.active;
      if (!active || active.segmentId !== segmentId) {
        const record = state.segments.find((r) => r.segmentId === segmentId);
        if (record?.state === 'sealed' && record.lastIndex === lastIndex) return record;
        if (!record) throw new ReplicaRejectedError('unknown-segment', `segment ${segmentId} is not held here`, state.lastIndex);
        if (record.state === 'sealed' && record.lastIndex > lastIndex && lastIndex >= record.firstIndex && expectedAggregate !== undefined) {
          return this.cutSealed(record, lastIndex, expectedAggregate);
        }
        throw new ReplicaRejectedError('segment-mismatch', `segment ${segmentId} is sealed here at ${record.lastIndex}, not ${lastIndex}`, record.lastIndex);
      }
      if (active.lastIndex < lastIndex) {
        throw new ReplicaRejectedError('missing-entries', `segment ${segmentId} holds up to ${active.lastIndex} here, cannot seal at ${lastIndex}`, active.lastIndex);
      }
      const acknowledged = Math.min(keepThrough, active.lastIndex);
      if (lastIndex < acknowledged) {
        throw new ReplicaRejectedError('below-committed', `segment ${segmentId} holds acknowledged entries up to ${acknowledged} here, cannot seal at ${lastIndex}`, active.lastIndex);
      }
      if (expectedAggregate !== undefined && lastIndex >= active.firstIndex) {
        const aggregate = await this.activeAggregateThrough(active, lastIndex);
        if (aggregate !== expectedAggregate) {
          throw new ReplicaRejectedError('aggregate-mismatch', `segment ${segmentId} up to ${lastIndex} adds up to ${checksumHex(aggregate)} here, not ${checksumHex(expectedAggregate)}`, active.lastIndex);
        }
      }
      if (active.lastIndex > lastIndex) await this.truncateActive(lastIndex);
      await this.writer.sealActive();
      return state.segments[state.segments.length - 1] as SegmentRecord;
    });
  }

  /** Cuts the open segment after lastIndex, keeping the cut bytes in quarantine. */
  private async truncateActive(lastIndex: number): Promise<void> {
    const state = this.state;
    const active = state.active as ActiveSegment;
    const readIndex = await this.readIndexes.forSegment(state.activeRecord());
    const slot = lastIndex - active.firstIndex;
    const cut = slot < 0 ? SEGMENT_HEADER_BYTES : (readIndex.starts[slot] ?? -1) + (readIndex.lengths[slot] ?? 0);
    if (cut < SEGMENT_HEADER_BYTES) throw new WalError(`cannot locate the end of entry ${lastIndex} to truncate after it`);
    // The lowered state is made durable in the catalog before the file shrinks: a crash between
    // the two then finds a file longer than its checkpoint (the cut frames follow on and are
    // taken back, as before the seal began), never one shorter than what was synced.
    const lowerState = async (): Promise<void> => {
      const analysis = await analyzeSegmentHandle(active.handle, active.segmentId, cut, { entryBytesMax: state.settings.entryBytesMax });
      active.byteLength = cut;
      active.lastIndex = analysis.lastIndex;
      active.indexCount = analysis.indexCount;
      active.aggregate = analysis.aggregateState;
      markDurable(active);
      readIndex.starts.length = Math.max(0, slot + 1);
      readIndex.lengths.length = Math.max(0, slot + 1);
      readIndex.checkWords.length = Math.max(0, slot + 1);
      await state.writeCatalog();
    };
    const fileByteLength = active.byteLength;
    const request = { segmentId: active.segmentId, offsetBytes: cut, fileByteLength, label: `unacknowledged-after-${lastIndex}`, nowMs: state.options.clock.nowMs(), beforeTruncate: lowerState };
    const tail = await cutToQuarantine(state.layout, active.handle, request);
    state.logger.warn({ log: state.settings.logName, segment: active.segmentId, entryIndex: lastIndex + 1, byteLength: tail.byteLength }, 'cut unacknowledged entries before sealing');
  }

  /**
   * Puts a whole sealed segment file (fetched from a replica) in place. The file is verified
   * first (intact, sealed, named as this segment, and matching `expected` when given); the
   * segment must not overlap one held already, nor come after the open one.
   */
  async installSealedSegment(segmentId: number, sourcePath: string, expected?: SegmentExpectation): Promise<SegmentRecord> {
    const state = this.state;
    if (state.closed) throw new StoreClosedError();
    const copy = await verifySegmentCopy(state.layout, segmentId, sourcePath, { how: 'move', entryBytesMax: state.settings.entryBytesMax, expected });
    if (!copy) throw new ReplicaRejectedError('bad-frame', `the copy of segment ${segmentId} does not verify`, state.lastIndex);
    // Checked and put in place in queue order, so no write or seal runs between the check and
    // the rename, and the catalog is written from durable state only.
    return this.queue.exclusive(async () => {
      this.checkFits(segmentId, copy.trailer);
      await putSegmentCopyInPlace(state.layout, copy);
      const record = segmentRecordOf(copy.analysis, 0);
      // Held (listed, served) only once a durable catalog lists it: open finds a segment past a
      // gap only through the catalog, so one served before that could vanish in a crash.
      await state.writeCatalog([record]);
      state.putSealedRecord(record);
      state.scheduleBackup(segmentId);
      return record;
    });
  }

  /** Refuses a fetched sealed segment that overlaps, or is out of order with, what is held. */
  private checkFits(segmentId: number, trailer: Trailer): void {
    const state = this.state;
    if (state.segmentRecord(segmentId)) throw new ReplicaRejectedError('segment-mismatch', `segment ${segmentId} is held here already`, state.lastIndex);
    if (state.active && state.active.segmentId < segmentId) throw new ReplicaRejectedError('segment-mismatch', `segment ${state.active.segmentId} is still open here`, state.lastIndex);
    const overlaps = state.segments.some((r) => r.firstIndex <= trailer.lastIndex && trailer.firstIndex <= r.lastIndex && r.lastIndex >= r.firstIndex);
    const inOrder = state.segments.every((r) => (r.segmentId < segmentId ? r.lastIndex < trailer.firstIndex : r.firstIndex > trailer.lastIndex));
    if (overlaps || !inOrder || (!state.options.allowSegmentGaps && !(trailer.firstIndex === state.lastIndex + 1))) {
      throw new ReplicaRejectedError('index-gap', `segment ${segmentId} (${trailer.firstIndex}..${trailer.lastIndex}) does not fit the segments held here`, state.lastIndex);
    }
  }
}
