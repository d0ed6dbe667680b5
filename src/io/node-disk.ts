// The production Disk: node:fs, nothing added. See disk.ts for the contract.
import { constants } from 'node:fs';
import { type FileHandle, link, mkdir, mkdtemp, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { type Disk, type DiskFile, type DiskLock, type DiskStat, type OpenMode } from './disk.js';
import { acquireDirLock } from './lock.js';

const OPEN_FLAGS: Readonly<Record<OpenMode, number>> = {
  r: constants.O_RDONLY,
  'r+': constants.O_RDWR,
  w: constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC,
  wx: constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL,
};

/** Bytes a copy moves per read (copyFile). */
const COPY_CHUNK_BYTES = 1024 * 1024;

/**
 * Opens path and refuses anything but a regular file. O_NONBLOCK (ignored by regular files) keeps a
 * FIFO or a device put where a store file belongs from blocking the open, or a read, for ever.
 */
async function openRegular(path: string, mode: OpenMode): Promise<FileHandle> {
  const notRegular = (): Error => Object.assign(new Error(`${path} is not a regular file`), { code: 'EFTYPE', path });
  let handle: FileHandle;
  try {
    handle = await open(path, OPEN_FLAGS[mode] | constants.O_NONBLOCK, 0o644);
  } catch (error) {
    // ENXIO: a FIFO opened for writing with no reader (not a device error for the I/O metrics).
    if ((error as NodeJS.ErrnoException).code === 'ENXIO') throw notRegular();
    throw error;
  }
  try {
    if (!(await handle.stat()).isFile()) throw notRegular();
  } catch (error) {
    await handle.close();
    throw error;
  }
  return handle;
}

class NodeFile implements DiskFile {
  constructor(private readonly handle: FileHandle) {}
  read(buf: Uint8Array, offset: number, byteLength: number, position: number): Promise<{ bytesRead: number }> {
    return this.handle.read(buf, offset, byteLength, position);
  }
  write(buf: Uint8Array, offset: number, byteLength: number, position: number): Promise<{ bytesWritten: number }> {
    return this.handle.write(buf, offset, byteLength, position);
  }
  truncate(byteLength: number): Promise<void> {
    return this.handle.truncate(byteLength);
  }
  datasync(): Promise<void> {
    return this.handle.datasync();
  }
  sync(): Promise<void> {
    return this.handle.sync();
  }
  async byteLength(): Promise<number> {
    return (await this.handle.stat()).size;
  }
  close(): Promise<void> {
    return this.handle.close();
  }
}

export class NodeDisk implements Disk {
  async open(path: string, mode: OpenMode): Promise<DiskFile> {
    return new NodeFile(await openRegular(path, mode));
  }
  async stat(path: string): Promise<DiskStat | undefined> {
    try {
      const info = await stat(path);
      return { byteLength: info.size, isDirectory: info.isDirectory() };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }
  async readFile(path: string): Promise<Buffer> {
    const handle = await openRegular(path, 'r');
    try {
      return await handle.readFile();
    } finally {
      await handle.close();
    }
  }
  rename(from: string, to: string): Promise<void> {
    return rename(from, to);
  }
  link(from: string, to: string): Promise<void> {
    return link(from, to);
  }
  unlink(path: string): Promise<void> {
    return unlink(path);
  }
  remove(path: string): Promise<void> {
    return rm(path, { recursive: true, force: true });
  }
  async mkdirp(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
  }
  readdir(dir: string): Promise<string[]> {
    return readdir(dir);
  }
  async fsyncDir(dir: string): Promise<void> {
    const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
  /**
   * Copies through handles that openRegular checked (fs.copyFile opens its paths blocking: a FIFO
   * as source or target hung the copy and pinned a libuv thread). to is created or truncated.
   */
  async copyFile(from: string, to: string): Promise<void> {
    const source = await openRegular(from, 'r');
    let target: FileHandle;
    try {
      target = await openRegular(to, 'w');
    } catch (error) {
      await source.close();
      throw error;
    }
    // Each stream closes its handle when it ends or fails. A copy that fails removes what it wrote,
    // as fs.copyFile does: a part copy left by ENOSPC kept the disk full (appends failed) for good.
    try {
      await pipeline(source.createReadStream({ highWaterMark: COPY_CHUNK_BYTES }), target.createWriteStream());
    } catch (error) {
      await unlink(to).catch(() => undefined);
      throw error;
    }
  }
  mkdtemp(prefix: string): Promise<string> {
    return mkdtemp(prefix);
  }
  lock(dir: string): Promise<DiskLock> {
    return acquireDirLock(this, dir);
  }
  /** Opened (and checked, as open does) on the first chunk asked for; the handle closes with the stream. */
  async *readChunks(path: string, chunkBytes: number): AsyncIterable<Buffer> {
    const handle = await openRegular(path, 'r');
    yield* handle.createReadStream({ highWaterMark: chunkBytes }) as AsyncIterable<Buffer>;
  }
}

/** The one production disk (stateless). */
export const nodeDisk: Disk = new NodeDisk();
