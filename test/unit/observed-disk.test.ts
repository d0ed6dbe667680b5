// observedDisk (src/io/observed-disk.ts): device errors (EIO and kin) reach the observer and are
// rethrown unchanged; answers such as ENOENT do not count; fdatasync and reads are timed.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Disk, type DiskFile, nodeDisk, systemClock } from '../../src/io/index.js';
import { observedDisk } from '../../src/io/observed-disk.js';

function recorder(): { latencies: string[]; errors: string[]; observer: Parameters<typeof observedDisk>[1] } {
  const latencies: string[] = [];
  const errors: string[] = [];
  return { latencies, errors, observer: { latency: (kind) => void latencies.push(kind), ioError: (code) => void errors.push(code) } };
}

describe('observedDisk', () => {
  it('an EIO from fdatasync is counted and rethrown; ENOENT on open is not a device error', async () => {
    const eio = Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
    const failing: DiskFile = { ...({} as DiskFile), datasync: () => Promise.reject(eio), close: async () => undefined };
    const disk: Disk = Object.assign(Object.create(nodeDisk) as Disk, { open: async () => failing });
    const r = recorder();
    const file = await observedDisk(disk, r.observer, systemClock).open('/x', 'r');
    await expect(file.datasync()).rejects.toBe(eio);
    expect(r.errors).toEqual(['EIO']);
    const real = observedDisk(nodeDisk, r.observer, systemClock);
    await expect(real.open('/nonexistent/file', 'r')).rejects.toMatchObject({ code: 'ENOENT' });
    expect(r.errors).toEqual(['EIO']);
  });

  it('fdatasync and reads on a real file are timed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'observed-'));
    try {
      const r = recorder();
      const disk = observedDisk(nodeDisk, r.observer, systemClock);
      const file = await disk.open(join(dir, 'f'), 'w');
      await file.write(Buffer.from('abc'), 0, 3, 0);
      await file.datasync();
      await file.close();
      const reading = await disk.open(join(dir, 'f'), 'r');
      await reading.read(Buffer.alloc(3), 0, 3, 0);
      await reading.close();
      expect(r.latencies).toEqual(['fdatasync', 'read']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
