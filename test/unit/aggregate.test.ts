import { hash, randomBytes } from 'node:crypto';
import { sha3_256 } from '@noble/hashes/sha3.js';
import { describe, expect, it } from 'vitest';
import { AGGREGATE_STATE_BYTES, HashedListAggregate, aggregateOf, newAggregate } from '../../src/wal/aggregate.js';
import { chainAggregate } from '../../src/wal/checksum.js';

/** The reference: SHA3-256 over the checksums' 8 stored (big-endian) bytes, by @noble/hashes. */
function reference(checksums: readonly bigint[]): bigint {
  if (checksums.length === 0) return 0n;
  const bytes = Buffer.alloc(8 * checksums.length);
  checksums.forEach((c, i) => bytes.writeBigUInt64BE(c, i * 8));
  return Buffer.from(sha3_256(bytes)).readBigUInt64BE(0);
}

function randomChecksums(count: number): bigint[] {
  const bytes = randomBytes(8 * count);
  return Array.from({ length: count }, (_, i) => bytes.readBigUInt64BE(i * 8));
}

describe('segment aggregate', () => {
  it('version 3 is SHA3-256 over the entry checksums in order, at every block boundary (noble and node:crypto agree)', () => {
    for (const count of [1, 2, 16, 17, 18, 33, 34, 35, 51, 1000]) {
      const checksums = randomChecksums(count);
      const bytes = Buffer.alloc(8 * count);
      checksums.forEach((c, i) => bytes.writeBigUInt64BE(c, i * 8));
      expect(aggregateOf(3, checksums)).toBe(reference(checksums));
      expect(aggregateOf(3, checksums)).toBe(hash('sha3-256', bytes, 'buffer').readBigUInt64BE(0));
      const stored = new HashedListAggregate();
      for (let i = 0; i < count; i += 1) stored.addStored(bytes, i * 8);
      expect(stored.value()).toBe(reference(checksums));
    }
  });

  it('version 3 of no entries is 0, as in versions 1 and 2', () => {
    expect(aggregateOf(3, [])).toBe(0n);
    expect(aggregateOf(2, [])).toBe(0n);
  });

  it('versions 1 and 2 keep the chained aggregate', () => {
    const checksums = randomChecksums(20);
    let chained = 0n;
    for (const c of checksums) chained = chainAggregate(chained, c);
    expect(aggregateOf(1, checksums)).toBe(chained);
    expect(aggregateOf(2, checksums)).toBe(chained);
    expect(aggregateOf(3, checksums)).not.toBe(chained);
  });

  it('a running state copied, or written and read back at any count, goes on to the same value', () => {
    const checksums = randomChecksums(60);
    for (const cut of [0, 1, 16, 17, 18, 40]) {
      const running = newAggregate(3) as HashedListAggregate;
      checksums.slice(0, cut).forEach((c) => running.add(c));
      const bytes = running.toBytes();
      expect(bytes.byteLength).toBe(AGGREGATE_STATE_BYTES);
      const restored = HashedListAggregate.fromBytes(bytes);
      const copied = running.copy();
      expect(restored.count).toBe(cut);
      for (const c of checksums.slice(cut)) {
        restored.add(c);
        copied.add(c);
      }
      expect(restored.value()).toBe(reference(checksums));
      expect(copied.value()).toBe(reference(checksums));
      expect(running.value()).toBe(reference(checksums.slice(0, cut))); // value() leaves the state as it was
    }
  });
});
