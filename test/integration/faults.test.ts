// Fault injection on real files: every region of every file kind (segment header, entry header,
// payload, trailer, catalog, backup copy) gets a flipped bit, a zeroed 4 KiB block, truncation,
// garbage, deletion or duplication; each test checks what was detected (validateStore), what the
// repair did (its report), and that every intact entry still reads back equal. Two invariants run
// through all of them (DESIGN.md section 6): a read returns the exact payload appended or throws
// EntryLostError / CorruptEntryError, and every index that is not readable is named in a report.
// Tests are named by the fault they inject; they share test/support/fault-driver.ts.
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CorruptEntryError,
  DamageFoundError,
  EntryLostError,
  type Finding,
  type RepairReport,
  type RepairStrategy,
  type ValidationReport,
  WalStore,
  repairDataDir,
  validateStore,
} from '../../src/index.js';
import {
  ENTRIES_PER_SEGMENT,
  FRAME_BYTES,
  SEGMENT_HEADER_BYTES,
  appendGarbage,
  backupPath,
  catalogPath,
  copyDir,
  corrupt,
  entriesPerSegment,
  exists,
  expectAllIntact,
  expectNoSilentLoss,
  fileBytes,
  flipBit,
  frameOffset,
  listDir,
  makeOpenStore,
  makeStore,
  namedLoss,
  payloadOf,
  payloadOffset,
  readAll,
  readOutcomes,
  segmentPath,
  snapshotDir,
  storeOptions,
  tempRoot,
  trailerOffset,
  truncate,
  writeStray,
  zeroBlock,
} from '../support/fault-driver.js';

const WRITTEN = 60; // segments 1..3 full (16 entries each), segment 4 holds 49..60
const OPEN_WRITTEN = 55; // segments 1..3 sealed, segment 4 open with 49..55
const BIG_SEGMENT_BYTES = 16 * 1024;

let root: string;
let counter = 0;
const base = {
  sealed: '',
  sealedNoBackup: '',
  sealedBig: '',
  open: '',
  openNoBackup: '',
  openSmall: '',
};

