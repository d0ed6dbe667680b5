// Paced scrub reads: a Disk whose file reads go in chunks of at most chunkBytesMax, each followed
// by the pause that keeps them at the rate asked for now (the throttle's rate: it can fall in the
// middle of a segment, and a 0 pauses them while the throttle measures its baseline). The hashing
// of a chunk happens between two reads, so pacing the reads paces the worker's CPU too.
//
// The rate reaches a worker thread through a shared cell (SharedArrayBuffer, one Int32 of KiB/s)
// that the node's thread writes and the worker reads before each chunk: no message round trip per
// chunk, and a worker that is busy hashing never delays the update.
import type { Disk, DiskFile } from '../io/index.js';

/** The largest read a scrub check issues at once (smaller: finer pacing, more calls). */
export const SCRUB_READ_CHUNK_BYTES_MAX = 64 * 1024;
/** How often a paused read looks at the rate again. */
export const SCRUB_PAUSE_POLL_MS = 20;
/** The longest a read stays paused (a probe is far shorter; longer: the cell's writer is gone). */
export const SCRUB_PAUSE_MS_MAX = 5_000;
/** The rate a read goes on at after pausing SCRUB_PAUSE_MS_MAX. */
export const SCRUB_PAUSED_RATE_FALLBACK_BYTES_PER_SECOND = 1024 * 1024;

export interface ScrubPacer {
  /** The rate reads may go at now (bytes per second); 0: paused. */
  bytesPerSecond(): number;
  sleep(ms: number): Promise<void>;
  monotonicMs(): number;
}

/** A Disk whose file reads are paced by the pacer; everything else goes straight to disk. */
export function pacedDisk(disk: Disk, pacer: ScrubPacer, chunkBytesMax = SCRUB_READ_CHUNK_BYTES_MAX): Disk {
  const pacedFile = (file: DiskFile): DiskFile => ({
    ...bindFile(file),
    read: async (buf, offset, byteLength, position) => {
      let done = 0;
      while (done < byteLength) {
        const rate = await rateWhenRunning(pacer);
        const want = Math.min(chunkBytesMax, byteLength - done);
        const began = pacer.monotonicMs();
        const { bytesRead } = await file.read(buf, offset + done, want, position + done);
        done += bytesRead;
        const owedMs = (bytesRead / rate) * 1000 - (pacer.monotonicMs() - began);
        if (owedMs > 0) await pacer.sleep(owedMs);
        if (bytesRead < want) break; // end of file
      }
      return { bytesRead: done };
    },
  });
  return Object.assign(Object.create(disk) as Disk, {
    open: async (path: string, mode: Parameters<Disk['open']>[1]) => {
      const file = await disk.open(path, mode);
      return mode === 'r' ? pacedFile(file) : file;
    },
  });
}

/** Waits while the rate is 0 (bounded by SCRUB_PAUSE_MS_MAX), then returns it (> 0). */
async function rateWhenRunning(pacer: ScrubPacer): Promise<number> {
  const began = pacer.monotonicMs();
  for (;;) {
    const rate = pacer.bytesPerSecond();
    if (rate > 0) return rate;
    if (pacer.monotonicMs() - began >= SCRUB_PAUSE_MS_MAX) return SCRUB_PAUSED_RATE_FALLBACK_BYTES_PER_SECOND;
    await pacer.sleep(SCRUB_PAUSE_POLL_MS);
  }
}

function bindFile(file: DiskFile): DiskFile {
  return {
    read: file.read.bind(file),
    write: file.write.bind(file),
    truncate: file.truncate.bind(file),
    datasync: file.datasync.bind(file),
    sync: file.sync.bind(file),
    byteLength: file.byteLength.bind(file),
    close: file.close.bind(file),
  };
}

/** The shared rate cell: KiB/s in one Int32 (up to 2 TiB/s). */
export function newRateCell(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4));
}

export function writeRateCell(cell: Int32Array, bytesPerSecond: number): void {
  Atomics.store(cell, 0, Math.max(0, Math.min(0x7fffffff, Math.ceil(bytesPerSecond / 1024))));
}

export function readRateCell(cell: Int32Array): number {
  return Atomics.load(cell, 0) * 1024;
}

/** Rewrites the cell with rate() every everyMs until the returned function is called. */
export function startRateCellUpdates(cell: Int32Array, rate: () => number, setTimer: (ms: number, fn: () => void) => () => void, everyMs: number): () => void {
  let cancel: (() => void) | undefined;
  let stopped = false;
  const tick = (): void => {
    if (stopped) return;
    writeRateCell(cell, rate());
    cancel = setTimer(everyMs, tick);
  };
  tick();
  return () => {
    stopped = true;
    cancel?.();
  };
}
