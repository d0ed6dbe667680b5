// Online repair of the open segment (replica mode): entries that were written and synced here
// and later damaged on the medium (a flipped bit, a zeroed or garbled block, a file cut short)
// are rewritten in place from verified copies, while the segment stays open and appends go on.
// Waiting for the seal would leave those acknowledged entries on fewer copies for as long as the
// segment stays open (issue 11).
//
// Why in place: every frame of a segment comes from the one writer that created it, so an intact
// copy of entry i on any member is byte for byte the frame this store wrote at i, and the damaged
// stretch between two intact frames is exactly as long as the frames it lost. A replacement is
// accepted only if (1) every frame verifies (crc32, SHA3, index), (2) the frames of each damaged
// stretch fill it exactly, and (3) with them, the segment's frames chain to the aggregate this
// store computed when it wrote them (its in-memory running aggregate), the open segment's
// counterpart of a sealed segment's recorded aggregate. The header, when damaged, is encoded
// again from what the store knows (segment id, first index, the writer's creation time, log).
//
// Fault model: the process may die during the rewrite. The bytes replaced are copied into
// quarantine first; a crash mid-rewrite leaves a stretch that is partly old damage and partly
// verified frames, which is still damage before the checkpoint (found at open or by the next
// read, and repaired again). Appends are held only while the file is scanned and while the
// stretches are rewritten (the write queue), never while copies are fetched from replicas.
import type { SegmentRepair } from '../recovery/index.js';
import { newAggregate } from './aggregate.js';
import type { Checksum64 } from './checksum.js';
import { analyzeSegmentHandle } from './analyze.js';
import { WalError } from './errors.js';
import { TEMP_SUFFIX, quarantineBytes, readRange, writeAll } from './files.js';
import type { DiskFile } from '../io/index.js';
import { SEGMENT_HEADER_BYTES, decodeFrameAt, encodeSegmentHeader, frameCheckWordOf, frameChecksumOf, isHoleFrame, logIdOf, segmentFileName } from './format.js';
import type { ReadIndexCache } from './read-index.js';
import type { GoodCopySource } from './sources.js';
import type { ActiveSegment, StoreState } from './store-state.js';
import type { WriteQueue } from './write-queue.js';

export interface OpenRepairOptions {
  /** Where verified copies of the lost entries come from (the other members, in a cluster). */
  readonly sources: readonly GoodCopySource[];
}

/** A run of consecutive indices this copy lost, and the byte stretch that held them. */
interface DamagedRun {
  readonly first: number;
  readonly last: number;
  readonly offsetBytes: number;
  readonly byteLength: number;
  /** The damaged bytes as scanned (they must still be there when the run is rewritten). */
  readonly bytes: Buffer;
}

interface OpenDamage {
  readonly active: ActiveSegment;
  readonly endBytes: number;
  readonly lastIndex: number;
  readonly aggregate: Checksum64;
  readonly headerDamaged: boolean;
  /** The segment's name no longer leads to the file the store writes (deleted): put it back. */
  readonly fileMissing: boolean;
  readonly runs: readonly DamagedRun[];
  /** Checksums of the intact frames, by index. */
  readonly intact: ReadonlyMap<number, Checksum64>;
}

/** Bytes copied per read when a deleted open segment is written back. */
const COPY_CHUNK_BYTES = 1024 * 1024;

/** Runs of damaged bytes at most this long are rewritten (a larger one waits for the seal's repair). */
const RUN_BYTES_MAX = 64 * 1024 * 1024;

export class OpenSegmentRepair {
  constructor(
    private readonly state: StoreState,
    private readonly queue: WriteQueue,
    private readonly readIndexes: ReadIndexCache,
  ) {}

