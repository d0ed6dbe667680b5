// wal-recovery: the package's main export.
export * from './wal/index.js';
export * from './recovery/index.js';
export * from './client/index.js';
