// Worker thread of AnalyzePool (analyze-pool.ts): analyses segment files on the real file system
// and sends each analysis back as plain data. An error thrown by one analysis is answered (with
// its message and code); anything that kills the thread is seen by the pool as a failed worker.
import { parentPort } from 'node:worker_threads';
import { errorCode, nodeDisk } from '../io/index.js';
import { type AnalyzeRequest, type AnalyzeResponse, analysisToWire, optionsOf } from './analyze-pool.js';
import { analyzeSegmentFile } from './analyze.js';

async function answer(r: AnalyzeRequest): Promise<AnalyzeResponse> {
  try {
    return { id: r.id, ok: true, analysis: analysisToWire(await analyzeSegmentFile(nodeDisk, r.path, r.segmentId, optionsOf(r))) };
  } catch (error) {
    const code = errorCode(error);
    return { id: r.id, ok: false, message: error instanceof Error ? error.message : String(error), ...(code === undefined ? {} : { code }) };
  }
}

parentPort?.on('message', (r: AnalyzeRequest) => {
  void answer(r).then((response) => parentPort?.postMessage(response));
});
