// Errors of the WAL store, declared together. Operating errors (damage, bad input, a missing
// directory) are these classes, with fields and a cause; they are matched with instanceof.
// Programmer errors are assertions and crash.
import type { Finding } from '../recovery/index.js';

export class WalError extends Error {
  override readonly name: string = 'WalError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`wal: ${message}`, options);
  }
}

/** The data directory does not exist (and creation was not asked for) or is not a directory. */
export class StoreNotFoundError extends WalError {
  override readonly name = 'StoreNotFoundError';
  constructor(readonly dataDir: string, options?: { cause?: unknown }) {
    super(`no WAL store at ${dataDir}`, options);
  }
}

/** Another live process holds the store's lock. */
export class StoreLockedError extends WalError {
  override readonly name = 'StoreLockedError';
  /** holderPid: -1 when the holder is unknown. cause: the Disk's lock error (its `holder` says where). */
  constructor(readonly dataDir: string, readonly holderPid: number, options?: { cause?: unknown }) {
    super(`store ${dataDir} is locked by process ${holderPid}`, options);
  }
}

export class InvalidOptionError extends WalError {
  override readonly name = 'InvalidOptionError';
  constructor(readonly option: string, message: string) {
    super(`option ${option}: ${message}`);
  }
}

export class EntryTooLargeError extends WalError {
  override readonly name = 'EntryTooLargeError';
  constructor(readonly payloadByteLength: number, readonly entryBytesMax: number) {
    super(`entry of ${payloadByteLength} bytes is larger than entryBytesMax ${entryBytesMax}`);
  }
}

export class IndexOutOfRangeError extends WalError {
  override readonly name = 'IndexOutOfRangeError';
  constructor(readonly entryIndex: number, readonly firstIndex: number, readonly lastIndex: number) {
    super(`index ${entryIndex} is outside the log (${firstIndex}..${lastIndex})`);
  }
}

/** The entry was given up by a repair (SkipCorrupted) and recorded as a hole. */
export class EntryLostError extends WalError {
  override readonly name = 'EntryLostError';
  constructor(readonly entryIndex: number, readonly segment: number, readonly reason: string) {
    super(`entry ${entryIndex} lost (hole recorded in segment ${segment}): ${reason}`);
  }
}

/** The entry's bytes on disk fail verification; it was not returned. */
export class CorruptEntryError extends WalError {
  override readonly name = 'CorruptEntryError';
  constructor(readonly entryIndex: number, readonly finding: Finding) {
    super(`entry ${entryIndex} is damaged: ${finding.detail}`);
  }
}

/** Open found damage that the configured strategy does not repair (or Halt was chosen). */
export class DamageFoundError extends WalError {
  override readonly name = 'DamageFoundError';
  constructor(readonly dataDir: string, readonly findings: readonly Finding[], readonly advice: string) {
    super(`store ${dataDir} has damage it will not repair by itself (${findings.length} finding(s)): ${advice}`);
  }
}

export class StoreClosedError extends WalError {
  override readonly name = 'StoreClosedError';
  constructor() {
    super('store is closed');
  }
}

/** A write or sync failed; the store refuses further writes until it is reopened (fsyncgate). */
export class StoreFailedError extends WalError {
  override readonly name = 'StoreFailedError';
  constructor(options: { cause: unknown }) {
    super('a write or sync failed; reopen the store to recover', options);
  }
}

/** A replicated write that does not fit this store's state; the store itself is fine. */
export class ReplicaRejectedError extends WalError {
  override readonly name = 'ReplicaRejectedError';
  constructor(readonly reason: 'segment-mismatch' | 'index-gap' | 'bad-frame' | 'missing-entries' | 'unknown-segment' | 'conflict' | 'below-committed' | 'aggregate-mismatch', message: string, readonly lastIndex: number) {
    super(message);
  }
}

/**
 * One repair attempt could not rebuild a segment (no verified copy, an unknown first index, a
 * rebuilt aggregate that does not match). Internal to the repair engine: it becomes a `failed`
 * SegmentRepair, never an exception to callers.
 */
export class UnrepairableError extends Error {
  override readonly name = 'UnrepairableError';
  /** Whether another attempt may succeed (a source may hold the copy next time). */
  constructor(message: string, readonly retryable: boolean) {
    super(message);
  }
}
/**
 * A write or fdatasync failed (EIO, ENOSPC): nothing of this request is durable, and the store
 * rolled its open segment back to its last sync and keeps going. The request may be retried.
 */
export class StoreWriteError extends WalError {
  override readonly name = 'StoreWriteError';
  constructor(options: { cause: unknown }) {
    super(`a write or sync failed (${errorCodeOf(options.cause) ?? 'I/O error'}); nothing of the request is durable, the store keeps going`, options);
  }
}

/**
 * A write failed after part of an append was made durable: a group commit that rolled over to a
 * new segment sealed the old one (with the first entries of this append) before creating the next
 * failed. Entries firstIndex..lastIndex are in the log; the rest are not. Not retryable as it is:
 * a retry would append the durable entries a second time.
 */
export class StorePartialWriteError extends WalError {
  override readonly name = 'StorePartialWriteError';
  constructor(readonly firstIndex: number, readonly lastIndex: number, options: { cause: unknown }) {
    super(`a write failed (${errorCodeOf(options.cause) ?? 'I/O error'}) after entries ${firstIndex}..${lastIndex} of this append were made durable; the rest were not`, options);
  }
}

/** Thrown by a group commit that made entries up to durableThrough durable before it failed. */
export class BatchPartlyDurableError extends Error {
  override readonly name = 'BatchPartlyDurableError';
  constructor(
    /** The last index made durable (sealed) by the batch. */
    readonly durableThrough: number,
    /** The ranges of the requests fully encoded before the failure, in order. */
    readonly results: readonly { firstIndex: number; lastIndex: number }[],
    /** The first index of the request being encoded when it failed (0: none). */
    readonly currentFirst: number,
    options: { cause: unknown },
  ) {
    super('a group commit failed after part of it was made durable', options);
  }
}

function errorCodeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}