  async repair(segmentId: number, options: OpenRepairOptions): Promise<SegmentRepair> {
    const state = this.state;
    const clock = state.options.clock;
    const started = clock.monotonicMs();
    const base = { segment: segmentId, lost: [], truncated: [] } as const;
    const damage = await this.queue.exclusive(() => this.scan(segmentId));
    if (damage.runs.length === 0 && !damage.headerDamaged && !damage.fileMissing) {
      return { ...base, decision: 'keep', outcome: 'done', repaired: [], bytesWritten: 0, detail: 'open segment verified: nothing to repair' };
    }
    const repaired = damage.runs.map((r) => ({ first: r.first, last: r.last }));
    const failed = (detail: string): SegmentRepair => {
      state.metrics.recordAttempt('failure', clock.monotonicMs() - started);
      state.logger.warn({ log: state.settings.logName, segment: segmentId }, `failed to repair the open segment: ${detail}`);
      return { ...base, decision: 'escalate', outcome: 'failed', repaired: [], bytesWritten: 0, detail };
    };
    const replacements: Buffer[] = [];
    let sourceName = '';
    for (const run of damage.runs) {
      const frames = await this.fetchRun(segmentId, run, options.sources);
      if (!frames) return failed(`no source holds verified copies of entries ${run.first}..${run.last} that fill the damaged ${run.byteLength} bytes`);
      replacements.push(frames.bytes);
      sourceName = frames.source;
    }
    // With the replacements, the frames must chain to the aggregate this store computed as it wrote them.
    if (chainOf(damage, replacements) !== damage.aggregate) return failed('the entries with the fetched copies do not add up to the aggregate this store wrote');
    const bytesWritten = await this.queue.exclusive(() => this.rewrite(damage, replacements));
    state.metrics.recordAttempt('success', clock.monotonicMs() - started);
    const entries = damage.runs.reduce((n, r) => n + r.last - r.first + 1, 0);
    state.metrics.entries_repaired += entries;
    state.metrics.bytes_repaired += bytesWritten;
    state.logger.warn({ log: state.settings.logName, segment: segmentId, entries, bytesWritten }, 'repaired the open segment in place from verified copies');
    const header = `${damage.fileMissing ? 'the deleted file written back under its name; ' : ''}${damage.headerDamaged ? 'the header rewritten; ' : ''}`;
    return { ...base, decision: 'reconstruct', outcome: 'done', repaired, ...(sourceName ? { source: sourceName } : {}), bytesWritten, detail: `${header}${entries} entries of the open segment rewritten in place` };
  }

  /** The damage in the synced part of the open segment (runs inside the queue: no write lands meanwhile). */
  private async scan(segmentId: number): Promise<OpenDamage> {
    const state = this.state;
    const active = state.active;
    if (!active || active.segmentId !== segmentId) throw new WalError(`segment ${segmentId} is not the open segment here`);
    const endBytes = active.byteLength;
    const { lastIndex, aggregate, indexCount } = active.durable;
    const fileBytes = Math.min(endBytes, await active.handle.byteLength());
    const spans = new Map<number, { offsetBytes: number; byteLength: number; checksum: Checksum64 }>();
    let order = active.firstIndex - 1;
    let holes = false;
    const analysis = await analyzeSegmentHandle(active.handle, segmentId, fileBytes, {
      entryBytesMax: state.settings.entryBytesMax,
      firstIndexHint: active.firstIndex,
      onIntactFrame: (index, frame, offsetBytes) => {
        if (isHoleFrame(frame)) holes = true;
        // Only frames in place and in order count as intact (a frame out of place is damage).
        if (index > order && index <= lastIndex) {
          spans.set(index, { offsetBytes, byteLength: frame.byteLength, checksum: frameChecksumOf(frame) });
          order = index;
        }
      },
    });
    if (holes || indexCount !== lastIndex - active.firstIndex + 1) throw new WalError(`segment ${segmentId} holds hole records; only a sealed segment's repair handles them`);
    const runs: DamagedRun[] = [];
    let index = active.firstIndex;
    while (index <= lastIndex) {
      if (spans.has(index)) {
        index += 1;
        continue;
      }
      const first = index;
      while (index <= lastIndex && !spans.has(index)) index += 1;
      const last = index - 1;
      const before = spans.get(first - 1);
      const after = spans.get(last + 1);
      const offsetBytes = before ? before.offsetBytes + before.byteLength : SEGMENT_HEADER_BYTES;
      const byteLength = (after ? after.offsetBytes : endBytes) - offsetBytes;
      if (byteLength <= 0 || byteLength > RUN_BYTES_MAX) throw new WalError(`segment ${segmentId}: entries ${first}..${last} lost, but their stretch of ${byteLength} bytes cannot be rewritten in place`);
      const bytes = await readRange(active.handle, offsetBytes, byteLength);
      runs.push({ first, last, offsetBytes, byteLength, bytes });
    }
    const intact = new Map([...spans].map(([i, s]) => [i, s.checksum]));
    const fileMissing = (await state.layout.disk.stat(state.layout.segmentPath(segmentId))) === undefined;
    return { active, endBytes, lastIndex, aggregate: aggregate.value(), headerDamaged: analysis.header === undefined, fileMissing, runs, intact };
  }

