// The shared driver of the fault-injection tests: builds stores of known payloads on real files,
// injects faults into their bytes through one `corrupt(path, offset, fn)` hook, and checks the
// invariants every test shares (no read returns wrong bytes; no loss is silent).
//
// Geometry used throughout: payloads of PAYLOAD_BYTES, so each frame is FRAME_BYTES and, with
// segmentBytesMax 4096, every sealed segment holds ENTRIES_PER_SEGMENT entries. Offsets are
// computed from the format constants, never hard-coded.
import { cp, mkdir, mkdtemp, readFile, readdir, rm, stat, truncate as fsTruncate, writeFile, appendFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { expect } from 'vitest';
import {
  CorruptEntryError,
  EntryLostError,
  type IndexRange,
  type RecoveryConfig,
  type RepairReport,
  type WalOptions,
  WalStore,
} from '../../src/index.js';
import { ENTRY_HEADER_BYTES, SEGMENT_HEADER_BYTES, TRAILER_BYTES, segmentFileName } from '../../src/wal/format.js';

export { ENTRY_HEADER_BYTES, SEGMENT_HEADER_BYTES, TRAILER_BYTES };

export const SILENT = pino({ level: 'silent' });
export const SEGMENT_BYTES = 4096;
export const PAYLOAD_BYTES = 200;
export const FRAME_BYTES = ENTRY_HEADER_BYTES + PAYLOAD_BYTES;
/** Entries that fit a sealed segment of segmentBytesMax bytes. */
export function entriesPerSegment(segmentBytesMax = SEGMENT_BYTES): number {
  return Math.floor((segmentBytesMax - SEGMENT_HEADER_BYTES - TRAILER_BYTES) / FRAME_BYTES);
}
export const ENTRIES_PER_SEGMENT = entriesPerSegment();

/** A payload of lowercase letters, distinct per index: it cannot contain 'WAL'. */
export function payloadOf(index: number): Buffer {
  const out = Buffer.alloc(PAYLOAD_BYTES);
  out.write(`entry-${index}-`, 0, 'latin1');
  for (let i = 16; i < PAYLOAD_BYTES; i++) out[i] = 0x61 + ((index * 7 + i) % 26);
  return out;
}

export interface StoreSpec {
  readonly entries: number;
  readonly segmentBytesMax?: number;
  readonly backupRetentionCount?: number;
  readonly checkpointBytes?: number;
}

export function storeOptions(spec: { segmentBytesMax?: number; backupRetentionCount?: number; checkpointBytes?: number }, recovery: Partial<RecoveryConfig> = {}): WalOptions {
  return {
    segmentBytesMax: spec.segmentBytesMax ?? SEGMENT_BYTES,
    logger: SILENT,
    ...(spec.checkpointBytes === undefined ? {} : { checkpointBytes: spec.checkpointBytes }),
    recovery: { backupRetentionCount: spec.backupRetentionCount ?? 1, ...recovery },
  };
}

export async function tempRoot(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'wal-faults-'));
}

async function appendAll(store: WalStore, entries: number): Promise<void> {
  // Batches of a few entries: group commit and segment rolls both get exercised.
  for (let first = 1; first <= entries; first += 5) {
    const batch: Buffer[] = [];
    for (let i = first; i <= Math.min(entries, first + 4); i++) batch.push(payloadOf(i));
    await store.append(batch);
  }
}

/** Writes entries 1..N and closes the store: every segment sealed, backups written. */
export async function makeStore(dir: string, spec: StoreSpec): Promise<void> {
  const store = await WalStore.open(dir, storeOptions(spec));
  await appendAll(store, spec.entries);
  await store.close();
}

/**
 * Writes entries 1..N and copies the directory while the store is still open, as a crash would
 * leave it: the last segment open (no trailer), the catalog as of the last seal. The lock file
 * (held by this very process) is left out of the copy.
 */
