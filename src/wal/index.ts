// Public face of the WAL store domain.
export { WalStore, type AppendResult, type Entry, type OpenReport, type SegmentStart, type OnlineRepairOptions, type OpenRepairOptions } from './store.js';
export { type WalOptions, type StoreSettings, WAL_DEFAULTS, resolveWalOptions } from './options.js';
export {
  WalError,
  StoreNotFoundError,
  StoreLockedError,
  InvalidOptionError,
  EntryTooLargeError,
  IndexOutOfRangeError,
  EntryLostError,
  CorruptEntryError,
  DamageFoundError,
  StoreClosedError,
  StoreFailedError,
  ReplicaRejectedError,
  StoreWriteError,
  StorePartialWriteError,
} from './errors.js';
export { validateStore, repairDataDir, inspectDataDir, type ValidationReport, type DataDirOptions } from './offline.js';
export { type GoodCopySource, type RecordedSegment, type SegmentExpectation, LocalBackupSource } from './sources.js';
export { type SegmentRecord, type HoleRecord } from './catalog.js';
export { type Checksum64, AGGREGATE_EMPTY, chainAggregate, checksum64, checksumHex } from './checksum.js';
export { type SegmentAggregate, aggregateOf, newAggregate } from './aggregate.js';
export * as format from './format.js';
export { writeFileAtomic } from './files.js';
export { analyzeSegmentFile, isClean } from './analyze.js';
