// The aggregate checksum of a segment: one 64-bit value over its entries' checksums in order, so
// that two replicas compare a sealed segment in O(1). Which function depends on the segment's
// format version (its header):
//
// - versions 1 and 2 (chained): aggregate_0 = 0, aggregate_k = checksum64(aggregate_{k-1} ||
//   entryChecksum_k): a second SHA3 call per entry.
// - version 3 (hashed list): 0 for a segment without entries, else the first 8 bytes (read
//   big-endian) of SHA3-256(entryChecksum_1 || ... || entryChecksum_n), each checksum as its 8
//   stored bytes. Absorbing 8 bytes into a Keccak sponge is an XOR of two words, and SHA3-256's
//   rate (136 bytes) holds exactly 17 checksums, so one Keccak-f permutation serves 17 entries:
//   per entry a small fraction of the cost of a hash call. The running state (200 bytes and a
//   count) is a value that can be copied and written to the catalog at a checkpoint
//   (AGGREGATE_STATE_BYTES).
//
// The Keccak-f[1600] permutation is written out here (FIPS 202) because node:crypto exposes no
// sponge state; test/unit/aggregate.test.ts compares it with node:crypto's SHA3-256 and with
// @noble/hashes over the same bytes.
import { type Checksum64, chainAggregate } from './checksum.js';

/** The first format version whose segments use the hashed-list aggregate. */
export const HASHED_LIST_AGGREGATE_VERSION = 3;
/** Serialized running state of a hashed-list aggregate: 200 bytes of Keccak state, u64 count. */
export const AGGREGATE_STATE_BYTES = 208;

const RATE_WORDS = 17; // 136-byte rate / 8 bytes per checksum

export interface SegmentAggregate {
  readonly formatVersion: number;
  /** Entries (frames) added so far. */
  readonly count: number;
  add(checksum: Checksum64): void;
  /** Adds the checksum stored as 8 digest bytes at bytes[offset] (a frame's bytes 8..16). */
  addStored(bytes: Buffer, offset: number): void;
  copy(): SegmentAggregate;
  value(): Checksum64;
}

export function newAggregate(formatVersion: number): SegmentAggregate {
  return formatVersion >= HASHED_LIST_AGGREGATE_VERSION ? new HashedListAggregate() : new ChainedAggregate(formatVersion, 0n, 0);
}

/**
 * The running aggregate at a checkpoint: from its value (versions 1 and 2) or its state (3).
 */
export function resumedAggregate(formatVersion: number, value: Checksum64, state: SegmentAggregate | undefined): SegmentAggregate {
  if (formatVersion < HASHED_LIST_AGGREGATE_VERSION) return new ChainedAggregate(formatVersion, value, 0);
  if (state?.formatVersion !== formatVersion) throw new Error('bug: a version-3 aggregate resumed without its state');
  return state.copy();
}

/** The aggregate of a list of entry checksums, for a segment of the given format version. */
export function aggregateOf(formatVersion: number, checksums: Iterable<Checksum64>): Checksum64 {
  const aggregate = newAggregate(formatVersion);
  for (const checksum of checksums) aggregate.add(checksum);
  return aggregate.value();
}

class ChainedAggregate implements SegmentAggregate {
  constructor(
    readonly formatVersion: number,
    private current: Checksum64,
    public count: number,
  ) {}

  add(checksum: Checksum64): void {
    this.current = chainAggregate(this.current, checksum);
    this.count += 1;
  }

  addStored(bytes: Buffer, offset: number): void {
    this.add(bytes.readBigUInt64BE(offset));
  }

  copy(): SegmentAggregate {
    return new ChainedAggregate(this.formatVersion, this.current, this.count);
  }

  value(): Checksum64 {
    return this.current;
  }
}

const scratch = Buffer.alloc(8);

export class HashedListAggregate implements SegmentAggregate {
  readonly formatVersion = HASHED_LIST_AGGREGATE_VERSION;
  count = 0;
  private readonly state = new Uint32Array(50);

  add(checksum: Checksum64): void {
    scratch.writeBigUInt64BE(checksum, 0);
    this.addStored(scratch, 0);
  }

  addStored(bytes: Buffer, offset: number): void {
    const word = (this.count % RATE_WORDS) * 2;
    const s = this.state;
    // A SHA3 lane takes its 8 message bytes little-endian: word 2j is bytes 0..3 of lane j.
    s[word] = (s[word] as number) ^ bytes.readUInt32LE(offset);
    s[word + 1] = (s[word + 1] as number) ^ bytes.readUInt32LE(offset + 4);
    this.count += 1;
    if (this.count % RATE_WORDS === 0) keccakF1600(s);
  }

  copy(): HashedListAggregate {
    const c = new HashedListAggregate();
    c.state.set(this.state);
    c.count = this.count;
    return c;
  }

  value(): Checksum64 {
    if (this.count === 0) return 0n;
    const s = Uint32Array.from(this.state);
    const word = (this.count % RATE_WORDS) * 2;
    s[word] = (s[word] as number) ^ 0x06; // SHA3 domain bits and the first pad bit
    s[33] = (s[33] as number) ^ 0x80000000; // the last pad bit: byte 135 of the block
    keccakF1600(s);
    scratch.writeUInt32LE(s[0] as number, 0);
    scratch.writeUInt32LE(s[1] as number, 4);
    return scratch.readBigUInt64BE(0);
  }

