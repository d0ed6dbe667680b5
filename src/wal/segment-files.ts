// The destructive steps on segment files, each written once and used everywhere: cut a file's
// tail into quarantine (a torn tail on open or in repair, unacknowledged entries before a seal),
// and put a whole segment copy in place (a restored file, a copy that replaces one disagreeing
// with its record, a copy fetched from a replica).
//
// Fault model: the process may die at any instant; any file may hold damaged bytes, a source's
// copy included. Nothing is removed before it is kept: cut bytes are written to quarantine (temp,
// fsync, rename) before the file shrinks, and an old copy is hard-linked into quarantine before a
// rename replaces it, so the segment's name holds one whole copy, old or new, at every instant. A
// copy is synced before it is verified, and verified as it will stand (no source is trusted), so
// what was checked is what a crash leaves.
import type { DiskFile } from '../io/index.js';
import { withSpan } from '../observability/tracing.js';
import { type SegmentAnalysis, analyzeSegmentFile, isClean } from './analyze.js';
import { type StoreLayout, TEMP_SUFFIX, quarantineBytes, quarantineFile, readRange, syncFile } from './files.js';
import { type Trailer, segmentFileName } from './format.js';
import { type SegmentExpectation, matchesExpectation } from './sources.js';

/** Bytes cut from the end of a segment file, and where they are kept. */
export interface TailCut {
  readonly segment: number;
  readonly offsetBytes: number;
  readonly byteLength: number;
  readonly quarantinedAs: string;
}

export interface CutRequest {
  readonly segmentId: number;
  /** Where the file is cut: every byte from here on goes to quarantine. */
  readonly offsetBytes: number;
  readonly fileByteLength: number;
  /** Why, in the quarantine name: `<segment file>.<nowMs>.<label>`. */
  readonly label: string;
  readonly nowMs: number;
  /**
   * Runs after the cut bytes are kept and before the file shrinks: a store records its lowered
   * state here, so that a crash never finds a file shorter than what its catalog says was synced.
   */
  readonly beforeTruncate?: () => Promise<void>;
}

/** Cuts the file open as `handle` at request.offsetBytes, keeping the cut bytes in quarantine. */
export async function cutToQuarantine(layout: StoreLayout, handle: DiskFile, request: CutRequest): Promise<TailCut> {
  const byteLength = request.fileByteLength - request.offsetBytes;
  const cut = await readRange(handle, request.offsetBytes, byteLength);
  const quarantinedAs = await quarantineBytes(layout, `${segmentFileName(request.segmentId)}.${request.nowMs}.${request.label}`, cut);
  await request.beforeTruncate?.();
  await handle.truncate(request.offsetBytes);
  await handle.sync();
  return { segment: request.segmentId, offsetBytes: request.offsetBytes, byteLength, quarantinedAs };
}

/** Rolls back a torn write: segment file cut at offsetBytes, the torn bytes kept in quarantine. */
export async function cutTornTail(layout: StoreLayout, segmentId: number, offsetBytes: number, fileByteLength: number, nowMs: number): Promise<TailCut> {
  const handle = await layout.disk.open(layout.segmentPath(segmentId), 'r+');
  try {
    const cut = await cutToQuarantine(layout, handle, { segmentId, offsetBytes, fileByteLength, label: `torn-at-${offsetBytes}`, nowMs });
    await layout.disk.fsyncDir(layout.segmentsDir);
    return cut;
  } finally {
    await handle.close();
  }
}

/** A whole sealed segment copy, durable and verified, ready to be put in place. */
export interface VerifiedSegmentCopy {
  readonly segmentId: number;
  /** The file that a rename will put in place: the segment's temp file, or the source itself. */
  readonly path: string;
  readonly analysis: SegmentAnalysis;
  readonly trailer: Trailer;
}

export interface CopyOptions {
  /** 'copy': the source stays (a backup, a replica's file); 'move': the source itself is renamed in. */
  readonly how: 'copy' | 'move';
  readonly entryBytesMax: number;
  /** What the segment must contain (its record); without it the copy need only be intact and sealed. */
  readonly expected?: SegmentExpectation | undefined;
}

/**
 * Makes a whole copy of a sealed segment durable and verifies it as it will stand: intact, sealed,
 * named as this segment, and matching `expected`. A copy that does not verify is removed (a
 * source moved in stays where it is) and undefined is returned.
 */
export async function verifySegmentCopy(layout: StoreLayout, segmentId: number, sourcePath: string, options: CopyOptions): Promise<VerifiedSegmentCopy | undefined> {
  const disk = layout.disk;
  let path = sourcePath;
  if (options.how === 'copy') {
    // Streamed in chunks (memory stays flat whatever the segment's size).
    path = `${layout.segmentPath(segmentId)}${TEMP_SUFFIX}`;
    await disk.mkdirp(layout.segmentsDir);
    await disk.copyFile(sourcePath, path);
  }
  await syncFile(disk, path);
  const analysis = await analyzeSegmentFile(disk, path, segmentId, { entryBytesMax: options.entryBytesMax });
  const trailer = analysis.trailer;
  if (isClean(analysis) && trailer !== undefined && (options.expected === undefined || matchesExpectation(analysis, options.expected))) {
    return { segmentId, path, analysis, trailer };
  }
  if (options.how === 'copy') await disk.remove(path);
  return undefined;
}

/**
 * Puts a verified copy in place of the segment's file. With `quarantineOld`, the file it replaces
 * is hard-linked into quarantine first (its name is returned).
 */
export async function putSegmentCopyInPlace(
  layout: StoreLayout,
  copy: VerifiedSegmentCopy,
  quarantineOld?: { readonly label: string; readonly retention: number; readonly nowMs: number },
): Promise<string | undefined> {
  return withSpan('segment.install', { 'wal.segment': copy.segmentId }, async () => {
    const target = layout.segmentPath(copy.segmentId);
    const quarantinedAs = quarantineOld
      ? await quarantineFile(layout, target, quarantineOld.label, { keepOriginal: true, retention: quarantineOld.retention, now: quarantineOld.nowMs })
      : undefined;
    await layout.disk.rename(copy.path, target);
    await layout.disk.fsyncDir(layout.segmentsDir);
    return quarantinedAs;
  });
}
