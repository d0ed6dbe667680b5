// The session table (exactly-once appends): duplicates answered with their original indices,
// bounds (TTL, LRU cap, outcomes kept per session), the rebuild from session frames in the log,
// and a retry that arrives while its original is still in flight.
import { describe, expect, it } from 'vitest';
import { SessionGate, SessionSequenceError, SessionTable, SESSION_DEFAULTS, type TaggedEntry } from '../../src/replication/index.js';

const A = 'a'.repeat(32);
const B = 'b'.repeat(32);
const C = 'c'.repeat(32);

describe('SessionTable', () => {
  it('answers a batch it has seen with its original indices, a new sequence as new', () => {
    const table = new SessionTable();
    table.record(A, { sequence: 1, firstIndex: 10, lastIndex: 12 }, 0);
    expect(table.lookup({ sessionId: A, sequence: 1 }, 1)).toEqual({ kind: 'duplicate', firstIndex: 10, lastIndex: 12 });
    expect(table.lookup({ sessionId: A, sequence: 2 }, 1)).toEqual({ kind: 'new' });
    expect(table.lookup({ sessionId: B, sequence: 1 }, 1)).toEqual({ kind: 'new' });
  });

  it('keeps batchesPerSessionMax outcomes and refuses a sequence below them (outcome unknown)', () => {
    const table = new SessionTable({ ...SESSION_DEFAULTS, batchesPerSessionMax: 3 });
    for (let seq = 1; seq <= 5; seq++) table.record(A, { sequence: seq, firstIndex: seq, lastIndex: seq }, 0);
    expect(table.lookup({ sessionId: A, sequence: 3 }, 0).kind).toBe('duplicate');
    expect(table.lookup({ sessionId: A, sequence: 2 }, 0)).toEqual({ kind: 'too-old', lowestSequence: 3 });
  });

  it('keeps outcomes recorded out of order in sequence order', () => {
    const table = new SessionTable({ ...SESSION_DEFAULTS, batchesPerSessionMax: 2 });
    table.record(A, { sequence: 3, firstIndex: 3, lastIndex: 3 }, 0);
    table.record(A, { sequence: 1, firstIndex: 1, lastIndex: 1 }, 0);
    table.record(A, { sequence: 2, firstIndex: 2, lastIndex: 2 }, 0);
    expect(table.lookup({ sessionId: A, sequence: 3 }, 0).kind).toBe('duplicate');
    expect(table.lookup({ sessionId: A, sequence: 2 }, 0).kind).toBe('duplicate');
    expect(table.lookup({ sessionId: A, sequence: 1 }, 0).kind).toBe('too-old');
  });

  it('forgets a session idle past the TTL', () => {
    const table = new SessionTable({ ...SESSION_DEFAULTS, ttlMs: 1_000 });
    table.record(A, { sequence: 1, firstIndex: 1, lastIndex: 1 }, 0);
    expect(table.lookup({ sessionId: A, sequence: 1 }, 1_000).kind).toBe('duplicate');
    expect(table.lookup({ sessionId: A, sequence: 1 }, 1_001).kind).toBe('new');
    expect(table.size).toBe(0);
  });

  it('evicts the least recently used session past sessionsMax', () => {
    const table = new SessionTable({ ...SESSION_DEFAULTS, sessionsMax: 2 });
    table.record(A, { sequence: 1, firstIndex: 1, lastIndex: 1 }, 0);
    table.record(B, { sequence: 1, firstIndex: 2, lastIndex: 2 }, 0);
    table.record(A, { sequence: 2, firstIndex: 3, lastIndex: 3 }, 0); // A used again: B is the oldest
    table.record(C, { sequence: 1, firstIndex: 4, lastIndex: 4 }, 0);
    expect(table.size).toBe(2);
    expect(table.lookup({ sessionId: B, sequence: 1 }, 0).kind).toBe('new');
    expect(table.lookup({ sessionId: A, sequence: 2 }, 0).kind).toBe('duplicate');
  });
});

