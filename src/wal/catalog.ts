// The catalog: the store's list of segments (and recorded holes), so that opening after a clean
// shutdown reads one file. It is a cache of what the segment files say and can always be rebuilt
// from them; it is checksummed as a whole and replaced atomically.
//
// Layout (little-endian; docs/FORMAT.md):
//   header 128 bytes: u32 magic 'WALC', u16 version, u16 aggregate state count (version 2;
//     reserved zero in version 1), u64 generation, checksum64
//     log id, u32 segment count, u32 hole count, u64 segmentBytesMax, u32 entryBytesMax,
//     u16 backup retention count + 1 (0: not recorded), u16 reserved, u64 created ms, u8 log name
//     length, 63 bytes log name, 8 bytes reserved
//   segment records, 64 bytes each: u64 id, u64 first index, u64 last index, u64 index count,
//     u64 byte length (sealed: file size; open: bytes synced at the checkpoint), checksum64
//     aggregate (open: chain value at the checkpoint), u32 state (1 open, 2 sealed),
//     u32 reserved, u64 created ms
//   hole records, 24 bytes each: u64 segment id, u64 first index, u64 count
//   aggregate states (version 2), 216 bytes each: u64 segment id, then the running aggregate of
//     an open segment of format version 3 at its checkpoint (AGGREGATE_STATE_BYTES; its 8-byte
//     value in the segment record cannot be resumed)
//   checksum64 of everything before it
// Version 1 is written when no state is recorded (a store whose open segment is of format 1 or
// 2, or none), so that an older build still opens it; both versions are read.
import { AGGREGATE_STATE_BYTES, HashedListAggregate, type SegmentAggregate } from './aggregate.js';
import { type Checksum64, checksum64 } from './checksum.js';
import { LOG_NAME_BYTES_MAX } from './format.js';

export const CATALOG_MAGIC = 0x434c4157; // 'WALC'
export const CATALOG_VERSION = 2;
const CATALOG_VERSION_WITHOUT_STATES = 1;
const HEADER_BYTES = 128;
const SEGMENT_RECORD_BYTES = 64;
const HOLE_RECORD_BYTES = 24;
const STATE_RECORD_BYTES = 8 + AGGREGATE_STATE_BYTES;
const STATE_OPEN = 1;
const STATE_SEALED = 2;
/** A catalog larger than this is refused as damaged rather than read. */
export const CATALOG_SEGMENTS_MAX = 10_000_000;

export interface SegmentRecord {
  readonly segmentId: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly indexCount: number;
  readonly byteLength: number;
  readonly aggregateChecksum: Checksum64;
  /** An open segment's running aggregate (needed to resume a format-3 segment from its checkpoint). */
  readonly aggregateState?: SegmentAggregate | undefined;
  readonly state: 'open' | 'sealed';
  readonly createdMs: number;
}

export interface HoleRecord {
  readonly segmentId: number;
  readonly firstIndex: number;
  readonly count: number;
}

export interface Catalog {
  readonly generation: number;
  readonly logName: string;
  readonly logId: Checksum64;
  readonly segmentBytesMax: number;
  readonly entryBytesMax: number;
  /** The store's backup_retention_count, when recorded (stored as count + 1; 0 = not recorded). */
  readonly backupRetentionCount?: number | undefined;
  readonly createdMs: number;
  /** In segment id order. */
  readonly segments: readonly SegmentRecord[];
  /** In index order. */
  readonly holes: readonly HoleRecord[];
}

function writeU64(buf: Buffer, off: number, value: number): void {
  buf.writeUInt32LE(value % 0x1_0000_0000, off);
  buf.writeUInt32LE(Math.floor(value / 0x1_0000_0000), off + 4);
}

function readU64(buf: Buffer, off: number): number {
  const hi = buf.readUInt32LE(off + 4);
  if (hi >= 0x200000) throw new RangeError('u64 beyond 2^53');
  return hi * 0x1_0000_0000 + buf.readUInt32LE(off);
}

export function encodeCatalog(catalog: Catalog): Buffer {
  const name = Buffer.from(catalog.logName, 'utf8');
  const states = catalog.segments.filter((s) => s.state === 'open' && s.aggregateState instanceof HashedListAggregate);
  const bodyBytes = HEADER_BYTES + catalog.segments.length * SEGMENT_RECORD_BYTES + catalog.holes.length * HOLE_RECORD_BYTES + states.length * STATE_RECORD_BYTES;
  const buf = Buffer.alloc(bodyBytes + 8);
  buf.writeUInt32LE(CATALOG_MAGIC, 0);
  buf.writeUInt16LE(states.length > 0 ? CATALOG_VERSION : CATALOG_VERSION_WITHOUT_STATES, 4);
  buf.writeUInt16LE(states.length, 6);
  writeU64(buf, 8, catalog.generation);
  buf.writeBigUInt64BE(catalog.logId, 16);
  buf.writeUInt32LE(catalog.segments.length, 24);
  buf.writeUInt32LE(catalog.holes.length, 28);
  writeU64(buf, 32, catalog.segmentBytesMax);
  buf.writeUInt32LE(catalog.entryBytesMax, 40);
  buf.writeUInt16LE(catalog.backupRetentionCount === undefined ? 0 : catalog.backupRetentionCount + 1, 44);
  writeU64(buf, 48, catalog.createdMs);
  buf.writeUInt8(name.byteLength, 56);
  name.copy(buf, 57, 0, LOG_NAME_BYTES_MAX);
  let off = HEADER_BYTES;
  for (const s of catalog.segments) {
    writeU64(buf, off, s.segmentId);
    writeU64(buf, off + 8, s.firstIndex);
    writeU64(buf, off + 16, s.lastIndex);
    writeU64(buf, off + 24, s.indexCount);
    writeU64(buf, off + 32, s.byteLength);
    buf.writeBigUInt64BE(s.aggregateChecksum, off + 40);
    buf.writeUInt32LE(s.state === 'open' ? STATE_OPEN : STATE_SEALED, off + 48);
    writeU64(buf, off + 56, s.createdMs);
    off += SEGMENT_RECORD_BYTES;
  }
  for (const h of catalog.holes) {
    writeU64(buf, off, h.segmentId);
    writeU64(buf, off + 8, h.firstIndex);
    writeU64(buf, off + 16, h.count);
    off += HOLE_RECORD_BYTES;
  }
  for (const s of states) {
    writeU64(buf, off, s.segmentId);
    (s.aggregateState as HashedListAggregate).toBytes().copy(buf, off + 8);
    off += STATE_RECORD_BYTES;
  }
  buf.writeBigUInt64BE(checksum64(buf.subarray(0, bodyBytes)), bodyBytes);
  return buf;
}

