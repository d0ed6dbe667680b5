// analyzeSegmentFile (src/wal/analyze.ts) on segment files built with the format's own encoders:
// what it reports of an intact sealed file, of a flipped payload byte, of a damaged header (the
// hint gives the first index), of a trailer that disagrees, and the catalog record made from it.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { analyzeSegmentFile, isClean } from '../../src/wal/analyze.js';
import { segmentRecordOf } from '../../src/wal/analyze.js';
import { newAggregate } from '../../src/wal/aggregate.js';
import { FORMAT_VERSION, SEGMENT_HEADER_BYTES, encodeEntry, encodeSegmentHeader, encodeTrailer, logIdOf } from '../../src/wal/format.js';
import { nodeDisk } from '../../src/io/index.js';

const ENTRY_BYTES_MAX = 1 << 16;
const FIRST = 41;
const COUNT = 6;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-analyze-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A sealed segment 3 holding FIRST..FIRST+COUNT-1; returns its path, frame offsets and aggregate. */
async function sealedSegment(name: string, trailerLastIndexDelta = 0): Promise<{ path: string; offsets: number[]; aggregate: bigint }> {
  const parts = [encodeSegmentHeader({ segmentId: 3, firstIndex: FIRST, createdMs: 1_000, logId: logIdOf('orders'), logName: 'orders' })];
  const offsets: number[] = [];
  const running = newAggregate(FORMAT_VERSION); // the aggregate of the version written
  let offset = SEGMENT_HEADER_BYTES;
  for (let i = 0; i < COUNT; i += 1) {
    const { frame, checksum } = encodeEntry({ index: FIRST + i, timestampMs: 2_000 + i, flags: 0, payload: Buffer.from(`payload number ${i}`) });
    parts.push(frame);
    offsets.push(offset);
    offset += frame.byteLength;
    running.add(checksum);
  }
  const aggregate = running.value();
  const last = FIRST + COUNT - 1 + trailerLastIndexDelta;
  parts.push(encodeTrailer({ segmentId: 3, firstIndex: FIRST, lastIndex: last, indexCount: COUNT, aggregateChecksum: aggregate, entriesByteLength: offset - SEGMENT_HEADER_BYTES }));
  const path = join(dir, name);
  await writeFile(path, Buffer.concat(parts));
  return { path, offsets, aggregate };
}

describe('analyzeSegmentFile', () => {
  it('an intact sealed file: every index, the aggregate, the trailer, no damage; and the catalog record from it', async () => {
    const { path, aggregate } = await sealedSegment('intact.wal');
    const seen: number[] = [];
    const a = await analyzeSegmentFile(nodeDisk, path, 3, { entryBytesMax: ENTRY_BYTES_MAX, onIntactFrame: (index) => void seen.push(index) });
    expect(isClean(a)).toBe(true);
    expect(a).toMatchObject({ firstIndex: FIRST, lastIndex: FIRST + COUNT - 1, indexCount: COUNT, aggregate, headerProblem: undefined, trailerProblem: undefined, intactEntryCount: COUNT });
    expect(a.trailer?.lastIndex).toBe(FIRST + COUNT - 1);
    expect(seen).toEqual(Array.from({ length: COUNT }, (_, i) => FIRST + i));
    expect(segmentRecordOf(a, 5)).toMatchObject({ segmentId: 3, firstIndex: FIRST, lastIndex: FIRST + COUNT - 1, indexCount: COUNT });
  });

  it('a flipped payload byte: one checksum-mismatch range at that entry, the entries after it still read', async () => {
    const { path, offsets } = await sealedSegment('flipped.wal');
    const bytes = await readFile(path);
    const at = (offsets[2] as number) + 40 + 3;
    bytes[at] = (bytes[at] as number) ^ 0x01;
    await writeFile(path, bytes);
    const seen: number[] = [];
    const a = await analyzeSegmentFile(nodeDisk, path, 3, { entryBytesMax: ENTRY_BYTES_MAX, onIntactFrame: (index) => void seen.push(index) });
    expect(isClean(a)).toBe(false);
    expect(a.ranges.map((r) => ({ kind: r.kind, entryIndex: r.entryIndex }))).toEqual([{ kind: 'checksum-mismatch', entryIndex: FIRST + 2 }]);
    expect(seen).not.toContain(FIRST + 2);
    expect(seen).toContain(FIRST + 5);
  });

  it('a damaged header: reported, and the first index taken from the hint', async () => {
    const { path } = await sealedSegment('header.wal');
    const bytes = await readFile(path);
    bytes[20] = (bytes[20] as number) ^ 0xff; // inside the header's first index
    await writeFile(path, bytes);
    const a = await analyzeSegmentFile(nodeDisk, path, 3, { entryBytesMax: ENTRY_BYTES_MAX, firstIndexHint: FIRST });
    expect(a.headerProblem).toBeDefined();
    expect(a.firstIndex).toBe(FIRST);
    expect(a.lastIndex).toBe(FIRST + COUNT - 1);
  });

  it('a trailer whose last index disagrees with the entries before it', async () => {
    const { path } = await sealedSegment('trailer.wal', 1);
    const a = await analyzeSegmentFile(nodeDisk, path, 3, { entryBytesMax: ENTRY_BYTES_MAX });
    expect(a.trailerProblem).toBeDefined();
    expect(isClean(a)).toBe(false);
  });
});
