// The production Disk: node:fs, nothing added. See disk.ts for the contract.
import { constants, createReadStream } from 'node:fs';
import { type FileHandle, copyFile, link, mkdir, mkdtemp, open, readFile, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { type Disk, type DiskFile, type DiskLock, type DiskStat, type OpenMode } from './disk.js';
import { acquireDirLock } from './lock.js';

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
    return new NodeFile(await open(path, mode, 0o644));
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
  readFile(path: string): Promise<Buffer> {
    return readFile(path);
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
  copyFile(from: string, to: string): Promise<void> {
    return copyFile(from, to);
  }
  mkdtemp(prefix: string): Promise<string> {
    return mkdtemp(prefix);
  }
  lock(dir: string): Promise<DiskLock> {
    return acquireDirLock(this, dir);
  }
  readChunks(path: string, chunkBytes: number): AsyncIterable<Buffer> {
    return createReadStream(path, { highWaterMark: chunkBytes }) as AsyncIterable<Buffer>;
  }
}

/** The one production disk (stateless). */
export const nodeDisk: Disk = new NodeDisk();
