// Repair of the open segment in place (issue 11): an acknowledged entry of a replica's open
// segment, damaged on the medium after it was synced, is rewritten from a verified copy while the
// segment stays open, and appends go on after it. Two replica stores get the same frames (as a
// writer sends them); the damaged one repairs from the other. Named by the fault injected.
import { mkdtemp, readFile, rm, truncate as fsTruncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CorruptEntryError, type GoodCopySource, WalStore, format } from '../../src/wal/index.js';
import { flipBit, zeroBlock } from '../support/fault-driver.js';

const SEGMENT = { segmentId: 3, firstIndex: 101, createdMs: 1_700_000_000_000 };
const ENTRIES = 40;
const PAYLOAD_BYTES = 300;

let root: string;
const stores: WalStore[] = [];

async function replica(name: string): Promise<WalStore> {
  const store = await WalStore.open(join(root, name), { logName: 'orders', segmentBytesMax: 1 << 30, sealOnClose: false, allowSegmentGaps: true, recovery: { backupRetentionCount: 0 }, logger: pino({ level: 'silent' }) });
  stores.push(store);
  return store;
}

function frames(first: number, count: number): Buffer[] {
  return Array.from({ length: count }, (_, i) => format.encodeEntry({ index: first + i, timestampMs: 5, flags: 0, payload: Buffer.alloc(PAYLOAD_BYTES, 0x61 + ((first + i) % 26)) }).frame);
}

/** Another replica as a source: its verified frames. */
function sourceOf(store: WalStore, tamper?: (frame: Buffer) => Buffer): GoodCopySource {
  return {
    name: 'peer',
    fetchFrames: async (_segmentId, first, last) => {
      const out = new Map<number, Buffer>();
      for (let index = first; index <= last; index += 1) out.set(index, tamper ? tamper(Buffer.from((await store.readFrame(index)).frame)) : (await store.readFrame(index)).frame);
      return out;
    },
    fetchSegmentFile: async () => undefined,
  };
}

const segmentFile = (name: string): string => join(root, name, 'segments', format.segmentFileName(SEGMENT.segmentId));
const offsetOf = (index: number): number => format.SEGMENT_HEADER_BYTES + (index - SEGMENT.firstIndex) * (format.ENTRY_HEADER_BYTES + PAYLOAD_BYTES);

async function twoReplicas(): Promise<{ victim: WalStore; healthy: WalStore }> {
  const victim = await replica('victim');
  const healthy = await replica('healthy');
  const all = frames(SEGMENT.firstIndex, ENTRIES);
  for (const store of [victim, healthy]) {
    for (let i = 0; i < ENTRIES; i += 10) await store.appendFrames(SEGMENT, all.slice(i, i + 10));
  }
  return { victim, healthy };
}

async function expectAllRead(store: WalStore, last: number): Promise<void> {
  for (let index = SEGMENT.firstIndex; index <= last; index += 1) {
    expect((await store.read(index)).payload.equals(Buffer.alloc(PAYLOAD_BYTES, 0x61 + (index % 26))), `entry ${index}`).toBe(true);
  }
}

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'wal-open-repair-'));
});
afterEach(async () => {
  for (const store of stores.splice(0)) await store.close();
  await rm(root, { recursive: true, force: true });
});

