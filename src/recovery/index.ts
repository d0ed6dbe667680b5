// Public face of the recovery domain: detection results, the decision table, the strategies,
// RecoveryConfig, RecoveryMetrics and the repair report. Pure logic, no I/O.
export { type Finding, type FindingKind, describeFinding } from './findings.js';
export {
  type DamageSignals,
  type RepairDecision,
  type RepairStrategy,
  type TornWriteSignals,
  DECISION_TABLE,
  TORN_WRITE_RULES,
  isTornWrite,
  withinLastWrite,
  REPAIR_ACTION_NAMES,
  REPAIR_STRATEGIES,
  absentEntrySignals,
  decide,
  dropsData,
  haltsOnCorruption,
} from './decision.js';
export {
  type RecoveryConfig,
  RECOVERY_CONFIG_DEFAULTS,
  parseStrategy,
  resolveRecoveryConfig,
} from './config.js';
export { InvalidRecoveryConfigError } from './errors.js';
export {
  type AvailableCopies,
  type DamagedStretch,
  type FileStep,
  type RebuildDecision,
  type SegmentDamage,
  type SegmentStep,
  type StretchDecision,
  availableFromRanges,
  backupsFollowRepair,
  combine,
  decideStretches,
  framesWanted,
  planFileRepair,
  planSegmentRepair,
  stretchSignals,
  uncoveredRuns,
} from './repair-plan.js';
export { RecoveryMetrics, type RecoveryMetricsSnapshot } from './metrics.js';
export { type IndexRange, type RepairReport, type SegmentRepair, countIndices, mergeRanges } from './report.js';
