// A simulated disk: one node's file system in memory, with the faults real disks and file
// systems have.
//
// Durability model (POSIX, strict): a write is volatile until datasync/sync of its file; a name
// created, renamed, linked or unlinked is volatile until fsyncDir of its directory. A crash
// keeps only durable state plus, per file, what the fault model lets through of its unsynced
// writes: nothing, a prefix of them, a prefix torn at a sector boundary, or any subset of pages
// (written back out of order). Directories themselves are created durably (mkdirp) to keep the
// model small.
//
// Faults on the medium (injected by the simulator, not by crashes): bit flips and zeroed
// sectors in a file's durable bytes (bit rot, misdirected writes). Every operation takes
// virtual time drawn from the seed, so completions of concurrent operations interleave
// differently from seed to seed.
import { dirname } from 'node:path';
import { type Disk, type DiskFile, type DiskLock, type DiskStat, DiskError, type OpenMode, SeededRandom } from '../io/index.js';
import type { SimLoop, SimProcess } from './loop.js';

export const SECTOR_BYTES = 512;
export const PAGE_BYTES = 4096;

type PendingOp =
  | { readonly kind: 'write'; readonly position: number; readonly bytes: Buffer; readonly fate?: WriteFate }
  | { readonly kind: 'truncate'; readonly byteLength: number };

/**
 * Where an acknowledged write really goes when it is written back: nowhere (a lost write), or to
 * another place (a misdirected write: another offset of the same file, or another file). The
 * page cache shows the bytes where they were written until a crash drops it.
 */
type WriteFate = { readonly kind: 'lost' } | { readonly kind: 'misdirected'; readonly inode: Inode; readonly position: number };

/** Applies one op to a buffer (growing it as needed); returns the buffer that holds the result. */
function applyOp(target: Buffer, op: PendingOp): Buffer {
  if (op.kind === 'truncate') {
    const next = Buffer.alloc(op.byteLength);
    target.copy(next, 0, 0, Math.min(op.byteLength, target.byteLength));
    return next;
  }
  return writeInto(target, op.position, op.bytes);
}

function writeInto(target: Buffer, position: number, bytes: Buffer): Buffer {
  let result = target;
  const end = position + bytes.byteLength;
  if (end > result.byteLength) {
    result = Buffer.alloc(end);
    target.copy(result);
  }
  bytes.copy(result, position);
  return result;
}

class Inode {
  data: Buffer = Buffer.alloc(0);
  durable: Buffer = Buffer.alloc(0);
  pending: PendingOp[] = [];
  /** Sectors of the medium that fail every read (latent sector errors) until rewritten. */
  badSectors: Set<number> | undefined;

  write(position: number, bytes: Buffer, fate?: WriteFate): void {
    this.data = writeInto(this.data, position, bytes);
    // Reads of the rewritten sector come from the page cache now (and the drive remaps it on
    // write-back): a simplification that ignores a crash before the write-back.
    if (!fate) this.clearBadSectors(position, bytes.byteLength);
    this.pending.push(fate ? { kind: 'write', position, bytes: Buffer.from(bytes), fate } : { kind: 'write', position, bytes: Buffer.from(bytes) });
  }

  truncate(byteLength: number): void {
    this.data = applyOp(this.data, { kind: 'truncate', byteLength });
    this.pending.push({ kind: 'truncate', byteLength });
  }

  /** The unsynced ops reach the medium, in order (a lost write nowhere, a misdirected one elsewhere). */
  sync(): void {
    for (const op of this.pending) this.writeBack(op);
    this.pending = [];
  }

  /**
   * A failed fdatasync (Linux since 4.13, "fsyncgate"): the dirty pages are marked clean without
   * reaching the medium. They stay readable in the page cache, a later fdatasync succeeds
   * without writing them, and a crash takes them away.
   */
  dropUnsynced(): void {
    this.pending = [];
  }

  private writeBack(op: PendingOp): void {
    if (op.kind === 'write' && op.fate?.kind === 'lost') return;
    if (op.kind === 'write' && op.fate?.kind === 'misdirected') {
      const target = op.fate.inode;
      target.durable = writeInto(target.durable, op.fate.position, op.bytes);
      target.clearBadSectors(op.fate.position, op.bytes.byteLength);
      return;
    }
    this.durable = applyOp(this.durable, op);
    if (op.kind === 'write') this.clearBadSectors(op.position, op.bytes.byteLength);
  }