describe('repairOpenSegment', () => {
  it('flipped bit in an acknowledged payload of the open segment is rewritten from a replica at once', async () => {
    const { victim, healthy } = await twoReplicas();
    await flipBit(segmentFile('victim'), offsetOf(110) + 50);
    await expect(victim.read(110)).rejects.toBeInstanceOf(CorruptEntryError);
    const result = await victim.repairOpenSegment(SEGMENT.segmentId, { sources: [sourceOf(healthy)] });
    expect(result).toMatchObject({ outcome: 'done', decision: 'reconstruct', repaired: [{ first: 110, last: 110 }], lost: [] });
    expect(victim.segmentRecord(SEGMENT.segmentId)?.state).toBe('open');
    expect((await readFile(segmentFile('victim'))).equals(await readFile(segmentFile('healthy')))).toBe(true);
    await expectAllRead(victim, SEGMENT.firstIndex + ENTRIES - 1);
    // The segment is still written to after the repair.
    await victim.appendFrames(SEGMENT, frames(SEGMENT.firstIndex + ENTRIES, 5));
    await expectAllRead(victim, SEGMENT.firstIndex + ENTRIES + 4);
  });

  it('zeroed 4 KiB block and a flipped entry header in the open segment are rewritten from a replica', async () => {
    const { victim, healthy } = await twoReplicas();
    await zeroBlock(segmentFile('victim'), 4096, 4096);
    await flipBit(segmentFile('victim'), offsetOf(130) + 20);
    const result = await victim.repairOpenSegment(SEGMENT.segmentId, { sources: [sourceOf(healthy)] });
    expect(result.outcome).toBe('done');
    expect(result.repaired.length).toBe(2);
    expect((await readFile(segmentFile('victim'))).equals(await readFile(segmentFile('healthy')))).toBe(true);
    await expectAllRead(victim, SEGMENT.firstIndex + ENTRIES - 1);
  });

  it('zeroed open segment header is encoded again', async () => {
    const { victim, healthy } = await twoReplicas();
    await zeroBlock(segmentFile('victim'), 0, format.SEGMENT_HEADER_BYTES);
    const result = await victim.repairOpenSegment(SEGMENT.segmentId, { sources: [sourceOf(healthy)] });
    expect(result.outcome).toBe('done');
    expect((await readFile(segmentFile('victim'))).equals(await readFile(segmentFile('healthy')))).toBe(true);
  });

  it('open segment truncated to half gets its synced entries back', async () => {
    const { victim, healthy } = await twoReplicas();
    const bytes = (await readFile(segmentFile('victim'))).byteLength;
    await fsTruncate(segmentFile('victim'), Math.floor(bytes / 2));
    const result = await victim.repairOpenSegment(SEGMENT.segmentId, { sources: [sourceOf(healthy)] });
    expect(result.outcome).toBe('done');
    expect((await readFile(segmentFile('victim'))).equals(await readFile(segmentFile('healthy')))).toBe(true);
    await expectAllRead(victim, SEGMENT.firstIndex + ENTRIES - 1);
  });

  it('deleted open segment file is written back under its name, and appends land in it', async () => {
    const { victim, healthy } = await twoReplicas();
    await rm(segmentFile('victim'));
    expect(await victim.openSegmentFileProblem()).toMatchObject({ segmentId: SEGMENT.segmentId, detail: expect.stringMatching(/missing/) });
    const result = await victim.repairOpenSegment(SEGMENT.segmentId, { sources: [sourceOf(healthy)] });
    expect(result.outcome).toBe('done');
    expect(await victim.openSegmentFileProblem()).toBeUndefined();
    expect((await readFile(segmentFile('victim'))).equals(await readFile(segmentFile('healthy')))).toBe(true);
    const more = frames(SEGMENT.firstIndex + ENTRIES, 5);
    await victim.appendFrames(SEGMENT, more);
    await healthy.appendFrames(SEGMENT, more);
    expect((await readFile(segmentFile('victim'))).equals(await readFile(segmentFile('healthy')))).toBe(true);
    await expectAllRead(victim, SEGMENT.firstIndex + ENTRIES + 4);
  });

  it('open segment file replaced by an older copy of itself gets its later entries back', async () => {
    const victim = await replica('victim');
    const healthy = await replica('healthy');
    const all = frames(SEGMENT.firstIndex, ENTRIES);
    for (const store of [victim, healthy]) await store.appendFrames(SEGMENT, all.slice(0, 10));
    const olderCopy = await readFile(segmentFile('victim'));
    for (const store of [victim, healthy]) await store.appendFrames(SEGMENT, all.slice(10));
    await writeFile(segmentFile('victim'), olderCopy);
    expect(await victim.openSegmentFileProblem()).toMatchObject({ detail: expect.stringMatching(/bytes/) });
    expect((await victim.repairOpenSegment(SEGMENT.segmentId, { sources: [sourceOf(healthy)] })).outcome).toBe('done');
    expect((await readFile(segmentFile('victim'))).equals(await readFile(segmentFile('healthy')))).toBe(true);
  });

  it('a replica serving a self-consistent but different entry is refused: nothing is written', async () => {
    const { victim, healthy } = await twoReplicas();
    await flipBit(segmentFile('victim'), offsetOf(120) + 60);
    const damaged = await readFile(segmentFile('victim'));
    const forged = (frame: Buffer): Buffer => {
      const decoded = format.decodeFrameAt(frame, 0, 1 << 20);
      if (decoded.kind !== 'entry') return frame;
      return format.encodeEntry({ index: decoded.header.index, timestampMs: 6, flags: 0, payload: Buffer.alloc(PAYLOAD_BYTES, 0x7a) }).frame;
    };
    const result = await victim.repairOpenSegment(SEGMENT.segmentId, { sources: [sourceOf(healthy, forged)] });
    expect(result.outcome).toBe('failed');
    expect((await readFile(segmentFile('victim'))).equals(damaged)).toBe(true);
    await expect(victim.read(120)).rejects.toBeInstanceOf(CorruptEntryError);
  });

  it('an intact open segment is kept as it is', async () => {
    const { victim, healthy } = await twoReplicas();
    expect(await victim.repairOpenSegment(SEGMENT.segmentId, { sources: [sourceOf(healthy)] })).toMatchObject({ decision: 'keep', outcome: 'done' });
  });
});
