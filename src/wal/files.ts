// The store's directory layout and its crash-safe file steps.
//
// Fault model: the process may die between any two system calls. Every replacement is
// write temp -> fsync -> rename -> fsync the directory, so a reader sees the old file or the new
// one, never a mix. Nothing is deleted that repair replaced: it is hard-linked or moved into
// quarantine/ first.
//
// Every file step goes through the layout's Disk (src/io): the real file system in production,
// an in-memory disk with faults under the simulator.
import { join } from 'node:path';
import { type Disk, type DiskFile, type DiskLock, errorCode } from '../io/index.js';
import { segmentFileName } from './format.js';
import { StoreLockedError } from './errors.js';

export const CATALOG_FILE = 'CATALOG';
export const REPAIR_INTENT_FILE = 'REPAIRING';
export const SEGMENTS_DIR = 'segments';
export const QUARANTINE_DIR = 'quarantine';
export const BACKUPS_DIR = 'backups';
export const TEMP_SUFFIX = '.tmp';

export class StoreLayout {
  readonly segmentsDir: string;
  readonly quarantineDir: string;
  readonly backupDir: string;
  readonly catalogPath: string;
  readonly repairIntentPath: string;

  /** disk: where every file of this store is read and written. */
  constructor(readonly disk: Disk, readonly dataDir: string, backupDir?: string) {
    this.segmentsDir = join(dataDir, SEGMENTS_DIR);
    this.quarantineDir = join(dataDir, QUARANTINE_DIR);
    this.backupDir = backupDir ?? join(dataDir, BACKUPS_DIR);
    this.catalogPath = join(dataDir, CATALOG_FILE);
    this.repairIntentPath = join(dataDir, REPAIR_INTENT_FILE);
  }

  segmentPath(segmentId: number): string {
    return join(this.segmentsDir, segmentFileName(segmentId));
  }

  /** Copy k (1-based) of a sealed segment's backup. */
  backupPath(segmentId: number, copy: number): string {
    return join(this.backupDir, String(copy), segmentFileName(segmentId));
  }
}

/** Writes all of bytes at position (a write may be short; the rest is written after it). */
export async function writeAll(file: Pick<DiskFile, 'write'>, bytes: Uint8Array, position: number): Promise<void> {
  let written = 0;
  while (written < bytes.byteLength) {
    const { bytesWritten } = await file.write(bytes, written, bytes.byteLength - written, position + written);
    if (bytesWritten <= 0) throw new Error(`wal: a write at offset ${position + written} made no progress`); // never spin
    written += bytesWritten;
  }
}

/** Creates or replaces path with bytes and fsyncs it (not atomic: see writeFileAtomic). */
export async function writeFileSynced(disk: Disk, path: string, bytes: Uint8Array): Promise<void> {
  const file = await disk.open(path, 'w');
  try {
    await writeAll(file, bytes, 0);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** Writes bytes to path atomically and durably. */
export async function writeFileAtomic(disk: Disk, path: string, dir: string, bytes: Uint8Array): Promise<void> {
  const temp = `${path}${TEMP_SUFFIX}`;
  await writeFileSynced(disk, temp, bytes);
  await disk.rename(temp, path);
  await disk.fsyncDir(dir);
}

/** Makes an existing file's bytes durable (after a copy). */
export async function syncFile(disk: Disk, path: string): Promise<void> {
  const file = await disk.open(path, 'r+');
  try {
    await file.sync();
  } finally {
    await file.close();
  }
}

export async function exists(disk: Disk, path: string): Promise<boolean> {
  return (await disk.stat(path)) !== undefined;
}

export async function fileByteLength(disk: Disk, path: string): Promise<number | undefined> {
  return (await disk.stat(path))?.byteLength;
}

/**
 * Keeps a file in quarantine before it is replaced or removed: hard link (cheap, atomic) when
 * `keepOriginal`, else rename. Returns the quarantine file name. Old quarantined copies of the
 * same file beyond `retention` are pruned, oldest first.
 */
export async function quarantineFile(
  layout: StoreLayout,
  path: string,
  label: string,
  options: { keepOriginal: boolean; retention: number; now: number },
): Promise<string> {
  const disk = layout.disk;
  await disk.mkdirp(layout.quarantineDir);
  const base = path.slice(path.lastIndexOf('/') + 1);
  const name = `${base}.${options.now}.${label}`;
  const target = join(layout.quarantineDir, name);
  if (options.keepOriginal) await disk.link(path, target);
  else await disk.rename(path, target);
  await disk.fsyncDir(layout.quarantineDir);
  await pruneQuarantine(layout, base, label, Math.max(1, options.retention));
  return name;
}

/** Keeps the newest `retention` quarantined copies of one file with one label. */
async function pruneQuarantine(layout: StoreLayout, base: string, label: string, retention: number): Promise<void> {
  const names = (await layout.disk.readdir(layout.quarantineDir)).filter((name) => name.startsWith(`${base}.`) && name.endsWith(`.${label}`)).sort();
  const excess = names.length - retention;
  for (let i = 0; i < excess; i += 1) {
    const name = names[i];
    if (name !== undefined) await layout.disk.unlink(join(layout.quarantineDir, name));
  }
}

/** Copies a byte range of a file into quarantine (torn tails, cut ranges). */
export async function quarantineBytes(layout: StoreLayout, name: string, bytes: Uint8Array): Promise<string> {
  await layout.disk.mkdirp(layout.quarantineDir);
  await writeFileAtomic(layout.disk, join(layout.quarantineDir, name), layout.quarantineDir, bytes);
  return name;
}

export async function readRange(file: Pick<DiskFile, 'read'>, offsetBytes: number, byteLength: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(byteLength);
  let filled = 0;
  while (filled < byteLength) {
    const { bytesRead } = await file.read(buf, filled, byteLength - filled, offsetBytes + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled === byteLength ? buf : buf.subarray(0, filled);
}

/**
 * Takes the store's lock: one writer process per store (the Disk takes it atomically; see
 * src/io/lock.ts for how a stale lock is told from a live one). A held lock is StoreLockedError.
 */
export async function lockStore(layout: StoreLayout): Promise<DiskLock> {
  try {
    return await layout.disk.lock(layout.dataDir);
  } catch (error) {
    if (errorCode(error) !== 'ELOCKED') throw error;
    const pid = (error as { pid?: unknown }).pid;
    throw new StoreLockedError(layout.dataDir, typeof pid === 'number' ? pid : -1, { cause: error });
  }
}
