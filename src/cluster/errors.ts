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
