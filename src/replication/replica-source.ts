// Replicas as a source of good copies for the repair engine (src/wal/repair.ts).
//
// Frames are gathered entry by entry from every other member of the segment's ensemble, so a
// segment damaged in different places on every replica can still be rebuilt. Nothing a replica
// sends is trusted: each frame is decoded and checked (header crc32, SHA3 checksum, index) here,
// again by the repair engine, and a rebuilt sealed segment must match the aggregate checksum etcd
// recorded. A replica that serves bytes failing verification is remembered as lying for that
// segment and never used for it again in this repair.
import { withSpan, withSpanSync } from '../observability/tracing.js';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { Disk } from '../io/index.js';
import { type GoodCopySource, type RecordedSegment, type SegmentExpectation, analyzeSegmentFile, checksumHex, format, isClean } from '../wal/index.js';
import type { PeerResolver } from './api.js';
import { type SegmentMeta, expectationOfMeta } from './metadata.js';
import { UnknownLogError } from './errors.js';

export interface ReplicaSourceOptions {
  readonly log: string;
  readonly self: string;
  readonly peers: PeerResolver;
  /** The segment's record in etcd (ensemble, aggregate), or undefined when unknown. */
  readonly segmentMeta: (segmentId: number) => Promise<SegmentMeta | undefined>;
  /** Fetches a whole sealed segment file from a member into path (FetchSegment). */
  readonly fetchFile?: (node: string, segmentId: number, path: string) => Promise<void>;
  readonly tempDir: string;
  /** The disk tempDir is on; fetched copies are verified on it. */
  readonly disk: Disk;
  readonly logger: Logger;
  readonly entryBytesMax: number;
}

const FETCH_BYTES_MAX = 4 * 1024 * 1024;

export class ReplicaSource implements GoodCopySource {
  readonly name = 'replicas';
  /**
   * Indices some member could not be asked about (down, timed out). A member that answers
   * "faulty" does not hold an intact copy; one that did not answer may: the interlock keeps
   * SkipCorrupted and Rollback from giving up such entries.
   */
  private readonly uncertain = new Map<number, Set<number>>();
  private readonly liars = new Map<number, Set<string>>();
  private readonly tempDirs: string[] = [];

  /** Removes the copies fetched into temporary directories (call once the repair is over). */
  async cleanup(): Promise<void> {
    for (const dir of this.tempDirs.splice(0)) await this.o.disk.remove(dir);
  }

  /** Removes the temporary directory of one fetched copy, once it was copied in place or not used. */
  async release(path: string): Promise<void> {
    const at = this.tempDirs.indexOf(dirname(path));
    if (at < 0) return;
    const [dir] = this.tempDirs.splice(at, 1);
    await this.o.disk.remove(dir as string);
  }

  constructor(private readonly o: ReplicaSourceOptions) {}

  /** Whether an unreachable member may still hold an intact copy of any of first..last. */
  mayBeHeldElsewhere(segmentId: number, first: number, last: number): boolean {
    const uncertain = this.uncertain.get(segmentId);
    if (!uncertain) return false;
    for (let i = first; i <= last; i += 1) if (uncertain.has(i)) return true;
    return false;
  }

  private markUncertain(segmentId: number, first: number, last: number): void {
    let set = this.uncertain.get(segmentId);
    if (!set) {
      set = new Set();
      this.uncertain.set(segmentId, set);
    }
    for (let i = first; i <= last && set.size < 1_000_000; i += 1) set.add(i);
  }

  private calls = 0;

  /**
   * The other members, minus known liars, in an order that rotates with every call: when a
   * rebuilt segment fails its aggregate check (a replica served self-consistent but wrong
   * entries), the next attempt prefers another member's copies.
   */
  private members(meta: SegmentMeta | undefined): string[] {
    const usable = (n: string): boolean => n !== this.o.self && !this.liars.get(meta?.segmentId ?? 0)?.has(n);
    const members = (meta?.ensemble ?? []).filter(usable);
    const shift = members.length === 0 ? 0 : this.calls++ % members.length;
    // Former members (replaced while gone) may hold an intact copy too: asked after the others.
    const former = (meta?.formerMembers ?? []).filter((n) => usable(n) && !members.includes(n));
    return [...members.slice(shift), ...members.slice(0, shift), ...former];
  }

  /**
   * etcd's record of the segment when it says SEALED with an aggregate (final: first and last
   * index, count, aggregate, created time), for open's full repair of a copy whose own record and
   * trailer are both lost. An OPEN or RECOVERING record says where the segment starts but not
   * where it ends: undefined (see docs/RECOVERY.md, known limits 4 and 20).
   */
  async recordedSegment(segmentId: number): Promise<RecordedSegment | undefined> {
    const meta = await this.o.segmentMeta(segmentId).catch((error: unknown) => {
      this.o.logger.warn({ log: this.o.log, segment: segmentId, err: error }, 'failed to read the segment record');
      return undefined;
    });
    if (meta?.state !== 'SEALED' || meta.segmentId !== segmentId) return undefined;
    const expected = expectationOfMeta(meta);
    if (expected.aggregateChecksum === undefined) return undefined;
    return { ...expected, aggregateChecksum: expected.aggregateChecksum, byteLength: meta.byteLength, createdMs: meta.createdMs };
  }

  fetchFrames(segmentId: number, first: number, last: number): Promise<Map<number, Buffer>> {
    return withSpan('repair.fetch', { 'wal.segment': segmentId, 'wal.first_index': first, 'wal.last_index': last }, () => this.fetchFramesUntraced(segmentId, first, last));
  }

