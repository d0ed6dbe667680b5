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

/** The format version a segment of the chained aggregate is (re)written in, its header unknown. */
export const CHAINED_AGGREGATE_VERSION = 2;
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

/** A running aggregate as plain data (structured-cloneable: what a worker thread sends back). */
export interface AggregateWire {
  readonly formatVersion: number;
  readonly count: number;
  /** The chained value (versions 1 and 2). */
  readonly value: Checksum64;
  /** The sponge state (version 3, AGGREGATE_STATE_BYTES). */
  readonly state?: Uint8Array;
}

export function aggregateToWire(aggregate: SegmentAggregate): AggregateWire {
  if (aggregate instanceof HashedListAggregate) return { formatVersion: aggregate.formatVersion, count: aggregate.count, value: 0n, state: aggregate.toBytes() };
  return { formatVersion: aggregate.formatVersion, count: aggregate.count, value: aggregate.value() };
}

export function aggregateFromWire(wire: AggregateWire): SegmentAggregate {
  if (wire.state !== undefined) return HashedListAggregate.fromBytes(Buffer.from(wire.state.buffer, wire.state.byteOffset, wire.state.byteLength));
  return new ChainedAggregate(wire.formatVersion, wire.value, wire.count);
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
    const s = this.state.slice();
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

/** Keccak-f[1600] (FIPS 202), one round written out over locals (generated; the loop version was ~20x slower). */
export function keccakF1600(s: Uint32Array): void {
  for (let round = 0; round < 24; round += 1) {
    const c0l = s[0]! ^ s[10]! ^ s[20]! ^ s[30]! ^ s[40]!;
    const c0h = s[1]! ^ s[11]! ^ s[21]! ^ s[31]! ^ s[41]!;
    const c1l = s[2]! ^ s[12]! ^ s[22]! ^ s[32]! ^ s[42]!;
    const c1h = s[3]! ^ s[13]! ^ s[23]! ^ s[33]! ^ s[43]!;
    const c2l = s[4]! ^ s[14]! ^ s[24]! ^ s[34]! ^ s[44]!;
    const c2h = s[5]! ^ s[15]! ^ s[25]! ^ s[35]! ^ s[45]!;
    const c3l = s[6]! ^ s[16]! ^ s[26]! ^ s[36]! ^ s[46]!;
    const c3h = s[7]! ^ s[17]! ^ s[27]! ^ s[37]! ^ s[47]!;
    const c4l = s[8]! ^ s[18]! ^ s[28]! ^ s[38]! ^ s[48]!;
    const c4h = s[9]! ^ s[19]! ^ s[29]! ^ s[39]! ^ s[49]!;
    const d0l = c4l ^ ((c1l << 1) | (c1h >>> 31));
    const d0h = c4h ^ ((c1h << 1) | (c1l >>> 31));
    const d1l = c0l ^ ((c2l << 1) | (c2h >>> 31));
    const d1h = c0h ^ ((c2h << 1) | (c2l >>> 31));
    const d2l = c1l ^ ((c3l << 1) | (c3h >>> 31));
    const d2h = c1h ^ ((c3h << 1) | (c3l >>> 31));
    const d3l = c2l ^ ((c4l << 1) | (c4h >>> 31));
    const d3h = c2h ^ ((c4h << 1) | (c4l >>> 31));
    const d4l = c3l ^ ((c0l << 1) | (c0h >>> 31));
    const d4h = c3h ^ ((c0h << 1) | (c0l >>> 31));
    const a0l = s[0]! ^ d0l;
    const a0h = s[1]! ^ d0h;
    const a1l = s[2]! ^ d1l;
    const a1h = s[3]! ^ d1h;
    const a2l = s[4]! ^ d2l;
    const a2h = s[5]! ^ d2h;
    const a3l = s[6]! ^ d3l;
    const a3h = s[7]! ^ d3h;
    const a4l = s[8]! ^ d4l;
    const a4h = s[9]! ^ d4h;
    const a5l = s[10]! ^ d0l;
    const a5h = s[11]! ^ d0h;
    const a6l = s[12]! ^ d1l;
    const a6h = s[13]! ^ d1h;
    const a7l = s[14]! ^ d2l;
    const a7h = s[15]! ^ d2h;
    const a8l = s[16]! ^ d3l;
    const a8h = s[17]! ^ d3h;
    const a9l = s[18]! ^ d4l;
    const a9h = s[19]! ^ d4h;
    const a10l = s[20]! ^ d0l;
    const a10h = s[21]! ^ d0h;
    const a11l = s[22]! ^ d1l;
    const a11h = s[23]! ^ d1h;
    const a12l = s[24]! ^ d2l;
    const a12h = s[25]! ^ d2h;
    const a13l = s[26]! ^ d3l;
    const a13h = s[27]! ^ d3h;
    const a14l = s[28]! ^ d4l;
    const a14h = s[29]! ^ d4h;
    const a15l = s[30]! ^ d0l;
    const a15h = s[31]! ^ d0h;
    const a16l = s[32]! ^ d1l;
    const a16h = s[33]! ^ d1h;
    const a17l = s[34]! ^ d2l;
    const a17h = s[35]! ^ d2h;
    const a18l = s[36]! ^ d3l;
    const a18h = s[37]! ^ d3h;
    const a19l = s[38]! ^ d4l;
    const a19h = s[39]! ^ d4h;
    const a20l = s[40]! ^ d0l;
    const a20h = s[41]! ^ d0h;
    const a21l = s[42]! ^ d1l;
    const a21h = s[43]! ^ d1h;
    const a22l = s[44]! ^ d2l;
    const a22h = s[45]! ^ d2h;
    const a23l = s[46]! ^ d3l;
    const a23h = s[47]! ^ d3h;
    const a24l = s[48]! ^ d4l;
    const a24h = s[49]! ^ d4h;
    const b0l = a0l;
    const b0h = a0h;
    const b10l = (a1l << 1) | (a1h >>> 31);
    const b10h = (a1h << 1) | (a1l >>> 31);
    const b20l = (a2h << 30) | (a2l >>> 2);
    const b20h = (a2l << 30) | (a2h >>> 2);
    const b5l = (a3l << 28) | (a3h >>> 4);
    const b5h = (a3h << 28) | (a3l >>> 4);
    const b15l = (a4l << 27) | (a4h >>> 5);
    const b15h = (a4h << 27) | (a4l >>> 5);
    const b16l = (a5h << 4) | (a5l >>> 28);
    const b16h = (a5l << 4) | (a5h >>> 28);
    const b1l = (a6h << 12) | (a6l >>> 20);
    const b1h = (a6l << 12) | (a6h >>> 20);
    const b11l = (a7l << 6) | (a7h >>> 26);
    const b11h = (a7h << 6) | (a7l >>> 26);
    const b21l = (a8h << 23) | (a8l >>> 9);
    const b21h = (a8l << 23) | (a8h >>> 9);
    const b6l = (a9l << 20) | (a9h >>> 12);
    const b6h = (a9h << 20) | (a9l >>> 12);
    const b7l = (a10l << 3) | (a10h >>> 29);
    const b7h = (a10h << 3) | (a10l >>> 29);
    const b17l = (a11l << 10) | (a11h >>> 22);
    const b17h = (a11h << 10) | (a11l >>> 22);
    const b2l = (a12h << 11) | (a12l >>> 21);
    const b2h = (a12l << 11) | (a12h >>> 21);
    const b12l = (a13l << 25) | (a13h >>> 7);
    const b12h = (a13h << 25) | (a13l >>> 7);
    const b22l = (a14h << 7) | (a14l >>> 25);
    const b22h = (a14l << 7) | (a14h >>> 25);
    const b23l = (a15h << 9) | (a15l >>> 23);
    const b23h = (a15l << 9) | (a15h >>> 23);
    const b8l = (a16h << 13) | (a16l >>> 19);
    const b8h = (a16l << 13) | (a16h >>> 19);
    const b18l = (a17l << 15) | (a17h >>> 17);
    const b18h = (a17h << 15) | (a17l >>> 17);
    const b3l = (a18l << 21) | (a18h >>> 11);
    const b3h = (a18h << 21) | (a18l >>> 11);
    const b13l = (a19l << 8) | (a19h >>> 24);
    const b13h = (a19h << 8) | (a19l >>> 24);
    const b14l = (a20l << 18) | (a20h >>> 14);
    const b14h = (a20h << 18) | (a20l >>> 14);
    const b24l = (a21l << 2) | (a21h >>> 30);
    const b24h = (a21h << 2) | (a21l >>> 30);
    const b9l = (a22h << 29) | (a22l >>> 3);
    const b9h = (a22l << 29) | (a22h >>> 3);
    const b19l = (a23h << 24) | (a23l >>> 8);
    const b19h = (a23l << 24) | (a23h >>> 8);
    const b4l = (a24l << 14) | (a24h >>> 18);
    const b4h = (a24h << 14) | (a24l >>> 18);
    s[0] = b0l ^ (~b1l & b2l);
    s[1] = b0h ^ (~b1h & b2h);
    s[2] = b1l ^ (~b2l & b3l);
    s[3] = b1h ^ (~b2h & b3h);
    s[4] = b2l ^ (~b3l & b4l);
    s[5] = b2h ^ (~b3h & b4h);
    s[6] = b3l ^ (~b4l & b0l);
    s[7] = b3h ^ (~b4h & b0h);
    s[8] = b4l ^ (~b0l & b1l);
    s[9] = b4h ^ (~b0h & b1h);
    s[10] = b5l ^ (~b6l & b7l);
    s[11] = b5h ^ (~b6h & b7h);
    s[12] = b6l ^ (~b7l & b8l);
    s[13] = b6h ^ (~b7h & b8h);
    s[14] = b7l ^ (~b8l & b9l);
    s[15] = b7h ^ (~b8h & b9h);
    s[16] = b8l ^ (~b9l & b5l);
    s[17] = b8h ^ (~b9h & b5h);
    s[18] = b9l ^ (~b5l & b6l);
    s[19] = b9h ^ (~b5h & b6h);
    s[20] = b10l ^ (~b11l & b12l);
    s[21] = b10h ^ (~b11h & b12h);
    s[22] = b11l ^ (~b12l & b13l);
    s[23] = b11h ^ (~b12h & b13h);
    s[24] = b12l ^ (~b13l & b14l);
    s[25] = b12h ^ (~b13h & b14h);
    s[26] = b13l ^ (~b14l & b10l);
    s[27] = b13h ^ (~b14h & b10h);
    s[28] = b14l ^ (~b10l & b11l);
    s[29] = b14h ^ (~b10h & b11h);
    s[30] = b15l ^ (~b16l & b17l);
    s[31] = b15h ^ (~b16h & b17h);
    s[32] = b16l ^ (~b17l & b18l);
    s[33] = b16h ^ (~b17h & b18h);
    s[34] = b17l ^ (~b18l & b19l);
    s[35] = b17h ^ (~b18h & b19h);
    s[36] = b18l ^ (~b19l & b15l);
    s[37] = b18h ^ (~b19h & b15h);
    s[38] = b19l ^ (~b15l & b16l);
    s[39] = b19h ^ (~b15h & b16h);
    s[40] = b20l ^ (~b21l & b22l);
    s[41] = b20h ^ (~b21h & b22h);
    s[42] = b21l ^ (~b22l & b23l);
    s[43] = b21h ^ (~b22h & b23h);
    s[44] = b22l ^ (~b23l & b24l);
    s[45] = b22h ^ (~b23h & b24h);
    s[46] = b23l ^ (~b24l & b20l);
    s[47] = b23h ^ (~b24h & b20h);
    s[48] = b24l ^ (~b20l & b21l);
    s[49] = b24h ^ (~b20h & b21h);
    s[0] = s[0]! ^ RC_LO[round]!;
    s[1] = s[1]! ^ RC_HI[round]!;
  }
}
