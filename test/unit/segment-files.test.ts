// The destructive steps on segment files (src/wal/segment-files.ts) over real files: a cut keeps
// every cut byte in quarantine before the file shrinks, and a whole copy is put in place only
// when it verifies as it will stand (a damaged or wrong copy leaves nothing behind).
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeDisk } from '../../src/io/index.js';
import { WalStore } from '../../src/wal/index.js';
import { analyzeSegmentFile, segmentRecordOf } from '../../src/wal/analyze.js';
import { StoreLayout } from '../../src/wal/files.js';
import { cutToQuarantine, cutTornTail, putSegmentCopyInPlace, verifySegmentCopy } from '../../src/wal/segment-files.js';

const ENTRY_BYTES_MAX = 1024 * 1024;
let dir: string;
let layout: StoreLayout;

/** A store with segments 1 and 2 sealed (small segments) and 3 open, then closed. */
async function writeStore(): Promise<void> {
  const store = await WalStore.open(dir, { logger: pino({ level: 'silent' }), segmentBytesMax: 4096, sealOnClose: false, recovery: { backupRetentionCount: 0 } });
  for (let i = 0; i < 60; i += 1) await store.append(Buffer.alloc(100, i));
  await store.close();
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-segment-files-'));
  layout = new StoreLayout(nodeDisk, dir, undefined);
  await writeStore();
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('cutToQuarantine', () => {
  it('keeps the cut bytes in quarantine, runs beforeTruncate on the whole file, then shrinks it', async () => {
    const path = layout.segmentPath(3);
    const before = await readFile(path);
    const offsetBytes = before.byteLength - 50;
    const handle = await nodeDisk.open(path, 'r+');
    let sizeSeenBeforeTruncate = -1;
    try {
      const cut = await cutToQuarantine(layout, handle, {
        segmentId: 3,
        offsetBytes,
        fileByteLength: before.byteLength,
        label: 'test-cut',
        nowMs: 7,
        beforeTruncate: async () => {
          sizeSeenBeforeTruncate = (await stat(path)).size;
        },
      });
      expect(cut).toMatchObject({ segment: 3, offsetBytes, byteLength: 50 });
      expect(sizeSeenBeforeTruncate).toBe(before.byteLength);
      expect((await stat(path)).size).toBe(offsetBytes);
      const kept = await readFile(join(layout.quarantineDir, cut.quarantinedAs));
      expect(kept.equals(before.subarray(offsetBytes))).toBe(true);
    } finally {
      await handle.close();
    }
  });

  it('cutTornTail names the quarantined bytes after the torn offset and leaves the head intact', async () => {
    const path = layout.segmentPath(3);
    const before = await readFile(path);
    const cut = await cutTornTail(layout, 3, before.byteLength - 10, before.byteLength, 9);
    expect(cut.quarantinedAs).toMatch(new RegExp(`\\.9\\.torn-at-${before.byteLength - 10}$`));
    expect((await readFile(path)).equals(before.subarray(0, before.byteLength - 10))).toBe(true);
  });
});

describe('verifySegmentCopy and putSegmentCopyInPlace', () => {
  async function sourceCopy(mutate?: (bytes: Buffer) => void): Promise<string> {
    const bytes = await readFile(layout.segmentPath(1));
    mutate?.(bytes);
    const path = join(dir, 'fetched-1.wal');
    await writeFile(path, bytes);
    return path;
  }

  it('puts a verified copy in place, keeping the old copy in quarantine and the source where it was', async () => {
    const original = await readFile(layout.segmentPath(1));
    const source = await sourceCopy();
    await writeFile(layout.segmentPath(1), Buffer.alloc(original.byteLength)); // the local copy is ruined
    const copy = await verifySegmentCopy(layout, 1, source, { how: 'copy', entryBytesMax: ENTRY_BYTES_MAX });
    expect(copy).toBeDefined();
    const quarantinedAs = await putSegmentCopyInPlace(layout, copy!, { label: 'test', retention: 1, nowMs: 3 });
    expect((await readFile(layout.segmentPath(1))).equals(original)).toBe(true);
    expect((await readFile(join(layout.quarantineDir, quarantinedAs!))).every((b) => b === 0)).toBe(true);
    expect((await readFile(source)).equals(original)).toBe(true);
  });

  it('refuses a copy with a flipped bit and leaves no temp file behind', async () => {
    const source = await sourceCopy((bytes) => {
      bytes[300] = (bytes[300] as number) ^ 0x01;
    });
    expect(await verifySegmentCopy(layout, 1, source, { how: 'copy', entryBytesMax: ENTRY_BYTES_MAX })).toBeUndefined();
    expect((await readdir(layout.segmentsDir)).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  it('refuses an intact copy that is not the segment its record describes', async () => {
    const source = await sourceCopy();
    const analysis = await analyzeSegmentFile(nodeDisk, source, 1, { entryBytesMax: ENTRY_BYTES_MAX });
    const expected = { segmentId: 1, firstIndex: analysis.firstIndex ?? 1, lastIndex: analysis.lastIndex + 1, indexCount: analysis.indexCount + 1, aggregateChecksum: undefined };
    expect(await verifySegmentCopy(layout, 1, source, { how: 'copy', entryBytesMax: ENTRY_BYTES_MAX, expected })).toBeUndefined();
  });

  it('refuses an open segment: only a sealed copy is put in place', async () => {
    const source = join(dir, 'open-3.wal');
    await writeFile(source, await readFile(layout.segmentPath(3)));
    expect(await verifySegmentCopy(layout, 3, source, { how: 'move', entryBytesMax: ENTRY_BYTES_MAX })).toBeUndefined();
    expect((await stat(source)).isFile()).toBe(true); // a moved source that fails stays for its owner
  });
});

describe('segmentRecordOf', () => {
  it('records a sealed file whole and an open one up to its last intact frame', async () => {
    const sealed = await analyzeSegmentFile(nodeDisk, layout.segmentPath(1), 1, { entryBytesMax: ENTRY_BYTES_MAX });
    expect(segmentRecordOf(sealed, 0)).toMatchObject({ segmentId: 1, state: 'sealed', firstIndex: 1, byteLength: sealed.fileByteLength, lastIndex: sealed.trailer?.lastIndex });
    const path = layout.segmentPath(3);
    const size = (await stat(path)).size;
    await writeFile(path, Buffer.concat([await readFile(path), Buffer.from('torn bytes')]));
    const open = await analyzeSegmentFile(nodeDisk, path, 3, { entryBytesMax: ENTRY_BYTES_MAX });
    const record = segmentRecordOf(open, 0);
    expect(record).toMatchObject({ segmentId: 3, state: 'open', byteLength: size });
    expect(record.lastIndex).toBe(60);
  });
});
