// Public face of the simulator: in-memory implementations of the io seams with fault models,
// the simulated cluster, and one seeded run.
export { SimLoop, type SimProcess, SIM_EPOCH_MS } from './loop.js';
export { SimFileSystem, CRASH_MODES, type CrashMode } from './disk.js';
export { SimNetwork, SimServiceError } from './network.js';
export { SimEtcd } from './directory.js';
export { Model, type Violation } from './model.js';
export { runSeed, SIM_DEFAULTS, type SimOptions, type SimResult } from './run.js';
