// Two ways a node could forget its fence, found by an adversarial review: an EPOCH lost in a log
// that holds no segment yet (a Fence answered "not present" counts toward a fence quorum), and
// a truncated EPOCH read as the older digits-only form (a lower fence).
import { mkdtemp, readFile, rm, truncate, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { nodeDisk, systemClock } from '../../src/io/index.js';
import { RecoveryMetrics } from '../../src/recovery/index.js';
import { LogStores, PeerHandlers, encodeFence } from '../../src/replication/index.js';
import { format } from '../../src/wal/index.js';

const LOG = 'orders';
let dataDir: string;
const opened: LogStores[] = [];
const silent = pino({ level: 'silent' });
function logStores(fenceFloor?: (log: string) => Promise<number>): LogStores {
  const logs = new LogStores({ dataDir, backupRetentionCount: 0, entryBytesMax: 1 << 20, logger: silent, metrics: new RecoveryMetrics(), disk: nodeDisk, clock: systemClock, ...(fenceFloor ? { fenceFloor } : {}) });
  opened.push(logs);
  return logs;
}
const epochFile = (): string => join(dataDir, 'logs', LOG, 'EPOCH');
const frame = format.encodeEntry({ index: 1, timestampMs: 1, flags: 0, payload: Buffer.from('one') }).frame;

beforeEach(async () => { dataDir = await mkdtemp(join(tmpdir(), 'wal-rev2-')); });
afterEach(async () => {
  for (const logs of opened.splice(0)) await logs.closeAll();
  await rm(dataDir, { recursive: true, force: true });
});

it('a member fenced for a segment it never received, whose EPOCH is deleted, gets its fence back from etcd', async () => {
  // Recovery at epoch 17 fences the ensemble; this member never got a frame of segment 1 (as c in
  // sealed-past-cut.test.ts): its answer "not present" counts toward the fence quorum.
  const first = logStores();
  const h1 = new PeerHandlers(first, silent);
  expect((await h1.fence(LOG, 1, 17)).present).toBe(false);
  expect(await readFile(epochFile(), 'utf8')).toBe(encodeFence(17).toString());
  await first.closeAll();
  await unlink(epochFile()); // a deleted file (DESIGN section 7)
  let asked = false;
  const second = logStores(async () => { asked = true; return 17; });
  // The deposed writer (epoch 5) replicates entry 1 of its open segment: must be ABORTED.
  const h2 = new PeerHandlers(second, silent);
  const outcome = await h2.replicate(LOG, 5, { segmentId: 1, firstIndex: 1, createdMs: 1 }, [frame], 1).then(() => 'accepted', (e: unknown) => String(e));
  expect({ asked, outcome, fence: await second.fencedEpoch(LOG) }).toEqual({ asked: true, outcome: expect.stringContaining('Fenced'), fence: 17 });
});

it('an EPOCH of the new format truncated to its first digits is damage, not a lower legacy fence', async () => {
  const first = logStores();
  await new PeerHandlers(first, silent).fence(LOG, 1, 123456);
  await new PeerHandlers(first, silent).replicate(LOG, 123456, { segmentId: 1, firstIndex: 1, createdMs: 1 }, [frame], 1);
  await first.closeAll();
  await truncate(epochFile(), 2); // "12" (a truncated file, DESIGN section 7)
  const outcome = await logStores().fencedEpoch(LOG).then((e) => `fence ${e}`, (e: unknown) => String(e).slice(0, 60));
  expect(outcome).toContain('FenceFileDamaged');
});