  /** A write over a bad sector remaps it (as drives do): its reads work again. */
  clearBadSectors(position: number, byteLength: number): void {
    if (!this.badSectors) return;
    for (let s = Math.floor(position / SECTOR_BYTES); s * SECTOR_BYTES < position + byteLength; s += 1) this.badSectors.delete(s);
    if (this.badSectors.size === 0) this.badSectors = undefined;
  }

  /** True when a read of [position, position + byteLength) touches a bad sector. */
  readFails(position: number, byteLength: number): boolean {
    if (!this.badSectors || byteLength <= 0) return false;
    for (let s = Math.floor(position / SECTOR_BYTES); s * SECTOR_BYTES < position + byteLength; s += 1) if (this.badSectors.has(s)) return true;
    return false;
  }
}

export type CrashMode = 'lose-unsynced' | 'keep-prefix' | 'torn-sector' | 'out-of-order-pages' | 'keep-all';
export const CRASH_MODES: readonly CrashMode[] = ['lose-unsynced', 'keep-prefix', 'torn-sector', 'out-of-order-pages', 'keep-all'];

export interface DiskLatency {
  readonly opMsMax: number;
  readonly syncMsMin: number;
  readonly syncMsMax: number;
}

export const DEFAULT_DISK_LATENCY: DiskLatency = Object.freeze({ opMsMax: 0.2, syncMsMin: 0.5, syncMsMax: 4 });

/**
 * Faults of the disk's operations, set by the simulator for a while. Each is drawn from the
 * file system's seeded random, only while its probability is above zero.
 */
export interface DiskFaults {
  /** A write fails with EIO, writing nothing. */
  readonly writeEioProbability: number;
  /** An fdatasync/fsync fails with EIO; the file's unsynced writes are dropped (Inode.dropUnsynced). */
  readonly syncEioProbability: number;
  /** The disk is full: a write that needs new space (past a file's end) and a copy fail with ENOSPC. */
  readonly full: boolean;
  /** A write is acknowledged (and synced) but never reaches the medium. */
  readonly lostWriteProbability: number;
  /** A write reaches the medium at another offset of its file, or in another file. */
  readonly misdirectedWriteProbability: number;
  /** The files lost and misdirected writes may hit, and land in. */
  readonly silentWritePaths: (path: string) => boolean;
  /** Told of each file a lost or misdirected write damages (the intended one, and where it landed). */
  readonly onSilentFault?: (path: string) => void;
}

export const HEALTHY_DISK: DiskFaults = Object.freeze({ writeEioProbability: 0, syncEioProbability: 0, full: false, lostWriteProbability: 0, misdirectedWriteProbability: 0, silentWritePaths: () => false });

/** One node's file system; survives the node's crashes (that is the point). */
export class SimFileSystem {
  private names = new Map<string, Inode>();
  private durableNames = new Map<string, Inode>();
  private readonly dirs = new Set<string>(['/']);
  /** The process holding each locked directory. */
  private readonly locks = new Map<string, SimProcess>();
  private tempCounter = 0;

  /** Changed by the simulator to model a disk that turns slow (a dying disk, a noisy neighbour). */
  latency: DiskLatency;
  /** Changed by the simulator: EIO, ENOSPC, lost and misdirected writes (see DiskFaults). */
  faults: DiskFaults = HEALTHY_DISK;

  constructor(readonly node: string, private readonly random: SeededRandom, latency: DiskLatency = DEFAULT_DISK_LATENCY) {
    this.latency = latency;
  }

  /** The Disk as process owner sees it: ops of a dead process never complete. */
  diskFor(loop: SimLoop, owner: SimProcess): Disk {
    return new SimDisk(this, loop, owner, this.random);
  }

  // --- what the simulator does to the medium ------------------------------------------------

  /**
   * The machine loses power: every name and byte not made durable is subject to the crash
   * mode. Locks held by dead processes go with them.
   */
  crash(mode: CrashMode): void {
    const survivors = new Map<string, Inode>();
    const seen = new Set<Inode>();
    for (const [path, inode] of this.durableNames) {
      survivors.set(path, inode);
      if (seen.has(inode)) continue;
      seen.add(inode);
      inode.data = this.afterCrash(inode, mode);
      inode.durable = Buffer.from(inode.data);
      inode.pending = [];
    }
    this.names = survivors;
    this.durableNames = new Map(survivors);
    for (const [dir, holder] of this.locks) if (!holder.alive) this.locks.delete(dir);
  }

