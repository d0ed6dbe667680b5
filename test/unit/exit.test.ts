// The CLI's one error-to-exit-code mapping (src/cli/exit.ts): damage is 1, usage and environment
// are 2, a partial append exits as its cause would, a closed stdout and help are 0, and the line
// an operator reads names a node's gRPC status.
import { CommanderError } from 'commander';
import { describe, expect, it } from 'vitest';
import { EXIT_DAMAGE, EXIT_OK, EXIT_USAGE, OutputClosedError, PartialAppendError, UsageError, exitCodeOf, formatError } from '../../src/cli/exit.js';
import { InvalidRecoveryConfigError } from '../../src/recovery/index.js';
import { DamageFoundError, EntryLostError, StoreFailedError, StoreLockedError } from '../../src/wal/index.js';

function grpcError(code: number, details: string): Error {
  return Object.assign(new Error(`${code} ${details}`), { code, details });
}

describe('exitCodeOf', () => {
  it('damage exits 1', () => {
    expect(exitCodeOf(new DamageFoundError('/d', [], 'advice'))).toBe(EXIT_DAMAGE);
    expect(exitCodeOf(new EntryLostError(5, 1, 'skipped'))).toBe(EXIT_DAMAGE);
    expect(exitCodeOf(grpcError(15, 'entry 5 is damaged'))).toBe(EXIT_DAMAGE); // DATA_LOSS
  });

  it('usage and environment errors exit 2, an unknown error too', () => {
    expect(exitCodeOf(new UsageError('bad'))).toBe(EXIT_USAGE);
    expect(exitCodeOf(new InvalidRecoveryConfigError('repairStrategy', 'bad'))).toBe(EXIT_USAGE);
    expect(exitCodeOf(new StoreLockedError('/d', 42))).toBe(EXIT_USAGE);
    expect(exitCodeOf(new StoreFailedError({ cause: new Error('EIO') }))).toBe(EXIT_USAGE);
    expect(exitCodeOf(grpcError(14, 'unavailable'))).toBe(EXIT_USAGE);
    expect(exitCodeOf(new Error('something else'))).toBe(EXIT_USAGE);
  });

  it('a partial append exits as its cause, a closed stdout and help exit 0', () => {
    expect(exitCodeOf(new PartialAppendError(1, 9, new DamageFoundError('/d', [], 'a')))).toBe(EXIT_DAMAGE);
    expect(exitCodeOf(new PartialAppendError(1, 9, new UsageError('u')))).toBe(EXIT_USAGE);
    expect(exitCodeOf(new OutputClosedError({ cause: new Error('EPIPE') }))).toBe(EXIT_OK);
    expect(exitCodeOf(new CommanderError(0, 'commander.helpDisplayed', '(help)'))).toBe(EXIT_OK);
    expect(exitCodeOf(new CommanderError(1, 'commander.unknownOption', "error: unknown option '--x'"))).toBe(EXIT_USAGE);
  });
});

describe('formatError', () => {
  it('is one line naming a node status, and a failed store names the system error', () => {
    const remote = formatError(grpcError(14, 'no route'), false);
    expect(remote).toMatch(/no route.*gRPC status 14/);
    expect(remote.trimEnd().split('\n')).toHaveLength(1);
    expect(formatError(new StoreFailedError({ cause: new Error('EIO: i/o error') }), false)).toMatch(/EIO: i\/o error/);
  });
});
