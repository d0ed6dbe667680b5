// The simulated disk's fault model, checked against what POSIX promises: what was synced
// survives a crash, what was not may not, and names need their directory synced.
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/io/index.js';
import { HEALTHY_DISK, SimFileSystem } from '../../src/sim/disk.js';
import { SimLoop, type SimProcess } from '../../src/sim/loop.js';

function setup(seed = 1): { loop: SimLoop; fs: SimFileSystem; proc: SimProcess } {
  return { loop: new SimLoop(), fs: new SimFileSystem('n1', new SeededRandom(seed)), proc: { name: 'p', incarnation: 1, alive: true } };
}

/** Runs the loop until work settles. */
async function drive<T>(loop: SimLoop, work: Promise<T>): Promise<T> {
  let done = false;
  const result = work.finally(() => (done = true));
  result.catch(() => undefined); // awaited below; not unhandled meanwhile
  while (!done) await loop.run(loop.nowMs + 100, () => done);
  return result;
}

describe('simulated disk', () => {
  it('crash after datasync keeps the synced bytes and loses the unsynced ones (lose-unsynced)', async () => {
    const { loop, fs, proc } = setup();
    const disk = fs.diskFor(loop, proc);
    await drive(loop, (async () => {
      await disk.mkdirp('/d');
      const f = await disk.open('/d/a', 'w');
      await f.write(Buffer.from('synced'), 0, 6, 0);
      await f.datasync();
      await disk.fsyncDir('/d');
      await f.write(Buffer.from('-lost'), 0, 5, 6);
    })());
    expect(fs.bytesOf('/d/a')?.toString()).toBe('synced-lost');
    fs.crash('lose-unsynced');
    expect(fs.bytesOf('/d/a')?.toString()).toBe('synced');
  });

  it('a file created without fsync of its directory is gone after a crash, even when its data was synced', async () => {
    const { loop, fs, proc } = setup();
    const disk = fs.diskFor(loop, proc);
    await drive(loop, (async () => {
      await disk.mkdirp('/d');
      const f = await disk.open('/d/b', 'w');
      await f.write(Buffer.from('data'), 0, 4, 0);
      await f.sync();
    })());
    fs.crash('keep-all');
    expect(fs.files('/d')).toEqual([]);
  });

  it('a rename not followed by fsync of the directory is undone by a crash', async () => {
    const { loop, fs, proc } = setup();
    const disk = fs.diskFor(loop, proc);
    await drive(loop, (async () => {
      await disk.mkdirp('/d');
      for (const [name, text] of [['/d/x', 'old'], ['/d/x.tmp', 'new']] as const) {
        const f = await disk.open(name, 'w');
        await f.write(Buffer.from(text), 0, text.length, 0);
        await f.sync();
      }
      await disk.fsyncDir('/d');
      await disk.rename('/d/x.tmp', '/d/x');
    })());
    expect(fs.bytesOf('/d/x')?.toString()).toBe('new');
    fs.crash('lose-unsynced');
    expect(fs.bytesOf('/d/x')?.toString()).toBe('old');
    expect(fs.bytesOf('/d/x.tmp')?.toString()).toBe('new');
  });

  it('a torn write keeps whole sectors only', async () => {
    for (let seed = 1; seed <= 20; seed += 1) {
      const { loop, fs, proc } = setup(seed);
      const disk = fs.diskFor(loop, proc);
      const payload = Buffer.alloc(2048, 7);
      await drive(loop, (async () => {
        await disk.mkdirp('/d');
        const f = await disk.open('/d/t', 'w');
        await f.sync();
        await disk.fsyncDir('/d');
        await f.write(payload, 0, payload.byteLength, 0);
      })());
      fs.crash('torn-sector');
      const after = fs.bytesOf('/d/t') as Buffer;
      expect(after.byteLength % 512).toBe(0);
      expect(after.every((b) => b === 7)).toBe(true);
    }
  });

  it('the lock is exclusive between live processes and freed when its holder dies', async () => {
    const { loop, fs, proc } = setup();
    const other: SimProcess = { name: 'q', incarnation: 1, alive: true };
    await drive(loop, fs.diskFor(loop, proc).mkdirp('/d'));
    await drive(loop, fs.diskFor(loop, proc).lock('/d'));
    await expect(drive(loop, fs.diskFor(loop, other).lock('/d'))).rejects.toMatchObject({ code: 'ELOCKED' });
    proc.alive = false;
    fs.crash('lose-unsynced');
    await expect(drive(loop, fs.diskFor(loop, other).lock('/d'))).resolves.toBeDefined();
  });

  it('operations of a killed process never complete', async () => {
    const { loop, fs, proc } = setup();
    const disk = fs.diskFor(loop, proc);
    let finished = false;
    void disk.mkdirp('/d').then(() => (finished = true));
    proc.alive = false;
    await loop.run(1_000);
    expect(finished).toBe(false);
    expect(fs.stat('/d')).toBeUndefined();
  });

  /** A synced file /d/f holding text. */
  async function syncedFile(loop: SimLoop, fs: SimFileSystem, proc: SimProcess, text: string): Promise<void> {
    const disk = fs.diskFor(loop, proc);
    await drive(loop, (async () => {
      await disk.mkdirp('/d');
      const f = await disk.open('/d/f', 'w');
      await f.write(Buffer.from(text), 0, text.length, 0);
      await f.sync();
      await f.close();
      await disk.fsyncDir('/d');
    })());
  }

  it('a failed fdatasync drops the dirty pages: reads still see them, the next fdatasync succeeds, a crash loses them (fsyncgate)', async () => {
    const { loop, fs, proc } = setup();
    await syncedFile(loop, fs, proc, 'synced');
    const f = await drive(loop, fs.diskFor(loop, proc).open('/d/f', 'r+'));
    await drive(loop, f.write(Buffer.from('-dropped'), 0, 8, 6));
    fs.failNext('sync', '/d/f');
    await expect(drive(loop, f.datasync())).rejects.toMatchObject({ code: 'EIO' });
    expect(fs.bytesOf('/d/f')?.toString()).toBe('synced-dropped');
    await drive(loop, f.datasync());
    fs.crash('keep-all');
    expect(fs.bytesOf('/d/f')?.toString()).toBe('synced');
  });

  it('a latent sector error fails every read of that sector until the sector is rewritten, and survives a crash', async () => {
    const { loop, fs, proc } = setup();
    await syncedFile(loop, fs, proc, 'x'.repeat(1500));
    expect(fs.failSector('/d/f', 700)).toBe(true);
    fs.crash('lose-unsynced');
    const disk = fs.diskFor(loop, proc);
    const f = await drive(loop, disk.open('/d/f', 'r+'));
    const buf = Buffer.alloc(100);
    await expect(drive(loop, f.read(buf, 0, 100, 0))).resolves.toEqual({ bytesRead: 100 });
    await expect(drive(loop, f.read(buf, 0, 100, 600))).rejects.toMatchObject({ code: 'EIO' });
    await expect(drive(loop, disk.readFile('/d/f'))).rejects.toMatchObject({ code: 'EIO' });
    await drive(loop, f.write(Buffer.alloc(512, 1), 0, 512, 512));
    await expect(drive(loop, f.read(buf, 0, 100, 600))).resolves.toEqual({ bytesRead: 100 });
  });

  it('a full disk fails writes that need space with ENOSPC, and overwrites in place still work', async () => {
    const { loop, fs, proc } = setup();
    await syncedFile(loop, fs, proc, 'abcdef');
    const f = await drive(loop, fs.diskFor(loop, proc).open('/d/f', 'r+'));
    fs.faults = { ...HEALTHY_DISK, full: true };
    await expect(drive(loop, f.write(Buffer.from('gh'), 0, 2, 6))).rejects.toMatchObject({ code: 'ENOSPC' });
    await drive(loop, f.write(Buffer.from('AB'), 0, 2, 0));
    fs.faults = HEALTHY_DISK;
    await drive(loop, f.write(Buffer.from('gh'), 0, 2, 6));
    expect(fs.bytesOf('/d/f')?.toString()).toBe('ABcdefgh');
  });

  it('a lost write is acknowledged and synced, yet a crash or a dropped cache shows the old bytes', async () => {
    const { loop, fs, proc } = setup();
    await syncedFile(loop, fs, proc, 'old-old-old');
    fs.faults = { ...HEALTHY_DISK, lostWriteProbability: 1, silentWritePaths: (p) => p === '/d/f' };
    const f = await drive(loop, fs.diskFor(loop, proc).open('/d/f', 'r+'));
    await drive(loop, f.write(Buffer.from('new'), 0, 3, 0));
    await drive(loop, f.datasync());
    expect(fs.bytesOf('/d/f')?.toString()).toBe('new-old-old');
    fs.dropCaches();
    expect(fs.bytesOf('/d/f')?.toString()).toBe('old-old-old');
  });

  it('a misdirected write leaves its own place unwritten and lands elsewhere on the medium', async () => {
    const { loop, fs, proc } = setup();
    const disk = fs.diskFor(loop, proc);
    await syncedFile(loop, fs, proc, 'a'.repeat(2048));
    fs.faults = { ...HEALTHY_DISK, misdirectedWriteProbability: 1, silentWritePaths: (p) => p === '/d/f' };
    const f = await drive(loop, disk.open('/d/f', 'r+'));
    await drive(loop, f.write(Buffer.alloc(512, 98), 0, 512, 0));
    await drive(loop, f.datasync());
    fs.crash('lose-unsynced');
    const after = fs.bytesOf('/d/f') as Buffer;
    expect(after.subarray(0, 512).every((b) => b === 97)).toBe(true);
    expect(after.filter((b) => b === 98).byteLength).toBe(512);
  });
});
