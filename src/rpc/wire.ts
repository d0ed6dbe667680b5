// Wire messages to domain values: the one place where a node reads the snake_case fields of
// another node's answers (the server side maps the other way, in server.ts).
//
// Fault model: a peer's answer may come from another version or be malformed; fields missing on
// the wire arrive as proto3 defaults (0, '', []) and are carried as such, never guessed.
import type { SegmentRepair } from '../recovery/index.js';
import type { SegmentRepairResult__Output } from './generated/walrecovery/v1/SegmentRepairResult.js';
import type { ValidateMessage__Output } from './generated/walrecovery/v1/ValidateMessage.js';
import type { ValidateMessageView } from './server.js';

/**
 * One node's repair result for segment `segmentId`. The wire result names no segment: the
 * request did, so the caller passes it on.
 */
export function repairResultFromWire(r: SegmentRepairResult__Output, segmentId: number): SegmentRepair & { node: string } {
  return {
    node: r.node,
    segment: segmentId,
    decision: r.decision as SegmentRepair['decision'],
    outcome: r.outcome as SegmentRepair['outcome'],
    repaired: r.repaired,
    lost: r.lost,
    truncated: r.truncated,
    ...(r.source ? { source: r.source } : {}),
    detail: r.detail,
    bytesWritten: r.bytes_written,
  };
}

export function validateMessageFromWire(m: ValidateMessage__Output): ValidateMessageView {
  return {
    node: m.node,
    log: m.log,
    segment: m.segment_id,
    kind: m.kind,
    entryIndex: m.entry_index,
    indexCount: m.index_count,
    offsetBytes: m.offset_bytes,
    expectedChecksum: m.expected_checksum,
    actualChecksum: m.actual_checksum,
    detail: m.detail,
    done: m.done,
    segmentsChecked: m.segments_checked,
    bytesChecked: m.bytes_checked,
  };
}