  private async fetchFramesUntraced(segmentId: number, first: number, last: number): Promise<Map<number, Buffer>> {
    const meta = await this.o.segmentMeta(segmentId);
    const frames = new Map<number, Buffer>();
    for (const node of this.members(meta)) {
      const peer = this.o.peers(node);
      if (!peer) {
        this.markUncertain(segmentId, first, last);
        continue;
      }
      let next = first;
      const mine: number[] = [];
      while (next <= last) {
        while (next <= last && frames.has(next)) next += 1;
        if (next > last) break;
        try {
          const answer = await peer.readFrames(this.o.log, segmentId, next, last, FETCH_BYTES_MAX);
          let advanced = next;
          let lying = false;
          withSpanSync('repair.verify', { 'wal.segment': segmentId, 'wal.peer': node, 'wal.frames': answer.frames.length }, () => {
            for (const frame of answer.frames) {
              const decoded = format.decodeFrameAt(frame, 0, this.o.entryBytesMax);
              if (decoded.kind !== 'entry' || !decoded.bodyOk || decoded.frameByteLength !== frame.byteLength || decoded.header.index < next || decoded.header.index > last) {
                this.distrust(segmentId, node, 'served a frame that fails verification or was not asked for');
                lying = true;
                break;
              }
              if (!frames.has(decoded.header.index)) {
                frames.set(decoded.header.index, frame);
                mine.push(decoded.header.index);
              }
              advanced = Math.max(advanced, decoded.header.index + 1);
            }
          });
          if (lying) {
            // Nothing it sent is kept: the members after it fill those indices.
            for (const index of mine) frames.delete(index);
            break;
          }
          const faultyMax = answer.faulty.length > 0 ? Math.max(...answer.faulty) + 1 : next;
          const progressed = Math.max(advanced, faultyMax);
          if (progressed <= next) break; // this member has nothing more from here
          next = progressed;
        } catch (error) {
          // A member that does not keep the log at all answered: it holds none of it.
          if (!doesNotKeepTheLog(error)) {
            this.markUncertain(segmentId, next, last);
            this.o.logger.warn({ log: this.o.log, segment: segmentId, peer: node, err: error }, 'failed to fetch frames from a replica');
          }
          break;
        }
      }
    }
    return frames;
  }

  private distrust(segmentId: number, node: string, why: string): void {
    let set = this.liars.get(segmentId);
    if (!set) {
      set = new Set();
      this.liars.set(segmentId, set);
    }
    set.add(node);
    this.o.logger.error({ log: this.o.log, segment: segmentId, peer: node }, `replica ${why}; not trusted for this segment`);
  }

  /** Members whose copies failed verification during this repair (to be scrubbed themselves). */
  distrusted(segmentId: number): string[] {
    return [...(this.liars.get(segmentId) ?? [])];
  }

  async fetchSegmentFile(segmentId: number, expected: SegmentExpectation): Promise<string | undefined> {
    const fetchFile = this.o.fetchFile;
    if (!fetchFile) return undefined;
    const meta = await this.o.segmentMeta(segmentId);
    for (const node of this.members(meta)) {
      const dir = await this.o.disk.mkdtemp(join(this.o.tempDir, 'fetch-'));
      const path = join(dir, format.segmentFileName(segmentId));
      try {
        await withSpan('repair.fetch', { 'wal.segment': segmentId, 'wal.peer': node }, () => fetchFile(node, segmentId, path));
        const verdict = await withSpan('repair.verify', { 'wal.segment': segmentId, 'wal.peer': node }, () => verifiesAgainst(this.o.disk, path, segmentId, expected, meta, this.o.entryBytesMax));
        if (verdict === 'matches') {
          this.tempDirs.push(dir);
          return path;
        }
        // A damaged copy is faulty, not lying: it is not distrusted, and the member answered, so
        // its intact entries are reachable entry by entry (fetchFrames asks it), and an entry
        // damaged on it is not held intact there.
        if (verdict === 'differs') this.distrust(segmentId, node, 'served a segment file that does not match its record');
      } catch (error) {
        // Not reached is not absent: it may hold the segment, so nothing of it may be given up.
        // A member that answered that it does not keep the log holds none of it.
        if (!doesNotKeepTheLog(error)) this.markUncertain(segmentId, expected.firstIndex, expected.lastIndex);
        this.o.logger.warn({ log: this.o.log, segment: segmentId, peer: node, err: error }, 'failed to fetch a segment file from a replica');
      }
      await this.o.disk.remove(dir);
    }
    return undefined;
  }
}

/** The member answered that it keeps no such log (UnknownLogError here, NOT_FOUND over gRPC). */
function doesNotKeepTheLog(error: unknown): boolean {
  if (error instanceof UnknownLogError) return true;
  return (error as { code?: unknown } | undefined)?.code === 5; // grpc NOT_FOUND (src/rpc/status.ts)
}

/**
 * 'matches' the record; 'damaged' (some bytes fail their checksums: a faulty copy, whose intact
 * entries may still serve); 'differs' (intact, yet not what the record says: a lying or stale
 * copy, not to be trusted for this segment).
 */
async function verifiesAgainst(disk: Disk, path: string, segmentId: number, expected: SegmentExpectation, meta: SegmentMeta | undefined, entryBytesMax: number): Promise<'matches' | 'damaged' | 'differs'> {
  const analysis = await analyzeSegmentFile(disk, path, segmentId, { entryBytesMax });
  if (!isClean(analysis) || analysis.trailer === undefined) return 'damaged';
  const aggregate = meta?.aggregate ?? (expected.aggregateChecksum === undefined ? undefined : checksumHex(expected.aggregateChecksum));
  const matches = analysis.firstIndex === expected.firstIndex && analysis.lastIndex === expected.lastIndex && (aggregate === undefined || checksumHex(analysis.aggregate) === aggregate);
  return matches ? 'matches' : 'differs';
}
