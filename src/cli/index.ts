// Public face of the CLI domain: run the command line in-process (tests, embedding) and the
// mapping from errors to exit codes.
export { runCli, buildProgram, type CliIo } from './program.js';
export { EXIT_OK, EXIT_DAMAGE, EXIT_USAGE, type ExitCode, exitCodeOf, formatError, UsageError, ClusterNotBuiltError, SegmentNotFoundError } from './exit.js';
export { type Endpoint, type LogClient, type StoreChecks, endpointOf } from './backend.js';
