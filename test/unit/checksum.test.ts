// checksum64 uses node:crypto's native SHA3; these tests hold it to @noble/hashes, an independent
// implementation, so that a platform change in either cannot silently change the on-disk format.
import { sha3_256 } from '@noble/hashes/sha3.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AGGREGATE_EMPTY,
  type Checksum64,
  chainAggregate,
  checksum64,
  checksumHex,
  crc32,
  crc32Range,
} from '../../src/wal/checksum.js';

function nobleChecksum64(bytes: Uint8Array): Checksum64 {
  const digest = sha3_256(bytes);
  return new DataView(digest.buffer, digest.byteOffset, digest.byteLength).getBigUint64(0, false);
}

function be64(value: Checksum64): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value, false);
  return out;
}

function nobleChain(entryChecksums: readonly Checksum64[]): Checksum64 {
  let aggregate: Checksum64 = 0n;
  for (const entryChecksum of entryChecksums) {
    const pair = new Uint8Array(16);
    pair.set(be64(aggregate), 0);
    pair.set(be64(entryChecksum), 8);
    aggregate = nobleChecksum64(pair);
  }
  return aggregate;
}

/** Bit-at-a-time CRC-32 (IEEE, reflected, polynomial 0xEDB88320): slow but obviously right. */
function referenceCrc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function patternBytes(byteLength: number, seed: number): Uint8Array {
  const out = new Uint8Array(byteLength);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < byteLength; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    out[i] = state & 0xff;
  }
  return out;
}

describe('checksum64', () => {
  it('equals the first 8 bytes of noble sha3_256 for random inputs', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => {
        expect(checksum64(bytes)).toBe(nobleChecksum64(bytes));
      }),
      { numRuns: 300 },
    );
  });

  it('equals noble at the empty input, SHA3-256 rate boundaries and large inputs', () => {
    // 136 bytes is the SHA3-256 rate: lengths around its multiples exercise padding edge cases.
    const byteLengths = [0, 1, 135, 136, 137, 271, 272, 273, 65_536, 1024 * 1024 + 7, 5 * 1024 * 1024];
    for (const byteLength of byteLengths) {
      const bytes = patternBytes(byteLength, byteLength + 1);
      expect(checksum64(bytes), `length ${byteLength}`).toBe(nobleChecksum64(bytes));
    }
  });

  it('matches the published SHA3-256 digest of the empty string', () => {
    // SHA3-256("") = a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a
    expect(checksumHex(checksum64(new Uint8Array(0)))).toBe('a7ffc6f8bf1ed766');
    expect(checksum64(new Uint8Array(0))).toBe(0xa7ffc6f8bf1ed766n);
  });

  it('reads only the view it is given, not the whole backing buffer', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 512 }), fc.nat(), fc.nat(), (bytes, a, b) => {
        const start = a % bytes.byteLength;
        const end = start + (b % (bytes.byteLength - start + 1));
        const view = bytes.subarray(start, end);
        expect(checksum64(view)).toBe(nobleChecksum64(bytes.slice(start, end)));
        expect(checksum64(Buffer.from(view.buffer, view.byteOffset, view.byteLength))).toBe(checksum64(view));
      }),
      { numRuns: 200 },
    );
  });

  it('checksumHex is the first 16 hex digits of the digest, zero padded', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
        const hex = Buffer.from(sha3_256(bytes)).toString('hex').slice(0, 16);
        expect(checksumHex(checksum64(bytes))).toBe(hex);
      }),
      { numRuns: 200 },
    );
    expect(checksumHex(1n)).toBe('0000000000000001');
    expect(checksumHex(0xffffffffffffffffn)).toBe('ffffffffffffffff');
  });
});

describe('chainAggregate', () => {
  it('equals the noble-computed chain over random entry checksums', () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 0n, max: 0xffffffffffffffffn }), { maxLength: 64 }), (entryChecksums) => {
        let aggregate = AGGREGATE_EMPTY;
        for (const entryChecksum of entryChecksums) aggregate = chainAggregate(aggregate, entryChecksum);
        expect(aggregate).toBe(nobleChain(entryChecksums));
      }),
      { numRuns: 200 },
    );
  });

  it('starts from zero and depends on order', () => {
    expect(AGGREGATE_EMPTY).toBe(0n);
    const a = checksum64(Buffer.from('a'));
    const b = checksum64(Buffer.from('b'));
    const ab = chainAggregate(chainAggregate(AGGREGATE_EMPTY, a), b);
    const ba = chainAggregate(chainAggregate(AGGREGATE_EMPTY, b), a);
    expect(ab).not.toBe(ba);
    expect(ab).toBe(nobleChain([a, b]));
  });
});

describe('crc32', () => {
  it('matches the standard check value of "123456789"', () => {
    expect(crc32(Buffer.from('123456789', 'ascii'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
  });

  it('matches a bitwise reference implementation and is unsigned', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        const value = crc32(bytes);
        expect(value).toBe(referenceCrc32(bytes));
        expect(value).toBeGreaterThanOrEqual(0);
        expect(value).toBeLessThanOrEqual(0xffffffff);
      }),
      { numRuns: 200 },
    );
  });

  it('crc32Range over any range of a buffer equals zlib crc32 of that range as a view', () => {
    expect(crc32Range(Buffer.from('x123456789y', 'ascii'), 1, 10)).toBe(0xcbf43926);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(), fc.nat(), (bytes, a, b) => {
        const start = bytes.byteLength === 0 ? 0 : a % (bytes.byteLength + 1);
        const end = start + (b % (bytes.byteLength - start + 1));
        expect(crc32Range(bytes, start, end)).toBe(crc32(bytes.subarray(start, end)));
      }),
      { numRuns: 300 },
    );
  });
});
