// Errors of the replication domain. src/rpc/status.ts maps each to a gRPC status code.

export class ReplicationError extends Error {
  override readonly name: string = 'ReplicationError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`replication: ${message}`, options);
  }
}

/** A request with an epoch lower than one this node was fenced with. */
export class FencedError extends ReplicationError {
  override readonly name = 'FencedError';
  constructor(readonly log: string, readonly epoch: number, readonly fencedEpoch: number) {
    super(`log ${log}: epoch ${epoch} is fenced by epoch ${fencedEpoch}`);
  }
}

/**
 * A writer call (Replicate, Fence, Seal) with epoch E for a log, from a node that does not hold
 * E: no candidacy of that node in the log's writer election has epoch E (DESIGN section 10).
 */
export class NotEpochHolderError extends ReplicationError {
  override readonly name = 'NotEpochHolderError';
  constructor(readonly log: string, readonly epoch: number, readonly caller: string, readonly holder: string | undefined) {
    super(`log ${log}: epoch ${epoch} is ${holder === undefined ? 'held by no candidacy in the writer election' : `held by ${holder}`}, not by the caller ${caller}`);
  }
}

/** Writer calls of one caller made too many etcd reads of epoch holders (RESOURCE_EXHAUSTED, retried). */
export class EpochLookupsLimitedError extends ReplicationError {
  override readonly name = 'EpochLookupsLimitedError';
  constructor(readonly log: string, readonly epoch: number, readonly caller: string, readonly perSecondMax: number) {
    super(`writer calls from ${caller.slice(0, 80)} look up more than ${perSecondMax} unknown epochs a second; epoch ${epoch} of log ${log} not checked, retry later`);
  }
}

export class UnknownLogError extends ReplicationError {
  override readonly name = 'UnknownLogError';
  constructor(readonly log: string) {
    super(`log ${log} does not exist`);
  }
}

/** The node is not the log's writer (or stopped being it); the client should retry. */
/** A new log would pass the cluster's bound on logs (the node's logsMax). */
export class LogQuotaError extends ReplicationError {
  override readonly name = 'LogQuotaError';
  constructor(readonly log: string, readonly logsMax: number) {
    super(`log ${log} was not created: the cluster holds ${logsMax} logs, the most this node creates (--logs-max)`);
  }
}

export class NotWriterError extends ReplicationError {
  override readonly name = 'NotWriterError';
  constructor(readonly log: string, readonly writer: string | undefined) {
    super(`this node is not the writer of log ${log}${writer ? ` (the writer is ${writer})` : ' (no writer elected yet)'}`);
  }
}

/** Fewer nodes than the ack quorum answered. */
export class QuorumUnavailableError extends ReplicationError {
  override readonly name = 'QuorumUnavailableError';
  constructor(readonly log: string, readonly acks: number, readonly needed: number, options?: { cause?: unknown }) {
    super(`log ${log}: ${acks} of the ${needed} acknowledgements needed`, options);
  }
}

/** A request whose fields are out of range or malformed. */
export class BadRequestError extends ReplicationError {
  override readonly name = 'BadRequestError';
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
  }
}

/** Every copy of an entry this node could reach fails verification (or none exists). */
export class NoVerifiedCopyError extends ReplicationError {
  override readonly name = 'NoVerifiedCopyError';
  constructor(readonly log: string, readonly entryIndex: number, detail: string) {
    super(`log ${log}: no verified copy of entry ${entryIndex}: ${detail}`);
  }
}

export class UnknownSegmentError extends ReplicationError {
  override readonly name = 'UnknownSegmentError';
  constructor(readonly log: string, readonly segmentId: number) {
    super(`log ${log} has no segment ${segmentId}`);
  }
}

/**
 * The persisted fence (a log's EPOCH file) is unreadable or garbled: the log does not open on
 * this node until an operator looks (taking it for 0 would let a deposed writer back in).
 */
