// The store directory lock for node:fs: one process per store, taken atomically.
//
// The lock is the file LOCK holding "<pid> <token> <host>", where token is unique to this
// process. It is created by link(2) from a private candidate file, which fails with EEXIST when
// LOCK exists: of two processes racing for a free lock exactly one wins. A lock whose holder is
// gone (kill -9) is taken over by moving it aside with rename(2), which only one taker can do to
// a given file, and checking that what was moved is the stale lock that was judged (otherwise it
// is put back: it was a live holder's fresh lock).
//
// Liveness: on the same host, a pid that no longer runs is gone; a lock naming this process's pid
// with another token is a previous incarnation (a container's node is always PID 1). A lock
// written on another host (another container sharing the volume) cannot be checked and is
// treated as held: refusing is safe, taking over a live node's store is not. Remove LOCK by hand
// only when that host's node is known to be stopped.
//
// Nothing here is synced to disk: the lock excludes live processes, and link(2) and rename(2)
// are atomic for them in the page cache already. A crash that loses LOCK (or leaves it empty)
// loses the lock of a process that is gone, which the next opener would take over anyway. Two
// fsyncs here were most of the time of a clean open.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { type Disk, type DiskLock, errorCode } from './disk.js';
import { LockHeldError } from './errors.js';

export const LOCK_FILE = 'LOCK';
const PROCESS_TOKEN = randomUUID();
const TAKEOVER_ATTEMPTS_MAX = 3;

interface Holder {
  readonly pid: number;
  readonly token: string;
  readonly host: string;
}

function parseHolder(text: string): Holder | undefined {
  const [pidText, token, host] = text.trim().split(/\s+/);
  const pid = Number.parseInt(pidText ?? '', 10);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  // A lock without a token (written by hand or by other tooling) still names a pid: it is held
  // while that pid runs. The token only tells this process from an earlier one with its pid.
  return { pid, token: token ?? '', host: host ?? hostname() };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errorCode(error) === 'EPERM';
  }
}

function isLive(holder: Holder): boolean {
  if (holder.host !== hostname()) return true;
  if (holder.pid === process.pid) return holder.token === PROCESS_TOKEN;
  return pidAlive(holder.pid);
}

async function readOrUndefined(disk: Disk, path: string): Promise<string | undefined> {
  try {
    return (await disk.readFile(path)).toString('utf8');
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
}

export async function acquireDirLock(disk: Disk, dir: string): Promise<DiskLock> {
  const lockPath = join(dir, LOCK_FILE);
  const mine = `${process.pid} ${PROCESS_TOKEN} ${hostname()}\n`;
  const candidate = `${lockPath}.${PROCESS_TOKEN}.new`;
  const file = await disk.open(candidate, 'w');
  try {
    const bytes = Buffer.from(mine);
    await file.write(bytes, 0, bytes.byteLength, 0);
  } finally {
    await file.close();
  }
  try {
    for (let attempt = 0; attempt < TAKEOVER_ATTEMPTS_MAX; attempt += 1) {
      try {
        await disk.link(candidate, lockPath);
        return new HeldLock(disk, lockPath, mine);
      } catch (error) {
        if (errorCode(error) !== 'EEXIST') throw error;
      }
      const text = await readOrUndefined(disk, lockPath);
      if (text === undefined) continue; // released meanwhile
      const holder = parseHolder(text);
      if (holder && isLive(holder)) throw new LockHeldError(dir, `pid ${holder.pid} on ${holder.host}`, holder.pid);
      const aside = `${lockPath}.${PROCESS_TOKEN}.stale`;
      try {
        await disk.rename(lockPath, aside);
      } catch (error) {
        if (errorCode(error) === 'ENOENT') continue; // another taker moved it first
        throw error;
      }
      const moved = await readOrUndefined(disk, aside);
      if (moved !== text) {
        // A live holder's lock, taken between our read and our rename: give it back.
        await disk.link(aside, lockPath).catch(() => undefined);
        await disk.unlink(aside).catch(() => undefined);
        const fresh = parseHolder(moved ?? '');
        throw new LockHeldError(dir, fresh ? `pid ${fresh.pid} on ${fresh.host}` : 'another process', fresh?.pid ?? -1);
      }
      await disk.unlink(aside);
    }
    throw new LockHeldError(dir, 'another process (the lock kept changing hands)', -1);
  } finally {
    await disk.unlink(candidate).catch(() => undefined);
  }
}

class HeldLock implements DiskLock {
  private released = false;
  constructor(private readonly disk: Disk, private readonly lockPath: string, private readonly content: string) {}
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    // Only our own lock: never remove one another process took over meanwhile.
    if ((await readOrUndefined(this.disk, this.lockPath)) === this.content) {
      await this.disk.unlink(this.lockPath).catch(() => undefined);
    }
  }
}