  /** Verified frames first..last from the first source whose frames fill the run exactly. */
  private async fetchRun(segmentId: number, run: DamagedRun, sources: readonly GoodCopySource[]): Promise<{ bytes: Buffer; source: string } | undefined> {
    const got = new Map<number, Buffer>();
    let source = '';
    for (const s of sources) {
      const missing: number[] = [];
      for (let i = run.first; i <= run.last; i += 1) if (!got.has(i)) missing.push(i);
      if (missing.length === 0) break;
      const frames = await s.fetchFrames(segmentId, missing[0] as number, missing[missing.length - 1] as number).catch(() => new Map<number, Buffer>());
      for (const [index, frame] of frames) {
        const decoded = decodeFrameAt(frame, 0, this.state.settings.entryBytesMax);
        if (index < run.first || index > run.last || got.has(index)) continue;
        if (decoded.kind !== 'entry' || !decoded.bodyOk || decoded.header.index !== index || decoded.frameByteLength !== frame.byteLength || isHoleFrame(frame)) continue;
        got.set(index, frame);
        source = s.name;
      }
    }
    const ordered: Buffer[] = [];
    for (let i = run.first; i <= run.last; i += 1) {
      const frame = got.get(i);
      if (!frame) return undefined;
      ordered.push(frame);
    }
    const bytes = Buffer.concat(ordered);
    return bytes.byteLength === run.byteLength ? { bytes, source } : undefined;
  }

