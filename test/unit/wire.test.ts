// Wire messages to domain values (src/rpc/wire.ts): a remote node's repair result keeps the
// segment the request named (the wire result has no field for it), and proto3 defaults are
// carried as they are, never guessed.
import { describe, expect, it } from 'vitest';
import { repairResultFromWire, validateMessageFromWire } from '../../src/rpc/index.js';

describe('repairResultFromWire', () => {
  const wire = { node: 'n2', decision: 'reconstruct', outcome: 'done', repaired: [{ first: 3, last: 5 }], lost: [], truncated: [], source: '', detail: 'rebuilt', bytes_written: 640 };

  it('keeps the segment id of the request', () => {
    expect(repairResultFromWire(wire, 17)).toMatchObject({ node: 'n2', segment: 17, decision: 'reconstruct', outcome: 'done', repaired: [{ first: 3, last: 5 }], bytesWritten: 640 });
  });

  it('leaves source out when the wire carries the empty default', () => {
    expect('source' in repairResultFromWire(wire, 1)).toBe(false);
    expect(repairResultFromWire({ ...wire, source: 'n3' }, 1).source).toBe('n3');
  });
});

describe('validateMessageFromWire', () => {
  it('maps every snake_case field to its domain name', () => {
    const m = { node: 'n1', log: 'orders', segment_id: 4, kind: 'checksum-mismatch', entry_index: 40, index_count: 1, offset_bytes: 4096, expected_checksum: 'aa', actual_checksum: 'bb', detail: 'd', done: false, segments_checked: 0, bytes_checked: 0 };
    expect(validateMessageFromWire(m)).toEqual({ node: 'n1', log: 'orders', segment: 4, kind: 'checksum-mismatch', entryIndex: 40, indexCount: 1, offsetBytes: 4096, expectedChecksum: 'aa', actualChecksum: 'bb', detail: 'd', done: false, segmentsChecked: 0, bytesChecked: 0 });
  });
});