  private afterCrash(inode: Inode, mode: CrashMode): Buffer {
    // A lost or misdirected write that was not synced yet is taken to have reached nothing.
    const ops = inode.pending.filter((op) => op.kind !== 'write' || op.fate === undefined);
    if (ops.length === 0 || mode === 'lose-unsynced') return inode.durable;
    if (mode === 'keep-all' && ops.length === inode.pending.length) return inode.data;
    let result: Buffer = Buffer.from(inode.durable);
    const apply = (op: PendingOp): void => {
      result = applyOp(result, op);
    };
    if (mode === 'keep-all') {
      for (const op of ops) apply(op);
      return result;
    }
    if (mode === 'out-of-order-pages' && ops.every((op) => op.kind === 'write')) {
      // Each page of each unsynced write reaches the medium or not, independently.
      for (const op of ops) {
        if (op.kind !== 'write') continue;
        for (let from = 0; from < op.bytes.byteLength; ) {
          const pageEnd = Math.min(op.bytes.byteLength, (Math.floor((op.position + from) / PAGE_BYTES) + 1) * PAGE_BYTES - op.position);
          if (this.random.chance(0.5)) apply({ kind: 'write', position: op.position + from, bytes: op.bytes.subarray(from, pageEnd) });
          from = pageEnd;
        }
      }
      return result;
    }
    const kept = this.random.int(ops.length + 1);
    for (let i = 0; i < kept; i += 1) apply(ops[i] as PendingOp);
    const torn = ops[kept];
    if (mode === 'torn-sector' && torn?.kind === 'write' && torn.bytes.byteLength > 0) {
      const sectors = Math.ceil(torn.bytes.byteLength / SECTOR_BYTES);
      const keep = this.random.int(sectors) * SECTOR_BYTES;
      if (keep > 0) apply({ kind: 'write', position: torn.position, bytes: torn.bytes.subarray(0, keep) });
    }
    return result;
  }

  /**
   * The page cache drops its clean pages (memory pressure): later reads see the medium, so a
   * lost or misdirected write becomes visible without a crash. Dirty (unsynced) pages stay.
   */
  dropCaches(): void {
    for (const inode of new Set(this.names.values())) {
      let data: Buffer = Buffer.from(inode.durable);
      for (const op of inode.pending) data = applyOp(data, op);
      inode.data = data;
    }
  }

  /** A latent sector error: reads of the sector of path at offsetBytes fail with EIO until it is rewritten. */
  failSector(path: string, offsetBytes: number): boolean {
    const inode = this.names.get(path);
    if (!inode || offsetBytes >= inode.data.byteLength) return false;
    (inode.badSectors ??= new Set()).add(Math.floor(offsetBytes / SECTOR_BYTES));
    return true;
  }

  /** Flips one bit of a file's bytes (volatile and durable): bit rot. False if no such file. */
  flipBit(path: string, offsetBytes: number, bit: number): boolean {
    const inode = this.names.get(path);
    if (!inode || offsetBytes >= inode.data.byteLength) return false;
    for (const buf of [inode.data, inode.durable]) if (offsetBytes < buf.byteLength) buf[offsetBytes] = (buf[offsetBytes] as number) ^ (1 << bit);
    return true;
  }

  /** Zeroes a sector-aligned range of a file: a lost or misdirected write. */
  zeroSector(path: string, offsetBytes: number): boolean {
    const inode = this.names.get(path);
    if (!inode || offsetBytes >= inode.data.byteLength) return false;
    const start = Math.floor(offsetBytes / SECTOR_BYTES) * SECTOR_BYTES;
    for (const buf of [inode.data, inode.durable]) buf.fill(0, Math.min(start, buf.byteLength), Math.min(start + SECTOR_BYTES, buf.byteLength));
    return true;
  }

  /** Paths of the files that exist now, sorted (deterministic). */
  files(prefix = '/'): string[] {
    return [...this.names.keys()].filter((p) => p.startsWith(prefix)).sort();
  }

  bytesOf(path: string): Buffer | undefined {
    return this.names.get(path)?.data;
  }

  // --- faults of operations, drawn while DiskFaults asks for them ---------------------------

  private readonly failNexts: Array<{ readonly op: 'write' | 'sync'; readonly pathSuffix: string; readonly code: string }> = [];