  /** The running state for a checkpoint (AGGREGATE_STATE_BYTES). */
  toBytes(): Buffer {
    const out = Buffer.alloc(AGGREGATE_STATE_BYTES);
    for (let i = 0; i < 50; i += 1) out.writeUInt32LE(this.state[i] as number, i * 4);
    out.writeUInt32LE(this.count % 0x1_0000_0000, 200);
    out.writeUInt32LE(Math.floor(this.count / 0x1_0000_0000), 204);
    return out;
  }

  static fromBytes(bytes: Buffer): HashedListAggregate {
    if (bytes.byteLength !== AGGREGATE_STATE_BYTES) throw new RangeError(`an aggregate state is ${AGGREGATE_STATE_BYTES} bytes`);
    const a = new HashedListAggregate();
    for (let i = 0; i < 50; i += 1) a.state[i] = bytes.readUInt32LE(i * 4);
    a.count = bytes.readUInt32LE(204) * 0x1_0000_0000 + bytes.readUInt32LE(200);
    return a;
  }
}

// ---------------------------------------------------------------------------------------------
// Keccak-f[1600] over 25 lanes held as 50 u32 words (word 2j: low half of lane j, 2j+1: high).

const ROUND_CONSTANTS = [
  0x0000000000000001n, 0x0000000000008082n, 0x800000000000808an, 0x8000000080008000n, 0x000000000000808bn, 0x0000000080000001n,
  0x8000000080008081n, 0x8000000000008009n, 0x000000000000008an, 0x0000000000000088n, 0x0000000080008009n, 0x000000008000000an,
  0x000000008000808bn, 0x800000000000008bn, 0x8000000000008089n, 0x8000000000008003n, 0x8000000000008002n, 0x8000000000000080n,
  0x000000000000800an, 0x800000008000000an, 0x8000000080008081n, 0x8000000000008080n, 0x0000000080000001n, 0x8000000080008008n,
];
const RC_LO = Uint32Array.from(ROUND_CONSTANTS, (c) => Number(c & 0xffffffffn));
const RC_HI = Uint32Array.from(ROUND_CONSTANTS, (c) => Number(c >> 32n));

// Rho and pi as one walk over the lanes: lane PI_LANE[t] receives the previous lane rotated by ROTATE[t].
const PI_WORD: number[] = [];
const ROTATE: number[] = [];
for (let t = 0, x = 1, y = 0; t < 24; t += 1) {
  [x, y] = [y, (2 * x + 3 * y) % 5];
  PI_WORD.push(2 * (x + 5 * y));
  ROTATE.push((((t + 1) * (t + 2)) / 2) % 64);
}

const C = new Uint32Array(10);

function rotlLo(lo: number, hi: number, n: number): number {
  return n < 32 ? (lo << n) | (hi >>> (32 - n)) : (hi << (n - 32)) | (lo >>> (64 - n));
}

function rotlHi(lo: number, hi: number, n: number): number {
  return n < 32 ? (hi << n) | (lo >>> (32 - n)) : (lo << (n - 32)) | (hi >>> (64 - n));
}

export function keccakF1600(s: Uint32Array): void {
  for (let round = 0; round < 24; round += 1) {
    // Theta
    for (let x = 0; x < 10; x += 1) C[x] = (s[x] as number) ^ (s[x + 10] as number) ^ (s[x + 20] as number) ^ (s[x + 30] as number) ^ (s[x + 40] as number);
    for (let x = 0; x < 10; x += 2) {
      const next = (x + 2) % 10;
      const prev = (x + 8) % 10;
      const nLo = C[next] as number;
      const nHi = C[next + 1] as number;
      const dLo = ((nLo << 1) | (nHi >>> 31)) ^ (C[prev] as number);
      const dHi = ((nHi << 1) | (nLo >>> 31)) ^ (C[prev + 1] as number);
      for (let y = 0; y < 50; y += 10) {
        s[x + y] = (s[x + y] as number) ^ dLo;
        s[x + y + 1] = (s[x + y + 1] as number) ^ dHi;
      }
    }
    // Rho and pi
    let lo = s[2] as number;
    let hi = s[3] as number;
    for (let t = 0; t < 24; t += 1) {
      const n = ROTATE[t] as number;
      const w = PI_WORD[t] as number;
      const rLo = rotlLo(lo, hi, n);
      const rHi = rotlHi(lo, hi, n);
      lo = s[w] as number;
      hi = s[w + 1] as number;
      s[w] = rLo;
      s[w + 1] = rHi;
    }
    // Chi
    for (let y = 0; y < 50; y += 10) {
      for (let x = 0; x < 10; x += 1) C[x] = s[y + x] as number;
      for (let x = 0; x < 10; x += 1) s[y + x] = (C[x] as number) ^ (~(C[(x + 2) % 10] as number) & (C[(x + 4) % 10] as number));
    }
    // Iota
    s[0] = (s[0] as number) ^ (RC_LO[round] as number);
    s[1] = (s[1] as number) ^ (RC_HI[round] as number);
  }
}