export class FenceFileDamagedError extends ReplicationError {
  override readonly name = 'FenceFileDamagedError';
  constructor(readonly log: string, readonly path: string, detail: string, options?: { cause?: unknown }) {
    super(`log ${log}: the fence file ${path} ${detail}; refusing to open the log without it`, options);
  }
}

/**
 * An append whose payloads spanned segments: the first ones reached the ack quorum (they are in
 * the log at firstIndex..lastIndex) and the rest did not. Not retryable as it is: a retry would
 * append the committed payloads a second time.
 */
export class PartialAppendError extends ReplicationError {
  override readonly name = 'PartialAppendError';
  constructor(readonly log: string, readonly firstIndex: number, readonly lastIndex: number, readonly payloads: number, options?: { cause?: unknown }) {
    super(`log ${log}: the first ${lastIndex - firstIndex + 1} of ${payloads} payloads were appended at ${firstIndex}..${lastIndex}, the rest were not (${options?.cause instanceof Error ? options.cause.message : 'failed'})`, options);
  }
}

/**
 * A member's FetchSegment stream that does not match the segment's record: more bytes than the
 * record's byte length, a total that disagrees with it, or chunks out of order. The stream is
 * cancelled and nothing it sent is installed.
 */
export class FetchedSegmentRejectedError extends ReplicationError {
  override readonly name = 'FetchedSegmentRejectedError';
  constructor(readonly log: string, readonly segmentId: number, readonly peer: string, detail: string) {
    super(`log ${log}: segment ${segmentId} fetched from ${peer} refused: ${detail}`);
  }
}

/**
 * A session's batch with a sequence below the outcomes the writer still remembers for that
 * session: whether it was appended can no longer be told, so it is neither appended nor answered.
 */
export class SessionSequenceError extends ReplicationError {
  override readonly name = 'SessionSequenceError';
  constructor(readonly sessionId: string, readonly sequence: number, readonly lowestSequence: number) {
    super(`session ${sessionId}: batch ${sequence} is older than the oldest batch remembered (${lowestSequence}); its outcome is unknown`);
  }
}

/** An append still queued at the writer when its deadline passed: it was not appended and never will be. */
export class AppendExpiredError extends ReplicationError {
  override readonly name = 'AppendExpiredError';
  constructor(readonly log: string) {
    super(`log ${log}: the append's deadline passed before the writer took it; nothing was appended`);
  }
}

/**
 * A session append that found the writer's session table still being rebuilt from the log when
 * its wait ran out (UNAVAILABLE: nothing was appended; the client retries). The rebuild goes on
 * from where it is; it is never started over.
 */
export class SessionTableRebuildingError extends ReplicationError {
  override readonly name = 'SessionTableRebuildingError';
  constructor(readonly nextIndex: number, readonly endIndex: number, options?: { cause?: unknown; unreadable?: boolean }) {
    super(
      options?.unreadable
        ? `the writer's session table cannot be rebuilt past entry ${nextIndex}: no member serves a verified copy of it; session appends wait until it is repaired, or until the session TTL after the rebuild started, when it is skipped; nothing was appended, retry`
        : `the writer's session table is still being rebuilt from the log (read up to ${nextIndex - 1} of ${endIndex}); nothing was appended, retry`,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
  }
}

/**
 * A session append whose session id is not bound to the caller's certificate (TLS): another
 * client cannot claim a session (PERMISSION_DENIED). See sessionOwnerPrefix (src/rpc/security.ts).
 */
export class SessionOwnerError extends ReplicationError {
  override readonly name = 'SessionOwnerError';
  constructor(readonly sessionId: string, readonly caller: string) {
    super(`session ${sessionId} is not bound to the caller's certificate (${caller}): a session id with TLS starts with the first 8 bytes of SHA-256 of the certificate's common name`);
  }
}

/** A record read from etcd that is not what this code writes (a field missing, of another type, out of range). */
export class MalformedRecordError extends Error {
  override readonly name = 'MalformedRecordError';
}
