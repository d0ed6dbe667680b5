// Torn write or corruption in one segment file: applies the torn-write rule of src/recovery
// (TORN_WRITE_RULES) to the damaged ranges of the open segment, reading the damaged bytes only
// where the rule needs to know whether they were ever written.
//
// Fault model: a crash leaves each page (at least each sector) of the write in flight on the disk
// or not; one that is not reads as zeros, because the store only ever writes past the synced end
// of the open segment, where nothing was before (a torn tail cut at open is truncated and synced
// before anything is written there again). So the last write, torn by a crash, shows as damage
// that starts within the last write's window and, when intact frames follow it, holds zeros up
// to a sector's end. Damage that does not look like that is corruption, left to repair.
import type { DiskFile } from '../io/index.js';
import { isTornWrite, withinLastWrite } from '../recovery/index.js';
import type { DamageRange, SegmentAnalysis } from './analyze.js';
import { readRange } from './files.js';

/** The smallest unit a disk writes whole; a page is a whole number of sectors. */
export const SECTOR_BYTES = 512;
/** Damaged bytes read at a time when looking for unwritten sectors (a multiple of SECTOR_BYTES). */
const ZERO_SCAN_CHUNK_BYTES = 64 * 1024;

export interface TornWrite {
  /** The range where the torn write begins; ranges before it are corruption. */
  readonly rangeIndex: number;
  /** Its first damaged byte: the segment is cut here, and everything after it quarantined. */
  readonly offsetBytes: number;
}

export interface LastWriteWindow {
  /** The last segment file, with an intact header, no trailer, not recorded as sealed. */
  readonly inOpenSegment: boolean;
  /** Bytes known to be synced: the checkpoint's byte length, or the header's when there is none. */
  readonly syncedEndBytes: number;
  /** The most bytes the store writes between two fdatasyncs (tornWindowBytesOf). */
  readonly tornWindowBytes: number;
}

/** The first damaged range of a segment that is a torn write, if any. */
export async function findTornWrite(file: Pick<DiskFile, 'read'>, analysis: SegmentAnalysis, window: LastWriteWindow): Promise<TornWrite | undefined> {
  if (!window.inOpenSegment) return undefined;
  const ranges = analysis.ranges;
  for (let i = 0; i < ranges.length; i += 1) {
    const range = ranges[i] as DamageRange;
    const signals = {
      inOpenSegment: true,
      crashShaped: range.crashShaped,
      withinLastWrite: withinLastWrite(range.offsetBytes, analysis.fileByteLength, window.syncedEndBytes, window.tornWindowBytes),
      // goodEnd is the end of the last intact, in-sequence frame: past this range if one follows.
      intactAfter: analysis.goodEndOffsetBytes > range.offsetBytes,
      unwrittenSector: false,
    };
    if (isTornWrite(signals)) return { rangeIndex: i, offsetBytes: range.offsetBytes };
    if (!signals.crashShaped || !signals.withinLastWrite || !signals.intactAfter) continue;
    const unwrittenSector = await holdsUnwrittenSector(file, range.offsetBytes, stretchEndOffset(ranges, i));
    if (isTornWrite({ ...signals, unwrittenSector })) return { rangeIndex: i, offsetBytes: range.offsetBytes };
  }
  return undefined;
}

/** The end of the damaged stretch that begins with ranges[from]: ranges that follow on without a gap. */
function stretchEndOffset(ranges: readonly DamageRange[], from: number): number {
  let end = (ranges[from] as DamageRange).offsetBytes + (ranges[from] as DamageRange).byteLength;
  for (let i = from + 1; i < ranges.length && (ranges[i] as DamageRange).offsetBytes === end; i += 1) {
    end += (ranges[i] as DamageRange).byteLength;
  }
  return end;
}

/** Reads [startBytes, endBytes) in sector-aligned chunks; true when endsInZeroSector holds for one. */
async function holdsUnwrittenSector(file: Pick<DiskFile, 'read'>, startBytes: number, endBytes: number): Promise<boolean> {
  let from = startBytes;
  while (from < endBytes) {
    // Chunks end on sector boundaries, so each sector's part of the stretch lies in one chunk.
    const to = Math.min(endBytes, Math.floor((from + ZERO_SCAN_CHUNK_BYTES) / SECTOR_BYTES) * SECTOR_BYTES);
    const bytes = await readRange(file, from, to - from);
    if (endsInZeroSector(bytes, from)) return true;
    if (bytes.byteLength < to - from) return false; // the file is shorter than analysed
    from = to;
  }
  return false;
}

/**
 * Whether bytes (found at file offset offsetBytes) hold, for some sector boundary b inside or at
 * their end, nothing but zeros from max(offsetBytes, b - SECTOR_BYTES) up to b: the part of a
 * sector that a crash never wrote back. A frame always begins with its non-zero magic, so a bit
 * flip in a frame of non-zero bytes never qualifies.
 */
export function endsInZeroSector(bytes: Uint8Array, offsetBytes: number): boolean {
  const end = offsetBytes + bytes.byteLength;
  for (let boundary = (Math.floor(offsetBytes / SECTOR_BYTES) + 1) * SECTOR_BYTES; boundary <= end; boundary += SECTOR_BYTES) {
    const from = Math.max(offsetBytes, boundary - SECTOR_BYTES) - offsetBytes;
    let zero = true;
    for (let i = from; i < boundary - offsetBytes && zero; i += 1) zero = bytes[i] === 0;
    if (zero) return true;
  }
  return false;
}
