// The one place where errors become CLI exit codes and the one line an operator reads.
// Errors are matched with instanceof (and commander's stable `code` field), never by message.
//
//   0  ok (also: help and version shown on request)
//   1  damage found, or damage not repaired
//   2  usage or environment error (bad option, missing directory, locked store, I/O failure)
import { CommanderError } from 'commander';
import { AppendRejectedError, ClusterUnreachableError } from '../client/index.js';
import { InvalidRecoveryConfigError } from '../recovery/index.js';
import {
  CorruptEntryError,
  DamageFoundError,
  EntryLostError,
  EntryTooLargeError,
  IndexOutOfRangeError,
  InvalidOptionError,
  StoreClosedError,
  StoreFailedError,
  StoreWriteError,
  StoreLockedError,
  StoreNotFoundError,
} from '../wal/index.js';

export const EXIT_OK = 0;
export const EXIT_DAMAGE = 1;
export const EXIT_USAGE = 2;
export type ExitCode = typeof EXIT_OK | typeof EXIT_DAMAGE | typeof EXIT_USAGE;

export const PROGRAM_NAME = 'wal-recovery';

/** Bad command-line input that commander itself cannot see (option combinations, ranges). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** --target was given, but the cluster client does not exist yet. */
export class ClusterNotBuiltError extends Error {
  override readonly name = 'ClusterNotBuiltError';
  constructor(readonly target: string, what = 'cluster mode is not built yet') {
    super(`--target ${target}: ${what}; use --data-dir DIR on a node's data directory (logs/<log>) with the node stopped`);
  }
}

/** A gRPC status from a node: DATA_LOSS is damage (1); every other failure is environmental (2). */
function isRemoteError(error: unknown): error is Error & { code: number; details: string } {
  return error instanceof Error && typeof (error as { code?: unknown }).code === 'number' && typeof (error as { details?: unknown }).details === 'string';
}

const DATA_LOSS = 15;

/** inspect --segment named a segment the store does not have. */
export class SegmentNotFoundError extends Error {
  override readonly name = 'SegmentNotFoundError';
  constructor(readonly segment: number, readonly dataDir: string) {
    super(`no segment ${segment} in ${dataDir}`);
  }
}

/** An append failed after some lines were durably appended; exit code and message follow the cause. */
export class PartialAppendError extends Error {
  override readonly name = 'PartialAppendError';
  constructor(readonly firstIndex: number, readonly lastIndex: number, cause: unknown) {
    super(`${messageOf(cause)} (indices ${firstIndex}..${lastIndex} were appended before it)`, { cause });
  }
}

/** The playground needs etcd on PATH (exit 2, like every usage or environment error). */
export class EtcdMissingError extends UsageError {
  constructor() {
    super('etcd was not found on PATH: install it (Debian/Ubuntu: apt-get install etcd-server) and try again');
  }
}

/** The reader of stdout went away (`dump | head`): not a failure of ours, stop quietly. */
export class OutputClosedError extends Error {
  override readonly name = 'OutputClosedError';
  constructor(options: { cause: unknown }) {
    super('standard output was closed by its reader', options);
  }
}

/** Help or version asked for: exit 0. */
const REQUESTED_COMMANDER_CODES: ReadonlySet<string> = new Set(['commander.helpDisplayed', 'commander.version']);
/** Commander already wrote what there is to say (help shown because no verb was given). */
const SILENT_COMMANDER_CODES: ReadonlySet<string> = new Set([...REQUESTED_COMMANDER_CODES, 'commander.help']);

function isSystemError(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string' && typeof (error as NodeJS.ErrnoException).syscall === 'string';
}

export function exitCodeOf(error: unknown): ExitCode {
  if (error instanceof PartialAppendError) return exitCodeOf(error.cause);
  // The client's refusal says what the node answered (a DATA_LOSS is damage, as above).
  if (error instanceof AppendRejectedError || error instanceof ClusterUnreachableError) return exitCodeOf(error.cause);
  if (error instanceof CommanderError) return REQUESTED_COMMANDER_CODES.has(error.code) ? EXIT_OK : EXIT_USAGE;
  if (error instanceof OutputClosedError) return EXIT_OK;
  if (error instanceof DamageFoundError || error instanceof CorruptEntryError || error instanceof EntryLostError) return EXIT_DAMAGE;
  if (isRemoteError(error)) return error.code === DATA_LOSS ? EXIT_DAMAGE : EXIT_USAGE;
  if (
    error instanceof UsageError ||
    error instanceof ClusterNotBuiltError ||
    error instanceof SegmentNotFoundError ||
    error instanceof StoreNotFoundError ||
    error instanceof InvalidOptionError ||
    error instanceof InvalidRecoveryConfigError ||
    error instanceof StoreLockedError ||
    error instanceof EntryTooLargeError ||
    error instanceof IndexOutOfRangeError ||
    error instanceof StoreFailedError ||
    error instanceof StoreWriteError ||
    error instanceof StoreClosedError ||
    isSystemError(error)
  ) {
    return EXIT_USAGE;
  }
  return EXIT_USAGE; // unknown: an environment problem until shown otherwise; the message says what
}

/** Whether the error is worth a line on stderr (help, version and a closed pipe are not). */
export function isSilent(error: unknown): boolean {
  return (error instanceof CommanderError && SILENT_COMMANDER_CODES.has(error.code)) || error instanceof OutputClosedError;
}

function messageOf(error: unknown): string {
  if (error instanceof CommanderError) return error.message.replace(/^error: /, '');
  if (isRemoteError(error)) return `the node answered: ${error.details || error.message} (gRPC status ${error.code})`;
  if ((error instanceof AppendRejectedError || error instanceof ClusterUnreachableError) && isRemoteError(error.cause)) return messageOf(error.cause);
  if (error instanceof Error) {
    // A failed write or sync says little on its own; its cause is the system error.
    if (error instanceof StoreFailedError && error.cause instanceof Error) return `${error.message}: ${error.cause.message}`;
    return error.message;
  }
  return String(error);
}

/** The one line (`wal-recovery: <message>`) an error prints; with verbose, the stack follows. */
export function formatError(error: unknown, verbose: boolean): string {
  const line = `${PROGRAM_NAME}: ${messageOf(error).replace(/\s*\n\s*/g, ' ')}\n`;
  if (!verbose || !(error instanceof Error) || error instanceof CommanderError || error.stack === undefined) return line;
  return `${line}${error.stack}\n`;
}
