// Review of segment format 3 (hashed-list aggregate) and catalog version 2: the sponge against
// @noble/hashes at every length and resume point, the catalog's aggregate state on hostile input
// (a state that does not match its record is refused), and segments of format 1 or 2 whose
// header is damaged (their aggregate function must come from the trailer, not be assumed 3).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { sha3_256 } from '@noble/hashes/sha3.js';
import fc from 'fast-check';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WalStore, analyzeSegmentFile, repairDataDir, validateStore } from '../../src/index.js';
import { HashedListAggregate, aggregateOf, newAggregate } from '../../src/wal/aggregate.js';
import { type Catalog, decodeCatalog, encodeCatalog } from '../../src/wal/catalog.js';
import { checksum64 } from '../../src/wal/checksum.js';
import { SEGMENT_HEADER_BYTES, TRAILER_BYTES, decodeFrameAt, decodeTrailer, logIdOf } from '../../src/wal/format.js';
import { checksumsOf, rewriteAsVersion } from '../support/format-downgrade.js';

function reference(checksums: readonly bigint[]): bigint {
  if (checksums.length === 0) return 0n;
  const bytes = Buffer.alloc(8 * checksums.length);
  checksums.forEach((c, i) => bytes.writeBigUInt64BE(c, i * 8));
  return Buffer.from(sha3_256(bytes)).readBigUInt64BE(0);
}

const checksumArb = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });

describe('hashed-list sponge', () => {
  it('equals SHA3-256 (noble) over the stored checksums for 0..100 entries, resumed from bytes at any cut', () => {
    fc.assert(
      fc.property(fc.array(checksumArb, { minLength: 0, maxLength: 100 }), fc.nat(100), (checksums, cutSeed) => {
        const cut = checksums.length === 0 ? 0 : cutSeed % (checksums.length + 1);
        const running = new HashedListAggregate();
        checksums.slice(0, cut).forEach((c) => running.add(c));
        const resumed = HashedListAggregate.fromBytes(running.toBytes());
        // addStored at an unaligned offset of a larger buffer (a frame inside a batch buffer)
        const buf = Buffer.alloc(3 + 8 * checksums.length);
        checksums.forEach((c, i) => buf.writeBigUInt64BE(c, 3 + i * 8));
        for (let i = cut; i < checksums.length; i += 1) resumed.addStored(buf, 3 + i * 8);
        expect(resumed.value()).toBe(reference(checksums));
        expect(aggregateOf(3, checksums)).toBe(reference(checksums));
      }),
      { numRuns: 300 },
    );
    for (let n = 0; n <= 100; n += 1) {
      const checksums = Array.from({ length: n }, (_, i) => (BigInt(i + 1) * 0x9e3779b97f4a7c15n) & ((1n << 64n) - 1n));
      expect(aggregateOf(3, checksums), `${n} entries`).toBe(reference(checksums));
    }
  });
});

/** Re-seals a catalog's bytes with a valid checksum (what a hostile or buggy writer produces). */
function resealed(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes);
  out.writeBigUInt64BE(checksum64(out.subarray(0, out.byteLength - 8)), out.byteLength - 8);
  return out;
}

describe('catalog version 2 on hostile input', () => {
  const running = newAggregate(3);
  for (let i = 1n; i <= 50n; i += 1n) running.add((i * 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn);
  const catalog: Catalog = {
    generation: 3,
    logName: 'orders',
    logId: logIdOf('orders'),
    segmentBytesMax: 1 << 20,
    entryBytesMax: 1 << 16,
    backupRetentionCount: undefined,
    createdMs: 1_700_000_000_000,
    segments: [{ segmentId: 2, firstIndex: 101, lastIndex: 150, indexCount: 50, byteLength: 4000, aggregateChecksum: running.value(), aggregateState: running, state: 'open', createdMs: 1_700_000_000_002 }],
    holes: [],
  };
  const bytes = encodeCatalog(catalog);
  const stateAt = bytes.byteLength - 8 - 208;

  it('refuses a state whose value is not the aggregate its segment record holds', () => {
    for (const offset of [0, 7, 99, 135, 199]) {
      const damaged = Buffer.from(bytes);
      damaged[stateAt + offset] = (damaged[stateAt + offset] as number) ^ 1;
      const decoded = decodeCatalog(resealed(damaged));
      expect(decoded.ok, `state byte ${offset}`).toBe(false);
    }
  });

  it('refuses a state count that does not fit its record, or is not a safe integer', () => {
    for (const [lo, hi] of [[51, 0], [50 + 17, 0], [0, 0x0020_0000], [0xffffffff, 0xffffffff]] as const) {
      const damaged = Buffer.from(bytes);
      damaged.writeUInt32LE(lo, stateAt + 200);
      damaged.writeUInt32LE(hi, stateAt + 204);
      const decoded = decodeCatalog(resealed(damaged));
      expect(decoded.ok, `count ${hi}:${lo}`).toBe(false);
    }
  });

  it('refuses two states for one segment', () => {
    const body = bytes.subarray(0, bytes.byteLength - 8);
    const twice = Buffer.concat([body, body.subarray(stateAt - 8, stateAt + 208), Buffer.alloc(8)]);
    twice.writeUInt16LE(2, 6);
    expect(decodeCatalog(resealed(twice)).ok).toBe(false);
  });

  it('never throws on random mutations of a valid catalog (re-sealed or not)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(bytes.byteLength - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }), fc.boolean(), (flips, reseal) => {
        const damaged = Buffer.from(bytes);
        for (const [at, x] of flips) damaged[at] = (damaged[at] as number) ^ x;
        const decoded = decodeCatalog(reseal ? resealed(damaged) : damaged);
        if (decoded.ok) {
          const open = decoded.catalog.segments.find((s) => s.aggregateState);
          if (open) expect(open.aggregateState?.value()).toBe(open.aggregateChecksum);
        }
      }),
      { numRuns: 500 },
    );
  });
});

