// Pure encode/decode tests of the segment format: round trips, single-bit damage in every
// checksummed structure, range limits and hostile file names.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checksum64, crc32 } from '../../src/wal/checksum.js';
import {
  decodeFrameAt,
  FrameCursor,
  decodeHolePayload,
  decodeSegmentHeader,
  decodeTrailer,
  ENTRY_HEADER_BYTES,
  encodeEntry,
  encodeEntryInto,
  encodeHolePayload,
  encodeSegmentHeader,
  encodeTrailer,
  entryPayloadOf,
  FLAG_HOLE,
  FORMAT_VERSION,
  FLAG_SESSION,
  SESSION_TAG_BYTES,
  sessionTagOf,
  frameByteLength,
  INDEX_MAX,
  LOG_NAME_BYTES_MAX,
  logIdOf,
  parseSegmentFileName,
  SEGMENT_HEADER_BYTES,
  segmentFileName,
  type SegmentHeader,
  TRAILER_BYTES,
  type Trailer,
} from '../../src/wal/format.js';

const ENTRY_BYTES_MAX = 1024 * 1024;
const TWO_POW_53 = 2 ** 53;

const safeNat = fc.integer({ min: 0, max: INDEX_MAX });
const index = fc.integer({ min: 1, max: INDEX_MAX });
const checksumValue = fc.bigInt({ min: 0n, max: 0xffffffffffffffffn });
const logName = fc
  .string({ unit: 'binary', maxLength: LOG_NAME_BYTES_MAX })
  .filter((name) => Buffer.byteLength(name, 'utf8') <= LOG_NAME_BYTES_MAX && Buffer.from(name, 'utf8').toString('utf8') === name);

const segmentHeader: fc.Arbitrary<SegmentHeader> = fc.record({
  segmentId: safeNat,
  firstIndex: safeNat,
  createdMs: safeNat,
  logId: checksumValue,
  logName,
});

const trailer: fc.Arbitrary<Trailer> = fc.record({
  segmentId: safeNat,
  firstIndex: safeNat,
  lastIndex: safeNat,
  indexCount: safeNat,
  aggregateChecksum: checksumValue,
  entriesByteLength: safeNat,
});

const entryInput = fc.record({
  index,
  timestampMs: safeNat,
  flags: fc.constantFrom(0, FLAG_HOLE),
  payload: fc.uint8Array({ maxLength: 2048 }),
});

function flipBit(bytes: Buffer, bitIndex: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[bitIndex >> 3]! ^= 1 << (bitIndex & 7);
  return copy;
}

/** Rewrites the checksum and crc of a frame whose fields were edited, so only the edit is wrong. */
function resealFrame(frame: Buffer): void {
  frame.writeBigUInt64BE(checksum64(frame.subarray(16)), 8);
  frame.writeUInt32LE(crc32(frame.subarray(8, ENTRY_HEADER_BYTES)), 4);
}

