// Errors of the recovery domain, declared together and matched with instanceof.

/** A RecoveryConfig field out of range, or a repair strategy that is not one of REPAIR_STRATEGIES. */
export class InvalidRecoveryConfigError extends Error {
  override readonly name = 'InvalidRecoveryConfigError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`recovery: ${field}: ${message}`);
  }
}