describe('SessionGate', () => {
  function gate(log: TaggedEntry[], committed = log.length): SessionGate {
    return new SessionGate({
      options: SESSION_DEFAULTS,
      nowMs: () => 1_000,
      committedIndex: () => committed,
      readEntries: async function* (from, to) {
        yield log.filter((e) => e.index >= from && e.index <= to);
      },
    });
  }

  it('a new writer rebuilds the table from the session frames in the log', async () => {
    const log: TaggedEntry[] = [
      { index: 1, timestampMs: 900 },
      { index: 2, timestampMs: 900 },
      { index: 3, timestampMs: 900, session: { sessionId: A, sequence: 7, count: 3 } },
      { index: 4, timestampMs: 900, session: { sessionId: B, sequence: 1, count: 1 } },
    ];
    const g = gate(log);
    let appended = 0;
    const append = async (): Promise<{ firstIndex: number; lastIndex: number }> => {
      appended += 1;
      return { firstIndex: 5, lastIndex: 5 };
    };
    expect(await g.append({ sessionId: A, sequence: 7 }, append, 3)).toEqual({ firstIndex: 1, lastIndex: 3 });
    expect(await g.append({ sessionId: B, sequence: 1 }, append, 1)).toEqual({ firstIndex: 4, lastIndex: 4 });
    expect(appended).toBe(0);
    expect(await g.append({ sessionId: B, sequence: 2 }, append, 1)).toEqual({ firstIndex: 5, lastIndex: 5 });
    expect(appended).toBe(1);
  });

  it('entries a recovery brought into the log after the rebuild are read before the next session append (--etcd-restore --pipeline --seed 3033)', async () => {
    // The writer rebuilt its table to 2, kept the election across an etcd restore, and re-derived
    // the records etcd lost (3..5, another writer's, with A's batch 9 in them) before it opened
    // its next segment. Unread, A's retry of batch 9 was appended again.
    const log: TaggedEntry[] = [
      { index: 1, timestampMs: 900 },
      { index: 2, timestampMs: 900, session: { sessionId: B, sequence: 1, count: 1 } },
      { index: 3, timestampMs: 900 },
      { index: 4, timestampMs: 900, session: { sessionId: A, sequence: 9, count: 2 } },
      { index: 5, timestampMs: 900 },
    ];
    let committed = 2;
    let adopted = 2;
    const g = new SessionGate({
      options: SESSION_DEFAULTS,
      nowMs: () => 1_000,
      committedIndex: () => committed,
      adoptedIndex: () => adopted,
      readEntries: async function* (from, to) {
        yield log.filter((e) => e.index >= from && e.index <= to && e.index <= committed);
      },
    });
    let appended = 0;
    const append = async (): Promise<{ firstIndex: number; lastIndex: number }> => {
      appended += 1;
      return { firstIndex: 6, lastIndex: 6 };
    };
    expect(await g.append({ sessionId: B, sequence: 1 }, append, 1)).toEqual({ firstIndex: 2, lastIndex: 2 });
    committed = 5;
    adopted = 5;
    expect(await g.append({ sessionId: A, sequence: 9 }, append, 2)).toEqual({ firstIndex: 3, lastIndex: 4 });
    expect(appended).toBe(0);
  });

  it('sessions found in the log count as seen at the rebuild, whatever the old writer\'s clock said', async () => {
    // The old writer's clock was an hour behind this one's (or this one jumped): its entries'
    // timestamps are older than ttlMs on this clock, yet the retries must still be recognised.
    const hourAgo = 1_000 - 60 * 60_000;
    const g = gate([{ index: 1, timestampMs: hourAgo, session: { sessionId: A, sequence: 3, count: 1 } }]);
    let appended = 0;
    const append = async (): Promise<{ firstIndex: number; lastIndex: number }> => {
      appended += 1;
      return { firstIndex: 2, lastIndex: 2 };
    };
    expect(await g.append({ sessionId: A, sequence: 3 }, append, 1)).toEqual({ firstIndex: 1, lastIndex: 1 });
    expect(appended).toBe(0);
  });

  it('a retry that arrives while its original is in flight gets the original outcome, appended once', async () => {
    const g = gate([]);
    let appended = 0;
    let finish: (r: { firstIndex: number; lastIndex: number }) => void = () => undefined;
    const append = (): Promise<{ firstIndex: number; lastIndex: number }> => {
      appended += 1;
      return new Promise((resolve) => (finish = resolve));
    };
    const original = g.append({ sessionId: A, sequence: 1 }, append, 2);
    await new Promise((r) => setTimeout(r, 1));
    const retry = g.append({ sessionId: A, sequence: 1 }, append, 2);
    finish({ firstIndex: 1, lastIndex: 2 });
    expect(await original).toEqual({ firstIndex: 1, lastIndex: 2 });
    expect(await retry).toEqual({ firstIndex: 1, lastIndex: 2 });
    expect(await g.append({ sessionId: A, sequence: 1 }, append, 2)).toEqual({ firstIndex: 1, lastIndex: 2 });
    expect(appended).toBe(1);
  });

  it('a failed append records nothing: the retry appends', async () => {
    const g = gate([]);
    await expect(g.append({ sessionId: A, sequence: 1 }, () => Promise.reject(new Error('quorum lost')), 1)).rejects.toThrow('quorum lost');
    expect(await g.append({ sessionId: A, sequence: 1 }, async () => ({ firstIndex: 1, lastIndex: 1 }), 1)).toEqual({ firstIndex: 1, lastIndex: 1 });
  });

  it('refuses a sequence older than what the session remembers', async () => {
    const log: TaggedEntry[] = [];
    for (let i = 1; i <= SESSION_DEFAULTS.batchesPerSessionMax + 1; i++) log.push({ index: i, timestampMs: 900, session: { sessionId: A, sequence: i, count: 1 } });
    const g = gate(log);
    await expect(g.append({ sessionId: A, sequence: 1 }, async () => ({ firstIndex: 99, lastIndex: 99 }), 1)).rejects.toBeInstanceOf(SessionSequenceError);
  });
});
