// Errors of the RPC layer, declared together and matched with instanceof (status.ts maps them
// to gRPC statuses). TlsConfigError stays with the TLS options it describes (security.ts).

export class CallLimitedError extends Error {
  override readonly name = 'CallLimitedError';
  /** family: a CallFamily of limits.ts, kept as a string so that errors.ts imports nothing of its folder. */
  constructor(readonly method: string, readonly family: string, readonly inFlightMax: number) {
    super(`${method}: ${inFlightMax} ${family} calls are in flight on this node already; retry later`);
  }
}

export class UndecodableRequestError extends Error {
  override readonly name = 'UndecodableRequestError';
  constructor(readonly method: string, options?: { cause?: unknown }) {
    const detail = options?.cause instanceof Error ? options.cause.message : String(options?.cause);
    super(`${method}: the request is not a valid protobuf message (${detail.slice(0, 200)})`, options);
  }
}

export class StreamStalledError extends Error {
  override readonly name = 'StreamStalledError';
  constructor(readonly stallMs: number) {
    super(`the caller took no message for ${stallMs} ms; the stream is ended (call again to resume)`);
  }
}

export class WatcherTooSlowError extends Error {
  override readonly name = 'WatcherTooSlowError';
  constructor(readonly unreadMax: number) {
    super(`the watcher left more than ${unreadMax} events unread; dropped (watch again to resume)`);
  }
}

/** A TLS file (CA, certificate, key, revocation list) that is missing, unreadable or unusable. */
export class TlsConfigError extends Error {
  override readonly name = 'TlsConfigError';
}

/** A revocation list that cannot be read or parsed (the list in force stays). */
export class RevocationListError extends Error {
  override readonly name = 'RevocationListError';
  constructor(readonly path: string, detail: string, options?: { cause?: unknown }) {
    super(`revocation list ${path}: ${detail}`, options);
  }
}
