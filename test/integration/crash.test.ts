// Crash property: random appends, syncs and kill -9 at random moments never lose an acknowledged
// entry and never invent one.
//
// A child process (test/support/appender.mjs, over the built dist/) appends random payloads and
// announces each one before appending it ('gen'), each completed fsync with the file's inode and
// length ('synced'), and each acknowledged entry ('ack'). The parent kills it with SIGKILL after a
// random number of acks, then optionally damages what a crash could have damaged: bytes of the
// newest segment above its last synced length (cut off, or followed by garbage). Opening the store
// with the default strategy must then succeed with every acked entry intact, and every entry past
// the acked ones must be one the child announced. Some runs append again and crash a second time.
// Debugging: CRASH_DEBUG=1 prints each cycle; CRASH_KEEP=1 keeps every data dir and a copy of it
// as it was before the recovering open (<dir>-before-open-<cycle>).
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, cp, mkdtemp, open, readdir, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WalStore, format } from '../../src/index.js';

const APPENDER = fileURLToPath(new URL('../support/appender.mjs', import.meta.url));
const DIST_ENTRY = fileURLToPath(new URL('../../dist/index.js', import.meta.url));
const SEGMENT_BYTES_MAX = 4096;
const CHILD_READY_MS_MAX = 20_000;
const silent = pino({ level: 'silent' });

const children = new Set<ChildProcess>();
const dirs: string[] = [];

afterEach(() => {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
});