export async function makeOpenStore(dir: string, spec: StoreSpec): Promise<void> {
  const live = await mkdtemp(join(tmpdir(), 'wal-live-'));
  const store = await WalStore.open(live, storeOptions(spec));
  try {
    await appendAll(store, spec.entries);
    await waitForBackups(live, store, spec.backupRetentionCount ?? 1);
    await cp(live, dir, { recursive: true, filter: (src) => !src.endsWith('/LOCK') });
  } finally {
    await store.close();
    await rm(live, { recursive: true, force: true });
  }
}

/** Backups are written in the background after a seal; wait until each sealed segment has them. */
async function waitForBackups(dir: string, store: WalStore, copies: number): Promise<void> {
  const sealed = store.segmentRecords().filter((r) => r.state === 'sealed');
  for (let attempt = 0; attempt < 500; attempt++) {
    let done = true;
    for (const record of sealed) {
      for (let copy = 1; copy <= copies; copy++) {
        const size = await stat(join(dir, 'backups', String(copy), segmentFileName(record.segmentId))).then((s) => s.size, () => -1);
        if (size !== record.byteLength) done = false;
      }
    }
    if (done) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('backups were not written in time');
}

export async function copyDir(from: string, to: string): Promise<void> {
  await cp(from, to, { recursive: true });
}

// ---------------------------------------------------------------------------------------------
// Paths and offsets

export function segmentPath(dir: string, segmentId: number): string {
  return join(dir, 'segments', segmentFileName(segmentId));
}
export function backupPath(dir: string, segmentId: number, copy = 1): string {
  return join(dir, 'backups', String(copy), segmentFileName(segmentId));
}
export function catalogPath(dir: string): string {
  return join(dir, 'CATALOG');
}

/** The segment holding an index, with fixed-size entries (1-based ids). */
export function segmentOf(index: number, perSegment = ENTRIES_PER_SEGMENT): number {
  return Math.floor((index - 1) / perSegment) + 1;
}
/** Offset of an index's frame within its segment file. */
export function frameOffset(index: number, perSegment = ENTRIES_PER_SEGMENT): number {
  return SEGMENT_HEADER_BYTES + ((index - 1) % perSegment) * FRAME_BYTES;
}
export function payloadOffset(index: number, perSegment = ENTRIES_PER_SEGMENT): number {
  return frameOffset(index, perSegment) + ENTRY_HEADER_BYTES;
}
/** Offset of the trailer of a full sealed segment. */
export function trailerOffset(perSegment = ENTRIES_PER_SEGMENT): number {
  return SEGMENT_HEADER_BYTES + perSegment * FRAME_BYTES;
}

// ---------------------------------------------------------------------------------------------
// Fault hooks

/** Rewrites bytes [offset, offset + length) of a file with fn; never changes its length. */
export async function corrupt(path: string, offset: number, fn: (bytes: Buffer) => void, length = 1): Promise<void> {
  const bytes = await readFile(path);
  if (offset < 0 || offset >= bytes.byteLength) throw new Error(`offset ${offset} outside ${path} (${bytes.byteLength} bytes)`);
  const region = bytes.subarray(offset, Math.min(bytes.byteLength, offset + length));
  const before = Buffer.from(region);
  fn(region);
  if (region.equals(before)) throw new Error('corrupt hook changed nothing');
  await writeFile(path, bytes);
}

export async function flipBit(path: string, offset: number, bit = 0): Promise<void> {
  await corrupt(path, offset, (b) => {
    b[0] = (b[0] ?? 0) ^ (1 << bit);
  });
}

/** Zeroes a block (a lost sector) as far as the file reaches. */
export async function zeroBlock(path: string, offset: number, byteLength = 4096): Promise<void> {
  await corrupt(path, offset, (b) => b.fill(0), byteLength);
}

export async function truncate(path: string, byteLength: number): Promise<void> {
  await fsTruncate(path, byteLength);
}

/** Appends bytes that hold no frame marker. */
export async function appendGarbage(path: string, byteLength: number): Promise<void> {
  const junk = Buffer.alloc(byteLength);
  for (let i = 0; i < byteLength; i++) junk[i] = 0x30 + ((i * 13) % 10);
  await appendFile(path, junk);
}

export async function fileBytes(path: string): Promise<Buffer> {
  return readFile(path);
}

/** Every file under dir (relative path -> bytes), to prove that nothing changed. */
export async function snapshotDir(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const walk = async (sub: string): Promise<void> => {
    for (const entry of await readdir(join(dir, sub), { withFileTypes: true })) {
      const rel = sub === '' ? entry.name : `${sub}/${entry.name}`;
      if (entry.isDirectory()) await walk(rel);
      else out.set(rel, await readFile(join(dir, rel)));
    }
  };
  await walk('');
  return out;
}

export async function listDir(path: string): Promise<string[]> {
  return readdir(path).catch(() => []);
}

export async function writeStray(path: string, bytes: Buffer): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, bytes);
}

