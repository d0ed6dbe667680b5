// The disk faults a simulation run injects into one node's (or the single store's) file system
// for a while, drawn from the run's seeded random: EIO on writes and fdatasyncs (with Linux's
// post-2018 semantics: a failed fdatasync drops the dirty pages), a full disk (ENOSPC), latent
// sector errors, and lost or misdirected writes. Which files the silent faults (lost and
// misdirected writes, latent sector errors) may hit is the caller's: they must never take the
// last good copy of an acknowledged entry (that is out of the fault model, DESIGN.md section 7).
import type { SeededRandom } from '../io/index.js';
import { HEALTHY_DISK, SECTOR_BYTES, type SimFileSystem } from './disk.js';
import type { SimLoop } from './loop.js';

export const DISK_FAULT_KINDS = ['disk-eio', 'disk-full', 'latent-sector-error', 'lost-writes'] as const;
export type DiskFaultKind = (typeof DISK_FAULT_KINDS)[number];

export interface DiskFaultTarget {
  /** A name for the trace ('n1', 'store'). */
  readonly label: string;
  readonly fs: SimFileSystem;
  /** Files lost and misdirected writes may hit and land in, now. */
  readonly silentWritePaths: (path: string) => boolean;
  /** Files a latent sector error may hit, now. */
  readonly latentErrorFiles: () => ReadonlyArray<{ readonly path: string; readonly byteLength: number }>;
  /** Called for a file a silent fault damaged (to space damage to copies of one segment). */
  readonly damaged: (path: string) => void;
  /** Called once the disk is healthy again (a supervisor restarting what failed for good). */
  readonly healed?: () => void;
}

export interface DiskFaultContext {
  readonly loop: SimLoop;
  readonly random: SeededRandom;
  readonly trace: (line: string) => void;
  readonly countFault: (kind: string) => void;
}

/** Injects one disk fault of kind on target, healed after a while. */
export function injectDiskFault(kind: DiskFaultKind, target: DiskFaultTarget, ctx: DiskFaultContext): void {
  const { fs, label } = target;
  const { loop, random, trace, countFault } = ctx;
  const heal = (after: number, what: string): void => {
    loop.schedule(after, () => {
      trace(`${label} disk healed (${what})`);
      fs.faults = HEALTHY_DISK;
      if (what === 'lost-writes') fs.dropCaches(); // what never reached the medium shows now
      target.healed?.();
    });
  };
  switch (kind) {
    case 'disk-eio': {
      const write = random.next() * 0.2;
      const sync = random.next() * 0.3;
      countFault('disk-eio');
      trace(`${label} disk eio write=${write.toFixed(3)} sync=${sync.toFixed(3)}`);
      fs.faults = { ...fs.faults, writeEioProbability: write, syncEioProbability: sync };
      heal(100 + random.next() * 2_000, kind);
      return;
    }
    case 'disk-full': {
      countFault('disk-full');
      trace(`${label} disk full`);
      fs.faults = { ...fs.faults, full: true };
      heal(100 + random.next() * 3_000, kind);
      return;
    }
    case 'latent-sector-error': {
      const files = target.latentErrorFiles();
      if (files.length === 0) return;
      const file = random.pick(files);
      const offset = random.int(Math.max(1, file.byteLength));
      if (!fs.failSector(file.path, offset)) return;
      target.damaged(file.path);
      countFault('latent-sector-error');
      trace(`${label} latent sector error ${file.path} sector ${Math.floor(offset / SECTOR_BYTES)}`);
      return;
    }
    case 'lost-writes': {
      const lost = random.next() * 0.3;
      const misdirected = random.next() * 0.3;
      countFault('lost-writes');
      trace(`${label} disk loses writes lost=${lost.toFixed(3)} misdirected=${misdirected.toFixed(3)}`);
      fs.faults = { ...fs.faults, lostWriteProbability: lost, misdirectedWriteProbability: misdirected, silentWritePaths: target.silentWritePaths, onSilentFault: target.damaged };
      heal(100 + random.next() * 2_000, kind);
      return;
    }
  }
}
