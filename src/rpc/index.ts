// Public face of the RPC domain: the services' server, clients, and the error-to-status map.
export { startRpcServer, type RpcSecurity, type NodeApi, type RpcServer, type ClusterStatusView, type ScrubStatusView, type ReadEntryView, type ValidateMessageView, type RecoveryEventMessage } from './server.js';
export { PeerClient, WalClient, AdminClient, CHANNEL_OPTIONS, FORWARDED_METADATA_KEY, deadline } from './clients.js';
export { toStatus, isRetryable, isServiceError } from './status.js';
export { loadProto } from './proto.js';
export { INSECURE, METHOD_ROLES, ROLES, authorize, checkNodeCertificate, channelCredentials, commonNameOf, sessionOwnerPrefix, loadTransport, serverCredentials, type Role, type TlsPaths, type Transport } from './security.js';
export { repairResultFromWire, validateMessageFromWire } from './wire.js';
export { CallLimitedError, RevocationListError, StreamStalledError, TlsConfigError, UndecodableRequestError, WatcherTooSlowError } from './errors.js';
export { METHOD_FAMILY, RPC_LIMITS_DEFAULT, RPC_LIMIT_NAMES, parseRpcLimits, resolveRpcLimits, type CallFamily, type LimitOptions, type RpcLimits } from './limits.js';
export { RevocationList, parseRevocationList, REVOCATION_POLL_MS } from './revocation.js';