describe('segment header', () => {
  it('round trips any header', () => {
    fc.assert(
      fc.property(segmentHeader, (header) => {
        const bytes = encodeSegmentHeader(header);
        expect(bytes.byteLength).toBe(SEGMENT_HEADER_BYTES);
        expect(decodeSegmentHeader(bytes)).toEqual({ ok: true, header: { ...header, formatVersion: FORMAT_VERSION } });
      }),
      { numRuns: 300 },
    );
  });

  it('round trips at the name length limit and refuses a longer name', () => {
    const name = 'n'.repeat(LOG_NAME_BYTES_MAX);
    const header = { segmentId: 7, firstIndex: 1, createdMs: 1, logId: logIdOf(name), logName: name };
    expect(decodeSegmentHeader(encodeSegmentHeader(header))).toEqual({ ok: true, header: { ...header, formatVersion: FORMAT_VERSION } });
    expect(() => encodeSegmentHeader({ ...header, logName: `${name}x` })).toThrow(RangeError);
    // 21 three-byte characters are 63 bytes; 22 are 66.
    expect(() => encodeSegmentHeader({ ...header, logName: '€'.repeat(22) })).toThrow(RangeError);
  });

  it('detects every single-bit flip', () => {
    const header = encodeSegmentHeader({
      segmentId: 3,
      firstIndex: 1001,
      createdMs: 1_700_000_000_000,
      logId: logIdOf('orders'),
      logName: 'orders',
    });
    for (let bit = 0; bit < SEGMENT_HEADER_BYTES * 8; bit++) {
      const decoded = decodeSegmentHeader(flipBit(header, bit));
      expect(decoded.ok, `bit ${bit}`).toBe(false);
    }
  });

  it('rejects a short buffer, a bad magic, another version and fields beyond 2^53', () => {
    const good = { segmentId: 1, firstIndex: 1, createdMs: 0, logId: 0n, logName: 'x' };
    const bytes = encodeSegmentHeader(good);
    expect(decodeSegmentHeader(bytes.subarray(0, SEGMENT_HEADER_BYTES - 1)).ok).toBe(false);

    const reseal = (edit: (buf: Buffer) => void): Buffer => {
      const copy = Buffer.from(bytes);
      edit(copy);
      copy.writeBigUInt64BE(checksum64(copy.subarray(0, 120)), 120);
      return copy;
    };
    expect(decodeSegmentHeader(reseal((b) => b.writeUInt16LE(4, 4)))).toEqual({ ok: false, reason: 'unsupported format version 4' });
    expect(decodeSegmentHeader(reseal((b) => b.writeUInt32LE(0x454c4157, 0))).ok).toBe(false);
    for (const offset of [8, 16, 24]) {
      expect(decodeSegmentHeader(reseal((b) => b.writeBigUInt64LE(BigInt(TWO_POW_53), offset))).ok, `field ${offset}`).toBe(false);
      const atMax = decodeSegmentHeader(reseal((b) => b.writeBigUInt64LE(BigInt(INDEX_MAX), offset)));
      expect(atMax.ok, `field ${offset} at 2^53-1`).toBe(true);
    }
    expect(decodeSegmentHeader(reseal((b) => b.writeUInt8(LOG_NAME_BYTES_MAX + 1, 40))).ok).toBe(false);
  });

  it('decodes from a view into a larger buffer', () => {
    const header = { segmentId: 9, firstIndex: 5, createdMs: 6, logId: 7n, logName: 'view', formatVersion: FORMAT_VERSION };
    const big = Buffer.alloc(SEGMENT_HEADER_BYTES + 33, 0xaa);
    encodeSegmentHeader(header).copy(big, 17);
    const view = new Uint8Array(big.buffer, big.byteOffset + 17, SEGMENT_HEADER_BYTES);
    expect(decodeSegmentHeader(view)).toEqual({ ok: true, header });
  });
});

