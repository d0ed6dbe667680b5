// Rewrites a closed store as an older build wrote it (segment format 1 or 2: that version in the
// header, chained aggregates in the trailers and the catalog, no aggregate state), for the tests
// of reading old formats beside format 3.
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { aggregateOf } from '../../src/wal/aggregate.js';
import { decodeCatalog, encodeCatalog } from '../../src/wal/catalog.js';
import { checksum64 } from '../../src/wal/checksum.js';
import { SEGMENT_HEADER_BYTES, TRAILER_BYTES, decodeFrameAt, decodeTrailer, encodeTrailer } from '../../src/wal/format.js';

/** The entry checksums of a segment file's frames that end at or before endBytes. */
export function checksumsOf(bytes: Buffer, endBytes = bytes.byteLength): bigint[] {
  const out: bigint[] = [];
  for (let at = SEGMENT_HEADER_BYTES; at < endBytes; ) {
    const decoded = decodeFrameAt(bytes.subarray(0, endBytes), at, 1 << 20);
    if (decoded.kind !== 'entry') break;
    out.push(decoded.header.checksum);
    at += decoded.frameByteLength;
  }
  return out;
}

export async function segmentPaths(dataDir: string): Promise<string[]> {
  return (await readdir(join(dataDir, 'segments'))).filter((n) => n.endsWith('.wal')).sort().map((n) => join(dataDir, 'segments', n));
}

/**
 * Rewrites every segment of a closed store (and its first backup) as `version` wrote it, and the
 * catalog to match; returns each segment's chained aggregate and the segment paths.
 */
export async function rewriteAsVersion(dataDir: string, version: 1 | 2): Promise<{ chained: Map<number, bigint>; paths: string[] }> {
  const chained = new Map<number, bigint>();
  const catalog = decodeCatalog(await readFile(join(dataDir, 'CATALOG')));
  if (!catalog.ok) throw new Error(catalog.reason);
  const paths = await segmentPaths(dataDir);
  for (const path of paths) {
    const bytes = await readFile(path);
    bytes.writeUInt16LE(version, 4);
    bytes.writeBigUInt64BE(checksum64(bytes.subarray(0, 120)), 120);
    const segmentId = bytes.readUInt32LE(8);
    const trailer = decodeTrailer(bytes.subarray(bytes.byteLength - TRAILER_BYTES));
    const record = catalog.catalog.segments.find((s) => s.segmentId === segmentId);
    const end = trailer.ok ? bytes.byteLength - TRAILER_BYTES : (record?.byteLength ?? bytes.byteLength);
    const aggregate = aggregateOf(version, checksumsOf(bytes, end));
    if (trailer.ok) encodeTrailer({ ...trailer.trailer, aggregateChecksum: aggregate }).copy(bytes, bytes.byteLength - TRAILER_BYTES);
    chained.set(segmentId, aggregate);
    await writeFile(path, bytes);
    const backup = join(dataDir, 'backups', '1', basename(path));
    if (trailer.ok && (await stat(backup).catch(() => undefined))) await writeFile(backup, bytes);
  }
  const segments = catalog.catalog.segments.map(({ aggregateState: _dropped, ...s }) => ({ ...s, aggregateChecksum: chained.get(s.segmentId) ?? 0n }));
  await writeFile(join(dataDir, 'CATALOG'), encodeCatalog({ ...catalog.catalog, segments }));
  return { chained, paths };
}
