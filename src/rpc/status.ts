// The one place that turns domain errors into gRPC statuses (grpc-js's serverErrorToStatus).
import { status as Status, type ServiceError } from '@grpc/grpc-js';
import { isBrokenCircuitError } from 'cockatiel';
import { ClientClosedError, EtcdLeaseInvalidError, GRPCCancelledError, GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3';
import { InvalidRecoveryConfigError } from '../recovery/index.js';
import {
  CorruptEntryError,
  DamageFoundError,
  EntryLostError,
  EntryTooLargeError,
  IndexOutOfRangeError,
  InvalidOptionError,
  ReplicaRejectedError,
  StoreClosedError,
  StoreFailedError,
  StoreWriteError,
  StorePartialWriteError,
  StoreLockedError,
  WalError,
} from '../wal/index.js';
import {
  SessionOwnerError,
  AppendExpiredError,
  BadRequestError,
  SessionSequenceError,
  FenceFileDamagedError,
  FencedError,
  LogQuotaError,
  PartialAppendError,
  ReplicationError,
  NoVerifiedCopyError,
  NotEpochHolderError,
  EpochLookupsLimitedError,
  NotWriterError,
  QuorumUnavailableError,
  UnknownLogError,
  UnknownSegmentError,
} from '../replication/index.js';
import { CallLimitedError, StreamStalledError, UndecodableRequestError, WatcherTooSlowError } from './errors.js';

export interface StatusObject {
  readonly code: Status;
  readonly details: string;
}

export function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === 'number' && 'metadata' in error;
}

export function toStatus(error: unknown): StatusObject {
  const details = error instanceof Error ? error.message : String(error);
  if (isServiceError(error)) return { code: error.code, details: error.details };
  if (error instanceof BadRequestError || error instanceof UndecodableRequestError || error instanceof InvalidOptionError || error instanceof EntryTooLargeError || error instanceof InvalidRecoveryConfigError) return { code: Status.INVALID_ARGUMENT, details };
  if (error instanceof NotEpochHolderError || error instanceof SessionOwnerError) return { code: Status.PERMISSION_DENIED, details };
  if (error instanceof UnknownLogError || error instanceof UnknownSegmentError) return { code: Status.NOT_FOUND, details };
  if (error instanceof IndexOutOfRangeError) return { code: Status.OUT_OF_RANGE, details };
  if (error instanceof WatcherTooSlowError || error instanceof StreamStalledError || error instanceof CallLimitedError || error instanceof LogQuotaError || error instanceof EpochLookupsLimitedError) return { code: Status.RESOURCE_EXHAUSTED, details };
  // Partly applied: nobody may retry it as it is (UNKNOWN is retried by no client of ours).
  if (error instanceof PartialAppendError || error instanceof StorePartialWriteError) return { code: Status.UNKNOWN, details };
  // ABORTED is reserved for fencing: a writer that sees it knows a newer writer exists.
  if (error instanceof FencedError) return { code: Status.ABORTED, details };
  if (error instanceof ReplicaRejectedError || error instanceof DamageFoundError || error instanceof FenceFileDamagedError || error instanceof SessionSequenceError) return { code: Status.FAILED_PRECONDITION, details };
  // Never sent to a member: not appended (a session retry is answered exactly either way).
  if (error instanceof AppendExpiredError) return { code: Status.DEADLINE_EXCEEDED, details };
  if (
    error instanceof NotWriterError ||
    error instanceof QuorumUnavailableError ||
    error instanceof StoreClosedError ||
    error instanceof StoreFailedError ||
    error instanceof StoreWriteError ||
    error instanceof StoreLockedError
  ) {
    return { code: Status.UNAVAILABLE, details };
  }
  if (error instanceof NoVerifiedCopyError || error instanceof CorruptEntryError || error instanceof EntryLostError) return { code: Status.DATA_LOSS, details };
  if (error instanceof WalError) return { code: Status.INVALID_ARGUMENT, details };
  // etcd out of reach (restarting, partitioned, our lease gone): transient, like a lost quorum.
  if (isEtcdUnreachable(error)) return { code: Status.UNAVAILABLE, details: `etcd unreachable: ${details}` };
  // The rest of the protocol's failures are transient states (a record changed under a
  // recovery, a member failed mid-copy): a retry, here or on the next writer, may succeed.
  if (error instanceof ReplicationError) return { code: Status.UNAVAILABLE, details };
  return { code: Status.INTERNAL, details: `internal error: ${details}` };
}

function isEtcdUnreachable(error: unknown): boolean {
  return (
    error instanceof GRPCUnavailableError ||
    error instanceof GRPCDeadlineExceededError ||
    error instanceof GRPCCancelledError ||
    error instanceof EtcdLeaseInvalidError ||
    error instanceof ClientClosedError ||
    isBrokenCircuitError(error) // the etcd3 client stops calling a member that keeps failing
  );
}

/** Whether a client may retry the call (elsewhere or later). */
export function isRetryable(code: Status): boolean {
  return code === Status.UNAVAILABLE || code === Status.DEADLINE_EXCEEDED || code === Status.RESOURCE_EXHAUSTED;
}