export type CatalogDecode = { ok: true; catalog: Catalog } | { ok: false; reason: string };

export function decodeCatalog(buf: Buffer): CatalogDecode {
  if (buf.byteLength < HEADER_BYTES + 8) return { ok: false, reason: 'catalog shorter than its header' };
  if (buf.readUInt32LE(0) !== CATALOG_MAGIC) return { ok: false, reason: 'bad catalog magic' };
  const bodyBytes = buf.byteLength - 8;
  if (buf.readBigUInt64BE(bodyBytes) !== checksum64(buf.subarray(0, bodyBytes))) {
    return { ok: false, reason: 'catalog checksum mismatch' };
  }
  const version = buf.readUInt16LE(4);
  if (version !== CATALOG_VERSION && version !== CATALOG_VERSION_WITHOUT_STATES) return { ok: false, reason: `unsupported catalog version ${version}` };
  const segmentCount = buf.readUInt32LE(24);
  const holeCount = buf.readUInt32LE(28);
  const stateCount = version === CATALOG_VERSION ? buf.readUInt16LE(6) : 0;
  if (HEADER_BYTES + segmentCount * SEGMENT_RECORD_BYTES + holeCount * HOLE_RECORD_BYTES + stateCount * STATE_RECORD_BYTES !== bodyBytes) {
    return { ok: false, reason: 'catalog length disagrees with its record counts' };
  }
  try {
    const nameLength = Math.min(buf.readUInt8(56), LOG_NAME_BYTES_MAX);
    const logName = buf.toString('utf8', 57, 57 + nameLength);
    const segments: SegmentRecord[] = [];
    let off = HEADER_BYTES;
    for (let i = 0; i < segmentCount; i += 1) {
      const state = buf.readUInt32LE(off + 48);
      if (state !== STATE_OPEN && state !== STATE_SEALED) return { ok: false, reason: `bad state in segment record ${i}` };
      segments.push({
        segmentId: readU64(buf, off),
        firstIndex: readU64(buf, off + 8),
        lastIndex: readU64(buf, off + 16),
        indexCount: readU64(buf, off + 24),
        byteLength: readU64(buf, off + 32),
        aggregateChecksum: buf.readBigUInt64BE(off + 40),
        state: state === STATE_OPEN ? 'open' : 'sealed',
        createdMs: readU64(buf, off + 56),
      });
      off += SEGMENT_RECORD_BYTES;
    }
    const holes: HoleRecord[] = [];
    for (let i = 0; i < holeCount; i += 1) {
      holes.push({ segmentId: readU64(buf, off), firstIndex: readU64(buf, off + 8), count: readU64(buf, off + 16) });
      off += HOLE_RECORD_BYTES;
    }
    for (let i = 0; i < stateCount; i += 1) {
      const segmentId = readU64(buf, off);
      const at = segments.findIndex((s) => s.segmentId === segmentId && s.state === 'open');
      if (at < 0) return { ok: false, reason: `aggregate state ${i} names no open segment` };
      const record = segments[at] as SegmentRecord;
      if (record.aggregateState !== undefined) return { ok: false, reason: `two aggregate states for segment ${segmentId}` };
      const aggregateState = HashedListAggregate.fromBytes(buf.subarray(off + 8, off + STATE_RECORD_BYTES));
      // The state must be the one of its record: every frame covers at least one index, and its
      // value is the aggregate recorded beside it (a state that is not would resume a wrong sum).
      const count = aggregateState.count;
      if (!Number.isSafeInteger(count) || count > record.indexCount || (count === 0) !== (record.indexCount === 0)) {
        return { ok: false, reason: `aggregate state of segment ${segmentId} counts ${count} frames for ${record.indexCount} indices` };
      }
      if (aggregateState.value() !== record.aggregateChecksum) return { ok: false, reason: `aggregate state of segment ${segmentId} disagrees with its recorded aggregate` };
      segments[at] = { ...record, aggregateState };
      off += STATE_RECORD_BYTES;
    }
    return {
      ok: true,
      catalog: {
        generation: readU64(buf, 8),
        logId: buf.readBigUInt64BE(16),
        logName,
        segmentBytesMax: readU64(buf, 32),
        entryBytesMax: buf.readUInt32LE(40),
        backupRetentionCount: buf.readUInt16LE(44) === 0 ? undefined : buf.readUInt16LE(44) - 1,
        createdMs: readU64(buf, 48),
        segments,
        holes,
      },
    };
  } catch (error) {
    return { ok: false, reason: `catalog field out of range: ${(error as Error).message}` };
  }
}