// ---------------------------------------------------------------------------------------------

const silent = pino({ level: 'silent' });
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-fmt3-review-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A closed store whose sealed segments are rewritten as version `version` wrote them (chained). */
async function storeOfVersion(version: 1 | 2): Promise<string[]> {
  const store = await WalStore.open(dir, { logger: silent, segmentBytesMax: 4096 });
  for (let i = 0; i < 30; i += 1) await store.append(Buffer.alloc(300, i));
  await store.close();
  return (await rewriteAsVersion(dir, version)).paths;
}

describe('a format-1/2 segment whose header is damaged', () => {
  for (const version of [1, 2] as const) {
    it(`version ${version}: analysis takes the chained aggregate from its trailer (no false trailer finding), and a rebuild keeps the file's bytes and aggregate`, async () => {
      const paths = await storeOfVersion(version);
      const sealed = paths[0] as string;
      const original = await readFile(sealed);
      const damaged = Buffer.from(original);
      damaged[50] = (damaged[50] as number) ^ 0xff; // the log name: the header checksum fails
      await writeFile(sealed, damaged);

      const analysis = await analyzeSegmentFile((await import('../../src/io/index.js')).nodeDisk, sealed, 1, { entryBytesMax: 1 << 20 });
      expect(analysis.header).toBeUndefined();
      expect(analysis.trailerProblem).toBeUndefined();
      expect(analysis.formatVersion).toBe(version === 1 ? 2 : 2); // chained: written back as 2

      const report = await repairDataDir(dir, { strategy: 'partial', dryRun: false }, { logger: silent });
      expect(report.actions.filter((a) => a.segment === 1).map((a) => [a.outcome, a.detail])).toEqual([['done', expect.any(String)]]);
      expect(report.remaining).toEqual([]);
      const after = await readFile(sealed);
      const trailer = decodeTrailer(after.subarray(after.byteLength - TRAILER_BYTES));
      expect(trailer.ok && trailer.trailer.aggregateChecksum).toBe(aggregateOf(2, checksumsOf(after, after.byteLength - TRAILER_BYTES)));
      expect(after.readUInt16LE(4)).not.toBe(3);
      expect((await validateStore(dir)).findings).toEqual([]);
    });
  }
});

describe('a format-2 open segment whose header is damaged', () => {
  it('is told chained by the catalog checkpoint: analysis, and the store goes on with the chained aggregate', async () => {
    const paths = await storeOfVersion(2);
    const open = paths.at(-1) as string;
    const catalog = decodeCatalog(await readFile(join(dir, 'CATALOG')));
    const record = catalog.ok ? catalog.catalog.segments.at(-1) : undefined;
    expect(record?.state).toBe('open');
    expect(record?.aggregateState).toBeUndefined();
    const bytes = await readFile(open);
    bytes[50] = (bytes[50] as number) ^ 0xff;
    await writeFile(open, bytes);
    const resume = { offsetBytes: record?.byteLength as number, lastIndex: record?.lastIndex as number, indexCount: record?.indexCount as number, aggregate: record?.aggregateChecksum as bigint };
    const { nodeDisk } = await import('../../src/io/index.js');
    const analysis = await analyzeSegmentFile(nodeDisk, open, record?.segmentId as number, { entryBytesMax: 1 << 20, resume });
    expect(analysis.header).toBeUndefined();
    expect(analysis.formatVersion).toBe(2);
    expect(analysis.aggregate).toBe(record?.aggregateChecksum);

    const store = await WalStore.open(dir, { logger: silent, segmentBytesMax: 1 << 20, sealOnClose: true });
    try {
      for (let i = 0; i < 5; i += 1) await store.append(Buffer.alloc(100, i));
    } finally {
      await store.close();
    }
    const after = await readFile(open);
    expect(after.readUInt16LE(4)).toBe(2);
    const trailer = decodeTrailer(after.subarray(after.byteLength - TRAILER_BYTES));
    expect(trailer.ok && trailer.trailer.aggregateChecksum).toBe(aggregateOf(2, checksumsOf(after, after.byteLength - TRAILER_BYTES)));
    expect((await validateStore(dir)).findings).toEqual([]);
  });
});

