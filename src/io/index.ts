// Public face of the io domain: the narrow interfaces through which the store, replication,
// cluster and repair code reach the world (disk, time, randomness), and their production
// implementations. The simulator (src/sim) implements the same interfaces in memory.
export { type Disk, type DiskFile, type DiskLock, type DiskStat, type OpenMode, errorCode, isNotFound } from './disk.js';
export { DiskError, LockHeldError } from './errors.js';
export { NodeDisk, nodeDisk } from './node-disk.js';
export { LOCK_FILE } from './lock.js';
export { type Clock, type Random, SeededRandom, systemClock, systemRandom, clampTimerMs, TIMER_MS_MAX } from './clock.js';
