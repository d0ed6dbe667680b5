// Streaming scanner over the entry area of a segment file.
//
// Fault model: the bytes may be anything. The scanner reads through a fixed window (its memory
// is bounded by the window, whatever the file holds), trusts a length only after the entry header
// crc32 passed, and after damage resynchronises on the next frame marker whose header checksum
// passes. It reports what it finds as items; interpreting them (torn tail, gap, corruption) is
// the analyser's job.
//
// scanFramesInPlace is the hot path (open, validate, scrub): one FrameCursor per scan is filled
// in place for every frame, so an intact frame allocates no object of its own beyond the view
// its SHA3 reads. scanFrames wraps it for visitors that want one item object per frame.
import type { DiskFile } from '../io/index.js';
import type { Checksum64 } from './checksum.js';
import {
  type EntryHeader,
  type Trailer,
  FrameCursor,
  frameByteLength,
  TRAILER_BYTES,
} from './format.js';

export type DamageReason = 'bad-entry-header' | 'bad-trailer' | 'truncated' | 'after-trailer';

export type ScanItem =
  | {
      readonly kind: 'entry';
      readonly offsetBytes: number;
      readonly header: EntryHeader;
      readonly frameByteLength: number;
      readonly bodyOk: boolean;
      readonly actualChecksum: Checksum64;
      /** The whole frame; a view valid only during the visit call. */
      readonly frame: Buffer;
    }
  | { readonly kind: 'trailer'; readonly offsetBytes: number; readonly trailer: Trailer }
  | { readonly kind: 'damage'; readonly offsetBytes: number; readonly byteLength: number; readonly reason: DamageReason };

/** All the scanner needs of a file: positioned reads (a DiskFile, or a Node FileHandle). */
export type ScanFile = Pick<DiskFile, 'read'>;

export interface ScanOptions {
  readonly startOffsetBytes: number;
  readonly endOffsetBytes: number;
  readonly entryBytesMax: number;
  readonly chunkBytes?: number;
}

/**
 * Return 'stop' to end the scan early. A visitor may return a promise (for example to write what
 * it was given); the scan waits for it, and the item's frame view stays valid until it settles.
 */
export type ScanVisitor = (item: ScanItem) => void | 'stop' | Promise<void | 'stop'>;

export type VisitResult = void | 'stop' | Promise<void | 'stop'>;

/**
 * What scanFramesInPlace reports, item by item in file order (the same items as ScanItem).
 * visitEntry receives the scan's one cursor, filled in place: read it (and its bytes, cursor.bytes
 * from cursor.at) during the call or until the promise it returns settles, never later.
 */
export interface FrameVisitor {
  visitEntry(cursor: FrameCursor, offsetBytes: number): VisitResult;
  visitTrailer(trailer: Trailer, offsetBytes: number): VisitResult;
  visitDamage(offsetBytes: number, byteLength: number, reason: DamageReason): VisitResult;
}

async function settle(result: void | 'stop' | Promise<void | 'stop'>): Promise<void | 'stop'> {
  return result instanceof Promise ? await result : result;
}

export const SCAN_CHUNK_BYTES_DEFAULT = 1024 * 1024;

// Scan windows are reused: validating a store of many segments would otherwise leave one
// window per segment outside the JS heap until a full collection.
const WINDOW_POOL_MAX = 4;
const windowPool: Buffer[] = [];

function acquireWindow(capacityBytes: number): Buffer {
  const i = windowPool.findIndex((b) => b.byteLength >= capacityBytes && b.byteLength <= capacityBytes * 2);
  if (i >= 0) return windowPool.splice(i, 1)[0] as Buffer;
  return Buffer.allocUnsafe(capacityBytes);
}

function releaseWindow(buf: Buffer): void {
  if (windowPool.length < WINDOW_POOL_MAX) windowPool.push(buf);
}

class Window {
  buf: Buffer;
  startOffset: number; // file offset of buf[0]
  length = 0; // valid bytes in buf

  constructor(
    private readonly file: ScanFile,
    private endOffset: number,
    capacityBytes: number,
    startOffset: number,
  ) {
    this.buf = acquireWindow(capacityBytes);
    this.startOffset = startOffset;
  }

  get endOfData(): number {
    return this.startOffset + this.length;
  }

  get atEof(): boolean {
    return this.endOfData >= this.endOffset;
  }

  /** Moves the window to start at `offset` and fills it as far as the file and capacity allow. */
  async fillFrom(offset: number): Promise<void> {
    const keep = offset >= this.startOffset && offset < this.endOfData ? this.endOfData - offset : 0;
    if (keep > 0 && offset !== this.startOffset) this.buf.copy(this.buf, 0, offset - this.startOffset, this.length);
    this.startOffset = offset;
    this.length = keep;
    this.cachedView = undefined;
    while (this.length < this.buf.byteLength && !this.atEof) {
      const want = Math.min(this.buf.byteLength - this.length, this.endOffset - this.endOfData);
      const { bytesRead } = await this.file.read(this.buf, this.length, want, this.endOfData);
      if (bytesRead === 0) {
        // The file is shorter than its stat said: treat as end. Moving endOffset here makes
        // atEof true; without it the callers refill forever at the short end.
        this.endOffset = this.endOfData;
        break;
      }
      this.length += bytesRead;
    }
  }

