// RecoveryMetrics from the specification, plus the loss and repair figures an operator needs.
// Plain counters here; src/observability exposes them to Prometheus.

export interface RecoveryMetricsSnapshot {
  readonly recovery_attempts: number;
  readonly successful_recoveries: number;
  readonly failed_recoveries: number;
  readonly corrupted_segments: number;
  readonly torn_tails_truncated: number;
  readonly entries_lost: number;
  readonly entries_repaired: number;
  readonly bytes_repaired: number;
  readonly repair_duration_ms_total: number;
}

export class RecoveryMetrics {
  recovery_attempts = 0;
  successful_recoveries = 0;
  failed_recoveries = 0;
  corrupted_segments = 0;
  torn_tails_truncated = 0;
  entries_lost = 0;
  entries_repaired = 0;
  bytes_repaired = 0;
  repair_duration_ms_total = 0;
  /** Observers (for example a Prometheus histogram) of each repair's duration. */
  private readonly durationObservers: Array<(durationMs: number, outcome: 'success' | 'failure') => void> = [];

  onRepairDuration(observer: (durationMs: number, outcome: 'success' | 'failure') => void): void {
    this.durationObservers.push(observer);
  }

  recordAttempt(outcome: 'success' | 'failure', durationMs: number): void {
    this.recovery_attempts += 1;
    if (outcome === 'success') this.successful_recoveries += 1;
    else this.failed_recoveries += 1;
    this.repair_duration_ms_total += durationMs;
    for (const observe of this.durationObservers) observe(durationMs, outcome);
  }

  snapshot(): RecoveryMetricsSnapshot {
    return {
      recovery_attempts: this.recovery_attempts,
      successful_recoveries: this.successful_recoveries,
      failed_recoveries: this.failed_recoveries,
      corrupted_segments: this.corrupted_segments,
      torn_tails_truncated: this.torn_tails_truncated,
      entries_lost: this.entries_lost,
      entries_repaired: this.entries_repaired,
      bytes_repaired: this.bytes_repaired,
      repair_duration_ms_total: this.repair_duration_ms_total,
    };
  }
}
