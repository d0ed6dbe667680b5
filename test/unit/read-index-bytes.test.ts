// The read-index cache is bounded by memory as well as by segments (issue 11): a segment of small
// entries indexes millions of them (24 bytes each), so sixteen such indexes could take gigabytes.
// Reads of many sealed segments keep the cache's estimated bytes under readIndexBytesMax, every
// read is still served verified, and the index just built is kept even when it alone is larger.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidOptionError, WalStore, format } from '../../src/wal/index.js';
import { READ_INDEX_BYTES_PER_ENTRY } from '../../src/wal/read-index.js';

const ENTRIES_PER_SEGMENT = 100;
const SEGMENTS = 8;
const frame = (i: number): Buffer => format.encodeEntry({ index: i, timestampMs: 1, flags: 0, payload: Buffer.from(`e${i}`) }).frame;

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-read-index-bytes-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function cacheOf(store: WalStore): { size: number; bytes: number } {
  return (store as unknown as { readIndexes: { size: number; bytes: number } }).readIndexes;
}

async function storeWithSegments(readIndexBytesMax: number): Promise<WalStore> {
  const store = await WalStore.open(dir, { logName: 't', allowSegmentGaps: true, sealOnClose: false, readIndexSegmentsMax: 16, readIndexBytesMax, logger: pino({ level: 'silent' }), recovery: { backupRetentionCount: 0 } });
  for (let s = 0; s < SEGMENTS; s += 1) {
    const first = s * ENTRIES_PER_SEGMENT + 1;
    await store.appendFrames({ segmentId: s + 1, firstIndex: first, createdMs: 0 }, Array.from({ length: ENTRIES_PER_SEGMENT }, (_, i) => frame(first + i)));
    if (s < SEGMENTS - 1) await store.sealSegment(s + 1, first + ENTRIES_PER_SEGMENT - 1);
  }
  return store;
}

describe('read-index cache bounded by bytes', () => {
  it('reads across many segments keep the cache under readIndexBytesMax, each read served verified', async () => {
    const segmentBytes = ENTRIES_PER_SEGMENT * READ_INDEX_BYTES_PER_ENTRY;
    const bytesMax = 3 * segmentBytes; // the open segment's index and two more
    const store = await storeWithSegments(bytesMax);
    try {
      for (let round = 0; round < 2; round += 1) {
        for (let s = 0; s < SEGMENTS; s += 1) {
          const index = s * ENTRIES_PER_SEGMENT + 1 + round * 7;
          expect((await store.readFrame(index)).frame.equals(frame(index))).toBe(true);
          expect(cacheOf(store).bytes, `after a read of segment ${s + 1}`).toBeLessThanOrEqual(bytesMax);
        }
      }
      expect(cacheOf(store).size).toBeLessThanOrEqual(3);
    } finally {
      await store.close();
    }
  });

  it('an index larger than the whole bound on its own is kept while it is the most recently used', async () => {
    const store = await storeWithSegments(4096); // below one segment's index (2,400 bytes) twice
    try {
      expect((await store.readFrame(5)).frame.equals(frame(5))).toBe(true);
      expect((await store.readFrame(6)).frame.equals(frame(6))).toBe(true);
      expect(cacheOf(store).size).toBeLessThanOrEqual(2); // segment 1's and the open segment's
    } finally {
      await store.close();
    }
  });

  it('readIndexBytesMax is validated once', async () => {
    await expect(WalStore.open(dir, { logName: 't', readIndexBytesMax: 100, logger: pino({ level: 'silent' }) })).rejects.toBeInstanceOf(InvalidOptionError);
  });
});