  private cachedView: Buffer | undefined;

  /** The valid bytes; one view per fill, not one per frame (the scan's hot path). */
  view(): Buffer {
    if (this.cachedView?.byteLength !== this.length) this.cachedView = this.buf.subarray(0, this.length);
    return this.cachedView;
  }
}

/**
 * Scans frames from startOffsetBytes to endOffsetBytes, calling visit for each item in order.
 * Returns the offset where the scan ended.
 */
export function scanFrames(file: ScanFile, options: ScanOptions, visit: ScanVisitor): Promise<number> {
  return scanFramesInPlace(file, options, {
    visitEntry: (cursor, offsetBytes) =>
      visit({
        kind: 'entry',
        offsetBytes,
        header: cursor.header(),
        frameByteLength: cursor.frameByteLength,
        bodyOk: cursor.bodyOk,
        actualChecksum: cursor.actualChecksum(),
        frame: cursor.frameView(),
      }),
    visitTrailer: (trailer, offsetBytes) => visit({ kind: 'trailer', offsetBytes, trailer }),
    visitDamage: (offsetBytes, byteLength, reason) => visit({ kind: 'damage', offsetBytes, byteLength, reason }),
  });
}

/** scanFrames with one cursor filled in place per frame instead of an item object (FrameVisitor). */
export async function scanFramesInPlace(file: ScanFile, options: ScanOptions, visitor: FrameVisitor): Promise<number> {
  const chunkBytes = options.chunkBytes ?? SCAN_CHUNK_BYTES_DEFAULT;
  const capacity = Math.max(chunkBytes, frameByteLength(options.entryBytesMax) + TRAILER_BYTES);
  const end = options.endOffsetBytes;
  const win = new Window(file, end, capacity, options.startOffsetBytes);
  try {
    return await scanWindow(win, options, visitor, new FrameCursor());
  } finally {
    releaseWindow(win.buf);
  }
}

async function scanWindow(win: Window, options: ScanOptions, visitor: FrameVisitor, cursor: FrameCursor): Promise<number> {
  const end = options.endOffsetBytes;
  let pos = options.startOffsetBytes;
  await win.fillFrom(pos);

  while (pos < end) {
    const rel = pos - win.startOffset;
    const kind = cursor.decode(win.view(), rel, options.entryBytesMax);
    if (kind === 'entry') {
      let stop = visitor.visitEntry(cursor, pos);
      if (stop instanceof Promise) stop = await stop; // only writers pay for the await
      pos += cursor.frameByteLength;
      if (stop === 'stop') return pos;
      continue;
    }
    if (kind === 'need-more') {
      if (!win.atEof && (rel > 0 || win.length < win.buf.byteLength)) {
        await win.fillFrom(pos);
        continue;
      }
      // The file ends inside this frame: a cut-off write.
      await settle(visitor.visitDamage(pos, end - pos, 'truncated'));
      return end;
    }
    if (kind === 'trailer') {
      const stop = await settle(visitor.visitTrailer(cursor.trailer as Trailer, pos));
      pos += TRAILER_BYTES;
      if (stop !== 'stop' && pos < end) await settle(visitor.visitDamage(pos, end - pos, 'after-trailer'));
      return end;
    }
    const reason = cursor.badReason;
    const next = await resync(win, pos, options.entryBytesMax, cursor);
    const stop = await settle(visitor.visitDamage(pos, next - pos, reason));
    pos = next;
    if (stop === 'stop') return pos;
  }
  return pos;
}

const MARKER_PREFIX = Buffer.from('WAL', 'latin1');
const E = 'E'.charCodeAt(0);
const T = 'T'.charCodeAt(0);

/** Finds the offset of the next trustworthy frame after `damagedAt`, or the end offset. */
async function resync(win: Window, damagedAt: number, entryBytesMax: number, cursor: FrameCursor): Promise<number> {
  let searchFrom = damagedAt + 1;
  for (;;) {
    if (searchFrom - win.startOffset + 4 > win.length) {
      if (win.atEof) return win.endOfData;
      await win.fillFrom(searchFrom);
      continue;
    }
    const view = win.view();
    const found = view.indexOf(MARKER_PREFIX, searchFrom - win.startOffset);
    if (found < 0 || found + 4 > view.byteLength) {
      if (win.atEof) return win.endOfData;
      // Keep the last three bytes: a marker may straddle the window's end.
      await win.fillFrom(Math.max(searchFrom, win.endOfData - 3));
      searchFrom = win.startOffset;
      continue;
    }
    const fourth = view[found + 3];
    if (fourth !== E && fourth !== T) {
      searchFrom = win.startOffset + found + 1;
      continue;
    }
    const kind = cursor.decode(view, found, entryBytesMax);
    if (kind === 'entry' || kind === 'trailer') return win.startOffset + found;
    if (kind === 'need-more' && !win.atEof && found > 0) {
      await win.fillFrom(win.startOffset + found);
      searchFrom = win.startOffset;
      continue;
    }
    if (kind === 'need-more' && !win.atEof) {
      // A whole window from here cannot hold the frame it claims: not a frame we can use.
      searchFrom = win.startOffset + found + 1;
      continue;
    }
    searchFrom = win.startOffset + found + 1;
  }
}
