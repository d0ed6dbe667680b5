// Reads past latent sector errors. A disk sector that went bad fails every read that touches it
// with EIO until it is rewritten. Failing the whole read would make one bad sector hide every
// entry of a segment (a read index is built by one scan) and make the segment unrepairable
// (repair reads the damaged copy to find what to rebuild). So the store reads through this
// wrapper: a read that fails with EIO is retried sector by sector, and a sector that still
// fails reads as zeros. Zeros never pass a frame's header check, a segment header's, a
// trailer's or the catalog's checksum, so the entries in that sector are found damaged, exactly
// as if the sector had been zeroed, and go to the same repair (which writes a new file: the
// rename leaves the bad sector behind). Nothing read is trusted before its checksum passes.
//
// Fault model: EIO on read, per 512-byte sector, persistent until rewritten. Any other error
// (EBADF, ENOENT, ...) is passed through unchanged.
import { type Disk, type DiskFile, type DiskLock, type DiskStat, type OpenMode, errorCode } from '../io/index.js';

/** The unit a read is retried in after EIO (the smallest sector size disks report). */
export const READ_RETRY_BYTES = 512;

/** Told of each range read as zeros, so that the loss is logged, never silent. */
export type OnUnreadable = (path: string, offsetBytes: number, byteLength: number) => void;

export function readsPastBadSectors(disk: Disk, onUnreadable: OnUnreadable): Disk {
  return new SectorTolerantDisk(disk, onUnreadable);
}

class SectorTolerantDisk implements Disk {
  constructor(private readonly disk: Disk, private readonly onUnreadable: OnUnreadable) {}

  async open(path: string, mode: OpenMode): Promise<DiskFile> {
    return new SectorTolerantFile(await this.disk.open(path, mode), path, this.onUnreadable);
  }
  async readFile(path: string): Promise<Buffer> {
    try {
      return await this.disk.readFile(path);
    } catch (error) {
      if (errorCode(error) !== 'EIO') throw error;
    }
    const file = await this.open(path, 'r');
    try {
      const byteLength = await file.byteLength();
      const buf = Buffer.alloc(byteLength);
      const { bytesRead } = await file.read(buf, 0, byteLength, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await file.close();
    }
  }
  stat(path: string): Promise<DiskStat | undefined> {
    return this.disk.stat(path);
  }
  rename(from: string, to: string): Promise<void> {
    return this.disk.rename(from, to);
  }
  link(from: string, to: string): Promise<void> {
    return this.disk.link(from, to);
  }
  unlink(path: string): Promise<void> {
    return this.disk.unlink(path);
  }
  remove(path: string): Promise<void> {
    return this.disk.remove(path);
  }
  mkdirp(dir: string): Promise<void> {
    return this.disk.mkdirp(dir);
  }
  readdir(dir: string): Promise<string[]> {
    return this.disk.readdir(dir);
  }
  fsyncDir(dir: string): Promise<void> {
    return this.disk.fsyncDir(dir);
  }
  copyFile(from: string, to: string): Promise<void> {
    return this.disk.copyFile(from, to);
  }
  mkdtemp(prefix: string): Promise<string> {
    return this.disk.mkdtemp(prefix);
  }
  lock(dir: string): Promise<DiskLock> {
    return this.disk.lock(dir);
  }
  readChunks(path: string, chunkBytes: number): AsyncIterable<Buffer> {
    return this.disk.readChunks(path, chunkBytes);
  }
}

class SectorTolerantFile implements DiskFile {
  constructor(private readonly file: DiskFile, private readonly path: string, private readonly onUnreadable: OnUnreadable) {}

  async read(buf: Uint8Array, offset: number, byteLength: number, position: number): Promise<{ bytesRead: number }> {
    try {
      return await this.file.read(buf, offset, byteLength, position);
    } catch (error) {
      if (errorCode(error) !== 'EIO') throw error;
    }
    const wanted = Math.max(0, Math.min(byteLength, (await this.file.byteLength()) - position));
    let done = 0;
    while (done < wanted) {
      const at = position + done;
      const step = Math.min(wanted - done, READ_RETRY_BYTES - (at % READ_RETRY_BYTES));
      try {
        const { bytesRead } = await this.file.read(buf, offset + done, step, at);
        if (bytesRead === 0) break;
        done += bytesRead;
      } catch (error) {
        if (errorCode(error) !== 'EIO') throw error;
        buf.fill(0, offset + done, offset + done + step);
        this.onUnreadable(this.path, at, step);
        done += step;
      }
    }
    return { bytesRead: done };
  }
  write(buf: Uint8Array, offset: number, byteLength: number, position: number): Promise<{ bytesWritten: number }> {
    return this.file.write(buf, offset, byteLength, position);
  }
  truncate(byteLength: number): Promise<void> {
    return this.file.truncate(byteLength);
  }
  datasync(): Promise<void> {
    return this.file.datasync();
  }
  sync(): Promise<void> {
    return this.file.sync();
  }
  byteLength(): Promise<number> {
    return this.file.byteLength();
  }
  close(): Promise<void> {
    return this.file.close();
  }
}
