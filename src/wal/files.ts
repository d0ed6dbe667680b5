// The store's directory layout and its crash-safe file steps.
//
// Fault model: the process may die between any two system calls. Every replacement is
// write temp -> fsync -> rename -> fsync the directory, so a reader sees the old file or the new
// one, never a mix. Nothing is deleted that repair replaced: it is hard-linked or moved into
// quarantine/ first.
import { constants } from 'node:fs';
import { type FileHandle, link, mkdir, open, readFile, rename, rm, stat, unlink, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { segmentFileName } from './format.js';
import { StoreLockedError } from './errors.js';

export const CATALOG_FILE = 'CATALOG';
export const LOCK_FILE = 'LOCK';
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
  readonly lockPath: string;
  readonly repairIntentPath: string;

  constructor(readonly dataDir: string, backupDir?: string) {
    this.segmentsDir = join(dataDir, SEGMENTS_DIR);
    this.quarantineDir = join(dataDir, QUARANTINE_DIR);
    this.backupDir = backupDir ?? join(dataDir, BACKUPS_DIR);
    this.catalogPath = join(dataDir, CATALOG_FILE);
    this.lockPath = join(dataDir, LOCK_FILE);
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

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function ensureDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
}

/** Writes bytes to path atomically and durably. */
export async function writeFileAtomic(path: string, dir: string, bytes: Uint8Array): Promise<void> {
  const temp = `${path}${TEMP_SUFFIX}`;
  const handle = await open(temp, 'w', 0o644);
  try {
    await handle.writeFile(bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, path);
  await fsyncDir(dir);
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (isNotFound(error)) return false;
    throw error;
  }
}

export function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

export async function fileByteLength(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
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
  await ensureDir(layout.quarantineDir);
  const base = path.slice(path.lastIndexOf('/') + 1);
  const name = `${base}.${options.now}.${label}`;
  const target = join(layout.quarantineDir, name);
  if (options.keepOriginal) await link(path, target);
  else await rename(path, target);
  await fsyncDir(layout.quarantineDir);
  await pruneQuarantine(layout, base, label, Math.max(1, options.retention));
  return name;
}

/** Keeps the newest `retention` quarantined copies of one file with one label. */
async function pruneQuarantine(layout: StoreLayout, base: string, label: string, retention: number): Promise<void> {
  const names = (await readdir(layout.quarantineDir)).filter((name) => name.startsWith(`${base}.`) && name.endsWith(`.${label}`)).sort();
  const excess = names.length - retention;
  for (let i = 0; i < excess; i += 1) {
    const name = names[i];
    if (name !== undefined) await unlink(join(layout.quarantineDir, name));
  }
}

/** Copies a byte range of a file into quarantine (torn tails, cut ranges). */
export async function quarantineBytes(layout: StoreLayout, name: string, bytes: Uint8Array): Promise<string> {
  await ensureDir(layout.quarantineDir);
  await writeFileAtomic(join(layout.quarantineDir, name), layout.quarantineDir, bytes);
  return name;
}

export async function readRange(handle: FileHandle, offsetBytes: number, byteLength: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(byteLength);
  let filled = 0;
  while (filled < byteLength) {
    const { bytesRead } = await handle.read(buf, filled, byteLength - filled, offsetBytes + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled === byteLength ? buf : buf.subarray(0, filled);
}

// ---------------------------------------------------------------------------------------------
// The lock: one writer process per store. The file holds the holder's pid and a token unique to
// that process. A lock whose holder is gone (kill -9) is taken over; so is one that names this
// process's pid with another token: a previous incarnation with the same pid (a container's
// node is always PID 1, so after a restart the stale lock names "1" again).

const PROCESS_TOKEN = randomUUID();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function acquireLock(layout: StoreLayout): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      await writeFile(layout.lockPath, `${process.pid} ${PROCESS_TOKEN}\n`, { flag: 'wx' });
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const [pidText, token] = (await readFile(layout.lockPath, 'utf8').catch(() => '')).trim().split(/\s+/);
    const holder = Number.parseInt(pidText ?? '', 10);
    const held = Number.isInteger(holder) && holder > 0 && (holder === process.pid ? token === PROCESS_TOKEN : pidAlive(holder));
    if (held) throw new StoreLockedError(layout.dataDir, holder);
    await rm(layout.lockPath, { force: true });
  }
  throw new StoreLockedError(layout.dataDir, -1);
}

export async function releaseLock(layout: StoreLayout): Promise<void> {
  const [pidText, token] = (await readFile(layout.lockPath, 'utf8').catch(() => '')).trim().split(/\s+/);
  // Only our own lock: never remove one another process took over meanwhile.
  if (Number(pidText) === process.pid && token === PROCESS_TOKEN) await rm(layout.lockPath, { force: true });
}
