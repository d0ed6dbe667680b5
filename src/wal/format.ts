// The on-disk format of a segment file, as pure encode and decode functions over bytes.
// docs/FORMAT.md describes the same layout in prose; keep the two in step.
//
// Fault model: any byte of a file may be flipped, zeroed or cut off. Nothing read from disk is
// trusted before its checksum passes: a header or trailer is checked as a whole, an entry header
// by its crc32 before its length is used, an entry body by its SHA3 checksum before it is
// returned. Decoders return values describing damage; they never throw on bad bytes.
//
// All integers are little-endian except checksums, which are stored as the digest's own bytes.
//
// Segment file:  [segment header, 128 bytes] [entry frame]* [trailer, 64 bytes, once sealed]
//
// Segment header (128 bytes)
//   0  u32 magic 'WALS'          4  u16 format version (3; 1 and 2 are still read)   6  u16 header byte length (128)
//   8  u64 segment id           16  u64 first index         24  u64 created (unix ms)
//  32  u64 log id (checksum64 of the log name)              40  u8 log name byte length
//  41  63 bytes log name (UTF-8, zero padded)              104  16 bytes reserved (zero)
// 120  checksum64 of bytes 0..120
//
// Entry frame (40-byte header, then the payload)
//   0  u32 magic 'WALE'          4  u32 crc32 of bytes 8..40
//   8  checksum64 of bytes 16..(40 + payload length): metadata and payload
//  16  u64 log index            24  u64 timestamp (unix ms)  32  u32 payload byte length
//  36  u16 flags                38  u16 reserved (zero)     40  payload
// A hole frame (flags & FLAG_HOLE) records `count` lost indices starting at its index; its
// payload is a u64 count followed by a UTF-8 reason.
// A session frame (flags & FLAG_SESSION, format version 2) is the last entry of a batch a client
// session appended: its payload starts with a 32-byte session tag (16 bytes session id, u64
// sequence, u32 entry count of the batch, u32 reserved zero), then the client's payload. A new
// writer rebuilds its session table from these tags (src/replication/sessions.ts).
// Every other entry of a session batch carries FLAG_BATCH_OPEN ("the batch goes on after this
// entry"): a recovery never seals at such an entry (src/replication/writer.ts), since a point
// inside a batch was never acknowledged and would commit the batch's first part without its tag.
//
// Trailer (64 bytes, written once when the segment is sealed)
//   0  u32 magic 'WALT'          4  u32 reserved (zero)       8  u64 segment id
//  16  u64 first index          24  u64 last index           32  u64 index count (entries + holes)
//  40  checksum64 aggregate     48  u64 entry bytes (from end of header to start of trailer)
//  The aggregate of the entry checksums is chained in versions 1 and 2 and a hashed list in 3
//  (src/wal/aggregate.ts).
//  56  checksum64 of bytes 0..56
import { hash } from 'node:crypto';
import { type Checksum64, checksum64, crc32, crc32Range } from './checksum.js';

/**
 * The version written; every version in FORMAT_VERSIONS_READABLE is read. 1: no session frames;
 * 2: session frames; 3: the hashed-list aggregate (src/wal/aggregate.ts), frames as in 2.
 */
export const FORMAT_VERSION = 3;
export const FORMAT_VERSIONS_READABLE: readonly number[] = [1, 2, 3];
export const SEGMENT_MAGIC = 0x534c4157; // 'WALS'
export const ENTRY_MAGIC = 0x454c4157; // 'WALE'
export const TRAILER_MAGIC = 0x544c4157; // 'WALT'
export const ENTRY_MAGIC_BYTES = Buffer.from('WALE', 'latin1');
export const TRAILER_MAGIC_BYTES = Buffer.from('WALT', 'latin1');

export const SEGMENT_HEADER_BYTES = 128;
export const ENTRY_HEADER_BYTES = 40;
export const TRAILER_BYTES = 64;
export const LOG_NAME_BYTES_MAX = 63;
/** Indices and counts are stored as u64 but handled as JS numbers: refuse anything larger. */
export const INDEX_MAX = Number.MAX_SAFE_INTEGER;

