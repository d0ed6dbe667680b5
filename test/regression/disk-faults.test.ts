// The store on a simulated disk that fails the way real disks do: EIO on fdatasync (with Linux's
// post-2018 semantics: the dirty pages are dropped, a later fdatasync succeeds without them),
// ENOSPC, latent sector errors (a sector that fails every read until rewritten) and a catalog
// write that fails after a segment was put in place. Each was found by a simulator seed (see
// docs/SIMULATION.md, "Defects the simulator found"); the tests are named by the fault.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/io/index.js';
import { HEALTHY_DISK, SimFileSystem } from '../../src/sim/disk.js';
import { SimLoop, type SimProcess } from '../../src/sim/loop.js';
import { CorruptEntryError, StoreWriteError, WalStore, type WalOptions, format } from '../../src/wal/index.js';

const silent = pino({ level: 'silent' });
const DIR = '/store';

interface Rig {
  readonly loop: SimLoop;
  readonly fs: SimFileSystem;
  /** Opens the store as a new process (the previous one is dead after a crash). */
  open(options?: WalOptions): Promise<WalStore>;
  /** Runs the loop until work settles. */
  drive<T>(work: Promise<T>): Promise<T>;
}

function rig(): Rig {
  const loop = new SimLoop();
  const fs = new SimFileSystem('n1', new SeededRandom(7));
  let incarnation = 0;
  let process: SimProcess | undefined;
  const drive = async <T>(work: Promise<T>): Promise<T> => {
    let done = false;
    const result = work.finally(() => (done = true));
    result.catch(() => undefined); // awaited below; not unhandled meanwhile
    while (!done) await loop.run(loop.nowMs + 100, () => done);
    return result;
  };
  const open = (options: WalOptions = {}): Promise<WalStore> => {
    if (process) process.alive = false;
    process = { name: `p${(incarnation += 1)}`, incarnation, alive: true };
    return drive(WalStore.open(DIR, { disk: fs.diskFor(loop, process), clock: loop.clockFor(process), logger: silent, segmentBytesMax: 4096, recovery: { backupRetentionCount: 1 }, ...options }));
  };
  return { loop, fs, open, drive };
}

async function payloads(r: Rig, store: WalStore): Promise<string[]> {
  const out: string[] = [];
  for (let index = store.firstIndex; index <= store.lastIndex; index += 1) out.push((await r.drive(store.read(index))).payload.toString());
  return out;
}

