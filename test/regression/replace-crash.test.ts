// Crash at every step of replaceWholeSegment (a stale sealed copy replaced by one matching the
// record); after reopening, a second repair must converge (record, reads).
import pino from 'pino';
import { expect, it } from 'vitest';
import { SeededRandom } from '../../src/io/index.js';
import { SimFileSystem, SimLoop, type SimProcess } from '../../src/sim/index.js';
import { WalStore, format, type GoodCopySource, type SegmentExpectation } from '../../src/wal/index.js';

const logger = pino({ level: 'silent' });
const frame = (index: number): Buffer => format.encodeEntry({ index, timestampMs: 1, flags: 0, payload: Buffer.alloc(200, index & 0xff) }).frame;
const opts = (fs: SimFileSystem, loop: SimLoop, proc: SimProcess) => ({ disk: fs.diskFor(loop, proc), clock: loop.clockFor(proc), logger, logName: 't', allowSegmentGaps: true, sealOnClose: false, segmentBytesMax: 1 << 30, entryBytesMax: 4096, recovery: { backupRetentionCount: 0 } });

async function drive<T>(loop: SimLoop, p: Promise<T>, maxEvents = Infinity): Promise<{ value?: T; error?: unknown; done: boolean }> {
  const out: { value?: T; error?: unknown; done: boolean } = { done: false };
  p.then((v) => (out.value = v), (e: unknown) => (out.error = e)).finally(() => (out.done = true));
  let n = 0;
  await loop.run(loop.nowMs + 1e7, () => out.done || n++ >= maxEvents);
  return out;
}

it('replaceWholeSegment: crash at every step, reopen, repair again', async () => {
  const problems: string[] = [];
  for (let k = 0; k < 60; k += 1) {
    const loop = new SimLoop();
    const fs = new SimFileSystem('x', new SeededRandom(5));
    const p1: SimProcess = { name: 'p1', incarnation: 1, alive: true };
    let expected!: SegmentExpectation;
    const setup = await drive(loop, (async () => {
      const good = await WalStore.open('/good', opts(fs, loop, p1));
      await good.appendFrames({ segmentId: 1, firstIndex: 1, createdMs: 0 }, Array.from({ length: 10 }, (_, i) => frame(i + 1)));
      const rec = await good.sealSegment(1, 10);
      expected = { segmentId: 1, firstIndex: 1, lastIndex: 10, indexCount: 10, aggregateChecksum: rec.aggregateChecksum };
      const stale = await WalStore.open('/d', opts(fs, loop, p1));
      await stale.appendFrames({ segmentId: 1, firstIndex: 1, createdMs: 0 }, Array.from({ length: 10 }, (_, i) => frame(i + 1)));
      await stale.sealSegment(1, 8); // missed the writer's last two entries: sealed lower (stale copy)
      await stale.read(5); // a cached read index
      return stale;
    })());
    const store = setup.value!;
    const source: GoodCopySource = { name: 'replica', fetchFrames: async () => new Map(), fetchSegmentFile: async () => '/good/segments/00000000000000000001.wal' };
    const run = await drive(loop, store.repairSealedSegment(1, { strategy: 'partial', dryRun: false, sources: [source], expected }), k);
    if (run.done) break;
    p1.alive = false;
    fs.crash('lose-unsynced');
    const p2: SimProcess = { name: 'p2', incarnation: 2, alive: true };
    const reopened = await drive(loop, WalStore.open('/d', opts(fs, loop, p2)));
    if (!reopened.value) { problems.push(`k=${k}: open failed: ${String(reopened.error)}`); continue; }
    const s = reopened.value;
    const again = await drive(loop, s.repairSealedSegment(1, { strategy: 'partial', dryRun: false, sources: [source], expected }));
    const rec = s.segmentRecord(1);
    const read9 = await drive(loop, s.read(9));
    const read5 = await drive(loop, s.read(5));
    const line = `k=${k}: second repair ${again.value?.decision}/${again.value?.outcome} (${again.value?.detail ?? String(again.error)}); catalog record last=${rec?.lastIndex} agg ok=${rec?.aggregateChecksum === expected.aggregateChecksum}; read(9) ${read9.value ? 'ok' : String(read9.error).slice(0, 120)}; read(5) ${read5.value ? 'ok' : String(read5.error).slice(0, 120)}`;
    if (rec?.lastIndex !== 10 || !read9.value || !read5.value) problems.push(line);
  }
  expect(problems).toEqual([]);
}, 300_000);