  /** The next write or sync of a file whose name ends in pathSuffix fails with code (tests). */
  failNext(op: 'write' | 'sync', pathSuffix: string, code = 'EIO'): void {
    this.failNexts.push({ op, pathSuffix, code });
  }

  private takeFailNext(op: 'write' | 'sync', path: string): string | undefined {
    const at = this.failNexts.findIndex((f) => f.op === op && path.endsWith(f.pathSuffix));
    return at < 0 ? undefined : this.failNexts.splice(at, 1)[0]?.code;
  }

  /** The error a write of [position, +byteLength) to inode gets now, if any. */
  writeError(inode: Inode, path: string, position: number, byteLength: number): DiskError | undefined {
    const once = this.takeFailNext('write', path);
    if (once !== undefined) return new DiskError(once, 'write', path);
    if (this.faults.full && position + byteLength > inode.data.byteLength) return new DiskError('ENOSPC', 'write', path);
    if (this.faults.writeEioProbability > 0 && this.random.chance(this.faults.writeEioProbability)) return new DiskError('EIO', 'write', path);
    return undefined;
  }

  syncFails(path: string): boolean {
    if (this.takeFailNext('sync', path) !== undefined) return true;
    return this.faults.syncEioProbability > 0 && this.random.chance(this.faults.syncEioProbability);
  }

  /** Where a write to path really goes: undefined for where it was written. */
  fateOf(self: Inode, path: string, position: number, byteLength: number): WriteFate | undefined {
    const f = this.faults;
    if (f.lostWriteProbability + f.misdirectedWriteProbability === 0 || !f.silentWritePaths(path)) return undefined;
    if (f.lostWriteProbability > 0 && this.random.chance(f.lostWriteProbability)) {
      f.onSilentFault?.(path);
      return { kind: 'lost' };
    }
    if (f.misdirectedWriteProbability === 0 || !this.random.chance(f.misdirectedWriteProbability)) return undefined;
    // Another file of the ones the fault may hit (or this one), at a sector-aligned offset
    // within what it holds on the medium, other than the intended one.
    const targets = this.files().filter((p) => p !== path && f.silentWritePaths(p) && (this.names.get(p)?.durable.byteLength ?? 0) > 0);
    const targetPath = targets.length > 0 && this.random.chance(0.5) ? this.random.pick(targets) : path;
    const inode = targetPath === path ? self : (this.names.get(targetPath) as Inode);
    const sectors = Math.max(1, Math.ceil(Math.max(inode.durable.byteLength, position + byteLength) / SECTOR_BYTES));
    let positionElsewhere = this.random.int(sectors) * SECTOR_BYTES + (position % SECTOR_BYTES);
    if (targetPath === path && positionElsewhere === position) positionElsewhere += SECTOR_BYTES;
    f.onSilentFault?.(path);
    if (targetPath !== path) f.onSilentFault?.(targetPath);
    return { kind: 'misdirected', inode, position: positionElsewhere };
  }

  // --- the operations, without latency (SimDisk adds it) ------------------------------------

  inode(path: string, syscall: string): Inode {
    const inode = this.names.get(path);
    if (!inode) throw new DiskError('ENOENT', syscall, path);
    return inode;
  }

  create(path: string, mode: OpenMode): Inode {
    if (!this.dirs.has(dirname(path))) throw new DiskError('ENOENT', 'open', path);
    if (this.dirs.has(path)) throw new DiskError('EISDIR', 'open', path);
    const existing = this.names.get(path);
    if (mode === 'r' || mode === 'r+') {
      if (!existing) throw new DiskError('ENOENT', 'open', path);
      return existing;
    }
    if (existing && mode === 'wx') throw new DiskError('EEXIST', 'open', path);
    if (existing) {
      existing.truncate(0);
      return existing;
    }
    const inode = new Inode();
    this.names.set(path, inode);
    return inode;
  }

  stat(path: string): DiskStat | undefined {
    if (this.dirs.has(path)) return { byteLength: 0, isDirectory: true };
    const inode = this.names.get(path);
    return inode ? { byteLength: inode.data.byteLength, isDirectory: false } : undefined;
  }

  rename(from: string, to: string): void {
    const inode = this.inode(from, 'rename');
    if (!this.dirs.has(dirname(to))) throw new DiskError('ENOENT', 'rename', to);
    this.names.delete(from);
    this.names.set(to, inode);
  }

