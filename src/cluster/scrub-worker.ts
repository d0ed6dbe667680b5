// Worker thread of the scrubber: verifies sealed segment files off the main thread, so a node's
// event loop keeps serving while its sealed data is re-read and re-hashed. This file is the
// production edge of the scrub checks: the thread reads through nodeDisk. scrubFile itself takes
// any Disk (InThreadScrubChecker runs it in the caller's thread, on the caller's disk).
import { setTimeout as sleep } from 'node:timers/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { type Disk, nodeDisk } from '../io/index.js';
import { analyzeSegmentFile, checksumHex, isClean } from '../wal/index.js';
import { pacedDisk, readRateCell } from './scrub-pace.js';

export interface ScrubRequest {
  readonly id: number;
  readonly path: string;
  readonly segmentId: number;
  readonly entryBytesMax: number;
}

export interface ScrubResult {
  readonly id: number;
  readonly ok: boolean;
  readonly clean: boolean;
  readonly sealed: boolean;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly indexCount: number;
  readonly aggregate: string;
  readonly fileByteLength: number;
  readonly error: string;
}

export async function scrubFile(disk: Disk, request: ScrubRequest): Promise<ScrubResult> {
  try {
    const a = await analyzeSegmentFile(disk, request.path, request.segmentId, { entryBytesMax: request.entryBytesMax });
    return {
      id: request.id,
      ok: true,
      clean: isClean(a),
      sealed: a.trailer !== undefined,
      firstIndex: a.firstIndex ?? 0,
      lastIndex: a.lastIndex,
      indexCount: a.indexCount,
      aggregate: checksumHex(a.aggregate),
      fileByteLength: a.fileByteLength,
      error: '',
    };
  } catch (error) {
    return { id: request.id, ok: false, clean: false, sealed: false, firstIndex: 0, lastIndex: 0, indexCount: 0, aggregate: '', fileByteLength: 0, error: error instanceof Error ? error.message : String(error) };
  }
}

/** What the node passes a worker at its start: the shared rate cell its reads are paced by (scrub-pace.ts). */
export interface ScrubWorkerData {
  readonly rateCell?: Int32Array;
}

const rateCell = (workerData as ScrubWorkerData | null)?.rateCell;
const workerDisk: Disk = rateCell
  ? pacedDisk(nodeDisk, { bytesPerSecond: () => readRateCell(rateCell), sleep: (ms) => sleep(ms), monotonicMs: () => performance.now() })
  : nodeDisk;

parentPort?.on('message', (request: ScrubRequest) => {
  void scrubFile(workerDisk, request).then((result) => parentPort?.postMessage(result));
});
