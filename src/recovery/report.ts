// The repair report: every action taken (or, in a dry run, planned), and every entry repaired,
// lost or truncated, by index. Serialisable as JSON as it is.
import type { RepairDecision, RepairStrategy } from './decision.js';
import type { Finding } from './findings.js';

export interface IndexRange {
  readonly first: number;
  readonly last: number;
}

export interface SegmentRepair {
  readonly segment: number;
  readonly decision: RepairDecision | 'restore-file' | 'quarantine-file' | 'rebuild-catalog' | 'recopy-backup';
  readonly outcome: 'done' | 'planned' | 'failed' | 'halted';
  /** Entries rebuilt from a verified copy. */
  readonly repaired: readonly IndexRange[];
  /** Entries given up and recorded as holes. */
  readonly lost: readonly IndexRange[];
  /** Entries removed by a rollback or a torn-tail truncation. */
  readonly truncated: readonly IndexRange[];
  readonly source?: string;
  readonly quarantinedAs?: string;
  readonly bytesWritten: number;
  readonly detail: string;
}

export interface RepairReport {
  readonly log: string;
  readonly dataDir: string;
  readonly strategy: RepairStrategy;
  readonly dryRun: boolean;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly findings: readonly Finding[];
  readonly actions: readonly SegmentRepair[];
  /** Findings still present after the repair (empty when the store now validates clean). */
  readonly remaining: readonly Finding[];
  readonly entriesRepaired: number;
  readonly entriesLost: number;
  readonly entriesTruncated: number;
}

export function countIndices(ranges: readonly IndexRange[]): number {
  let total = 0;
  for (const range of ranges) total += range.last - range.first + 1;
  return total;
}

/** Merges adjacent or overlapping ranges, in order. */
export function mergeRanges(ranges: readonly IndexRange[]): IndexRange[] {
  const sorted = [...ranges].sort((a, b) => a.first - b.first);
  const merged: IndexRange[] = [];
  for (const range of sorted) {
    const last = merged[merged.length - 1];
    if (last && range.first <= last.last + 1) merged[merged.length - 1] = { first: last.first, last: Math.max(last.last, range.last) };
    else merged.push(range);
  }
  return merged;
}
