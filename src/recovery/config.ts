// RecoveryConfig from the specification, with its defaults filled and validated in one place.
import { REPAIR_STRATEGIES, type RepairStrategy } from './decision.js';
import { InvalidRecoveryConfigError } from './errors.js';

export interface RecoveryConfig {
  /** Repair attempts per segment before giving up and escalating (1..255). */
  readonly maxRecoveryAttempts: number;
  /** Local backup copies of each sealed segment, and quarantined copies kept per segment (0..255). */
  readonly backupRetentionCount: number;
  /** What to do about damage that is not a torn tail. */
  readonly repairStrategy: RepairStrategy;
}

export const RECOVERY_CONFIG_DEFAULTS: RecoveryConfig = Object.freeze({
  maxRecoveryAttempts: 3,
  backupRetentionCount: 1,
  repairStrategy: 'partial',
});

function u8(field: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min || value > 255) {
    throw new InvalidRecoveryConfigError(field, `must be an integer from ${min} to 255, got ${String(value)}`);
  }
  return value;
}

export function parseStrategy(value: string): RepairStrategy {
  if ((REPAIR_STRATEGIES as readonly string[]).includes(value)) return value as RepairStrategy;
  throw new InvalidRecoveryConfigError('repairStrategy', `must be one of ${REPAIR_STRATEGIES.join(', ')}, got '${value}'`);
}

export function resolveRecoveryConfig(partial: Partial<RecoveryConfig> = {}): RecoveryConfig {
  const merged = { ...RECOVERY_CONFIG_DEFAULTS, ...partial };
  return Object.freeze({
    maxRecoveryAttempts: u8('maxRecoveryAttempts', merged.maxRecoveryAttempts, 1),
    backupRetentionCount: u8('backupRetentionCount', merged.backupRetentionCount, 0),
    repairStrategy: parseStrategy(merged.repairStrategy),
  });
}