describe('entry frame', () => {
  it('round trips any entry through decodeFrameAt at any offset', () => {
    fc.assert(
      fc.property(entryInput, fc.nat({ max: 64 }), (entry, offset) => {
        const { frame, checksum } = encodeEntry(entry);
        expect(frame.byteLength).toBe(frameByteLength(entry.payload.byteLength));
        const host = Buffer.alloc(offset + frame.byteLength + 8, 0x5a);
        frame.copy(host, offset);
        const decoded = decodeFrameAt(host, offset, ENTRY_BYTES_MAX);
        expect(decoded).toEqual({
          kind: 'entry',
          header: {
            checksum,
            index: entry.index,
            timestampMs: entry.timestampMs,
            payloadByteLength: entry.payload.byteLength,
            flags: entry.flags,
          },
          frameByteLength: frame.byteLength,
          bodyOk: true,
          actualChecksum: checksum,
        });
        expect(checksum).toBe(checksum64(frame.subarray(16)));
        expect(Buffer.compare(frame.subarray(ENTRY_HEADER_BYTES), Buffer.from(entry.payload))).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('encodeEntryInto writes the same bytes as encodeEntry and leaves neighbours alone', () => {
    fc.assert(
      fc.property(entryInput, fc.nat({ max: 32 }), (entry, offset) => {
        const { frame, checksum } = encodeEntry(entry);
        const target = Buffer.alloc(offset + frame.byteLength + 16, 0xee);
        expect(encodeEntryInto(target, offset, entry)).toBe(checksum);
        expect(Buffer.compare(target.subarray(offset, offset + frame.byteLength), frame)).toBe(0);
        expect(target.subarray(0, offset).every((b) => b === 0xee)).toBe(true);
        expect(target.subarray(offset + frame.byteLength).every((b) => b === 0xee)).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  it('FrameCursor compares every stored checksum bit, the high bit of each byte included (its digest is a latin1 string)', () => {
    // The stored checksum is compared with the digest char by char: a char code above 0x7f must
    // match its byte exactly, and a difference in any of the 8 bytes must be a mismatch.
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 63 }), (payload, bit) => {
        const { frame, checksum } = encodeEntry({ index: 9, timestampMs: 1, flags: 0, payload: Buffer.from(payload) });
        const cursor = new FrameCursor();
        expect(cursor.decode(frame, 0, ENTRY_BYTES_MAX)).toBe('entry');
        expect(cursor.bodyOk).toBe(true);
        expect(cursor.actualChecksum()).toBe(checksum);
        const damaged = flipBit(frame, 8 * 8 + bit);
        damaged.writeUInt32LE(crc32(damaged.subarray(8, ENTRY_HEADER_BYTES)), 4); // the header stays valid: only the body check fails
        expect(cursor.decode(damaged, 0, ENTRY_BYTES_MAX)).toBe('entry');
        expect(cursor.bodyOk).toBe(false);
        expect(cursor.actualChecksum()).toBe(checksum);
        expect(cursor.storedChecksum()).toBe(checksum ^ (1n << BigInt((7 - (bit >> 3)) * 8 + (bit & 7))));
      }),
      { numRuns: 400 },
    );
  });

  it('one FrameCursor reused over intact, damaged, cut frames and a trailer reports each frame as a fresh decode does', () => {
    // The scan fills one cursor in place for every frame: nothing of one decode may leak into the next.
    const intact = encodeEntry({ index: 7, timestampMs: 11, flags: 0, payload: Buffer.from('intact payload') });
    const hole = encodeEntry({ index: 8, timestampMs: 12, flags: FLAG_HOLE, payload: encodeHolePayload(3, 'lost') });
    const damaged = flipBit(intact.frame, (ENTRY_HEADER_BYTES + 2) * 8);
    const trailerBytes = encodeTrailer({ segmentId: 1, firstIndex: 7, lastIndex: 10, indexCount: 4, aggregateChecksum: 5n, entriesByteLength: 9 });
    const sequence = [damaged, intact.frame, trailerBytes, hole.frame, damaged, flipBit(intact.frame, 3), intact.frame.subarray(0, 30), hole.frame, intact.frame];
    const cursor = new FrameCursor();
    for (const [i, bytes] of sequence.entries()) {
      const host = Buffer.concat([Buffer.alloc(i), bytes]);
      cursor.decode(host, i, ENTRY_BYTES_MAX);
      expect(cursor.toDecode(), `frame ${i}`).toEqual(decodeFrameAt(bytes, 0, ENTRY_BYTES_MAX));
      if (cursor.kind === 'entry') {
        expect(cursor.frameView().equals(bytes)).toBe(true);
        // The checksum of the bytes, computed independently of the cursor's digest comparison.
        expect(cursor.actualChecksum()).toBe(checksum64(bytes.subarray(16)));
        expect(cursor.bodyOk).toBe(cursor.actualChecksum() === cursor.storedChecksum());
      }
    }
    expect(decodeFrameAt(damaged, 0, ENTRY_BYTES_MAX)).toMatchObject({ kind: 'entry', bodyOk: false, header: { checksum: intact.checksum } });
  });

  it('detects every single-bit flip in the entry header as a bad frame', () => {
    const { frame } = encodeEntry({ index: 42, timestampMs: 1_700_000_000_123, flags: 0, payload: Buffer.from('hello, log') });
    for (let bit = 0; bit < ENTRY_HEADER_BYTES * 8; bit++) {
      const decoded = decodeFrameAt(flipBit(frame, bit), 0, ENTRY_BYTES_MAX);
      expect(decoded.kind, `bit ${bit}`).toBe('bad');
    }
  });

  it('reports every single-bit flip in the payload as bodyOk false with the header intact', () => {
    const payload = Buffer.from('a payload of a few dozen bytes, every bit of it checked');
    const { frame, checksum } = encodeEntry({ index: 43, timestampMs: 5, flags: 0, payload });
    for (let bit = ENTRY_HEADER_BYTES * 8; bit < frame.byteLength * 8; bit++) {
      const decoded = decodeFrameAt(flipBit(frame, bit), 0, ENTRY_BYTES_MAX);
      if (decoded.kind !== 'entry') throw new Error(`bit ${bit}: expected an entry, got ${decoded.kind}`);
      expect(decoded.bodyOk, `bit ${bit}`).toBe(false);
      expect(decoded.header.checksum).toBe(checksum);
      expect(decoded.header.index).toBe(43);
      expect(decoded.actualChecksum).not.toBe(checksum);
    }
  });

  it('rejects an index of 2^53 or more and of 0, accepts 2^53-1', () => {
    const payload = Buffer.from('x');
    for (const bad of [TWO_POW_53, TWO_POW_53 * 2, 2 ** 63, 0]) {
      const { frame } = encodeEntry({ index: bad, timestampMs: 1, flags: 0, payload });
      expect(decodeFrameAt(frame, 0, ENTRY_BYTES_MAX), `index ${bad}`).toEqual({ kind: 'bad', reason: 'bad-entry-header' });
    }
    // All 64 bits set in the stored index, sealed so that only the range check can catch it.
    const { frame } = encodeEntry({ index: 1, timestampMs: 1, flags: 0, payload });
    frame.writeBigUInt64LE(0xffffffffffffffffn, 16);
    resealFrame(frame);
    expect(decodeFrameAt(frame, 0, ENTRY_BYTES_MAX)).toEqual({ kind: 'bad', reason: 'bad-entry-header' });

    const atMax = decodeFrameAt(encodeEntry({ index: INDEX_MAX, timestampMs: INDEX_MAX, flags: 0, payload }).frame, 0, ENTRY_BYTES_MAX);
    expect(atMax.kind === 'entry' && atMax.header.index === INDEX_MAX && atMax.header.timestampMs === INDEX_MAX).toBe(true);
  });

  it('rejects a timestamp beyond 2^53, unknown flags and a non-zero reserved field', () => {
    const base = { index: 1, timestampMs: 1, flags: 0, payload: Buffer.from('abc') };
    expect(decodeFrameAt(encodeEntry({ ...base, timestampMs: TWO_POW_53 }).frame, 0, ENTRY_BYTES_MAX).kind).toBe('bad');
    expect(decodeFrameAt(encodeEntry({ ...base, flags: 0x0002 }).frame, 0, ENTRY_BYTES_MAX).kind).toBe('bad');
    expect(decodeFrameAt(encodeEntry({ ...base, flags: 0x8000 | FLAG_HOLE }).frame, 0, ENTRY_BYTES_MAX).kind).toBe('bad');
    const { frame } = encodeEntry(base);
    frame.writeUInt16LE(1, 38);
    resealFrame(frame);
    expect(decodeFrameAt(frame, 0, ENTRY_BYTES_MAX)).toEqual({ kind: 'bad', reason: 'bad-entry-header' });
  });

  it("rejects a payload length above entryBytesMax as 'bad' before reading the payload", () => {
    const { frame } = encodeEntry({ index: 1, timestampMs: 1, flags: 0, payload: Buffer.alloc(100, 1) });
    expect(decodeFrameAt(frame, 0, 99)).toEqual({ kind: 'bad', reason: 'bad-entry-header' });
    expect(decodeFrameAt(frame, 0, 100).kind).toBe('entry');
    // A header alone claiming 4 GiB - 1 bytes: rejected on the length, not waiting for more bytes.
    const header = Buffer.from(frame.subarray(0, ENTRY_HEADER_BYTES));
    header.writeUInt32LE(0xffffffff, 32);
    header.writeUInt32LE(crc32(header.subarray(8, ENTRY_HEADER_BYTES)), 4);
    expect(decodeFrameAt(header, 0, ENTRY_BYTES_MAX)).toEqual({ kind: 'bad', reason: 'bad-entry-header' });
  });

  it('asks for more bytes, never guesses, when the frame is cut short', () => {
    const { frame } = encodeEntry({ index: 9, timestampMs: 9, flags: 0, payload: Buffer.alloc(300, 7) });
    for (let cut = 0; cut < frame.byteLength; cut++) {
      const decoded = decodeFrameAt(frame.subarray(0, cut), 0, ENTRY_BYTES_MAX);
      expect(decoded.kind, `cut ${cut}`).toBe('need-more');
      if (decoded.kind === 'need-more') expect(decoded.byteLength).toBeGreaterThan(cut);
    }
    expect(decodeFrameAt(frame, 0, ENTRY_BYTES_MAX).kind).toBe('entry');
  });

  it("calls arbitrary bytes 'bad' or 'need-more', never an entry", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
        const kind = decodeFrameAt(bytes, 0, ENTRY_BYTES_MAX).kind;
        expect(kind === 'bad' || kind === 'need-more').toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

describe('hole payload', () => {
  it('round trips count and reason', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: INDEX_MAX }), fc.string({ unit: 'binary', maxLength: 100 }), (count, reason) => {
        const payload = encodeHolePayload(count, reason);
        expect(decodeHolePayload(payload)).toEqual({ count, reason });
        const { frame } = encodeEntry({ index: 10, timestampMs: 1, flags: FLAG_HOLE, payload });
        const decoded = decodeFrameAt(frame, 0, ENTRY_BYTES_MAX);
        if (decoded.kind !== 'entry') throw new Error(`expected an entry, got ${decoded.kind}`);
        expect(decoded.header.flags & FLAG_HOLE).toBe(FLAG_HOLE);
        expect(decodeHolePayload(frame.subarray(ENTRY_HEADER_BYTES))).toEqual({ count, reason });
      }),
      { numRuns: 200 },
    );
  });

  it('caps the reason at 200 characters', () => {
    expect(decodeHolePayload(encodeHolePayload(3, 'r'.repeat(500)))).toEqual({ count: 3, reason: 'r'.repeat(200) });
  });

  it('rejects a short payload, a zero count and a count of 2^53 or more', () => {
    expect(decodeHolePayload(new Uint8Array(7))).toBeUndefined();
    expect(decodeHolePayload(encodeHolePayload(0, 'none'))).toBeUndefined();
    const huge = Buffer.alloc(8);
    huge.writeBigUInt64LE(BigInt(TWO_POW_53), 0);
    expect(decodeHolePayload(huge)).toBeUndefined();
    expect(decodeHolePayload(encodeHolePayload(INDEX_MAX, ''))).toEqual({ count: INDEX_MAX, reason: '' });
  });
});

describe('trailer', () => {
  it('round trips any trailer, alone and through decodeFrameAt', () => {
    fc.assert(
      fc.property(trailer, (value) => {
        const bytes = encodeTrailer(value);
        expect(bytes.byteLength).toBe(TRAILER_BYTES);
        expect(decodeTrailer(bytes)).toEqual({ ok: true, trailer: value });
        expect(decodeFrameAt(bytes, 0, ENTRY_BYTES_MAX)).toEqual({ kind: 'trailer', trailer: value });
      }),
      { numRuns: 300 },
    );
  });

  it('detects every single-bit flip', () => {
    const bytes = encodeTrailer({
      segmentId: 4,
      firstIndex: 100,
      lastIndex: 199,
      indexCount: 100,
      aggregateChecksum: 0x0123456789abcdefn,
      entriesByteLength: 123_456,
    });
    for (let bit = 0; bit < TRAILER_BYTES * 8; bit++) {
      const flipped = flipBit(bytes, bit);
      expect(decodeTrailer(flipped).ok, `bit ${bit}`).toBe(false);
      expect(decodeFrameAt(flipped, 0, ENTRY_BYTES_MAX).kind, `bit ${bit}`).toBe('bad');
    }
  });

  it('rejects fields of 2^53 or more and a short buffer', () => {
    const value = { segmentId: 1, firstIndex: 1, lastIndex: 1, indexCount: 1, aggregateChecksum: 1n, entriesByteLength: 1 };
    for (const offset of [8, 16, 24, 32, 48]) {
      const bytes = encodeTrailer(value);
      bytes.writeBigUInt64LE(BigInt(TWO_POW_53), offset);
      bytes.writeBigUInt64BE(checksum64(bytes.subarray(0, 56)), 56);
      expect(decodeTrailer(bytes).ok, `field ${offset}`).toBe(false);
    }
    expect(decodeTrailer(encodeTrailer(value).subarray(0, TRAILER_BYTES - 1)).ok).toBe(false);
    expect(decodeFrameAt(encodeTrailer(value).subarray(0, TRAILER_BYTES - 1), 0, ENTRY_BYTES_MAX).kind).toBe('need-more');
  });
});

describe('segment file names', () => {
  it('formats 20 zero-padded digits and parses back any safe id', () => {
    expect(segmentFileName(1)).toBe('00000000000000000001.wal');
    expect(segmentFileName(0)).toBe('00000000000000000000.wal');
    expect(segmentFileName(INDEX_MAX)).toBe('00009007199254740991.wal');
    fc.assert(
      fc.property(safeNat, (id) => {
        const name = segmentFileName(id);
        expect(name).toMatch(/^\d{20}\.wal$/);
        expect(parseSegmentFileName(name)).toBe(id);
      }),
      { numRuns: 300 },
    );
  });

  it('sorts names in id order', () => {
    const ids = [0, 1, 9, 10, 99, 100, 12345, INDEX_MAX];
    const names = ids.map(segmentFileName);
    expect([...names].sort()).toEqual(names);
  });

  it.each([
    '../x.wal',
    '1.wal',
    '00000000000000000001.wal.tmp',
    '00000000000000000001.wal.broken',
    '../00000000000000000001.wal',
    '/00000000000000000001.wal',
    'dir/00000000000000000001.wal',
    '00000000000000000001.WAL',
    '00000000000000000001.wal\n',
    '00000000000000000001.wal\0',
    ' 00000000000000000001.wal',
    '0000000000000000001.wal',
    '000000000000000000001.wal',
    '+0000000000000000001.wal',
    '-0000000000000000001.wal',
    '0x000000000000000001.wal',
    '0000000000000000001e.wal',
    '٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠١.wal',
    '99999999999999999999.wal',
    '00009007199254740992.wal',
    '.wal',
    '',
  ])('refuses the hostile name %j', (name) => {
    expect(parseSegmentFileName(name)).toBeUndefined();
  });
});

describe('session frames (format version 2)', () => {
  const tag = { sessionId: '0123456789abcdef0123456789abcdef', sequence: 2 ** 40 + 7, count: 3 };

  it('round-trips the tag and strips it from the payload', () => {
    const payload = Buffer.from('client bytes');
    const { frame } = encodeEntry({ index: 5, timestampMs: 9, flags: 0, payload, session: tag });
    expect(frame.byteLength).toBe(frameByteLength(SESSION_TAG_BYTES + payload.byteLength));
    const decoded = decodeFrameAt(frame, 0, ENTRY_BYTES_MAX);
    expect(decoded.kind === 'entry' && decoded.bodyOk && (decoded.header.flags & FLAG_SESSION) !== 0).toBe(true);
    expect(sessionTagOf(frame)).toEqual(tag);
    expect(entryPayloadOf(frame).equals(payload)).toBe(true);
  });

  it('an untagged frame has no tag and its whole payload', () => {
    const { frame } = encodeEntry({ index: 5, timestampMs: 9, flags: 0, payload: Buffer.alloc(40, 1) });
    expect(sessionTagOf(frame)).toBeUndefined();
    expect(entryPayloadOf(frame).byteLength).toBe(40);
  });

  it('refuses a session frame too short for its tag and a hole frame that claims a session', () => {
    const short = encodeEntry({ index: 1, timestampMs: 1, flags: FLAG_SESSION, payload: Buffer.alloc(SESSION_TAG_BYTES - 1) });
    expect(decodeFrameAt(short.frame, 0, ENTRY_BYTES_MAX).kind).toBe('bad');
    const both = encodeEntry({ index: 1, timestampMs: 1, flags: FLAG_HOLE, payload: encodeHolePayload(1, 'x'), session: tag });
    expect(decodeFrameAt(both.frame, 0, ENTRY_BYTES_MAX).kind).toBe('bad');
  });

  it('a flipped bit in the tag fails the entry checksum', () => {
    const { frame } = encodeEntry({ index: 5, timestampMs: 9, flags: 0, payload: Buffer.from('x'), session: tag });
    for (let bit = 0; bit < SESSION_TAG_BYTES * 8; bit++) {
      const decoded = decodeFrameAt(flipBit(frame, ENTRY_HEADER_BYTES * 8 + bit), 0, ENTRY_BYTES_MAX);
      expect(decoded.kind === 'entry' && decoded.bodyOk, `bit ${bit}`).toBe(false);
    }
  });

  it('reads version 1 and 2 segment headers (before session frames; before the hashed-list aggregate) and says which', () => {
    const v3 = encodeSegmentHeader({ segmentId: 1, firstIndex: 1, createdMs: 0, logId: 0n, logName: 'x' });
    expect(v3.readUInt16LE(4)).toBe(3);
    for (const version of [1, 2]) {
      const old = Buffer.from(v3);
      old.writeUInt16LE(version, 4);
      old.writeBigUInt64BE(checksum64(old.subarray(0, 120)), 120);
      const decoded = decodeSegmentHeader(old);
      expect(decoded.ok && decoded.header.formatVersion).toBe(version);
      expect(encodeSegmentHeader({ segmentId: 1, firstIndex: 1, createdMs: 0, logId: 0n, logName: 'x', formatVersion: version }).equals(old)).toBe(true);
    }
    const future = Buffer.from(v3);
    future.writeUInt16LE(4, 4);
    future.writeBigUInt64BE(checksum64(future.subarray(0, 120)), 120);
    expect(decodeSegmentHeader(future)).toEqual({ ok: false, reason: 'unsupported format version 4' });
  });
});
