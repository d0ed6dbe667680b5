// Issue 12 (availability): the writer's session table rebuild is read once, resumed where it
// failed (never started over), and a session append waits for it at most its own deadline.
import { describe, expect, it } from 'vitest';
import { NoVerifiedCopyError, SESSION_DEFAULTS, SessionGate, SessionTableRebuildingError, type TaggedEntry } from '../../src/replication/index.js';

const A = 'a1'.repeat(16);
const tagged = (index: number, sequence: number): TaggedEntry => ({ index, timestampMs: 1, session: { sessionId: A, sequence, count: 1 } });

describe('session table rebuild', () => {
  it('an entry no member serves: the append fails, and the next attempt resumes at that entry, not at the window start', async () => {
    const reads: number[] = [];
    let broken = true;
    const gate = new SessionGate({
      options: SESSION_DEFAULTS,
      nowMs: () => 0,
      committedIndex: () => 100,
      readEntries: async function* (from, to) {
        reads.push(from);
        for (let index = from; index <= to; index += 1) {
          if (index === 50 && broken) throw new NoVerifiedCopyError('orders', 50, 'no member served a verified copy');
          yield [index === 80 ? tagged(80, 4) : { index, timestampMs: 1 }];
        }
      },
    });
    let appended = 0;
    const append = async (): Promise<{ firstIndex: number; lastIndex: number }> => ({ firstIndex: 101 + appended, lastIndex: 101 + appended++ });
    const error = await gate.append({ sessionId: A, sequence: 4 }, append, 1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SessionTableRebuildingError);
    expect((error as Error).message).toMatch(/past entry 50: no member serves a verified copy/);
    expect((error as Error).cause).toBeInstanceOf(NoVerifiedCopyError);
    broken = false;
    expect(await gate.append({ sessionId: A, sequence: 4 }, append, 1)).toEqual({ firstIndex: 80, lastIndex: 80 });
    expect(reads).toEqual([1, 50]);
    expect(appended).toBe(0);
  });

  it('a rebuild slower than the append\'s wait: UNAVAILABLE (nothing appended), the rebuild goes on and is not started again', async () => {
    const reads: number[] = [];
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const gate = new SessionGate({
      options: SESSION_DEFAULTS,
      nowMs: () => 0,
      committedIndex: () => 10,
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      readEntries: async function* (from, to) {
        reads.push(from);
        await held;
        for (let index = from; index <= to; index += 1) yield [index === 10 ? tagged(10, 1) : { index, timestampMs: 1 }];
      },
    });
    let appended = 0;
    const append = async (): Promise<{ firstIndex: number; lastIndex: number }> => {
      appended += 1;
      return { firstIndex: 11, lastIndex: 11 };
    };
    const error = await gate.append({ sessionId: A, sequence: 1 }, append, 1, 20).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SessionTableRebuildingError);
    expect((error as SessionTableRebuildingError).endIndex).toBe(10);
    await expect(gate.append({ sessionId: A, sequence: 2 }, append, 1, 20)).rejects.toBeInstanceOf(SessionTableRebuildingError);
    release();
    expect(await gate.append({ sessionId: A, sequence: 1 }, append, 1, 1_000)).toEqual({ firstIndex: 10, lastIndex: 10 });
    expect(await gate.append({ sessionId: A, sequence: 2 }, append, 1, 1_000)).toEqual({ firstIndex: 11, lastIndex: 11 });
    expect(reads).toEqual([1]);
    expect(appended).toBe(1);
  });

  it('an entry unreadable for longer than the session TTL after the rebuild started is skipped: session appends go on', async () => {
    let now = 0;
    const reads: number[] = [];
    const gate = new SessionGate({
      options: { ...SESSION_DEFAULTS, ttlMs: 60_000 },
      nowMs: () => now,
      committedIndex: () => 100,
      readEntries: async function* (from, to) {
        reads.push(from);
        for (let index = from; index <= to; index += 1) {
          if (index === 50) throw new NoVerifiedCopyError('orders', 50, 'no member served a verified copy');
          yield [index === 80 ? tagged(80, 4) : { index, timestampMs: 1 }];
        }
      },
    });
    const append = async (): Promise<{ firstIndex: number; lastIndex: number }> => ({ firstIndex: 101, lastIndex: 101 });
    await expect(gate.append({ sessionId: A, sequence: 5 }, append, 1)).rejects.toBeInstanceOf(SessionTableRebuildingError);
    now = 59_999;
    await expect(gate.append({ sessionId: A, sequence: 5 }, append, 1)).rejects.toBeInstanceOf(SessionTableRebuildingError);
    now = 60_000; // the sessions read are still remembered: not skipped yet
    await expect(gate.append({ sessionId: A, sequence: 5 }, append, 1)).rejects.toBeInstanceOf(SessionTableRebuildingError);
    now = 60_001;
    expect(await gate.append({ sessionId: A, sequence: 5 }, append, 1)).toEqual({ firstIndex: 101, lastIndex: 101 });
    expect(gate.skipped).toEqual([50]);
    expect(reads).toEqual([1, 50, 50, 50, 51]);
  });
});