export const FLAG_HOLE = 0x0001;
/** The payload starts with a session tag (SESSION_TAG_BYTES): the last entry of a session's batch. */
export const FLAG_SESSION = 0x0002;
/** A session batch goes on after this entry (every entry of a session batch but its last). */
export const FLAG_BATCH_OPEN = 0x0004;
const FLAGS_KNOWN = FLAG_HOLE | FLAG_SESSION | FLAG_BATCH_OPEN;
export const SESSION_TAG_BYTES = 32;
export const SESSION_ID_BYTES = 16;

/** Which client batch a session frame closes: the batch is index - count + 1 .. index. */
export interface SessionTag {
  /** 32 lowercase hex digits (16 bytes). */
  readonly sessionId: string;
  readonly sequence: number;
  /** Entries in the batch (this one is its last). */
  readonly count: number;
}

export interface SegmentHeader {
  readonly segmentId: number;
  readonly firstIndex: number;
  readonly createdMs: number;
  readonly logId: Checksum64;
  readonly logName: string;
  /** The header's format version (decoded); FORMAT_VERSION when encoding without one. */
  readonly formatVersion?: number;
}

export interface EntryHeader {
  readonly checksum: Checksum64;
  readonly index: number;
  readonly timestampMs: number;
  readonly payloadByteLength: number;
  readonly flags: number;
}

export interface Trailer {
  readonly segmentId: number;
  readonly firstIndex: number;
  /** firstIndex - 1 when the segment holds no index. */
  readonly lastIndex: number;
  readonly indexCount: number;
  readonly aggregateChecksum: Checksum64;
  readonly entriesByteLength: number;
}

export function logIdOf(logName: string): Checksum64 {
  return checksum64(Buffer.from(logName, 'utf8'));
}

function readU64(buf: Buffer, off: number): number | undefined {
  const lo = buf.readUInt32LE(off);
  const hi = buf.readUInt32LE(off + 4);
  if (hi >= 0x200000) return undefined; // beyond 2^53
  return hi * 0x1_0000_0000 + lo;
}

