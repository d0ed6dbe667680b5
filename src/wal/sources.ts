// Sources of good copies for repair. Repair never trusts a source: every frame it gets is decoded
// and checked again (header crc32, SHA3 checksum, index) before it is written, and a rebuilt
// sealed segment must match the recorded aggregate checksum before it replaces anything.
// The local backups are one source; replicas plug in through the same interface.
import { dirname } from 'node:path';
import type { Checksum64 } from './checksum.js';
import { analyzeSegmentFile, isClean } from './analyze.js';
import { type StoreLayout, exists, syncFile, TEMP_SUFFIX } from './files.js';

export interface SegmentExpectation {
  readonly segmentId: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly indexCount: number;
  /** Unknown only when no record of the sealed segment survived anywhere. */
  readonly aggregateChecksum: Checksum64 | undefined;
}

/**
 * The cluster's record of a SEALED segment (etcd's, in a cluster): what the segment holds, and
 * when it was created (its header's createdMs).
 */
export interface RecordedSegment extends SegmentExpectation {
  readonly aggregateChecksum: Checksum64;
  /** The sealed file's length, trailer included. */
  readonly byteLength: number;
  readonly createdMs: number;
}

export interface GoodCopySource {
  readonly name: string;
  /**
   * The authoritative record of a sealed segment, from outside this store (replica mode: etcd's),
   * or undefined when there is none (not sealed, unknown, unreachable). Open's full repair asks
   * for it only for a damaged segment file that neither a catalog record nor a trailer describes.
   */
  recordedSegment?(segmentId: number): Promise<RecordedSegment | undefined>;
  /**
   * Frames (whole encoded entry or hole frames) holding indices first..last of a segment, keyed
   * by the frame's own index. Indices the source has no intact copy of are absent.
   */
  fetchFrames(segmentId: number, first: number, last: number): Promise<Map<number, Buffer>>;
  /**
   * A path to a whole copy of the sealed segment that verifies against `expected`, on the same
   * Disk as the store that asks (the store copies or renames it from there).
   */
  fetchSegmentFile(segmentId: number, expected: SegmentExpectation): Promise<string | undefined>;
  /**
   * Called once the caller is done with a path fetchSegmentFile gave (copied in place or not
   * used): a source that fetched it into a temporary place removes it there.
   */
  release?(path: string): Promise<void>;
}

export function matchesExpectation(
  found: { firstIndex: number | undefined; lastIndex: number; indexCount: number; aggregate: Checksum64 },
  expected: SegmentExpectation,
): boolean {
  return (
    found.firstIndex === expected.firstIndex &&
    found.lastIndex === expected.lastIndex &&
    found.indexCount === expected.indexCount &&
    (expected.aggregateChecksum === undefined || found.aggregate === expected.aggregateChecksum)
  );
}

/** The local backup copies of sealed segments: backups/<copy>/<segment>.wal. */
export class LocalBackupSource implements GoodCopySource {
  readonly name = 'local-backup';

  constructor(
    private readonly layout: StoreLayout,
    private readonly copies: number,
    private readonly entryBytesMax: number,
  ) {}

  async fetchFrames(segmentId: number, first: number, last: number): Promise<Map<number, Buffer>> {
    const frames = new Map<number, Buffer>();
    for (let copy = 1; copy <= this.copies; copy += 1) {
      const path = this.layout.backupPath(segmentId, copy);
      if (!(await exists(this.layout.disk, path))) continue;
      await analyzeSegmentFile(this.layout.disk, path, segmentId, {
        entryBytesMax: this.entryBytesMax,
        onIntactFrame: (index, frame) => {
          if (index >= first && index <= last && !frames.has(index)) frames.set(index, Buffer.from(frame));
        },
      });
    }
    return frames;
  }

  async fetchSegmentFile(segmentId: number, expected: SegmentExpectation): Promise<string | undefined> {
    for (let copy = 1; copy <= this.copies; copy += 1) {
      const path = this.layout.backupPath(segmentId, copy);
      if (!(await exists(this.layout.disk, path))) continue;
      const analysis = await analyzeSegmentFile(this.layout.disk, path, segmentId, { entryBytesMax: this.entryBytesMax });
      if (isClean(analysis) && analysis.trailer !== undefined && matchesExpectation(analysis, expected)) return path;
    }
    return undefined;
  }
}

/** Copies a sealed segment into each backup slot (temp, fsync, rename, fsync dir). */
export async function writeBackups(layout: StoreLayout, segmentId: number, copies: number): Promise<void> {
  const disk = layout.disk;
  const source = layout.segmentPath(segmentId);
  for (let copy = 1; copy <= copies; copy += 1) {
    const target = layout.backupPath(segmentId, copy);
    const dir = dirname(target);
    await disk.mkdirp(dir);
    const temp = `${target}${TEMP_SUFFIX}`;
    await disk.copyFile(source, temp);
    await syncFile(disk, temp);
    await disk.rename(temp, target);
    await disk.fsyncDir(dir);
  }
}
