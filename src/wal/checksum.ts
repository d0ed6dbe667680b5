// Checksums used by the on-disk format.
//
// - checksum64: the first 8 bytes of SHA3-256, read big-endian so that its hex form equals the
//   first 16 hex digits of the digest. node:crypto's native SHA3 is used here (the hot path); the
//   tests compare it byte for byte with @noble/hashes, an independent implementation.
// - The aggregate checksum of a segment chains the entry checksums in order:
//     aggregate_0 = 0, aggregate_k = checksum64(aggregate_{k-1} || entryChecksum_k)
//   so its running state is 8 bytes (checkpointable in the catalog) and two replicas compare a
//   sealed segment in O(1).
// - crc32 (zlib's polynomial) guards the small entry header so a damaged length is recognised
//   before it is trusted; it is not the integrity check of the data. crc32Range computes the same
//   value in JS over a range of a buffer: for the 32 bytes of an entry header that is several
//   times cheaper than a native call on a fresh view (the scan's per-frame cost).
import { hash } from 'node:crypto';
import { crc32 as zlibCrc32 } from 'node:zlib';

export type Checksum64 = bigint;

export const CHECKSUM_BYTES = 8;
export const AGGREGATE_EMPTY: Checksum64 = 0n;

export function checksum64(bytes: Uint8Array): Checksum64 {
  return hash('sha3-256', bytes, 'buffer').readBigUInt64BE(0);
}

const chainScratch = Buffer.alloc(16);

export function chainAggregate(previous: Checksum64, entryChecksum: Checksum64): Checksum64 {
  chainScratch.writeBigUInt64BE(previous, 0);
  chainScratch.writeBigUInt64BE(entryChecksum, 8);
  return checksum64(chainScratch);
}

export function crc32(bytes: Uint8Array): number {
  return zlibCrc32(bytes) >>> 0;
}

const CRC32_TABLE = (() => {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/** crc32(bytes.subarray(start, end)) without the view or a native call (short ranges). */
export function crc32Range(bytes: Uint8Array, start: number, end: number): number {
  let c = -1;
  for (let i = start; i < end; i += 1) c = CRC32_TABLE[(c ^ (bytes[i] as number)) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

export function checksumHex(value: Checksum64): string {
  return value.toString(16).padStart(16, '0');
}
