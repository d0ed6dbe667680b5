// The persisted fence (a log's EPOCH file): checksummed, so a flipped digit is damage rather than
// another (lower) fence; missing while the log holds segments is damage too, never "0" (a node
// that forgot its fence would take a deposed writer's writes). With a fenceFloor (the cluster's
// records) the fence is restored; without one the log does not open. Epochs are validated.
import { mkdtemp, readFile, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeDisk, systemClock } from '../../src/io/index.js';
import { RecoveryMetrics } from '../../src/recovery/index.js';
import { BadRequestError, FenceFileDamagedError, FencedError, LogStores, PeerHandlers, UnknownLogError, encodeFence } from '../../src/replication/index.js';
import { format } from '../../src/wal/index.js';

const LOG = 'orders';
let dataDir: string;
const opened: LogStores[] = [];

function logStores(fenceFloor?: (log: string) => Promise<number>): LogStores {
  const logs = new LogStores({
    dataDir, backupRetentionCount: 0, entryBytesMax: 1 << 20, logger: pino({ level: 'silent' }), metrics: new RecoveryMetrics(), disk: nodeDisk, clock: systemClock,
    ...(fenceFloor ? { fenceFloor } : {}),
  });
  opened.push(logs);
  return logs;
}

async function writeOneEntry(logs: LogStores, epoch: number): Promise<void> {
  const { frame } = format.encodeEntry({ index: 1, timestampMs: 1, flags: 0, payload: Buffer.from('one') });
  await new PeerHandlers(logs, pino({ level: 'silent' })).replicate(LOG, epoch, { segmentId: 1, firstIndex: 1, createdMs: 1 }, [frame], 1);
}

const epochFile = (): string => join(dataDir, 'logs', LOG, 'EPOCH');

beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'wal-fence-'));
});
afterEach(async () => {
  for (const logs of opened.splice(0)) await logs.closeAll();
  await rm(dataDir, { recursive: true, force: true });
});

describe('the EPOCH file', () => {
  it('is written with a checksum and read back', async () => {
    const logs = logStores();
    await writeOneEntry(logs, 7);
    expect(await readFile(epochFile(), 'utf8')).toBe(encodeFence(7).toString());
    await logs.closeAll();
    expect(await logStores().fencedEpoch(LOG)).toBe(7);
  });

  it('a flipped digit fails the checksum: damage, not a lower fence', async () => {
    await writeOneEntry(logStores(), 17);
    for (const logs of opened.splice(0)) await logs.closeAll();
    const text = await readFile(epochFile(), 'utf8');
    await writeFile(epochFile(), text.replace(/^17/, '13'));
    await expect(logStores().fencedEpoch(LOG)).rejects.toBeInstanceOf(FenceFileDamagedError);
  });

  it('the older format (digits alone) is still read', async () => {
    await writeOneEntry(logStores(), 5);
    for (const logs of opened.splice(0)) await logs.closeAll();
    await writeFile(epochFile(), '9\n');
    expect(await logStores().fencedEpoch(LOG)).toBe(9);
  });

  it('missing while the log holds segments: the log does not open without the cluster\'s records', async () => {
    await writeOneEntry(logStores(), 12);
    for (const logs of opened.splice(0)) await logs.closeAll();
    await unlink(epochFile());
    await expect(logStores().fencedEpoch(LOG)).rejects.toThrow(/EPOCH is missing/);
  });

  it('missing: restored from the cluster\'s records, and an epoch below them is fenced', async () => {
    await writeOneEntry(logStores(), 12);
    for (const logs of opened.splice(0)) await logs.closeAll();
    await unlink(epochFile());
    const logs = logStores(async () => 12);
    expect(await logs.fencedEpoch(LOG)).toBe(12);
    expect(await readFile(epochFile(), 'utf8')).toBe(encodeFence(12).toString());
    await expect(logs.withEpoch(LOG, 11, async () => 'written')).rejects.toBeInstanceOf(FencedError);
    expect(await logs.withEpoch(LOG, 12, async () => 'written')).toBe('written');
  });

  it('an older copy of the file put back is raised to the cluster\'s records, and the epochs between are fenced', async () => {
    await writeOneEntry(logStores(), 5);
    for (const logs of opened.splice(0)) await logs.closeAll();
    const older = await readFile(epochFile());
    await writeOneEntry(logStores(), 20); // fenced at 20 since
    for (const logs of opened.splice(0)) await logs.closeAll();
    await writeFile(epochFile(), older);
    const logs = logStores(async () => 20);
    expect(await logs.fencedEpoch(LOG)).toBe(20);
    expect(await readFile(epochFile(), 'utf8')).toBe(encodeFence(20).toString());
    await expect(logs.withEpoch(LOG, 19, async () => 'written')).rejects.toBeInstanceOf(FencedError);
  });

  it('a valid file is used when the cluster\'s records cannot be read', async () => {
    await writeOneEntry(logStores(), 9);
    for (const logs of opened.splice(0)) await logs.closeAll();
    const logs = logStores(async () => Promise.reject(new Error('etcd unreachable')));
    expect(await logs.fencedEpoch(LOG)).toBe(9);
  });

  it('deleted, garbled or older while the log is open: checkFences writes the fence in force again', async () => {
    const logs = logStores(async () => 14);
    await writeOneEntry(logs, 14);
    expect(await logs.checkFences()).toEqual([]);
    const older = encodeFence(3);
    for (const damage of [() => unlink(epochFile()), () => writeFile(epochFile(), 'x4 0000\n'), () => writeFile(epochFile(), older)]) {
      await damage();
      expect(await logs.checkFences()).toEqual([LOG]);
      expect(await readFile(epochFile(), 'utf8')).toBe(encodeFence(14).toString());
    }
    // A restart finds the fence: a deposed writer's epoch is refused.
    await logs.closeAll();
    const restarted = logStores(async () => 0);
    await expect(restarted.withEpoch(LOG, 13, async () => 'written')).rejects.toBeInstanceOf(FencedError);
  });

  it('garbled or deleted while running, with no scrubber: the next Fence or Seal writes the fence in force again before acting', async () => {
    // No fenceFloor: a restart could not restore a lost file, so only the rewrite protects it.
    const logs = logStores();
    await writeOneEntry(logs, 21);
    const handlers = new PeerHandlers(logs, pino({ level: 'silent' }));
    const rewritten: string[] = [];
    logs.onFenceFileRewritten = (log) => rewritten.push(log);
    await writeFile(epochFile(), 'x1 0000\n');
    // The current writer fences again (its start, or another segment) at the same epoch.
    await handlers.fence(LOG, 1, 21);
    expect(await readFile(epochFile(), 'utf8')).toBe(encodeFence(21).toString());
    await unlink(epochFile());
    await handlers.seal(LOG, 1, 21, 1, '');
    expect(await readFile(epochFile(), 'utf8')).toBe(encodeFence(21).toString());
    expect(rewritten).toEqual([LOG, LOG]);
    // A restart finds the fence: a deposed writer's epoch is refused.
    await logs.closeAll();
    await expect(logStores().withEpoch(LOG, 20, async () => 'written')).rejects.toBeInstanceOf(FencedError);
  });

  it('opened while the cluster\'s records could not be read: checkFences raises the fence to them later', async () => {
    await writeOneEntry(logStores(), 4);
    for (const logs of opened.splice(0)) await logs.closeAll();
    let etcdUp = false;
    const logs = logStores(async () => (etcdUp ? 30 : Promise.reject(new Error('etcd unreachable'))));
    expect(await logs.fencedEpoch(LOG)).toBe(4);
    etcdUp = true;
    expect(await logs.checkFences()).toEqual([LOG]);
    expect(await logs.fencedEpoch(LOG)).toBe(30);
    expect(await readFile(epochFile(), 'utf8')).toBe(encodeFence(30).toString());
    await expect(logs.withEpoch(LOG, 29, async () => 'written')).rejects.toBeInstanceOf(FencedError);
  });

  it('a fresh log with no segment starts unfenced', async () => {
    expect(await logStores().fencedEpoch(LOG)).toBe(0);
  });

  it('epochs out of range are refused before anything is written', async () => {
    const logs = logStores();
    for (const epoch of [0, -1, 1.5, Number.NaN, 2 ** 53, Number.MAX_VALUE]) {
      await expect(logs.withEpoch(LOG, epoch, async () => 'written')).rejects.toBeInstanceOf(BadRequestError);
    }
    expect(await logs.fencedEpoch(LOG)).toBe(0);
  });
});

