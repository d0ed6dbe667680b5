// After a sealed copy is cut to its recorded point, its backups are written again: they held the
// copy sealed past the point, and validate reported them as differing (found by review).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { expect, it } from 'vitest';
import { WalStore, format, validateStore } from '../../src/wal/index.js';

const logger = pino({ level: 'silent' });
const frame = (index: number): Buffer => format.encodeEntry({ index, timestampMs: 1, flags: 0, payload: Buffer.alloc(200, index & 0xff) }).frame;

it('backups after a cut', async () => {
  const root = await mkdtemp(join(tmpdir(), 'rev2-'));
  try {
    const o = { logger, logName: 't', allowSegmentGaps: true, sealOnClose: false, entryBytesMax: 4096, recovery: { backupRetentionCount: 1 } };
    const good = await WalStore.open(join(root, 'good'), o);
    await good.appendFrames({ segmentId: 1, firstIndex: 1, createdMs: 0 }, Array.from({ length: 10 }, (_, i) => frame(i + 1)));
    const agg8 = (await good.sealSegment(1, 8)).aggregateChecksum;
    await good.close();
    const s = await WalStore.open(join(root, 'd'), o);
    await s.appendFrames({ segmentId: 1, firstIndex: 1, createdMs: 0 }, Array.from({ length: 10 }, (_, i) => frame(i + 1)));
    await s.sealSegment(1, 10);
    expect((await s.sealSegment(1, 8, agg8)).lastIndex).toBe(8);
    await s.close();
    const report = await validateStore(join(root, 'd'), { logger } as never);
    const findings = (report as unknown as { findings: Array<{ kind: string; detail: string }> }).findings;
    expect(findings.map((f) => `${f.kind}: ${f.detail}`)).toEqual([]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
