// Splits a byte stream (stdin) into lines, as bytes (payloads need not be UTF-8), grouped into
// batches for group commit. Every buffer is bounded: a line longer than the log accepts is
// refused as soon as it grows past the limit, not after it has been read whole.
import { EntryTooLargeError } from '../wal/index.js';

const NEWLINE = 0x0a;

export interface BatchLimits {
  /** Longest line (payload) accepted. */
  readonly lineBytesMax: number;
  /** A batch is handed on when it holds this many lines... */
  readonly batchEntriesMax: number;
  /** ...or this many payload bytes. */
  readonly batchBytesMax: number;
}

/**
 * Yields batches of lines, without their '\n'. A final line without '\n' counts; an empty input
 * or a lone trailing '\n' adds no empty entry. Empty lines in the middle are empty entries.
 */
export async function* lineBatches(input: AsyncIterable<Buffer | string>, limits: BatchLimits): AsyncGenerator<Buffer[]> {
  let batch: Buffer[] = [];
  let batchBytes = 0;
  let partial: Buffer[] = [];
  let partialBytes = 0;
  const pushLine = (line: Buffer): boolean => {
    batch.push(line);
    batchBytes += line.byteLength;
    return batch.length >= limits.batchEntriesMax || batchBytes >= limits.batchBytesMax;
  };
  for await (const raw of input) {
    const chunk = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE, start); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      const piece = chunk.subarray(start, nl);
      const length = partialBytes + piece.byteLength;
      if (length > limits.lineBytesMax) throw new EntryTooLargeError(length, limits.lineBytesMax);
      // Copy: the batch outlives the chunk, and a slice would pin the whole chunk.
      const line = partial.length === 0 ? Buffer.from(piece) : Buffer.concat([...partial, piece], length);
      partial = [];
      partialBytes = 0;
      start = nl + 1;
      if (pushLine(line)) {
        yield batch;
        batch = [];
        batchBytes = 0;
      }
    }
    if (start < chunk.byteLength) {
      const rest = chunk.subarray(start);
      partialBytes += rest.byteLength;
      if (partialBytes > limits.lineBytesMax) throw new EntryTooLargeError(partialBytes, limits.lineBytesMax);
      partial.push(Buffer.from(rest));
    }
  }
  if (partialBytes > 0) pushLine(Buffer.concat(partial, partialBytes));
  if (batch.length > 0) yield batch;
}
