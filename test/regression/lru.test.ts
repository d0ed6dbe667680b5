// Regression (adversarial review): every sealed segment kept a read index and an open file; eviction ran only when an index was built, so a replica leaked one descriptor per segment.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { expect, it } from 'vitest';
import { WalStore, format } from '../../src/wal/index.js';
const frame = (i: number) => format.encodeEntry({ index: i, timestampMs: 1, flags: 0, payload: Buffer.from(`e${i}`) }).frame;
it('read-index cache (one open fd each) stays bounded while the open segment is least recently used', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'wal-lru-'));
  const store = await WalStore.open(dir, { logName: 't', allowSegmentGaps: true, sealOnClose: false, readIndexSegmentsMax: 4, logger: pino({ level: 'silent' }), recovery: { backupRetentionCount: 0 } });
  for (let s = 1; s <= 40; s += 1) {
    await store.appendFrames({ segmentId: s, firstIndex: s, createdMs: 0 }, [frame(s)]);
    if (s < 40) await store.sealSegment(s, s);
  }
  // no reads at all
  const size = (store as unknown as { readIndexes: Map<number, unknown> }).readIndexes.size;
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  expect(size).toBeLessThanOrEqual(5);
});
