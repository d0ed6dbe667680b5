// A Disk that reports what predictive scrubbing learns from (docs/SCRUBBING.md): the latency of
// every fdatasync and of every read, and every I/O error (EIO and kin; not ENOENT/EEXIST, which
// are answers, not faults). It adds one clock read and one callback per call, nothing else.
import { tracingEnabled, withSpan } from '../observability/tracing.js';
import type { Clock } from './clock.js';
import { type Disk, type DiskFile, errorCode } from './disk.js';

export interface DiskObserver {
  latency(kind: 'fdatasync' | 'read', ms: number): void;
  ioError(code: string): void;
}

/** Error codes that say the device failed (not that a name was absent or present). */
const DEVICE_ERROR_CODES: ReadonlySet<string> = new Set(['EIO', 'ENXIO', 'EROFS', 'EBADMSG', 'EUCLEAN', 'ENODEV']);

export function observedDisk(disk: Disk, observer: DiskObserver, clock: Pick<Clock, 'monotonicMs'>): Disk {
  const failed = (error: unknown): never => {
    const code = errorCode(error);
    if (code !== undefined && DEVICE_ERROR_CODES.has(code)) observer.ioError(code);
    throw error;
  };
  const timed = async <T>(kind: 'fdatasync' | 'read', call: () => Promise<T>): Promise<T> => {
    const began = clock.monotonicMs();
    const result = await call().catch(failed);
    observer.latency(kind, clock.monotonicMs() - began);
    return result;
  };
  const wrapFile = (file: DiskFile): DiskFile => ({
    read: (buf, offset, byteLength, position) => timed('read', () => file.read(buf, offset, byteLength, position)),
    write: (buf, offset, byteLength, position) => file.write(buf, offset, byteLength, position).catch(failed),
    truncate: (byteLength) => file.truncate(byteLength).catch(failed),
    datasync: () => timed('fdatasync', () => (tracingEnabled() ? withSpan('fdatasync', {}, () => file.datasync()) : file.datasync())),
    sync: () => timed('fdatasync', () => file.sync()),
    byteLength: () => file.byteLength(),
    close: () => file.close(),
  });
  return {
    ...bindAll(disk),
    open: async (path, mode) => wrapFile(await disk.open(path, mode).catch(failed)),
    readFile: (path) => timed('read', () => disk.readFile(path)),
  };
}

/** The disk's methods bound to it (a class instance's methods live on its prototype, not in a spread). */
function bindAll(disk: Disk): Disk {
  return {
    open: disk.open.bind(disk),
    stat: disk.stat.bind(disk),
    readFile: disk.readFile.bind(disk),
    rename: disk.rename.bind(disk),
    link: disk.link.bind(disk),
    unlink: disk.unlink.bind(disk),
    remove: disk.remove.bind(disk),
    mkdirp: disk.mkdirp.bind(disk),
    readdir: disk.readdir.bind(disk),
    fsyncDir: disk.fsyncDir.bind(disk),
    copyFile: disk.copyFile.bind(disk),
    mkdtemp: disk.mkdtemp.bind(disk),
    lock: disk.lock.bind(disk),
    readChunks: disk.readChunks.bind(disk),
  };
}
