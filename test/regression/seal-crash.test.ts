// Crash-point exploration of WalStore.sealSegment with a cut (truncateActive), replica mode.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/io/index.js';
import { SimFileSystem, SimLoop, type SimProcess } from '../../src/sim/index.js';
import { WalStore, format } from '../../src/wal/index.js';

const logger = pino({ level: 'silent' });
const frame = (index: number): Buffer => format.encodeEntry({ index, timestampMs: 1, flags: 0, payload: Buffer.alloc(300, index & 0xff) }).frame;

function options(fs: SimFileSystem, loop: SimLoop, proc: SimProcess) {
  return { disk: fs.diskFor(loop, proc), clock: loop.clockFor(proc), logger, logName: 't', allowSegmentGaps: true, sealOnClose: false, checkpointBytes: 4096, segmentBytesMax: 1 << 30, entryBytesMax: 4096, recovery: { backupRetentionCount: 0 } };
}

async function runUntil(loop: SimLoop, done: () => boolean, maxEvents = Infinity): Promise<number> {
  let n = 0;
  await loop.run(loop.nowMs + 1e7, () => done() || n++ >= maxEvents);
  return n;
}

describe('seal with cut: crash at every step', () => {
  it('open after a crash at any point of sealSegment(…, lower)', async () => {
    const failures: string[] = [];
    for (let k = 0; k < 400; k += 1) {
      for (const mode of ['lose-unsynced', 'keep-all'] as const) {
        const loop = new SimLoop();
        const fs = new SimFileSystem('x', new SeededRandom(7));
        const p1: SimProcess = { name: 'p1', incarnation: 1, alive: true };
        let acked = 0;
        let phase = 'setup';
        let finished = false;
        let store: WalStore | undefined;
        let setupDone = false;
        void (async () => {
          store = await WalStore.open('/d', options(fs, loop, p1));
          // 40 frames of ~340 B: several catalog checkpoints (4 KiB) inside segment 1.
          for (let i = 1; i <= 40; i += 4) {
            const r = await store.appendFrames({ segmentId: 1, firstIndex: 1, createdMs: 0 }, [frame(i), frame(i + 1), frame(i + 2), frame(i + 3)]);
            acked = r.lastIndex;
          }
          setupDone = true;
          phase = 'seal';
          await store.sealSegment(1, 30); // a new writer's recovery seals lower: 31..40 are cut
          phase = 'sealed';
          await store.appendFrames({ segmentId: 2, firstIndex: 31, createdMs: 0 }, [frame(31)]);
          phase = 'next';
        })().finally(() => (finished = true));
        // Get to the seal first, then crash k events into it.
        await runUntil(loop, () => setupDone);
        if (!setupDone) throw new Error('setup did not finish');
        const ran = await runUntil(loop, () => finished, k);
        if (finished && ran < k) continue;
        p1.alive = false;
        fs.crash(mode);
        const p2: SimProcess = { name: 'p2', incarnation: 2, alive: true };
        let reopened: WalStore | undefined;
        let error: unknown;
        let done = false;
        WalStore.open('/d', options(fs, loop, p2)).then((s) => (reopened = s), (e: unknown) => (error = e)).finally(() => (done = true));
        await runUntil(loop, () => done);
        if (!reopened) failures.push(`k=${k} mode=${mode} phase=${phase}: ${(error as Error)?.name}: ${JSON.stringify((error as { findings?: unknown[] }).findings?.[0])}`);
        else if (reopened.lastIndex < 30) failures.push(`k=${k} mode=${mode} phase=${phase}: lastIndex ${reopened.lastIndex} < 30 (acked ${acked})`);
      }
    }
    expect(failures).toEqual([]);
  }, 600_000);
});