export async function fileSize(path: string): Promise<number> {
  const handle = await open(path, 'r');
  try {
    return (await handle.stat()).size;
  } finally {
    await handle.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Reading back and the shared invariants

export type ReadOutcome = { index: number; payload: Buffer } | { index: number; lost: true } | { index: number; corrupt: true };

/** Reads indices 1..lastIndex one by one; damage is an outcome, never a thrown test error. */
export async function readAll(dir: string, options: WalOptions = storeOptions({})): Promise<{ outcomes: ReadOutcome[]; lastIndex: number; firstIndex: number }> {
  const store = await WalStore.open(dir, options);
  try {
    return { outcomes: await readOutcomes(store), lastIndex: store.lastIndex, firstIndex: store.firstIndex };
  } finally {
    await store.close();
  }
}

export async function readOutcomes(store: WalStore): Promise<ReadOutcome[]> {
  const outcomes: ReadOutcome[] = [];
  for (let index = store.firstIndex; index <= store.lastIndex; index++) {
    try {
      outcomes.push({ index, payload: (await store.read(index)).payload });
    } catch (error) {
      if (error instanceof EntryLostError) outcomes.push({ index, lost: true });
      else if (error instanceof CorruptEntryError) outcomes.push({ index, corrupt: true });
      else throw error;
    }
  }
  return outcomes;
}

export function inRanges(index: number, ranges: readonly IndexRange[]): boolean {
  return ranges.some((r) => index >= r.first && index <= r.last);
}

/** Ranges a repair report names as given up: lost (holes) or truncated (rolled back). */
export function namedLoss(report: RepairReport): IndexRange[] {
  return report.actions.flatMap((a) => [...a.lost, ...a.truncated]);
}

/**
 * The invariants: every index 1..written either reads back the exact payload appended, or is
 * named in `named` (and then reads as lost, or lies past the end of the log). Nothing reads back
 * different bytes; nothing is missing without being named.
 */
export function expectNoSilentLoss(result: { outcomes: readonly ReadOutcome[]; lastIndex: number; firstIndex: number }, written: number, named: readonly IndexRange[]): void {
  const byIndex = new Map(result.outcomes.map((o) => [o.index, o]));
  for (let index = 1; index <= written; index++) {
    const outcome = byIndex.get(index);
    if (outcome !== undefined && 'payload' in outcome) {
      expect(outcome.payload.equals(payloadOf(index)), `index ${index} reads back what was appended`).toBe(true);
      continue;
    }
    expect(inRanges(index, named), `index ${index} is unreadable (${outcome ? JSON.stringify(outcome) : 'beyond the log'}) and must be named as lost or truncated`).toBe(true);
  }
  expect(result.lastIndex, 'no index beyond what was written').toBeLessThanOrEqual(written);
}

/** All of 1..written read back exactly. */
export function expectAllIntact(result: { outcomes: readonly ReadOutcome[]; lastIndex: number; firstIndex: number }, written: number): void {
  expect(result.firstIndex).toBe(1);
  expect(result.lastIndex).toBe(written);
  expectNoSilentLoss(result, written, []);
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}