  link(from: string, to: string): void {
    const inode = this.inode(from, 'link');
    if (this.names.has(to)) throw new DiskError('EEXIST', 'link', to);
    if (!this.dirs.has(dirname(to))) throw new DiskError('ENOENT', 'link', to);
    this.names.set(to, inode);
  }

  unlink(path: string): void {
    this.inode(path, 'unlink');
    this.names.delete(path);
  }

  remove(path: string): void {
    for (const name of [...this.names.keys()]) if (name === path || name.startsWith(`${path}/`)) this.names.delete(name);
    for (const dir of [...this.dirs]) if (dir === path || dir.startsWith(`${path}/`)) this.dirs.delete(dir);
    // Removing a tree is made durable at once (only tests and temp directories use it).
    for (const name of [...this.durableNames.keys()]) if (name === path || name.startsWith(`${path}/`)) this.durableNames.delete(name);
  }

  mkdirp(dir: string): void {
    for (let d = dir; d !== '/' && !this.dirs.has(d); d = dirname(d)) {
      if (this.names.has(d)) throw new DiskError('ENOTDIR', 'mkdir', d);
      this.dirs.add(d);
    }
  }

  readdir(dir: string): string[] {
    if (!this.dirs.has(dir)) throw new DiskError('ENOENT', 'scandir', dir);
    const prefix = dir === '/' ? '/' : `${dir}/`;
    const names = new Set<string>();
    for (const path of [...this.names.keys(), ...this.dirs]) {
      if (path.startsWith(prefix) && path !== dir && !path.slice(prefix.length).includes('/')) names.add(path.slice(prefix.length));
    }
    return [...names].sort();
  }

  fsyncDir(dir: string): void {
    if (!this.dirs.has(dir)) throw new DiskError('ENOENT', 'fsync', dir);
    for (const path of [...this.durableNames.keys()]) if (dirname(path) === dir && !this.names.has(path)) this.durableNames.delete(path);
    for (const [path, inode] of this.names) if (dirname(path) === dir) this.durableNames.set(path, inode);
  }

  mkdtemp(prefix: string): string {
    const path = `${prefix}${(this.tempCounter += 1).toString(36).padStart(6, '0')}`;
    this.mkdirp(path);
    return path;
  }

  lock(dir: string, owner: SimProcess): void {
    const holder = this.locks.get(dir);
    if (holder && holder.alive && holder !== owner) {
      const error = new DiskError('ELOCKED', 'lock', dir) as DiskError & { holder: string; pid: number };
      error.holder = holder.name;
      error.pid = -1;
      throw error;
    }
    this.locks.set(dir, owner);
  }

  unlock(dir: string, owner: SimProcess): void {
    if (this.locks.get(dir) === owner) this.locks.delete(dir);
  }
}

class SimDisk implements Disk {
  constructor(
    private readonly fs: SimFileSystem,
    private readonly loop: SimLoop,
    private readonly owner: SimProcess,
    private readonly random: SeededRandom,
  ) {}

  /** Waits the op's latency, then runs it (a dead owner's op never completes). */
  async op<T>(fn: () => T, sync = false): Promise<T> {
    const latency = this.fs.latency;
    const ms = sync ? latency.syncMsMin + this.random.next() * (latency.syncMsMax - latency.syncMsMin) : this.random.next() * latency.opMsMax;
    await this.loop.sleep(ms, this.owner);
    return fn();
  }