describe('writer calls on a log this node does not keep (finding 8, 10)', () => {
  it('create nothing when the epoch is invalid or the cluster has no such log; a created log directory is fsynced into its parents', async () => {
    const synced: string[] = [];
    const disk = Object.assign(Object.create(nodeDisk) as typeof nodeDisk, { fsyncDir: async (dir: string) => (synced.push(dir), nodeDisk.fsyncDir(dir)) });
    const known = new Set(['known']);
    const logs = new LogStores({ dataDir, backupRetentionCount: 0, entryBytesMax: 1 << 20, logger: pino({ level: 'silent' }), metrics: new RecoveryMetrics(), disk, clock: systemClock, mayCreate: async (log) => known.has(log) });
    opened.push(logs);
    const handlers = new PeerHandlers(logs, pino({ level: 'silent' }));
    await expect(handlers.fence('nobody', 1, 0)).rejects.toBeInstanceOf(BadRequestError);
    await expect(handlers.fence('nobody', 1, 5)).rejects.toBeInstanceOf(UnknownLogError);
    await expect(handlers.seal('nobody', 1, 5, 0, '')).rejects.toBeInstanceOf(UnknownLogError);
    const { frame } = format.encodeEntry({ index: 1, timestampMs: 1, flags: 0, payload: Buffer.from('one') });
    await expect(handlers.replicate('nobody', 5, { segmentId: 1, firstIndex: 1, createdMs: 1 }, [frame], 1)).rejects.toBeInstanceOf(UnknownLogError);
    await expect(readdir(join(dataDir, 'logs'))).rejects.toMatchObject({ code: 'ENOENT' });

    // A log the cluster has is created by its writer's Fence (the fence must hold), and made durable.
    await handlers.fence('known', 1, 5);
    expect(await readdir(join(dataDir, 'logs'))).toEqual(['known']);
    expect(synced).toEqual(expect.arrayContaining([join(dataDir, 'logs'), dataDir]));
  });
});
