// Public face of the client domain: WalClient, its options and its errors.
export { WalClient, type AppendRange, type LogEntry } from './client.js';
export { type WalClientOptions, type ResolvedClientOptions, CLIENT_DEFAULTS, resolveClientOptions } from './options.js';
export { AppendOutcomeUnknownError, AppendRejectedError, ClientClosedError, ClusterUnreachableError, InvalidClientOptionError, WalClientError } from './errors.js';
export { Coalescer, type CoalescerOptions } from './coalescer.js';