afterAll(async () => {
  if (process.env['CRASH_KEEP']) return;
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

type Damage = 'none' | 'cut' | 'garbage' | 'cut+garbage';

interface CycleParams {
  readonly seed: number;
  readonly killAfterAcks: number;
  readonly killDelayMs: number;
  readonly damage: Damage;
  /** Where in the unsynced region to cut, as a fraction of it. */
  readonly cutFraction: number;
  readonly garbageBytes: number;
  /** Delay before each fsync in the child (a slow disk), so kills land between write and sync. */
  readonly syncDelayMs: number;
}

interface ChildRun {
  readonly generated: Map<number, string>;
  readonly acked: Map<number, string>;
  /** Last synced length reported per inode. */
  readonly syncedByIno: Map<number, number>;
  readonly exitedByItself: boolean;
  readonly stderr: string;
}

const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** Runs the appender until it has acked `killAfterAcks` entries (plus a delay), then kills it. */
function runChild(dir: string, params: CycleParams): Promise<ChildRun> {
  const generated = new Map<number, string>();
  const acked = new Map<number, string>();
  const syncedByIno = new Map<number, number>();
  const config = { dir, seed: params.seed, segmentBytesMax: SEGMENT_BYTES_MAX, maxEntries: 1_000_000, syncDelayMs: params.syncDelayMs };
  const child = spawn(process.execPath, [APPENDER, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stderr = '';
  let pending = '';
  let killed = false;
  let opened = false;
  const kill = (): void => {
    if (killed) return;
    killed = true;
    const doKill = (): void => {
      child.kill('SIGKILL');
    };
    if (params.killDelayMs > 0) setTimeout(doKill, params.killDelayMs);
    else doKill();
  };
  const timer = setTimeout(kill, CHILD_READY_MS_MAX);
  return new Promise<ChildRun>((resolve, reject) => {
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? ''; // an incomplete last line is not counted
      for (const line of lines) {
        const [kind, a, b] = line.split(' ');
        if (kind === 'gen') generated.set(Number(a), b ?? '');
        else if (kind === 'ack') acked.set(Number(a), b ?? '');
        else if (kind === 'synced') syncedByIno.set(Number(a), Number(b));
        else if (kind === 'open') opened = true;
        if (opened && acked.size >= params.killAfterAcks) kill();
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      if (!opened) reject(new Error(`appender did not open the store (code ${String(code)}, signal ${String(signal)}): ${stderr}`));
      else resolve({ generated, acked, syncedByIno, exitedByItself: signal !== 'SIGKILL', stderr });
    });
  });
}

async function newestSegment(dir: string): Promise<{ path: string; ino: number; size: number } | undefined> {
  const names = (await readdir(join(dir, 'segments'))).filter((n) => format.parseSegmentFileName(n) !== undefined).sort();
  const name = names[names.length - 1];
  if (name === undefined) return undefined;
  const path = join(dir, 'segments', name);
  const info = await stat(path);
  return { path, ino: info.ino, size: info.size };
}

async function endsWithTrailer(path: string, size: number): Promise<boolean> {
  if (size < format.SEGMENT_HEADER_BYTES + format.TRAILER_BYTES) return false;
  const handle = await open(path, 'r');
  try {
    const buf = Buffer.alloc(format.TRAILER_BYTES);
    await handle.read(buf, 0, buf.byteLength, size - format.TRAILER_BYTES);
    return format.decodeTrailer(buf).ok;
  } finally {
    await handle.close();
  }
}

function garbage(seed: number, byteLength: number): Buffer {
  const out = Buffer.alloc(byteLength);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < byteLength; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * Damages what a crash could have damaged: only bytes of the newest segment above the length its
 * last completed sync reported (`syncedBefore` covers files synced by an earlier process).
 */
async function damageUnsynced(dir: string, params: CycleParams, run: ChildRun, syncedBefore: Map<number, number>): Promise<string> {
  if (params.damage === 'none') return 'none';
  const newest = await newestSegment(dir);
  if (!newest) return 'none (no segment)';
  const syncedBytes = run.syncedByIno.get(newest.ino) ?? syncedBefore.get(newest.ino) ?? newest.size;
  const notes: string[] = [];
  if ((params.damage === 'cut' || params.damage === 'cut+garbage') && newest.size > syncedBytes) {
    const cutAt = syncedBytes + Math.floor(params.cutFraction * (newest.size - syncedBytes));
    await truncate(newest.path, cutAt);
    notes.push(`cut ${newest.path} from ${newest.size} to ${cutAt} (synced ${syncedBytes})`);
  }
  // Garbage after a trailer is not something a crash leaves: the store never writes past one.
  // (A torn trailer is: a cut into it, then garbage.)
  const size = (await stat(newest.path)).size;
  if ((params.damage === 'garbage' || params.damage === 'cut+garbage') && !(await endsWithTrailer(newest.path, size))) {
    await appendFile(newest.path, garbage(params.seed, params.garbageBytes));
    notes.push(`appended ${params.garbageBytes} garbage bytes to ${newest.path} at ${size}`);
  }
  return notes.join('; ') || 'none (nothing unsynced)';
}

/** Lengths of all segment files now: a later cycle may not cut what an earlier process synced. */
async function syncedLengths(dir: string): Promise<Map<number, number>> {
  const lengths = new Map<number, number>();
  const segmentsDir = join(dir, 'segments');
  if (!existsSync(segmentsDir)) return lengths;
  for (const name of await readdir(segmentsDir)) {
    const info = await stat(join(segmentsDir, name));
    lengths.set(info.ino, info.size);
  }
  return lengths;
}

/**
 * Opens the crashed store and checks the property; returns every entry now in the log (durable
 * from here on, since the store is closed cleanly after the check).
 */
async function recoverAndCheck(dir: string, run: ChildRun, known: Map<number, string>, context: string): Promise<Map<number, string>> {
  const store = await WalStore.open(dir, { logger: silent }).catch((error: unknown) => {
    throw new Error(`open after crash failed (${context}): ${String(error)}`, { cause: error });
  });
  try {
    const lastAcked = Math.max(0, ...run.acked.keys());
    expect(store.firstIndex, context).toBe(1);
    expect(store.lastIndex, context).toBeGreaterThanOrEqual(lastAcked);
    const now = new Map<number, string>();
    for await (const entry of store.entries()) {
      if (!('payload' in entry)) throw new Error(`entry ${entry.index} reported lost (${context})`);
      now.set(entry.index, sha(entry.payload));
    }
    expect(now.size, context).toBe(store.lastIndex);
    for (const [index, digest] of known) expect(now.get(index), `earlier entry ${index} (${context})`).toBe(digest);
    for (const [index, digest] of run.acked) expect(now.get(index), `acked entry ${index} (${context})`).toBe(digest);
    for (const [index, digest] of now) {
      if (known.has(index) || run.acked.has(index)) continue;
      // Not acknowledged: it may survive or not, but only as bytes the child really generated.
      expect(run.generated.get(index), `unacked entry ${index} was never generated at that index (${context})`).toBe(digest);
    }
    return now;
  } finally {
    await store.close();
  }
}

const cycleArb: fc.Arbitrary<CycleParams> = fc.record({
  seed: fc.integer({ min: 1, max: 0x7fffffff }),
  killAfterAcks: fc.oneof({ arbitrary: fc.constant(0), weight: 1 }, { arbitrary: fc.integer({ min: 1, max: 60 }), weight: 6 }),
  killDelayMs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 15 })),
  damage: fc.constantFrom<Damage>('none', 'cut', 'garbage', 'cut+garbage'),
  cutFraction: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
  garbageBytes: fc.integer({ min: 1, max: 300 }),
  syncDelayMs: fc.constantFrom(0, 1, 3, 5, 10),
});

describe('crash property (kill -9 during appends)', () => {
  beforeAll(() => {
    if (!existsSync(DIST_ENTRY)) throw new Error('dist/index.js is missing: run `npm run build` first');
  });

  it('never loses an acknowledged entry and never invents one, over one or two crash cycles', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(cycleArb, { minLength: 1, maxLength: 2 }), async (cycles) => {
        const dir = await mkdtemp(join(tmpdir(), 'wal-crash-'));
        dirs.push(dir);
        let known = new Map<number, string>();
        for (const [i, params] of cycles.entries()) {
          const syncedBefore = await syncedLengths(dir);
          const run = await runChild(dir, params);
          expect(run.exitedByItself, `appender exited by itself: ${run.stderr}`).toBe(false);
          const damage = await damageUnsynced(dir, params, run, syncedBefore);
          if (process.env['CRASH_KEEP']) await cp(dir, `${dir}-before-open-${i + 1}`, { recursive: true });
          const context = `cycle ${i + 1} of ${JSON.stringify(cycles)}; acked ${run.acked.size}; damage: ${damage}; dir ${dir}`;
          known = await recoverAndCheck(dir, run, known, context);
          if (process.env['CRASH_DEBUG']) console.log(`acked ${run.acked.size} gen ${run.generated.size} known ${known.size} damage ${damage}`);
        }
        await rm(dir, { recursive: true, force: true });
      }),
      { numRuns: 25, endOnFailure: true },
    );
  }, 120_000);
});