describe('disk faults under the store', () => {
  it('a failed fdatasync is never acknowledged, the store keeps going, and a crash keeps exactly the acknowledged entries (sim seed 10001)', async () => {
    const r = rig();
    const store = await r.open();
    await r.drive(store.append(Buffer.from('a')));
    r.fs.failNext('sync', '.wal');
    const failed = await r.drive(store.append(Buffer.from('b'))).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(StoreWriteError);
    // Not refused until a restart: the next append goes through, at the index b never got.
    expect(await r.drive(store.append(Buffer.from('c')))).toEqual({ firstIndex: 2, lastIndex: 2 });
    expect(await payloads(r, store)).toEqual(['a', 'c']);
    // The disk dropped b's pages; a crash must not bring back anything but a and c, in order.
    r.fs.crash('keep-all');
    const reopened = await r.open();
    expect(await payloads(r, reopened)).toEqual(['a', 'c']);
  });

  it('a full disk fails appends cleanly, and appends work again once space returns, without a restart', async () => {
    const r = rig();
    const store = await r.open();
    await r.drive(store.append(Buffer.from('before')));
    r.fs.faults = { ...HEALTHY_DISK, full: true };
    const failed = await r.drive(store.append(Buffer.from('while-full'))).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(StoreWriteError);
    expect((failed as Error).message).toContain('ENOSPC');
    expect(store.failed).toBe(false);
    r.fs.faults = HEALTHY_DISK;
    await r.drive(store.append(Buffer.from('after')));
    await r.drive(store.close());
    const reopened = await r.open();
    expect(await payloads(r, reopened)).toEqual(['before', 'after']);
  });

  it('a latent sector error in CATALOG does not stop the store from opening: the catalog is rebuilt (sim seed 10002)', async () => {
    const r = rig();
    const store = await r.open();
    for (let i = 0; i < 30; i += 1) await r.drive(store.append(Buffer.from(`entry-${i}-${'x'.repeat(100)}`)));
    await r.drive(store.close());
    expect(r.fs.failSector(`${DIR}/CATALOG`, 0)).toBe(true);
    const reopened = await r.open();
    expect(reopened.lastIndex).toBe(30);
    expect((await r.drive(reopened.read(30))).payload.toString()).toBe(`entry-29-${'x'.repeat(100)}`);
  });

  it('a latent sector error in a sealed segment reads as damage, not as an I/O error, and repair rewrites it (sim seeds 10004, 10007)', async () => {
    const r = rig();
    const store = await r.open();
    for (let i = 1; i <= 40; i += 1) await r.drive(store.append(Buffer.from(`entry-${i}-${'x'.repeat(100)}`)));
    await r.drive(store.close()); // backups of sealed segments written
    const reopened = await r.open();
    const segment = reopened.segmentRecords()[0] as { segmentId: number; firstIndex: number };
    const path = `${DIR}/segments/${format.segmentFileName(segment.segmentId)}`;
    // The sector holding the first entry (the header is the first 128 bytes).
    expect(r.fs.failSector(path, format.SEGMENT_HEADER_BYTES + 10)).toBe(true);
    const error = await r.drive(reopened.read(segment.firstIndex)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CorruptEntryError);
    const inspection = await r.drive(reopened.checkSealedSegment(segment.segmentId));
    expect(inspection.findings.length).toBeGreaterThan(0);
    const repair = await r.drive(reopened.repairSealedSegment(segment.segmentId, { strategy: 'partial', dryRun: false, sources: [] }));
    expect(repair.outcome).toBe('done');
    expect((await r.drive(reopened.read(segment.firstIndex))).payload.toString()).toBe(`entry-1-${'x'.repeat(100)}`);
  });

  it('an installed segment is served only once a durable catalog lists it: a crash at any point, or a failed catalog write, never forgets a segment the store served (sim seed 10001)', async () => {
    const r = rig();
    const replica: WalOptions = { allowSegmentGaps: true, sealOnClose: false, segmentBytesMax: 64 * 1024 };
    const frames = (first: number, last: number): Buffer[] =>
      Array.from({ length: last - first + 1 }, (_, i) => format.encodeEntry({ index: first + i, timestampMs: 1, flags: 0, payload: Buffer.from(`e${first + i}`) }).frame);
    // A sealed copy of segment 3 (indices 11..15) made by another store, to install.
    const maker: SimProcess = { name: 'maker', incarnation: 1, alive: true };
    const other = await r.drive(WalStore.open('/other', { disk: r.fs.diskFor(r.loop, maker), clock: r.loop.clockFor(maker), logger: silent, ...replica }));
    await r.drive(other.appendFrames({ segmentId: 3, firstIndex: 11, createdMs: 1 }, frames(11, 15)));
    await r.drive(other.sealSegment(3, 15));
    await r.drive(other.appendFrames({ segmentId: 4, firstIndex: 16, createdMs: 1 }, frames(16, 20)));
    await r.drive(other.sealSegment(4, 20));
    await r.drive(other.close());
    const disk = r.fs.diskFor(r.loop, maker);
    const incoming = async (): Promise<string> => {
      await r.drive(disk.copyFile(`/other/segments/${format.segmentFileName(3)}`, `${DIR}/incoming.wal`));
      return `${DIR}/incoming.wal`;
    };
    const incoming4 = async (): Promise<string> => {
      await r.drive(disk.copyFile(`/other/segments/${format.segmentFileName(4)}`, `${DIR}/incoming4.wal`));
      return `${DIR}/incoming4.wal`;
    };
    let store = await r.open(replica);
    await r.drive(store.appendFrames({ segmentId: 1, firstIndex: 1, createdMs: 1 }, frames(1, 5)));
    await r.drive(store.sealSegment(1, 5));

    // A crash the moment the store first serves it (its catalog write may still be in flight).
    const install = store.installSealedSegment(3, await incoming());
    install.catch(() => undefined);
    while (!store.segmentRecord(3)) await r.loop.run(r.loop.nowMs + 0.05);
    r.fs.crash('lose-unsynced');
    store = await r.open(replica);
    expect(store.segmentRecord(3)?.lastIndex).toBe(15);

    // A catalog write that fails: the segment is not served (or, if it is, it survives a crash).
    r.fs.failNext('sync', '/CATALOG.tmp');
    await r.drive(store.installSealedSegment(4, await incoming4())).catch(() => undefined);
    const served = store.segmentRecord(4);
    r.fs.crash('lose-unsynced');
    store = await r.open(replica);
    if (served) expect(store.segmentRecord(4)?.lastIndex).toBe(20);
  });
});

describe('requests delivered twice, late (network duplication and reordering)', () => {
  it('a Replicate delivered again after newer ones appends nothing and changes no entry, and a repeated Seal is idempotent', async () => {
    const r = rig();
    const store = await r.open({ allowSegmentGaps: true, sealOnClose: false, segmentBytesMax: 64 * 1024 });
    const frames = (first: number, last: number): Buffer[] =>
      Array.from({ length: last - first + 1 }, (_, i) => format.encodeEntry({ index: first + i, timestampMs: 1, flags: 0, payload: Buffer.from(`e${first + i}`) }).frame);
    const start = { segmentId: 1, firstIndex: 1, createdMs: 1 };
    await r.drive(store.appendFrames(start, frames(1, 3)));
    await r.drive(store.appendFrames(start, frames(4, 6)));
    expect(await r.drive(store.appendFrames(start, frames(1, 3)))).toEqual({ firstIndex: 7, lastIndex: 6 });
    expect(store.lastIndex).toBe(6);
    const sealed = await r.drive(store.sealSegment(1, 6));
    expect(await r.drive(store.sealSegment(1, 6))).toEqual(sealed);
    await expect(r.drive(store.appendFrames(start, frames(4, 6)))).rejects.toThrow(/already sealed/);
    expect(await payloads(r, store)).toEqual(['e1', 'e2', 'e3', 'e4', 'e5', 'e6']);
  });
});
