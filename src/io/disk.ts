// The disk seam: every byte the store, replication and repair code read or write goes through a
// Disk. Production wires NodeDisk (node:fs); the simulator wires an in-memory disk with a fault
// model (src/sim/disk.ts). The interface is deliberately small and fs-shaped so that code reads
// like ordinary file code, and so that what "durable" means is explicit: bytes written through a
// DiskFile are durable only after its datasync()/sync() returned; a created, renamed, linked or
// unlinked name is durable only after fsyncDir() of its directory returned.
//
// Errors follow node:fs: an Error with `code` ('ENOENT', 'EEXIST', 'EIO', 'ENOSPC', ...), so
// `isNotFound` and friends work on both implementations.

export interface DiskStat {
  readonly byteLength: number;
  readonly isDirectory: boolean;
}

/** An open file. Positions are absolute byte offsets; nothing depends on a file cursor. */
export interface DiskFile {
  /** Reads up to byteLength bytes at position into buf[offset..]; fewer only at end of file. */
  read(buf: Uint8Array, offset: number, byteLength: number, position: number): Promise<{ bytesRead: number }>;
  /** Writes bytes at position (extending the file as needed). */
  write(buf: Uint8Array, offset: number, byteLength: number, position: number): Promise<{ bytesWritten: number }>;
  truncate(byteLength: number): Promise<void>;
  /** Makes the file's data durable (fdatasync). */
  datasync(): Promise<void>;
  /** Makes the file's data and metadata durable (fsync). */
  sync(): Promise<void>;
  byteLength(): Promise<number>;
  close(): Promise<void>;
}

/**
 * 'r' read only; 'r+' read-write, must exist; 'w' create or truncate; 'wx' create, EEXIST if
 * the name exists.
 */
export type OpenMode = 'r' | 'r+' | 'w' | 'wx';

/** An exclusive hold on a store directory; released on release() or when the process dies. */
export interface DiskLock {
  release(): Promise<void>;
}

export interface Disk {
  open(path: string, mode: OpenMode): Promise<DiskFile>;
  /** undefined when nothing is at path. */
  stat(path: string): Promise<DiskStat | undefined>;
  readFile(path: string): Promise<Buffer>;
  /** Atomic replacement of `to` (POSIX rename). */
  rename(from: string, to: string): Promise<void>;
  /** Hard link; EEXIST when `to` exists. */
  link(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Removes a file or a whole directory tree; nothing at path is not an error. */
  remove(path: string): Promise<void>;
  mkdirp(dir: string): Promise<void>;
  /** Names in dir (not paths), in no particular order; ENOENT when dir does not exist. */
  readdir(dir: string): Promise<string[]>;
  /** Makes the directory's entries (creates, renames, unlinks) durable. */
  fsyncDir(dir: string): Promise<void>;
  /** Copies a file's bytes (not durable until the copy is synced); like open, refuses a source or target that is not a regular file. */
  copyFile(from: string, to: string): Promise<void>;
  /** Makes a new empty directory named prefix + something unique; returns its path. */
  mkdtemp(prefix: string): Promise<string>;
  /**
   * Takes the exclusive lock of a store directory, atomically: of two processes that try at once,
   * exactly one wins. Throws an error with code 'ELOCKED' and `holder` (a description) if held.
   */
  lock(dir: string): Promise<DiskLock>;
  /** Streams a file's bytes in chunks of at most chunkBytes (FetchSegment); like open, refuses what is not a regular file. */
  readChunks(path: string, chunkBytes: number): AsyncIterable<Buffer>;
}

export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

export function isNotFound(error: unknown): boolean {
  return errorCode(error) === 'ENOENT';
}

