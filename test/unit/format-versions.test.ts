// Segments of format versions 1 and 2 (chained aggregate) beside version 3 (hashed-list
// aggregate): an old store opens and validates with its recorded aggregates unchanged, its open
// segment goes on and is sealed with the chained aggregate, and a version-3 open segment resumes
// after a crash from the running aggregate its checkpoint recorded in the catalog.
import { cp, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WalStore, type WalOptions, validateStore } from '../../src/index.js';
import { aggregateOf } from '../../src/wal/aggregate.js';
import { decodeCatalog, encodeCatalog } from '../../src/wal/catalog.js';
import { checksum64 } from '../../src/wal/checksum.js';
import { SEGMENT_HEADER_BYTES, TRAILER_BYTES, decodeFrameAt, decodeTrailer, encodeTrailer } from '../../src/wal/format.js';

const silent = pino({ level: 'silent' });
let dir: string;
const opened: WalStore[] = [];

async function openStore(dataDir: string, options: WalOptions = {}): Promise<WalStore> {
  const store = await WalStore.open(dataDir, { logger: silent, ...options });
  opened.push(store);
  return store;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-versions-'));
});

afterEach(async () => {
  for (const store of opened.splice(0)) await store.close().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

/** The entry checksums of a segment file's frames that end at or before endBytes. */
function checksumsOf(bytes: Buffer, endBytes = bytes.byteLength): bigint[] {
  const out: bigint[] = [];
  for (let at = SEGMENT_HEADER_BYTES; at < endBytes; ) {
    const decoded = decodeFrameAt(bytes.subarray(0, endBytes), at, 1 << 20);
    if (decoded.kind !== 'entry') break;
    out.push(decoded.header.checksum);
    at += decoded.frameByteLength;
  }
  return out;
}

async function segmentPaths(dataDir: string): Promise<string[]> {
  return (await readdir(join(dataDir, 'segments'))).filter((n) => n.endsWith('.wal')).sort().map((n) => join(dataDir, 'segments', n));
}

/** Rewrites a closed store as an older build wrote it: version-2 headers, chained aggregates. */
async function downgradeToVersion2(dataDir: string): Promise<Map<number, bigint>> {
  const chained = new Map<number, bigint>();
  const catalog = decodeCatalog(await readFile(join(dataDir, 'CATALOG')));
  if (!catalog.ok) throw new Error(catalog.reason);
  for (const path of await segmentPaths(dataDir)) {
    const bytes = await readFile(path);
    bytes.writeUInt16LE(2, 4);
    bytes.writeBigUInt64BE(checksum64(bytes.subarray(0, 120)), 120);
    const trailer = decodeTrailer(bytes.subarray(bytes.byteLength - TRAILER_BYTES));
    const segmentId = bytes.readUInt32LE(8);
    const record = catalog.catalog.segments.find((s) => s.segmentId === segmentId);
    const end = trailer.ok ? bytes.byteLength - TRAILER_BYTES : (record?.byteLength ?? bytes.byteLength);
    const aggregate = aggregateOf(2, checksumsOf(bytes, end));
    if (trailer.ok) encodeTrailer({ ...trailer.trailer, aggregateChecksum: aggregate }).copy(bytes, bytes.byteLength - TRAILER_BYTES);
    chained.set(segmentId, aggregate);
    await writeFile(path, bytes);
    const backup = join(dataDir, 'backups', '1', basename(path));
    if (trailer.ok && (await stat(backup).catch(() => undefined))) await writeFile(backup, bytes);
  }
  const segments = catalog.catalog.segments.map(({ aggregateState: _dropped, ...s }) => ({ ...s, aggregateChecksum: chained.get(s.segmentId) ?? 0n }));
  await writeFile(join(dataDir, 'CATALOG'), encodeCatalog({ ...catalog.catalog, segments }));
  return chained;
}

const payload = (i: number): Buffer => Buffer.alloc(300, i & 0xff);

describe('segment format versions', () => {
  it('a store of version-2 segments opens clean, keeps its aggregates, seals its open segment chained and starts version 3', async () => {
    const options: WalOptions = { segmentBytesMax: 4096 };
    const first = await openStore(dir, options);
    for (let i = 0; i < 30; i += 1) await first.append(payload(i));
    await first.close();
    const chained = await downgradeToVersion2(dir);
    const sealedBefore = (await segmentPaths(dir)).length - 1;
    expect(sealedBefore).toBeGreaterThanOrEqual(2);

    expect((await validateStore(dir)).findings).toEqual([]);
    const store = await openStore(dir, options);
    expect(store.openReport.state).toBe('clean');
    for (const record of store.segmentRecords().filter((r) => r.state === 'sealed')) expect(record.aggregateChecksum).toBe(chained.get(record.segmentId));
    // The open version-2 segment goes on with the chained aggregate until it is sealed.
    for (let i = 30; i < 60; i += 1) await store.append(payload(i));
    await store.close();
    const report = await validateStore(dir);
    expect(report.findings).toEqual([]);
    const paths = await segmentPaths(dir);
    const versions = await Promise.all(paths.map(async (p) => (await readFile(p)).readUInt16LE(4)));
    expect(versions.slice(0, sealedBefore + 1)).toEqual(new Array(sealedBefore + 1).fill(2));
    expect(versions.slice(sealedBefore + 1).every((v) => v === 3)).toBe(true);
    expect(versions.length).toBeGreaterThan(sealedBefore + 2);
    for (const [i, path] of paths.slice(0, -1).entries()) {
      const bytes = await readFile(path);
      const trailer = decodeTrailer(bytes.subarray(bytes.byteLength - TRAILER_BYTES));
      expect(trailer.ok && trailer.trailer.aggregateChecksum, path).toBe(aggregateOf(versions[i] as number, checksumsOf(bytes, bytes.byteLength - TRAILER_BYTES)));
    }
  });

  it('after a crash a version-3 open segment resumes from the aggregate state of its checkpoint', async () => {
    const store = await openStore(dir, { checkpointBytes: 4096, segmentBytesMax: 1 << 20 });
    for (let i = 0; i < 40; i += 1) await store.append(payload(i));
    // The files as a crash leaves them (every append above was synced).
    const image = join(dir, 'image');
    await cp(join(dir, 'CATALOG'), join(image, 'CATALOG'));
    await cp(join(dir, 'segments'), join(image, 'segments'), { recursive: true });
    const catalog = decodeCatalog(await readFile(join(image, 'CATALOG')));
    const open = catalog.ok ? catalog.catalog.segments.at(-1) : undefined;
    expect(open?.state).toBe('open');
    expect(open?.aggregateState?.count).toBe(open?.indexCount);
    expect(open?.indexCount).toBeGreaterThan(0);

    const reopened = await openStore(image, { checkpointBytes: 4096, segmentBytesMax: 1 << 20 });
    expect(reopened.openReport.state).toBe('recovered-tail');
    const [path] = await segmentPaths(image);
    const size = (await readFile(path as string)).byteLength;
    expect(reopened.openReport.bytesScanned).toBe(size - (open?.byteLength ?? 0));
    expect(reopened.openReport.bytesScanned).toBeLessThan(size - SEGMENT_HEADER_BYTES);
    await reopened.close();
    // Sealed by a repair-free path: the trailer must carry the aggregate of all the entries.
    const sealed = await openStore(image, { sealOnClose: true });
    await sealed.close();
    const bytes = await readFile(path as string);
    const trailer = decodeTrailer(bytes.subarray(bytes.byteLength - TRAILER_BYTES));
    expect(trailer.ok && trailer.trailer.aggregateChecksum).toBe(aggregateOf(3, checksumsOf(bytes, bytes.byteLength - TRAILER_BYTES)));
    expect((await validateStore(image)).findings).toEqual([]);
  });
});