  async open(path: string, mode: OpenMode): Promise<DiskFile> {
    const inode = await this.op(() => this.fs.create(path, mode));
    return new SimFile(this, this.fs, inode, path, mode === 'r');
  }
  stat(path: string): Promise<DiskStat | undefined> {
    return this.op(() => this.fs.stat(path));
  }
  readFile(path: string): Promise<Buffer> {
    return this.op(() => {
      if (this.fs.stat(path)?.isDirectory) throw new DiskError('EISDIR', 'read', path);
      const inode = this.fs.inode(path, 'open');
      if (inode.readFails(0, inode.data.byteLength)) throw new DiskError('EIO', 'read', path);
      return Buffer.from(inode.data);
    });
  }
  rename(from: string, to: string): Promise<void> {
    return this.op(() => this.fs.rename(from, to));
  }
  link(from: string, to: string): Promise<void> {
    return this.op(() => this.fs.link(from, to));
  }
  unlink(path: string): Promise<void> {
    return this.op(() => this.fs.unlink(path));
  }
  remove(path: string): Promise<void> {
    return this.op(() => this.fs.remove(path));
  }
  mkdirp(dir: string): Promise<void> {
    return this.op(() => this.fs.mkdirp(dir));
  }
  readdir(dir: string): Promise<string[]> {
    return this.op(() => this.fs.readdir(dir));
  }
  fsyncDir(dir: string): Promise<void> {
    return this.op(() => this.fs.fsyncDir(dir), true);
  }
  copyFile(from: string, to: string): Promise<void> {
    return this.op(() => {
      const source = this.fs.inode(from, 'copyfile');
      if (source.readFails(0, source.data.byteLength)) throw new DiskError('EIO', 'copyfile', from);
      if (this.fs.faults.full && source.data.byteLength > 0) throw new DiskError('ENOSPC', 'copyfile', to);
      const bytes = source.data;
      const inode = this.fs.create(to, 'w');
      inode.write(0, bytes);
    });
  }
  mkdtemp(prefix: string): Promise<string> {
    return this.op(() => this.fs.mkdtemp(prefix));
  }
  async lock(dir: string): Promise<DiskLock> {
    await this.op(() => this.fs.lock(dir, this.owner));
    return { release: () => this.op(() => this.fs.unlock(dir, this.owner)) };
  }
  async *readChunks(path: string, chunkBytes: number): AsyncIterable<Buffer> {
    const inode = await this.op(() => this.fs.inode(path, 'open'));
    const chunk = Math.max(1, chunkBytes);
    for (let offset = 0; offset < inode.data.byteLength; offset += chunk) {
      yield await this.op(() => {
        const end = Math.min(inode.data.byteLength, offset + chunk);
        if (inode.readFails(offset, end - offset)) throw new DiskError('EIO', 'read', path);
        return Buffer.from(inode.data.subarray(offset, end));
      });
    }
  }
}

class SimFile implements DiskFile {
  private closed = false;
  constructor(
    private readonly disk: SimDisk,
    private readonly fs: SimFileSystem,
    private readonly inode: Inode,
    /** The name it was opened by (for errors and for which faults may hit it). */
    private readonly path: string,
    private readonly readOnly: boolean,
  ) {}

  private check(syscall: string, writing: boolean): void {
    if (this.closed) throw new DiskError('EBADF', syscall, '(closed file)');
    if (writing && this.readOnly) throw new DiskError('EBADF', syscall, '(read-only file)');
  }

  read(buf: Uint8Array, offset: number, byteLength: number, position: number): Promise<{ bytesRead: number }> {
    return this.disk.op(() => {
      this.check('read', false);
      const data = this.inode.data;
      const n = Math.max(0, Math.min(byteLength, data.byteLength - position));
      if (this.inode.readFails(position, n)) throw new DiskError('EIO', 'read', this.path);
      if (n > 0) data.copy(buf, offset, position, position + n);
      return { bytesRead: n };
    });
  }
  write(buf: Uint8Array, offset: number, byteLength: number, position: number): Promise<{ bytesWritten: number }> {
    return this.disk.op(() => {
      this.check('write', true);
      const error = this.fs.writeError(this.inode, this.path, position, byteLength);
      if (error) throw error;
      this.inode.write(position, Buffer.from(buf.buffer, buf.byteOffset + offset, byteLength), this.fs.fateOf(this.inode, this.path, position, byteLength));
      return { bytesWritten: byteLength };
    });
  }
  truncate(byteLength: number): Promise<void> {
    return this.disk.op(() => {
      this.check('ftruncate', true);
      this.inode.truncate(byteLength);
    });
  }
  datasync(): Promise<void> {
    return this.disk.op(() => {
      this.check('fdatasync', false);
      this.syncOrFail('fdatasync');
    }, true);
  }
  sync(): Promise<void> {
    return this.disk.op(() => {
      this.check('fsync', false);
      this.syncOrFail('fsync');
    }, true);
  }
  private syncOrFail(syscall: string): void {
    if (this.fs.syncFails(this.path)) {
      this.inode.dropUnsynced();
      throw new DiskError('EIO', syscall, this.path);
    }
    this.inode.sync();
  }
  byteLength(): Promise<number> {
    return this.disk.op(() => {
      this.check('fstat', false);
      return this.inode.data.byteLength;
    });
  }
  close(): Promise<void> {
    return this.disk.op(() => {
      this.closed = true;
    });
  }
}
