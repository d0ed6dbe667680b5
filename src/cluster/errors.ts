// Errors of the cluster domain, declared together. None crosses the wire: they stay inside a node.

export class ClusterError extends Error {
  override readonly name: string = 'ClusterError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`cluster: ${message}`, options);
  }
}

/** A scrub check that got no answer: its worker thread failed or exited, or the checker stopped. */
export class ScrubWorkerError extends ClusterError {
  override readonly name = 'ScrubWorkerError';
  constructor(readonly path: string, message: string, options?: { cause?: unknown }) {
    super(`scrub of ${path}: ${message}`, options);
  }
}

/**
 * A call this node made to its own store got no answer within the RPC deadline (a hung fsync). It
 * is shaped as grpc-js reports a remote call's deadline (code 4, DEADLINE_EXCEEDED, details,
 * metadata), so the write path treats its own store exactly like a remote member that timed out.
 * The store's operation is not cancelled: it still completes or fails on its own.
 */
export class LocalDeadlineExceededError extends ClusterError {
  override readonly name = 'LocalDeadlineExceededError';
  /** grpc status DEADLINE_EXCEEDED. */
  readonly code = 4;
  readonly details: string;
  readonly metadata = {};
  constructor(readonly method: string, readonly log: string, readonly deadlineMs: number) {
    super(`local ${method} on log ${log}: deadline of ${deadlineMs} ms exceeded`);
    this.details = this.message;
  }
}

/** This node's own store of a log is stuck or failed: it gives up the log's writer role until the store answers again. */
export class OwnStoreFailingError extends ClusterError {
  override readonly name = 'OwnStoreFailingError';
  constructor(readonly log: string) {
    super(`the store of log ${log} on this node is stuck or failed: giving up the writer role`);
  }
}