/** A member's copy of one segment file: serves its intact frames, and the file only if it verifies. */
class CopyOnReplica {
  constructor(
    readonly name: string,
    private readonly path: string,
  ) {}

  async fetchFrames(segmentId: number, first: number, last: number): Promise<Map<number, Buffer>> {
    const { nodeDisk } = await import('../../src/io/index.js');
    const frames = new Map<number, Buffer>();
    await analyzeSegmentFile(nodeDisk, this.path, segmentId, {
      entryBytesMax: 1 << 20,
      onIntactFrame: (index, frame) => {
        if (index >= first && index <= last) frames.set(index, Buffer.from(frame));
      },
    });
    return frames;
  }

  async fetchSegmentFile(): Promise<string | undefined> {
    return undefined; // every copy is damaged somewhere
  }
}

describe('a missing format-2 sealed segment rebuilt entry by entry', () => {
  it('is written back as format 2 with its chained aggregate (the recorded one), not refused as not adding up', async () => {
    const paths = await storeOfVersion(2);
    const path = paths[0] as string;
    const original = await readFile(path);
    const frameStarts: number[] = [];
    for (let at = SEGMENT_HEADER_BYTES; at < original.byteLength - TRAILER_BYTES; ) {
      const decoded = decodeFrameAt(original, at, 1 << 20);
      if (decoded.kind !== 'entry') break;
      frameStarts.push(at);
      at += decoded.frameByteLength;
    }
    const replicas: CopyOnReplica[] = [];
    for (const [name, frame] of [['b', 1], ['c', 3]] as const) {
      const copy = Buffer.from(original);
      const at = (frameStarts[frame] as number) + 40;
      copy[at] = (copy[at] as number) ^ 1;
      const copyPath = join(dir, `${name}.wal`);
      await writeFile(copyPath, copy);
      replicas.push(new CopyOnReplica(`replica-${name}`, copyPath));
    }
    await rm(path);
    await rm(join(dir, 'backups', '1', basename(path)), { force: true });

    const store = await WalStore.open(dir, { logger: silent, segmentBytesMax: 4096, recovery: { backupRetentionCount: 0 } });
    try {
      const report = await store.repairSealedSegment(1, { strategy: 'partial', dryRun: false, sources: replicas });
      expect(report).toMatchObject({ outcome: 'done', lost: [], truncated: [] });
    } finally {
      await store.close();
    }
    expect((await readFile(path)).equals(original)).toBe(true);
  });
});

describe('sealed records', () => {
  it('hold no running aggregate state (only the open segment needs one)', async () => {
    const store = await WalStore.open(dir, { logger: silent, segmentBytesMax: 4096 });
    try {
      for (let i = 0; i < 30; i += 1) await store.append(Buffer.alloc(300, i));
      const records = store.segmentRecords();
      expect(records.filter((r) => r.state === 'sealed').length).toBeGreaterThan(1);
      for (const r of records) expect(r.aggregateState === undefined, `segment ${r.segmentId}`).toBe(r.state === 'sealed');
    } finally {
      await store.close();
    }
  });
});

describe('a format-2 sealed segment with a damaged entry (header intact)', () => {
  it('is rebuilt from a replica as format 2, byte for byte', async () => {
    const paths = await storeOfVersion(2);
    const path = paths[0] as string;
    const original = await readFile(path);
    const copyPath = join(dir, 'b.wal');
    await writeFile(copyPath, original);
    const damaged = Buffer.from(original);
    const second = SEGMENT_HEADER_BYTES + ((decodeFrameAt(original, SEGMENT_HEADER_BYTES, 1 << 20) as { frameByteLength: number }).frameByteLength);
    damaged[second + 60] = (damaged[second + 60] as number) ^ 4;
    await writeFile(path, damaged);
    await rm(join(dir, 'backups', '1', basename(path)), { force: true });
    const store = await WalStore.open(dir, { logger: silent, segmentBytesMax: 4096, recovery: { backupRetentionCount: 0 } });
    try {
      const report = await store.repairSealedSegment(1, { strategy: 'partial', dryRun: false, sources: [new CopyOnReplica('replica-b', copyPath)] });
      expect(report).toMatchObject({ outcome: 'done', lost: [], truncated: [] });
    } finally {
      await store.close();
    }
    expect((await readFile(path)).equals(original)).toBe(true);
  });
});
