// Errors of the io layer, declared together and matched with instanceof (or by their node:fs
// code, which DiskError carries like node:fs's own errors).

/** An error shaped like node:fs's, for Disk implementations that are not node:fs. */
export class DiskError extends Error {
  override readonly name = 'DiskError';
  constructor(readonly code: string, readonly syscall: string, readonly path: string) {
    super(`${code}: ${syscall} '${path}'`);
  }
}

/** The store's lock is held by another live process. */
export class LockHeldError extends Error {
  override readonly name = 'LockHeldError';
  readonly code = 'ELOCKED';
  constructor(readonly dir: string, readonly holder: string, readonly pid: number) {
    super(`store ${dir} is locked by ${holder}`);
  }
}
