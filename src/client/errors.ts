// Errors of the client library. Matched with instanceof; each carries the log and its cause.

export class WalClientError extends Error {
  override readonly name: string = 'WalClientError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`wal client: ${message}`, options);
  }
}

/**
 * An append whose outcome is unknown: it may be in the log or not (a timeout, a cut connection,
 * a writer that died, without a session to retry it exactly; or retries that ran out of time).
 * Read the log to find out; appending it again may duplicate it.
 */
export class AppendOutcomeUnknownError extends WalClientError {
  override readonly name = 'AppendOutcomeUnknownError';
  constructor(readonly log: string, readonly entryCount: number, readonly code: number | undefined, options?: { cause?: unknown }) {
    super(`log ${log}: the outcome of an append of ${entryCount} entries is unknown (${options?.cause instanceof Error ? options.cause.message : 'no answer'}); it may or may not be in the log`, options);
  }
}

/** An append the cluster refused: nothing was appended (a bad request, an unknown log, no permission). */
export class AppendRejectedError extends WalClientError {
  override readonly name = 'AppendRejectedError';
  constructor(readonly log: string, readonly code: number, options?: { cause?: unknown }) {
    super(`log ${log}: append refused (${options?.cause instanceof Error ? options.cause.message : code})`, options);
  }
}

/** No member answered within the deadline (connect, a read). */
export class ClusterUnreachableError extends WalClientError {
  override readonly name = 'ClusterUnreachableError';
  constructor(readonly targets: readonly string[], options?: { cause?: unknown }) {
    super(`no member of ${targets.join(', ')} answered (${options?.cause instanceof Error ? options.cause.message : 'no answer'})`, options);
  }
}

/** A call after close(). */
export class ClientClosedError extends WalClientError {
  override readonly name = 'ClientClosedError';
  constructor() {
    super('the client is closed');
  }
}

/** A client option out of range (resolveClientOptions). */
export class InvalidClientOptionError extends Error {
  override readonly name = 'InvalidClientOptionError';
  constructor(readonly option: string, detail: string) {
    super(`wal client: ${option} ${detail}`);
  }
}
