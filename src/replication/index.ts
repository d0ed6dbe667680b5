// Public face of the replication domain: the write path across an ensemble, fencing, catch-up.
export * from './errors.js';
export { LogStores, type LogStoresOptions, checkEpoch, encodeFence } from './logs.js';
export { PeerHandlers, type EpochHolders, type PeerHandlersOptions, type WriterCaller, type SegmentHolding, type SegmentInfoPage, holdingOf, checkIndex, READ_FRAMES_BYTES_MAX, FETCH_CHUNK_BYTES_DEFAULT, SEGMENT_INFO_CHECKSUMS_MAX, SEGMENT_INFO_PAGE_BYTES_MAX } from './peer.js';
export { type PeerApi, type PeerResolver, type SegmentDirectory, type LeaderGuard, type FramesAnswer } from './api.js';
export * from './metadata.js';
export { APPEND_ENTRIES_MAX, LogWriter, type WriterOptions } from './writer.js';
export { catchUpLog, type CatchUpContext, type CatchUpResult } from './catchup.js';
export { ReplicaSource, type ReplicaSourceOptions } from './replica-source.js';
export { LogReader, type LogReaderContext, type ReadEntry, READ_BATCH_BYTES_MAX, READ_BATCH_MAX, READ_FETCH_BYTES_MAX } from './reader.js';
export { SessionTable, SessionGate, SESSION_DEFAULTS, type SessionOptions, type SessionRef, type SessionLookup, type BatchOutcome, type TaggedEntry } from './sessions.js';