  /** Puts the verified frames in place (the damaged bytes kept in quarantine first), synced. */
  private async rewrite(damage: OpenDamage, replacements: readonly Buffer[]): Promise<number> {
    const state = this.state;
    const active = state.active;
    if (active !== damage.active) throw new WalError(`segment ${damage.active.segmentId} was sealed while its repair fetched copies; the sealed segment's repair takes over`);
    const name = segmentFileName(active.segmentId);
    let bytesWritten = 0;
    const slots: Array<{ index: number; start: number; length: number; checkWord: number }> = [];
    for (const [i, run] of damage.runs.entries()) {
      const replacement = replacements[i] as Buffer;
      // The stretch must still hold the damage that was scanned (nothing else rewrote it since).
      const now = await readRange(active.handle, run.offsetBytes, run.byteLength);
      if (!now.equals(run.bytes.subarray(0, now.byteLength))) throw new WalError(`segment ${active.segmentId}: the damaged bytes at ${run.offsetBytes} changed during the repair; it is tried again`);
      await quarantineBytes(state.layout, `${name}.${state.options.clock.nowMs()}.damaged-at-${run.offsetBytes}`, run.bytes);
      await writeAll(active.handle, replacement, run.offsetBytes);
      bytesWritten += replacement.byteLength;
      let offset = run.offsetBytes;
      for (let index = run.first; index <= run.last; index += 1) {
        const decoded = decodeFrameAt(replacement, offset - run.offsetBytes, state.settings.entryBytesMax);
        const length = decoded.kind === 'entry' ? decoded.frameByteLength : 0;
        slots.push({ index, start: offset, length, checkWord: frameCheckWordOf(replacement.subarray(offset - run.offsetBytes, offset - run.offsetBytes + length)) });
        offset += length;
      }
    }
    if (damage.headerDamaged) {
      const header = encodeSegmentHeader({ segmentId: active.segmentId, firstIndex: active.firstIndex, createdMs: active.createdMs, logId: logIdOf(state.settings.logName), logName: state.settings.logName, formatVersion: active.aggregate.formatVersion });
      await quarantineBytes(state.layout, `${name}.${state.options.clock.nowMs()}.damaged-header`, await readRange(active.handle, 0, SEGMENT_HEADER_BYTES));
      await writeAll(active.handle, header, 0);
      bytesWritten += header.byteLength;
    }
    await active.handle.datasync();
    this.readIndexes.repairSlots(active.segmentId, active.firstIndex, slots);
    if (damage.fileMissing) bytesWritten += await this.putBackUnderItsName(active);
    return bytesWritten;
  }

  /**
   * The segment file was deleted while the store holds it open: its bytes (verified above) are
   * still reachable through the store's handle. They are copied to a new file under the
   * segment's name (temp, fsync, rename, fsync the directory), and the store writes and reads
   * through that file from now on; the old handle is closed once no read uses it.
   */
  private async putBackUnderItsName(active: ActiveSegment): Promise<number> {
    const { disk } = this.state.layout;
    const path = this.state.layout.segmentPath(active.segmentId);
    const temp = `${path}${TEMP_SUFFIX}`;
    const out = await disk.open(temp, 'w');
    try {
      for (let offset = 0; offset < active.byteLength; offset += COPY_CHUNK_BYTES) {
        const chunk = await readRange(active.handle, offset, Math.min(COPY_CHUNK_BYTES, active.byteLength - offset));
        await writeAll(out, chunk, offset);
      }
      await out.sync();
    } finally {
      await out.close();
    }
    await disk.rename(temp, path);
    await disk.fsyncDir(this.state.layout.segmentsDir);
    const handle = await disk.open(path, 'r+');
    const old = active.handle;
    (active as { handle: DiskFile }).handle = handle;
    if (!(await this.readIndexes.swapOpenHandle(active.segmentId, old, handle))) await old.close().catch(() => undefined);
    this.state.logger.warn({ log: this.state.settings.logName, segment: active.segmentId }, 'the open segment file was deleted; wrote it back under its name from the bytes the store still held');
    return active.byteLength;
  }
}

/** The aggregate of the open segment's synced frames, with the damaged runs replaced. */
function chainOf(damage: OpenDamage, replacements: readonly Buffer[]): Checksum64 | undefined {
  const fetched = new Map<number, Checksum64>();
  damage.runs.forEach((run, i) => {
    const bytes = replacements[i] as Buffer;
    let offset = 0;
    for (let index = run.first; index <= run.last; index += 1) {
      const decoded = decodeFrameAt(bytes, offset, Number.MAX_SAFE_INTEGER);
      if (decoded.kind !== 'entry') return;
      fetched.set(index, decoded.header.checksum);
      offset += decoded.frameByteLength;
    }
  });
  const aggregate = newAggregate(damage.active.aggregate.formatVersion);
  for (let index = damage.active.firstIndex; index <= damage.lastIndex; index += 1) {
    const checksum = damage.intact.get(index) ?? fetched.get(index);
    if (checksum === undefined) return undefined;
    aggregate.add(checksum);
  }
  return aggregate.value();
}
