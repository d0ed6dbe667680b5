// Segments of format versions 1 and 2 (chained aggregate) beside version 3 (hashed-list
// aggregate): an old store opens and validates with its recorded aggregates unchanged, its open
// segment goes on and is sealed with the chained aggregate, and a version-3 open segment resumes
// after a crash from the running aggregate its checkpoint recorded in the catalog.
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WalStore, type WalOptions, validateStore } from '../../src/index.js';
import { aggregateOf } from '../../src/wal/aggregate.js';
import { decodeCatalog } from '../../src/wal/catalog.js';
import { SEGMENT_HEADER_BYTES, TRAILER_BYTES, decodeTrailer } from '../../src/wal/format.js';
import { checksumsOf, rewriteAsVersion, segmentPaths } from '../support/format-downgrade.js';

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

/** Rewrites a closed store as an older build wrote it: version-2 headers, chained aggregates. */
async function downgradeToVersion2(dataDir: string): Promise<Map<number, bigint>> {
  return (await rewriteAsVersion(dataDir, 2)).chained;
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