function writeU64(buf: Buffer, off: number, value: number): void {
  buf.writeUInt32LE(value % 0x1_0000_0000, off);
  buf.writeUInt32LE(Math.floor(value / 0x1_0000_0000), off + 4);
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---------------------------------------------------------------------------------------------
// Segment header

export function encodeSegmentHeader(header: SegmentHeader): Buffer {
  const name = Buffer.from(header.logName, 'utf8');
  if (name.byteLength > LOG_NAME_BYTES_MAX) throw new RangeError(`log name longer than ${LOG_NAME_BYTES_MAX} bytes`);
  const version = header.formatVersion ?? FORMAT_VERSION;
  if (!FORMAT_VERSIONS_READABLE.includes(version)) throw new RangeError(`format version ${version} is not one this code reads`);
  const buf = Buffer.alloc(SEGMENT_HEADER_BYTES);
  buf.writeUInt32LE(SEGMENT_MAGIC, 0);
  buf.writeUInt16LE(version, 4);
  buf.writeUInt16LE(SEGMENT_HEADER_BYTES, 6);
  writeU64(buf, 8, header.segmentId);
  writeU64(buf, 16, header.firstIndex);
  writeU64(buf, 24, header.createdMs);
  buf.writeBigUInt64BE(header.logId, 32);
  buf.writeUInt8(name.byteLength, 40);
  name.copy(buf, 41);
  buf.writeBigUInt64BE(checksum64(buf.subarray(0, 120)), 120);
  return buf;
}

export type HeaderDecode = { ok: true; header: SegmentHeader } | { ok: false; reason: string };

export function decodeSegmentHeader(bytes: Uint8Array): HeaderDecode {
  if (bytes.byteLength < SEGMENT_HEADER_BYTES) return { ok: false, reason: 'file shorter than a segment header' };
  const buf = asBuffer(bytes);
  if (buf.readUInt32LE(0) !== SEGMENT_MAGIC) return { ok: false, reason: 'bad segment magic' };
  if (buf.readBigUInt64BE(120) !== checksum64(buf.subarray(0, 120))) {
    return { ok: false, reason: 'segment header checksum mismatch' };
  }
  if (!FORMAT_VERSIONS_READABLE.includes(buf.readUInt16LE(4))) return { ok: false, reason: `unsupported format version ${buf.readUInt16LE(4)}` };
  const segmentId = readU64(buf, 8);
  const firstIndex = readU64(buf, 16);
  const createdMs = readU64(buf, 24);
  const nameLength = buf.readUInt8(40);
  if (segmentId === undefined || firstIndex === undefined || createdMs === undefined || nameLength > LOG_NAME_BYTES_MAX) {
    return { ok: false, reason: 'segment header field out of range' };
  }
  return {
    ok: true,
    header: {
      segmentId,
      firstIndex,
      createdMs,
      logId: buf.readBigUInt64BE(32),
      logName: buf.toString('utf8', 41, 41 + nameLength),
      formatVersion: buf.readUInt16LE(4),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Entry frames

export interface EntryInput {
  readonly index: number;
  readonly timestampMs: number;
  readonly flags: number;
  readonly payload: Uint8Array;
  /** Tags the frame as the last of a session's batch (sets FLAG_SESSION, prefixes the tag). */
  readonly session?: SessionTag;
}

export function isSessionId(sessionId: string): boolean {
  return /^[0-9a-f]{32}$/.test(sessionId);
}

export function encodeSessionTagInto(target: Buffer, offset: number, tag: SessionTag): void {
  if (!isSessionId(tag.sessionId)) throw new RangeError('a session id is 32 lowercase hex digits');
  target.write(tag.sessionId, offset, SESSION_ID_BYTES, 'hex');
  writeU64(target, offset + 16, tag.sequence);
  target.writeUInt32LE(tag.count, offset + 24);
  target.writeUInt32LE(0, offset + 28);
}

/** The session tag of a frame already verified by decodeFrameAt, or undefined (untagged or malformed). */
export function sessionTagOf(frame: Uint8Array): SessionTag | undefined {
  const buf = asBuffer(frame);
  if ((buf.readUInt16LE(36) & FLAG_SESSION) === 0 || buf.readUInt32LE(32) < SESSION_TAG_BYTES) return undefined;
  const at = ENTRY_HEADER_BYTES;
  const sequence = readU64(buf, at + 16);
  const count = buf.readUInt32LE(at + 24);
  if (sequence === undefined || count < 1) return undefined;
  return { sessionId: buf.toString('hex', at, at + SESSION_ID_BYTES), sequence, count };
}

/** The client's payload of a frame already verified by decodeFrameAt (without a session tag). */
export function entryPayloadOf(frame: Uint8Array): Buffer {
  const buf = asBuffer(frame);
  const tagged = (buf.readUInt16LE(36) & FLAG_SESSION) !== 0 && buf.readUInt32LE(32) >= SESSION_TAG_BYTES;
  return buf.subarray(ENTRY_HEADER_BYTES + (tagged ? SESSION_TAG_BYTES : 0));
}

export function frameByteLength(payloadByteLength: number): number {
  return ENTRY_HEADER_BYTES + payloadByteLength;
}

/** Encodes one frame into `target` at `offset`; returns the entry checksum. */
export function encodeEntryInto(target: Buffer, offset: number, entry: EntryInput): Checksum64 {
  const tagBytes = entry.session ? SESSION_TAG_BYTES : 0;
  const length = tagBytes + entry.payload.byteLength;
  target.writeUInt32LE(ENTRY_MAGIC, offset);
  writeU64(target, offset + 16, entry.index);
  writeU64(target, offset + 24, entry.timestampMs);
  target.writeUInt32LE(length, offset + 32);
  target.writeUInt16LE(entry.session ? entry.flags | FLAG_SESSION : entry.flags, offset + 36);
  target.writeUInt16LE(0, offset + 38);
  if (entry.session) encodeSessionTagInto(target, offset + ENTRY_HEADER_BYTES, entry.session);
  target.set(entry.payload, offset + ENTRY_HEADER_BYTES + tagBytes);
  const checksum = checksum64(target.subarray(offset + 16, offset + ENTRY_HEADER_BYTES + length));
  target.writeBigUInt64BE(checksum, offset + 8);
  target.writeUInt32LE(crc32(target.subarray(offset + 8, offset + ENTRY_HEADER_BYTES)), offset + 4);
  return checksum;
}

export function encodeEntry(entry: EntryInput): { frame: Buffer; checksum: Checksum64 } {
  const frame = Buffer.allocUnsafe(frameByteLength(entry.payload.byteLength + (entry.session ? SESSION_TAG_BYTES : 0)));
  const checksum = encodeEntryInto(frame, 0, entry);
  return { frame, checksum };
}

/** The entry checksum stored in a frame already verified by decodeFrameAt (bytes 8..16). */
export function frameChecksumOf(frame: Uint8Array): Checksum64 {
  return asBuffer(frame).readBigUInt64BE(8);
}

/** The low 32 bits of an entry checksum: what a read index keeps per entry. */
export function checkWordOf(checksum: Checksum64): number {
  return Number(checksum & 0xffffffffn);
}

/** checkWordOf(frameChecksumOf(frame)), read directly (bytes 12..16) on the hot paths. */
export function frameCheckWordOf(frame: Uint8Array): number {
  return asBuffer(frame).readUInt32BE(12);
}

/** Whether a frame already verified by decodeFrameAt continues a session batch (FLAG_BATCH_OPEN): no seal point. */
export function isBatchOpenFrame(frame: Uint8Array): boolean {
  return (asBuffer(frame).readUInt16LE(36) & FLAG_BATCH_OPEN) !== 0;
}

/** Whether a frame already verified by decodeFrameAt records lost indices (a hole frame). */
export function isHoleFrame(frame: Uint8Array): boolean {
  return (asBuffer(frame).readUInt16LE(36) & FLAG_HOLE) !== 0;
}

export function encodeHolePayload(count: number, reason: string): Buffer {
  const text = Buffer.from(reason.slice(0, 200), 'utf8');
  const payload = Buffer.alloc(8 + text.byteLength);
  writeU64(payload, 0, count);
  text.copy(payload, 8);
  return payload;
}

export function decodeHolePayload(payload: Uint8Array): { count: number; reason: string } | undefined {
  if (payload.byteLength < 8) return undefined;
  const buf = asBuffer(payload);
  const count = readU64(buf, 0);
  if (count === undefined || count < 1) return undefined;
  return { count, reason: buf.toString('utf8', 8) };
}

/**
 * What lies at an offset inside the entry area of a segment.
 * - entry: the header passed its crc32, so its length is trusted; bodyOk says whether the SHA3
 *   checksum over metadata and payload matched.
 * - trailer: a trailer whose checksum passed.
 * - need-more: the bytes given end before the frame does (at end of file: a cut-off frame).
 * - bad: not a trustworthy frame here.
 */
export type FrameDecode =
  | { kind: 'entry'; header: EntryHeader; frameByteLength: number; bodyOk: boolean; actualChecksum: Checksum64 }
  | { kind: 'trailer'; trailer: Trailer }
  | { kind: 'need-more'; byteLength: number }
  | { kind: 'bad'; reason: 'bad-entry-header' | 'bad-trailer' };

export type FrameKind = FrameDecode['kind'];
export type BadFrameReason = Extract<FrameDecode, { kind: 'bad' }>['reason'];

const NO_BYTES = Buffer.alloc(0);

/**
 * A frame decoder that fills itself in place: what decodeFrameAt returns, without a result
 * object, a header object or a BigInt per frame (the scan's hot path: open, validate, scrub).
 * Its fields describe the last decode() only, and the frame's bytes are the caller's: read them
 * (frameView, storedChecksum) before those bytes change.
 */
export class FrameCursor {
  kind: FrameKind = 'bad';
  /** need-more: the byte length the frame needs from its start. */
  neededByteLength = 0;
  /** bad: why. */
  badReason: BadFrameReason = 'bad-entry-header';
  /** trailer: the trailer decoded. */
  trailer: Trailer | undefined;
  /** The bytes and offset of the last decode (the frame starts at bytes[at]). */
  bytes: Buffer = NO_BYTES;
  at = 0;
  // entry: the header's fields (trusted: its crc32 passed), and whether the SHA3 checksum matched.
  index = 0;
  timestampMs = 0;
  payloadByteLength = 0;
  flags = 0;
  frameByteLength = 0;
  bodyOk = false;
  /** entry with !bodyOk: the checksum of the bytes (computed only for a mismatch). */
  private mismatchChecksum: Checksum64 = 0n;

  decode(bytes: Buffer, offset: number, entryBytesMax: number): FrameKind {
    this.bytes = bytes;
    this.at = offset;
    this.trailer = undefined;
    const available = bytes.byteLength - offset;
    if (available < 4) return this.needMore(ENTRY_HEADER_BYTES);
    const magic = bytes.readUInt32LE(offset);
    if (magic === TRAILER_MAGIC) {
      if (available < TRAILER_BYTES) return this.needMore(TRAILER_BYTES);
      const decoded = decodeTrailer(bytes.subarray(offset, offset + TRAILER_BYTES));
      if (!decoded.ok) return this.bad('bad-trailer');
      this.trailer = decoded.trailer;
      return (this.kind = 'trailer');
    }
    if (magic !== ENTRY_MAGIC) return this.bad('bad-entry-header');
    if (available < ENTRY_HEADER_BYTES) return this.needMore(ENTRY_HEADER_BYTES);
    if (bytes.readUInt32LE(offset + 4) !== crc32Range(bytes, offset + 8, offset + ENTRY_HEADER_BYTES)) return this.bad('bad-entry-header');
    const index = readU64(bytes, offset + 16);
    const timestampMs = readU64(bytes, offset + 24);
    const payloadByteLength = bytes.readUInt32LE(offset + 32);
    const flags = bytes.readUInt16LE(offset + 36);
    if (
      index === undefined ||
      index < 1 ||
      timestampMs === undefined ||
      payloadByteLength > entryBytesMax ||
      (flags & ~FLAGS_KNOWN) !== 0 ||
      (flags & (FLAG_HOLE | FLAG_SESSION)) === (FLAG_HOLE | FLAG_SESSION) ||
      ((flags & FLAG_BATCH_OPEN) !== 0 && (flags & (FLAG_HOLE | FLAG_SESSION)) !== 0) ||
      ((flags & FLAG_SESSION) !== 0 && payloadByteLength < SESSION_TAG_BYTES) ||
      bytes.readUInt16LE(offset + 38) !== 0
    ) {
      return this.bad('bad-entry-header');
    }
    const length = frameByteLength(payloadByteLength);
    if (available < length) return this.needMore(length);
    // The digest comes back as a 'binary' (latin1) string (one V8 string, no Buffer and its backing store)
    // and its first 8 bytes are compared with the stored checksum byte by byte: no BigInt for an
    // intact frame.
    const digest = hash('sha3-256', bytes.subarray(offset + 16, offset + length), 'binary');
    let bodyOk = true;
    for (let i = 0; i < 8; i += 1) {
      if (digest.charCodeAt(i) !== bytes[offset + 8 + i]) {
        bodyOk = false;
        break;
      }
    }
    this.index = index;
    this.timestampMs = timestampMs;
    this.payloadByteLength = payloadByteLength;
    this.flags = flags;
    this.frameByteLength = length;
    this.bodyOk = bodyOk;
    this.mismatchChecksum = bodyOk ? 0n : Buffer.from(digest, 'latin1').readBigUInt64BE(0);
    return (this.kind = 'entry');
  }

  /** entry: the checksum stored in the frame. */
  storedChecksum(): Checksum64 {
    return this.bytes.readBigUInt64BE(this.at + 8);
  }

  /** entry: the checksum of the frame's bytes (the stored one when bodyOk). */
  actualChecksum(): Checksum64 {
    return this.bodyOk ? this.storedChecksum() : this.mismatchChecksum;
  }

  /** entry: the header as an object (decodeFrameAt's). */
  header(): EntryHeader {
    return { checksum: this.storedChecksum(), index: this.index, timestampMs: this.timestampMs, payloadByteLength: this.payloadByteLength, flags: this.flags };
  }

  /** entry: the whole frame, a view of the decoded bytes. */
  frameView(): Buffer {
    return this.bytes.subarray(this.at, this.at + this.frameByteLength);
  }

  /** The result as decodeFrameAt returns it. */
  toDecode(): FrameDecode {
    switch (this.kind) {
      case 'entry':
        return { kind: 'entry', header: this.header(), frameByteLength: this.frameByteLength, bodyOk: this.bodyOk, actualChecksum: this.actualChecksum() };
      case 'trailer':
        return { kind: 'trailer', trailer: this.trailer as Trailer };
      case 'need-more':
        return { kind: 'need-more', byteLength: this.neededByteLength };
      case 'bad':
        return { kind: 'bad', reason: this.badReason };
    }
  }

  private needMore(byteLength: number): FrameKind {
    this.neededByteLength = byteLength;
    this.frameByteLength = 0; // no entry here: the last entry's fields must not describe this place
    return (this.kind = 'need-more');
  }

  private bad(reason: BadFrameReason): FrameKind {
    this.badReason = reason;
    this.frameByteLength = 0;
    return (this.kind = 'bad');
  }
}

const sharedCursor = new FrameCursor();

export function decodeFrameAt(bytes: Uint8Array, offset: number, entryBytesMax: number): FrameDecode {
  sharedCursor.decode(asBuffer(bytes), offset, entryBytesMax);
  const decoded = sharedCursor.toDecode();
  sharedCursor.bytes = NO_BYTES; // do not keep the caller's bytes alive
  return decoded;
}

// ---------------------------------------------------------------------------------------------
// Trailer

export function encodeTrailer(trailer: Trailer): Buffer {
  const buf = Buffer.alloc(TRAILER_BYTES);
  buf.writeUInt32LE(TRAILER_MAGIC, 0);
  writeU64(buf, 8, trailer.segmentId);
  writeU64(buf, 16, trailer.firstIndex);
  writeU64(buf, 24, trailer.lastIndex);
  writeU64(buf, 32, trailer.indexCount);
  buf.writeBigUInt64BE(trailer.aggregateChecksum, 40);
  writeU64(buf, 48, trailer.entriesByteLength);
  buf.writeBigUInt64BE(checksum64(buf.subarray(0, 56)), 56);
  return buf;
}

export function decodeTrailer(bytes: Uint8Array): { ok: true; trailer: Trailer } | { ok: false } {
  if (bytes.byteLength < TRAILER_BYTES) return { ok: false };
  const buf = asBuffer(bytes);
  if (buf.readUInt32LE(0) !== TRAILER_MAGIC || buf.readUInt32LE(4) !== 0) return { ok: false };
  if (buf.readBigUInt64BE(56) !== checksum64(buf.subarray(0, 56))) return { ok: false };
  const segmentId = readU64(buf, 8);
  const firstIndex = readU64(buf, 16);
  const lastIndex = readU64(buf, 24);
  const indexCount = readU64(buf, 32);
  const entriesByteLength = readU64(buf, 48);
  if (
    segmentId === undefined ||
    firstIndex === undefined ||
    lastIndex === undefined ||
    indexCount === undefined ||
    entriesByteLength === undefined
  ) {
    return { ok: false };
  }
  return {
    ok: true,
    trailer: { segmentId, firstIndex, lastIndex, indexCount, aggregateChecksum: buf.readBigUInt64BE(40), entriesByteLength },
  };
}

// ---------------------------------------------------------------------------------------------
// File names

export const SEGMENT_FILE_SUFFIX = '.wal';
const SEGMENT_FILE_PATTERN = /^(\d{20})\.wal$/;

export function segmentFileName(segmentId: number): string {
  return `${String(segmentId).padStart(20, '0')}${SEGMENT_FILE_SUFFIX}`;
}

/** The segment id a file name stands for, or undefined for any other name. */
export function parseSegmentFileName(name: string): number | undefined {
  const match = SEGMENT_FILE_PATTERN.exec(name);
  if (!match?.[1]) return undefined;
  const id = Number(match[1]);
  return Number.isSafeInteger(id) ? id : undefined;
}