beforeAll(async () => {
  root = await tempRoot();
  base.sealed = join(root, 'base-sealed');
  base.sealedNoBackup = join(root, 'base-sealed-no-backup');
  base.sealedBig = join(root, 'base-sealed-big');
  base.open = join(root, 'base-open');
  base.openNoBackup = join(root, 'base-open-no-backup');
  base.openSmall = join(root, 'base-open-small');
  await makeStore(base.sealed, { entries: WRITTEN });
  await makeStore(base.sealedNoBackup, { entries: WRITTEN, backupRetentionCount: 0 });
  await makeStore(base.sealedBig, { entries: 2 * entriesPerSegment(BIG_SEGMENT_BYTES), segmentBytesMax: BIG_SEGMENT_BYTES });
  await makeOpenStore(base.open, { entries: OPEN_WRITTEN });
  await makeOpenStore(base.openNoBackup, { entries: OPEN_WRITTEN, backupRetentionCount: 0 });
  await makeOpenStore(base.openSmall, { entries: 5 });
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A fresh copy of a base store, for one test to damage. */
async function fresh(from: string): Promise<string> {
  counter += 1;
  const dir = join(root, `t${counter}`);
  await copyDir(from, dir);
  return dir;
}

const relSegment = (id: number): string => `segments/${String(id).padStart(20, '0')}.wal`;

async function validate(dir: string, backupRetentionCount = 1): Promise<ValidationReport> {
  return validateStore(dir, { recovery: { backupRetentionCount } });
}

async function repair(dir: string, strategy: RepairStrategy, backupRetentionCount = 1): Promise<RepairReport> {
  return repairDataDir(dir, { strategy, dryRun: false }, { recovery: { backupRetentionCount } });
}

function kinds(findings: readonly Finding[]): string[] {
  return findings.map((f) => f.kind);
}

/** A repair of one sealed segment from the backup, lossless, leaves it equal to its backup. */
async function expectRebuiltFromBackup(dir: string, report: RepairReport, segment: number, repaired: number): Promise<void> {
  expect(report.remaining).toEqual([]);
  expect(report.entriesRepaired).toBe(repaired);
  expect(report.entriesLost).toBe(0);
  expect(report.entriesTruncated).toBe(0);
  const action = report.actions.find((a) => a.segment === segment);
  expect(action).toMatchObject({ segment, decision: 'reconstruct', outcome: 'done', lost: [], truncated: [] });
  if (repaired > 0) expect(action?.source).toBe('local-backup');
  expect((await fileBytes(segmentPath(dir, segment))).equals(await fileBytes(backupPath(dir, segment)))).toBe(true);
  // The damaged original is kept in quarantine.
  expect(action?.quarantinedAs).toBeDefined();
  expect(await listDir(join(dir, 'quarantine'))).toContain(action?.quarantinedAs);
  expect((await validate(dir)).ok).toBe(true);
  expectAllIntact(await readAll(dir), WRITTEN);
}

// -----------------------------------------------------------------------------------------------
describe('sealed segment, PartialReconstruct from the local backup', () => {
  it('flipped bit in a sealed segment payload is rebuilt from the backup', async () => {
    const dir = await fresh(base.sealed);
    await flipBit(segmentPath(dir, 2), payloadOffset(20) + 7, 3);
    const damaged = await fileBytes(segmentPath(dir, 2));

    const found = await validate(dir);
    expect(found.ok).toBe(false);
    expect(found.findings).toHaveLength(1);
    expect(found.findings[0]).toMatchObject({ kind: 'checksum-mismatch', segment: 2, entryIndex: 20, indexCount: 1, offsetBytes: frameOffset(20), file: relSegment(2) });

    const report = await repair(dir, 'partial');
    expect(report.actions).toHaveLength(1);
    expect(report.actions[0]?.repaired).toEqual([{ first: 20, last: 20 }]);
    const quarantined = await fileBytes(join(dir, 'quarantine', report.actions[0]?.quarantinedAs ?? '?'));
    expect(quarantined.equals(damaged)).toBe(true);
    await expectRebuiltFromBackup(dir, report, 2, 1);
  });

  it('flipped bit in a sealed segment entry header is rebuilt from the backup', async () => {
    const dir = await fresh(base.sealed);
    await flipBit(segmentPath(dir, 2), frameOffset(20) + 33); // the payload length field

    const found = await validate(dir);
    expect(found.findings).toHaveLength(1);
    expect(found.findings[0]).toMatchObject({ kind: 'bad-entry-header', segment: 2, entryIndex: 20, indexCount: 1, offsetBytes: frameOffset(20) });

    const report = await repair(dir, 'partial');
    expect(report.actions[0]?.repaired).toEqual([{ first: 20, last: 20 }]);
    await expectRebuiltFromBackup(dir, report, 2, 1);
  });

  it('flipped bit in a sealed segment header is rebuilt from the backup', async () => {
    const dir = await fresh(base.sealed);
    await flipBit(segmentPath(dir, 2), 17); // first index field

    const found = await validate(dir);
    expect(kinds(found.findings)).toEqual(['bad-header']);
    expect(found.findings[0]).toMatchObject({ segment: 2, offsetBytes: 0 });

    const report = await repair(dir, 'partial');
    await expectRebuiltFromBackup(dir, report, 2, 0);
  });

  it('flipped bit in a sealed segment trailer is rebuilt from the backup', async () => {
    const dir = await fresh(base.sealed);
    await flipBit(segmentPath(dir, 2), trailerOffset() + 41); // aggregate checksum

    const found = await validate(dir);
    expect(kinds(found.findings)).toEqual(['bad-trailer']);
    expect(found.findings[0]).toMatchObject({ segment: 2, offsetBytes: trailerOffset() });

    const report = await repair(dir, 'partial');
    await expectRebuiltFromBackup(dir, report, 2, 0);
  });

  it('zeroed 4 KiB block over a whole sealed segment is rebuilt from the backup', async () => {
    const dir = await fresh(base.sealed);
    await zeroBlock(segmentPath(dir, 2), 0, 4096);

    const found = await validate(dir);
    expect(kinds(found.findings)).toEqual(['bad-header', 'bad-entry-header', 'bad-trailer']);
    expect(found.findings[1]).toMatchObject({ segment: 2, entryIndex: 17, indexCount: ENTRIES_PER_SEGMENT, offsetBytes: SEGMENT_HEADER_BYTES });

    const report = await repair(dir, 'partial');
    await expectRebuiltFromBackup(dir, report, 2, ENTRIES_PER_SEGMENT);
  });

  it('zeroed 4 KiB block in the middle of a large sealed segment is rebuilt from the backup', async () => {
    const dir = await fresh(base.sealedBig);
    const perSegment = entriesPerSegment(BIG_SEGMENT_BYTES);
    const written = 2 * perSegment;
    await zeroBlock(segmentPath(dir, 1), 4096, 4096);
    // Frames overlapping [4096, 8192) are the damaged ones.
    const firstSlot = Math.floor((4096 - SEGMENT_HEADER_BYTES) / FRAME_BYTES);
    const lastSlot = Math.floor((8192 - 1 - SEGMENT_HEADER_BYTES) / FRAME_BYTES);
    const damaged = lastSlot - firstSlot + 1;

    const found = await validate(dir);
    expect(found.findings.length).toBeGreaterThan(0);
    for (const finding of found.findings) {
      expect(finding).toMatchObject({ segment: 1, entryIndex: firstSlot + 1, indexCount: damaged });
    }

    const report = await repair(dir, 'partial');
    expect(report.remaining).toEqual([]);
    expect(report.actions[0]?.repaired).toEqual([{ first: firstSlot + 1, last: firstSlot + damaged }]); // reported as one merged range
    expect(report.entriesRepaired).toBe(damaged);
    expect((await fileBytes(segmentPath(dir, 1))).equals(await fileBytes(backupPath(dir, 1)))).toBe(true);
    expectAllIntact(await readAll(dir, storeOptions({ segmentBytesMax: BIG_SEGMENT_BYTES })), written);
  });

  it('garbage appended after a sealed segment trailer is cut off, the segment rebuilt as it was', async () => {
    const dir = await fresh(base.sealed);
    await appendGarbage(segmentPath(dir, 2), 100);
    const damaged = await fileBytes(segmentPath(dir, 2));

    const found = await validate(dir);
    expect(kinds(found.findings)).toEqual(['trailing-garbage']);
    expect(found.findings[0]).toMatchObject({ segment: 2, offsetBytes: trailerOffset() + 64, byteLength: 100 });

    const report = await repair(dir, 'partial');
    expect(report.actions[0]?.repaired).toEqual([]);
    const quarantined = await fileBytes(join(dir, 'quarantine', report.actions[0]?.quarantinedAs ?? '?'));
    expect(quarantined.equals(damaged)).toBe(true);
    await expectRebuiltFromBackup(dir, report, 2, 0);
  });

  it('deleted sealed segment is restored whole from the backup', async () => {
    const dir = await fresh(base.sealed);
    await rm(segmentPath(dir, 2));

    const found = await validate(dir);
    expect(found.findings).toEqual([expect.objectContaining({ kind: 'missing-segment', segment: 2, entryIndex: 17, indexCount: ENTRIES_PER_SEGMENT })]);

    const report = await repair(dir, 'partial');
    expect(report.actions).toEqual([expect.objectContaining({ segment: 2, decision: 'restore-file', outcome: 'done', repaired: [{ first: 17, last: 32 }], source: 'local-backup' })]);
    expect(report.entriesRepaired).toBe(ENTRIES_PER_SEGMENT);
    expect(report.remaining).toEqual([]);
    expect((await validate(dir)).ok).toBe(true);
    expectAllIntact(await readAll(dir), WRITTEN);
  });

  it('a copy of another segment under a sealed segment id is replaced from the backup', async () => {
    const dir = await fresh(base.sealed);
    await copyFile(segmentPath(dir, 2), segmentPath(dir, 3)); // segment 3's name, segment 2's bytes

    // The file is a duplicate of segment 2 (its intact header says so), and segment 3 is missing.
    const found = await validate(dir);
    expect(kinds(found.findings).sort()).toEqual(['missing-segment', 'unexpected-file']);
    expect(found.findings.every((f) => f.segment === 3)).toBe(true);
    expect(found.findings.find((f) => f.kind === 'unexpected-file')?.detail).toMatch(/copy of segment 2/);

    const report = await repair(dir, 'partial');
    expect(report.actions.map((a) => a.decision)).toEqual(['quarantine-file', 'restore-file']);
    expect(report.actions[1]?.repaired).toEqual([{ first: 33, last: 33 + ENTRIES_PER_SEGMENT - 1 }]);
    expect(report.remaining).toEqual([]);
    expect((await fileBytes(segmentPath(dir, 3))).equals(await fileBytes(backupPath(dir, 3)))).toBe(true);
    expectAllIntact(await readAll(dir), WRITTEN);
  });

  it('a copy of a segment under a new id past the end is quarantined, nothing is lost', async () => {
    const dir = await fresh(base.sealed);
    const copy = await fileBytes(segmentPath(dir, 2));
    await writeFile(segmentPath(dir, 9), copy);

    const found = await validate(dir);
    expect(found.ok).toBe(false);
    expect(found.findings).toEqual([expect.objectContaining({ kind: 'unexpected-file', segment: 9 })]);

    const report = await repair(dir, 'partial');
    expect(report.remaining).toEqual([]);
    expect(report.entriesLost + report.entriesTruncated).toBe(0);
    const quarantinedAs = report.actions.find((a) => a.decision === 'quarantine-file')?.quarantinedAs ?? '?';
    expect((await fileBytes(join(dir, 'quarantine', quarantinedAs))).equals(copy)).toBe(true);
    expect((await validate(dir)).ok).toBe(true);

    const store = await WalStore.open(dir, storeOptions({}));
    try {
      expect(store.lastIndex).toBe(WRITTEN);
      expectAllIntact({ outcomes: await readOutcomes(store), lastIndex: store.lastIndex, firstIndex: store.firstIndex }, WRITTEN);
      expect(await store.append(payloadOf(WRITTEN + 1))).toEqual({ firstIndex: WRITTEN + 1, lastIndex: WRITTEN + 1 });
    } finally {
      await store.close();
    }
    expectAllIntact(await readAll(dir), WRITTEN + 1);
  });

  it('a stray non-segment file in segments/ is moved to quarantine', async () => {
    const dir = await fresh(base.sealed);
    await writeStray(join(dir, 'segments', 'notes.txt'), Buffer.from('operator notes'));

    const found = await validate(dir);
    expect(found.findings).toEqual([expect.objectContaining({ kind: 'unexpected-file', file: 'segments/notes.txt' })]);

    const report = await repair(dir, 'partial');
    expect(report.actions).toEqual([expect.objectContaining({ decision: 'quarantine-file', outcome: 'done' })]);
    expect(report.remaining).toEqual([]);
    expect(await exists(join(dir, 'segments', 'notes.txt'))).toBe(false);
    expect((await readFile(join(dir, 'quarantine', report.actions[0]?.quarantinedAs ?? '?'))).toString()).toBe('operator notes');
    expectAllIntact(await readAll(dir), WRITTEN);
  });

  it('flipped bit in a sealed segment payload with Rollback is still rebuilt from the backup, nothing truncated', async () => {
    const dir = await fresh(base.sealed);
    await flipBit(segmentPath(dir, 3), payloadOffset(40));
    const report = await repair(dir, 'rollback');
    expect(report.entriesTruncated).toBe(0);
    expect(report.actions[0]?.repaired).toEqual([{ first: 40, last: 40 }]);
    await expectRebuiltFromBackup(dir, report, 3, 1);
  });
});

// -----------------------------------------------------------------------------------------------
describe('catalog', () => {
  it('flipped bit in the catalog is rebuilt from the segments by open', async () => {
    const dir = await fresh(base.sealed);
    await flipBit(catalogPath(dir), 140); // inside the first segment record

    const found = await validate(dir);
    expect(found.findings).toEqual([expect.objectContaining({ kind: 'bad-catalog', file: 'CATALOG' })]);

    const store = await WalStore.open(dir, storeOptions({}));
    try {
      expect(store.openReport.state).toBe('repaired');
      expect(store.openReport.repair?.remaining).toEqual([]);
      expect(kinds(store.openReport.findings)).toEqual(['bad-catalog']);
      expectAllIntact({ outcomes: await readOutcomes(store), lastIndex: store.lastIndex, firstIndex: store.firstIndex }, WRITTEN);
    } finally {
      await store.close();
    }
    expect((await validate(dir)).ok).toBe(true);
  });

  it('zeroed 4 KiB block over the catalog is rebuilt by repair', async () => {
    const dir = await fresh(base.sealed);
    await zeroBlock(catalogPath(dir), 0, 4096);

    const found = await validate(dir);
    expect(found.findings).toEqual([expect.objectContaining({ kind: 'bad-catalog', detail: 'bad catalog magic' })]);

    const report = await repair(dir, 'partial');
    expect(report.findings).toHaveLength(1);
    expect(report.remaining).toEqual([]);
    expect(report.entriesLost + report.entriesTruncated).toBe(0);
    expect((await validate(dir)).ok).toBe(true);
    expectAllIntact(await readAll(dir), WRITTEN);
  });

  it('lost catalog is rebuilt from the segment files by open', async () => {
    const dir = await fresh(base.sealed);
    await rm(catalogPath(dir));

    const found = await validate(dir);
    expect(found.findings).toEqual([expect.objectContaining({ kind: 'bad-catalog', detail: 'catalog file is missing' })]);

    const store = await WalStore.open(dir, storeOptions({}));
    try {
      expect(store.openReport.state).toBe('repaired');
      expectAllIntact({ outcomes: await readOutcomes(store), lastIndex: store.lastIndex, firstIndex: store.firstIndex }, WRITTEN);
    } finally {
      await store.close();
    }
    expect((await validate(dir)).ok).toBe(true);
  });

  it('lost catalog after a crash keeps the open segment open and appends continue', async () => {
    const dir = await fresh(base.open);
    await rm(catalogPath(dir));
    const store = await WalStore.open(dir, storeOptions({}));
    try {
      expect(store.openReport.state).toBe('repaired');
      expect(store.lastIndex).toBe(OPEN_WRITTEN);
      expect(store.segmentRecords().at(-1)).toMatchObject({ segmentId: 4, state: 'open', firstIndex: 49, lastIndex: OPEN_WRITTEN });
      await store.append(payloadOf(OPEN_WRITTEN + 1));
    } finally {
      await store.close();
    }
    expectAllIntact(await readAll(dir), OPEN_WRITTEN + 1);
  });
});

// -----------------------------------------------------------------------------------------------
describe('backup copies', () => {
  const cases: Array<[string, (dir: string) => Promise<void>, string]> = [
    ['flipped bit in a backup copy is rewritten from the verified segment', (dir) => flipBit(backupPath(dir, 2), payloadOffset(20)), 'backup copy is damaged'],
    ['zeroed 4 KiB block over a backup copy is rewritten from the verified segment', (dir) => zeroBlock(backupPath(dir, 2), 0, 4096), 'backup copy is damaged'],
    ['deleted backup copy is written again from the verified segment', (dir) => rm(backupPath(dir, 2)), 'backup copy is missing'],
  ];
  for (const [name, inject, detail] of cases) {
    it(name, async () => {
      const dir = await fresh(base.sealed);
      await inject(dir);
      const found = await validate(dir);
      expect(found.findings).toEqual([expect.objectContaining({ kind: 'backup-damaged', segment: 2, file: 'backups/1/00000000000000000002.wal', detail })]);
      // The store itself is intact: reads do not depend on the backup.
      expectAllIntact(await readAll(dir), WRITTEN);

      const report = await repair(dir, 'partial');
      expect(report.actions).toEqual([expect.objectContaining({ segment: 2, decision: 'recopy-backup', outcome: 'done' })]);
      expect(report.remaining).toEqual([]);
      expect((await fileBytes(backupPath(dir, 2))).equals(await fileBytes(segmentPath(dir, 2)))).toBe(true);
      expect((await validate(dir)).ok).toBe(true);
    });
  }
});

// -----------------------------------------------------------------------------------------------
describe('open segment after a crash', () => {
  it('truncation at every offset of the last entry of the open segment is rolled back as a torn tail', async () => {
    const start = frameOffset(5);
    const end = start + FRAME_BYTES;
    const original = await fileBytes(segmentPath(base.openSmall, 1));
    expect(original.byteLength).toBe(end);
    for (let cut = start; cut < end; cut++) {
      const dir = await fresh(base.openSmall);
      await truncate(segmentPath(dir, 1), cut);
      const store = await WalStore.open(dir, storeOptions({}));
      try {
        const torn = cut - start;
        expect(store.lastIndex, `cut at ${cut}`).toBe(4);
        if (torn === 0) {
          expect(store.openReport.tornTails).toEqual([]);
        } else {
          expect(store.openReport.tornTails, `cut at ${cut}`).toEqual([{ segment: 1, offsetBytes: start, byteLength: torn, quarantinedAs: expect.any(String) }]);
          expect(store.openReport.findings).toEqual([expect.objectContaining({ kind: 'torn', segment: 1, entryIndex: 5, offsetBytes: start, byteLength: torn })]);
          const kept = await fileBytes(join(dir, 'quarantine', store.openReport.tornTails[0]?.quarantinedAs ?? '?'));
          expect(kept.equals(original.subarray(start, cut))).toBe(true);
        }
        expect(await fileBytes(segmentPath(dir, 1))).toHaveLength(start);
        const outcomes = await readOutcomes(store);
        expectAllIntact({ outcomes, lastIndex: store.lastIndex, firstIndex: store.firstIndex }, 4);
        if (cut === start + 1) {
          // The index torn away is written again, and reads back as the new bytes.
          const again = Buffer.from('written again after the tear');
          expect(await store.append(again)).toEqual({ firstIndex: 5, lastIndex: 5 });
          expect((await store.read(5)).payload.equals(again)).toBe(true);
        }
      } finally {
        await rm(dir, { recursive: true, force: true }).catch(() => undefined);
        await store.close().catch(() => undefined);
      }
    }
  });

  it('garbage appended to the open segment is rolled back by open, the bytes kept in quarantine', async () => {
    const dir = await fresh(base.open);
    const sizeBefore = (await fileBytes(segmentPath(dir, 4))).byteLength;
    await appendGarbage(segmentPath(dir, 4), 100);
    const found = await validate(dir);
    expect(found.findings).toEqual([expect.objectContaining({ kind: 'torn', segment: 4, entryIndex: OPEN_WRITTEN + 1, offsetBytes: sizeBefore })]);

    const store = await WalStore.open(dir, storeOptions({}));
    try {
      expect(store.openReport.state).toBe('recovered-tail');
      expect(store.openReport.tornTails).toEqual([{ segment: 4, offsetBytes: sizeBefore, byteLength: 100, quarantinedAs: expect.any(String) }]);
      const kept = await fileBytes(join(dir, 'quarantine', store.openReport.tornTails[0]?.quarantinedAs ?? '?'));
      expect(kept).toHaveLength(100);
      expectAllIntact({ outcomes: await readOutcomes(store), lastIndex: store.lastIndex, firstIndex: store.firstIndex }, OPEN_WRITTEN);
      await store.append(payloadOf(OPEN_WRITTEN + 1));
    } finally {
      await store.close();
    }
    expect((await validate(dir)).ok).toBe(true);
    expectAllIntact(await readAll(dir), OPEN_WRITTEN + 1);
  });

  it('flipped bit in the middle of the open segment is not truncated silently: open refuses without a copy', async () => {
    const dir = await fresh(base.open);
    await flipBit(segmentPath(dir, 4), payloadOffset(50) + 3);
    const segmentBefore = await fileBytes(segmentPath(dir, 4));

    const found = await validate(dir);
    expect(found.findings).toEqual([expect.objectContaining({ kind: 'checksum-mismatch', segment: 4, entryIndex: 50, indexCount: 1 })]);

    const error = await WalStore.open(dir, storeOptions({})).then(
      async (store) => {
        await store.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DamageFoundError);
    expect((error as DamageFoundError).findings).toEqual([expect.objectContaining({ kind: 'checksum-mismatch', segment: 4, entryIndex: 50 })]);
    expect((await fileBytes(segmentPath(dir, 4))).equals(segmentBefore)).toBe(true);
    expect(await exists(join(dir, 'LOCK'))).toBe(false);
  });

  it('flipped bit in the middle of the open segment with SkipCorrupted records a hole and appends continue', async () => {
    const dir = await fresh(base.open);
    await flipBit(segmentPath(dir, 4), payloadOffset(50) + 3);
    const store = await WalStore.open(dir, storeOptions({}, { repairStrategy: 'skip' }));
    let named: ReturnType<typeof namedLoss> = [];
    try {
      expect(store.openReport.state).toBe('repaired');
      const report = store.openReport.repair;
      expect(report?.entriesLost).toBe(1);
      expect(report?.actions).toEqual([expect.objectContaining({ segment: 4, decision: 'skip', outcome: 'done', lost: [{ first: 50, last: 50 }] })]);
      named = report ? namedLoss(report) : [];
      await expect(store.read(50)).rejects.toBeInstanceOf(EntryLostError);
      const dumped: Array<{ index: number; lost?: true }> = [];
      for await (const entry of store.entries(48, 52)) dumped.push('lost' in entry ? { index: entry.index, lost: entry.lost } : { index: entry.index });
      expect(dumped).toEqual([{ index: 48 }, { index: 49 }, { index: 50, lost: true }, { index: 51 }, { index: 52 }]);
      expect(await store.append(payloadOf(OPEN_WRITTEN + 1))).toEqual({ firstIndex: 56, lastIndex: 56 });
    } finally {
      await store.close();
    }
    expectNoSilentLoss(await readAll(dir), OPEN_WRITTEN + 1, named);
    const after = await validate(dir);
    expect(after.ok).toBe(true);
    expect(after.holes).toEqual([{ segmentId: 4, firstIndex: 50, count: 1 }]);
  });

  // A damaged segment header is corruption (it was synced when the segment was created), never a
  // torn write. Today the open segment's damaged entries are classified as a torn tail (the
  // header is not consulted), and repair writes an empty segment: entries 49..55 are dropped
  // with entriesLost = entriesTruncated = 0. The number of entries lost is unknown without a
  // checkpoint, so the fix is a design decision (see the report); the test states the behaviour
  // expected by DESIGN.md section 4.
  it('zeroed 4 KiB block over the open segment (header included) is corruption, not a torn tail', async () => {
    const dir = await fresh(base.openNoBackup);
    await zeroBlock(segmentPath(dir, 4), 0, 4096);
    const found = await validate(dir, 0);
    expect(kinds(found.findings)).not.toContain('torn');
    await expect(WalStore.open(dir, storeOptions({ backupRetentionCount: 0 }))).rejects.toBeInstanceOf(DamageFoundError);
  });
});

// -----------------------------------------------------------------------------------------------
describe('no verified copy: SkipCorrupted, Rollback, PartialReconstruct', () => {
  it('flipped bit in a sealed segment payload with backupRetentionCount 0: Partial fails and changes nothing', async () => {
    const dir = await fresh(base.sealedNoBackup);
    await flipBit(segmentPath(dir, 2), payloadOffset(20) + 9);
    const segmentBefore = await fileBytes(segmentPath(dir, 2));

    const report = await repair(dir, 'partial', 0);
    expect(report.actions).toEqual([expect.objectContaining({ segment: 2, decision: 'escalate', outcome: 'failed', repaired: [], lost: [], truncated: [] })]);
    expect(report.remaining).toEqual([expect.objectContaining({ kind: 'checksum-mismatch', segment: 2, entryIndex: 20 })]);
    expect(report.entriesRepaired + report.entriesLost + report.entriesTruncated).toBe(0);
    expect((await fileBytes(segmentPath(dir, 2))).equals(segmentBefore)).toBe(true);
    // Reads never return the damaged bytes: the one entry throws, the rest are intact.
    const result = await readAll(dir, storeOptions({ backupRetentionCount: 0 }));
    expect(result.outcomes.find((o) => o.index === 20)).toEqual({ index: 20, corrupt: true });
    expectNoSilentLoss(result, WRITTEN, [{ first: 20, last: 20 }]);
    await expect(
      (async () => {
        const store = await WalStore.open(dir, storeOptions({ backupRetentionCount: 0 }));
        try {
          await store.read(20);
        } finally {
          await store.close();
        }
      })(),
    ).rejects.toBeInstanceOf(CorruptEntryError);
  });

  it('flipped bit in a sealed segment payload with SkipCorrupted records a hole; validate is then clean with the hole listed', async () => {
    const dir = await fresh(base.sealedNoBackup);
    await flipBit(segmentPath(dir, 2), payloadOffset(20) + 9);
    const damaged = await fileBytes(segmentPath(dir, 2));

    const report = await repair(dir, 'skip', 0);
    expect(report.actions).toEqual([expect.objectContaining({ segment: 2, decision: 'skip', outcome: 'done', lost: [{ first: 20, last: 20 }], truncated: [] })]);
    expect(report.entriesLost).toBe(1);
    expect(report.remaining).toEqual([]);
    expect((await fileBytes(join(dir, 'quarantine', report.actions[0]?.quarantinedAs ?? '?'))).equals(damaged)).toBe(true);

    const after = await validate(dir, 0);
    expect(after.ok).toBe(true);
    expect(after.holes).toEqual([{ segmentId: 2, firstIndex: 20, count: 1 }]);

    const result = await readAll(dir, storeOptions({ backupRetentionCount: 0 }));
    expect(result.outcomes.find((o) => o.index === 20)).toEqual({ index: 20, lost: true });
    expectNoSilentLoss(result, WRITTEN, namedLoss(report));
  });

  it('deleted sealed segment without a backup, SkipCorrupted: the whole segment becomes one hole', async () => {
    const dir = await fresh(base.sealedNoBackup);
    await rm(segmentPath(dir, 2));
    const report = await repair(dir, 'skip', 0);
    expect(report.actions).toEqual([expect.objectContaining({ segment: 2, decision: 'skip', outcome: 'done', lost: [{ first: 17, last: 32 }] })]);
    expect(report.entriesLost).toBe(ENTRIES_PER_SEGMENT);
    expect(report.remaining).toEqual([]);
    const after = await validate(dir, 0);
    expect(after.ok).toBe(true);
    expect(after.holes).toEqual([{ segmentId: 2, firstIndex: 17, count: ENTRIES_PER_SEGMENT }]);
    const result = await readAll(dir, storeOptions({ backupRetentionCount: 0 }));
    expect(result.outcomes.filter((o) => 'lost' in o).map((o) => o.index)).toEqual(Array.from({ length: 16 }, (_, i) => 17 + i));
    expectNoSilentLoss(result, WRITTEN, namedLoss(report));
  });

  it('flipped bit in a sealed segment payload with Rollback truncates the log before it and names every later entry', async () => {
    const dir = await fresh(base.sealedNoBackup);
    await flipBit(segmentPath(dir, 2), payloadOffset(20) + 9);

    const report = await repair(dir, 'rollback', 0);
    expect(report.actions.map((a) => [a.segment, a.decision, a.outcome])).toEqual([
      [2, 'rollback', 'done'],
      [3, 'rollback', 'done'],
      [4, 'rollback', 'done'],
    ]);
    expect(report.entriesTruncated).toBe(WRITTEN - 19);
    expect(report.entriesLost).toBe(0);
    expect(report.remaining).toEqual([]);
    // The segments after the cut are kept in quarantine, not deleted.
    const quarantine = await listDir(join(dir, 'quarantine'));
    for (const action of report.actions) expect(quarantine).toContain(action.quarantinedAs);
    expect((await validate(dir, 0)).ok).toBe(true);

    const result = await readAll(dir, storeOptions({ backupRetentionCount: 0 }));
    expect(result.lastIndex).toBe(19);
    expectNoSilentLoss(result, WRITTEN, namedLoss(report));

    // The log goes on from the rollback point.
    const store = await WalStore.open(dir, storeOptions({ backupRetentionCount: 0 }));
    try {
      expect(await store.append(payloadOf(20))).toEqual({ firstIndex: 20, lastIndex: 20 });
    } finally {
      await store.close();
    }
    expectAllIntact(await readAll(dir, storeOptions({ backupRetentionCount: 0 })), 20);
  });

  it('deleted sealed segment without a backup, Rollback: truncated to the entry before it', async () => {
    const dir = await fresh(base.sealedNoBackup);
    await rm(segmentPath(dir, 3));
    const report = await repair(dir, 'rollback', 0);
    expect(report.actions[0]).toMatchObject({ segment: 3, decision: 'rollback', outcome: 'done', truncated: [{ first: 33, last: 48 }] });
    expect(report.entriesTruncated).toBe(WRITTEN - 32);
    expect(report.remaining).toEqual([]);
    const result = await readAll(dir, storeOptions({ backupRetentionCount: 0 }));
    expect(result.lastIndex).toBe(32);
    expectNoSilentLoss(result, WRITTEN, namedLoss(report));
  });
});

// -----------------------------------------------------------------------------------------------
describe('Halt', () => {
  it('flipped bit in a sealed segment payload with Halt: repair changes no byte of any file', async () => {
    const dir = await fresh(base.sealed);
    await flipBit(segmentPath(dir, 2), payloadOffset(20));
    const before = await snapshotDir(dir);

    const report = await repair(dir, 'halt');
    expect(report.actions).toEqual([expect.objectContaining({ segment: 2, decision: 'halt', outcome: 'halted' })]);
    expect(report.remaining).toEqual([expect.objectContaining({ kind: 'checksum-mismatch', segment: 2, entryIndex: 20 })]);
    expect(await snapshotDir(dir)).toEqual(before);
  });

  it('flipped bit in the middle of the open segment with Halt: open throws DamageFoundError and changes nothing', async () => {
    const dir = await fresh(base.open);
    await flipBit(segmentPath(dir, 4), payloadOffset(51));
    const before = await snapshotDir(dir);
    await expect(WalStore.open(dir, storeOptions({}, { repairStrategy: 'halt' }))).rejects.toBeInstanceOf(DamageFoundError);
    expect(await snapshotDir(dir)).toEqual(before);
  });

  it('flipped bit in a sealed segment header with Halt: repair changes no byte of any file', async () => {
    const dir = await fresh(base.sealed);
    await flipBit(segmentPath(dir, 3), 9);
    const before = await snapshotDir(dir);
    const report = await repair(dir, 'halt');
    expect(report.actions).toEqual([expect.objectContaining({ segment: 3, decision: 'halt', outcome: 'halted' })]);
    expect(await snapshotDir(dir)).toEqual(before);
  });
});

// -----------------------------------------------------------------------------------------------
describe('interrupted repair', () => {
  it('a repair intent left by a crash, with a damaged segment and a half-written temp file, is finished by the next open', async () => {
    const dir = await fresh(base.sealed);
    await flipBit(segmentPath(dir, 2), payloadOffset(25));
    await corrupt(segmentPath(dir, 3), frameOffset(40) + 2, (b) => b.fill(0x55), 4);
    await writeFile(join(dir, 'REPAIRING'), JSON.stringify({ strategy: 'partial', startedAt: new Date().toISOString() }) + '\n');
    const half = (await fileBytes(backupPath(dir, 2))).subarray(0, 1000);
    await writeFile(`${segmentPath(dir, 2)}.tmp`, half);

    const store = await WalStore.open(dir, storeOptions({}));
    try {
      expect(store.openReport.state).toBe('repaired');
      const report = store.openReport.repair;
      expect(report?.remaining).toEqual([]);
      expect(report?.actions.map((a) => [a.segment, a.decision, a.outcome, a.repaired])).toEqual([
        [2, 'reconstruct', 'done', [{ first: 25, last: 25 }]],
        [3, 'reconstruct', 'done', [{ first: 40, last: 40 }]],
      ]);
      expectAllIntact({ outcomes: await readOutcomes(store), lastIndex: store.lastIndex, firstIndex: store.firstIndex }, WRITTEN);
    } finally {
      await store.close();
    }
    expect(await exists(join(dir, 'REPAIRING'))).toBe(false);
    expect(await exists(`${segmentPath(dir, 2)}.tmp`)).toBe(false);
    expect((await validate(dir)).ok).toBe(true);
  });

  it('a repair intent left by a crash with nothing damaged opens clean and removes the intent', async () => {
    const dir = await fresh(base.open);
    await mkdir(join(dir, 'quarantine'), { recursive: true });
    await writeFile(join(dir, 'REPAIRING'), '{}\n');
    const store = await WalStore.open(dir, storeOptions({}));
    try {
      expect(store.lastIndex).toBe(OPEN_WRITTEN);
      expect(store.openReport.repair?.actions).toEqual([]);
    } finally {
      await store.close();
    }
    expect(await exists(join(dir, 'REPAIRING'))).toBe(false);
    expectAllIntact(await readAll(dir), OPEN_WRITTEN);
  });
});
