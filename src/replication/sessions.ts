// Exactly-once appends (design invariant 9), after Kafka's idempotent producer.
//
// A client session has an id (16 random bytes) and numbers its batches 1, 2, 3, ... The writer
// keeps, per session, the outcome of its last few batches (sequence -> first and last index) and
// answers a batch it has seen with its original indices instead of appending it again. The table
// lives in memory but is derived from the log: the last entry of every session batch is a session
// frame (format version 2, docs/FORMAT.md) carrying the session id, sequence and batch length, so
// a new writer rebuilds the table from the log's recent entries before it takes a session append.
//
// Fault model: the writer may die with a batch in flight; the batch is then in the log (a
// recovery sealed it in: its tag is there, the rebuilt table answers the retry) or not (the
// retry appends it). Within one writer a failed batch never enters the log (the writer's own
// recovery seals at its committed index), so a failure recorded nothing and the retry appends.
// A retry that arrives while its original is still in flight waits for the original's outcome.
//
// Bounds: sessionsMax sessions (least recently used out first), batchesPerSessionMax outcomes
// per session, sessions idle longer than ttlMs forgotten, and the rebuild reads at most
// rebuildEntriesMax entries back from the committed end, once: a session append waits for it
// at most its own deadline (then fails UNAVAILABLE, nothing appended), and a rebuild that fails
// (an entry no member serves verified) resumes at the entry it failed on, never from the start.
// Such an entry blocks session appends (UNAVAILABLE, naming it) until it is repaired or until
// ttlMs after the rebuild started: then it is skipped, as a session idle that long is forgotten
// anyway (a retry of a batch that ended there, later than that, is appended again). A retry that comes later than those
// bounds is either refused (its sequence is below what the session still remembers) or, for a
// session forgotten entirely, appended again: documented in docs/CLUSTER.md.
import { format } from '../wal/index.js';
import { NoVerifiedCopyError, SessionSequenceError, SessionTableRebuildingError } from './errors.js';

export interface SessionOptions {
  readonly ttlMs: number;
  readonly sessionsMax: number;
  readonly batchesPerSessionMax: number;
  readonly rebuildEntriesMax: number;
}

export const SESSION_DEFAULTS: SessionOptions = Object.freeze({
  ttlMs: 15 * 60_000,
  sessionsMax: 50_000,
  batchesPerSessionMax: 32,
  rebuildEntriesMax: 100_000,
});

export interface SessionRef {
  readonly sessionId: string;
  readonly sequence: number;
}

export interface BatchOutcome {
  readonly sequence: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
}

export type SessionLookup =
  | { readonly kind: 'new' }
  | { readonly kind: 'duplicate'; readonly firstIndex: number; readonly lastIndex: number }
  | { readonly kind: 'too-old'; readonly lowestSequence: number };

interface SessionState {
  /** Ascending by sequence, at most batchesPerSessionMax. */
  readonly batches: BatchOutcome[];
  lastSeenMs: number;
}

/** The writer's memory of each session's recent batches. Pure: time is passed in. */
export class SessionTable {
  /** Map order is recency order: the first entry is the least recently used session. */
  private readonly sessions = new Map<string, SessionState>();

  constructor(private readonly options: SessionOptions = SESSION_DEFAULTS) {}

  get size(): number {
    return this.sessions.size;
  }

  lookup(ref: SessionRef, nowMs: number): SessionLookup {
    this.expire(nowMs);
    const state = this.sessions.get(ref.sessionId);
    if (!state) return { kind: 'new' };
    const found = state.batches.find((b) => b.sequence === ref.sequence);
    if (found) return { kind: 'duplicate', firstIndex: found.firstIndex, lastIndex: found.lastIndex };
    const lowest = state.batches[0]?.sequence ?? 0;
    // Forgotten already: appended or not, nobody can tell any more.
    if (state.batches.length >= this.options.batchesPerSessionMax && ref.sequence < lowest) return { kind: 'too-old', lowestSequence: lowest };
    return { kind: 'new' };
  }

  record(sessionId: string, outcome: BatchOutcome, atMs: number): void {
    let state = this.sessions.get(sessionId);
    if (state) this.sessions.delete(sessionId);
    else state = { batches: [], lastSeenMs: atMs };
    state.lastSeenMs = Math.max(state.lastSeenMs, atMs);
    this.sessions.set(sessionId, state);
    const batches = state.batches;
    if (!batches.some((b) => b.sequence === outcome.sequence)) {
      let at = batches.length;
      while (at > 0 && (batches[at - 1] as BatchOutcome).sequence > outcome.sequence) at -= 1;
      batches.splice(at, 0, outcome);
      if (batches.length > this.options.batchesPerSessionMax) batches.shift();
    }
    while (this.sessions.size > this.options.sessionsMax) {
      const oldest = this.sessions.keys().next().value as string;
      this.sessions.delete(oldest);
    }
  }

  /** Forgets sessions idle for longer than ttlMs (the least recently used come first). */
  private expire(nowMs: number): void {
    for (const [sessionId, state] of this.sessions) {
      if (nowMs - state.lastSeenMs <= this.options.ttlMs) return;
      this.sessions.delete(sessionId);
    }
  }
}

/** One entry of the log as the rebuild needs it. */
export interface TaggedEntry {
  readonly index: number;
  readonly timestampMs: number;
  readonly session?: format.SessionTag | undefined;
}

export interface SessionGateContext {
  readonly options: SessionOptions;
  readonly nowMs: () => number;
  /** The writer's committed index once it is ready (all earlier segments sealed). */
  readonly committedIndex: () => number;
  /** Acknowledged entries from..to, in order (the log's reader). */
  readonly readEntries: (from: number, to: number) => AsyncIterable<readonly TaggedEntry[]>;
  /** Waits on the writer's clock (bounded waits for the rebuild); without it a session append waits for the rebuild however long it takes. */
  readonly sleep?: (ms: number) => Promise<void>;
  /**
   * The highest index that entered the log through the writer's recovery rather than its own
   * appends (LogWriter.adoptedIndex): records etcd lost, re-derived while the writer kept the
   * election. The rebuild reads them too before the next session append.
   */
  readonly adoptedIndex?: () => number;
}

/**
 * The session table of one writer, with the rebuild from the log and the dedupe of retries that
 * arrive while their original is in flight. One gate per writer: a new writer starts a new one.
 */
export class SessionGate {
  readonly table: SessionTable;
  private rebuilt: Promise<void> | undefined;
  private rebuildDone = false;
  /** The rebuild's window, fixed when it first starts, and the next index it reads. */
  private window: { from: number; end: number; seenMs: number } | undefined;
  private nextIndex = 0;
  private readonly inFlight = new Map<string, Promise<BatchOutcome>>();

  constructor(private readonly ctx: SessionGateContext) {
    this.table = new SessionTable(ctx.options);
  }

  /**
   * Appends a batch for a session at most once: the original indices for a batch seen before,
   * the original's outcome for one still in flight, else append (which must tag the batch's last
   * entry with the session, so that the next writer sees it). waitMs bounds the wait for the
   * rebuild (SessionTableRebuildingError after it, nothing appended); undefined: no bound.
   */
  async append(ref: SessionRef, append: (tag: format.SessionTag) => Promise<{ firstIndex: number; lastIndex: number }>, count: number, waitMs?: number): Promise<{ firstIndex: number; lastIndex: number }> {
    await this.rebuiltWithin(waitMs);
    const key = `${ref.sessionId}/${ref.sequence}`;
    const running = this.inFlight.get(key);
    if (running) {
      const outcome = await running;
      return { firstIndex: outcome.firstIndex, lastIndex: outcome.lastIndex };
    }
    const found = this.table.lookup(ref, this.ctx.nowMs());
    if (found.kind === 'duplicate') return { firstIndex: found.firstIndex, lastIndex: found.lastIndex };
    if (found.kind === 'too-old') throw new SessionSequenceError(ref.sessionId, ref.sequence, found.lowestSequence);
    const started = append({ sessionId: ref.sessionId, sequence: ref.sequence, count }).then((result) => {
      const outcome = { sequence: ref.sequence, firstIndex: result.firstIndex, lastIndex: result.lastIndex };
      this.table.record(ref.sessionId, outcome, this.ctx.nowMs());
      return outcome;
    });
    this.inFlight.set(key, started);
    try {
      const outcome = await started;
      return { firstIndex: outcome.firstIndex, lastIndex: outcome.lastIndex };
    } finally {
      this.inFlight.delete(key);
    }
  }

  /**
   * Reads the last rebuildEntriesMax entries once. An attempt that fails leaves what it read in
   * the table and the next one resumes at the entry it failed on (through the log's read path
   * again: local copy, then every member of the entry's segment).
   */
  ensureRebuilt(): Promise<void> {
    this.extendToAdopted();
    if (this.rebuildDone) return Promise.resolve();
    if (!this.rebuilt) {
      const attempt = this.rebuild().then(
        () => {
          this.rebuildDone = true;
        },
        (error: unknown) => {
          this.rebuilt = undefined;
          throw error;
        },
      );
      attempt.catch(() => undefined); // a caller whose wait ran out no longer listens
      this.rebuilt = attempt;
    }
    return this.rebuilt;
  }

  /**
   * Entries a recovery brought into the log after the window was fixed (a writer that kept the
   * election across an etcd restore re-derives the records it lost, with another writer's session
   * batches in them): the window grows over them, and session appends wait for them to be read.
   * Unread, a retry of such a batch was appended again (--etcd-restore --pipeline --seed 3033:
   * one batch at 1379 and 1382).
   */
  private extendToAdopted(): void {
    const adopted = this.ctx.adoptedIndex?.() ?? 0;
    if (!this.window || adopted <= this.window.end) return;
    this.nextIndex = Math.max(this.rebuildDone ? this.window.end + 1 : this.nextIndex, adopted - this.ctx.options.rebuildEntriesMax + 1);
    this.window = { from: this.window.from, end: adopted, seenMs: this.ctx.nowMs() };
    if (this.rebuildDone) {
      this.rebuildDone = false;
      this.rebuilt = undefined;
    }
  }

  private async rebuiltWithin(waitMs: number | undefined): Promise<void> {
    this.extendToAdopted();
    if (this.rebuildDone) return;
    const rebuilt = this.ensureRebuilt();
    const sleep = this.ctx.sleep;
    if (waitMs === undefined || !sleep) return rebuilt;
    let timedOut = false;
    await Promise.race([rebuilt, sleep(Math.max(0, waitMs)).then(() => (timedOut = true))]);
    if (timedOut && !this.rebuildDone) throw new SessionTableRebuildingError(this.nextIndex, this.window?.end ?? 0);
  }

  /**
   * Sessions found in the log count as seen at the rebuild's start, on this writer's clock: the
   * entries' timestamps come from the old writer's wall clock, and comparing them with this one's
   * would forget every session at once when the two clocks differ by more than ttlMs (a retry
   * then appended twice).
   */
  private async rebuild(): Promise<void> {
    if (!this.window) {
      const end = this.ctx.committedIndex();
      const from = Math.max(1, end - this.ctx.options.rebuildEntriesMax + 1);
      this.window = { from, end, seenMs: this.ctx.nowMs() };
      this.nextIndex = from;
    }
    for (;;) {
      // The window may grow meanwhile (extendToAdopted): read to its end as it is now.
      const { end, seenMs } = this.window;
      if (this.nextIndex > end) return;
      try {
        for await (const batch of this.ctx.readEntries(this.nextIndex, end)) {
          for (const entry of batch) {
            const tag = entry.session;
            if (tag && tag.count <= entry.index) this.table.record(tag.sessionId, { sequence: tag.sequence, firstIndex: entry.index - tag.count + 1, lastIndex: entry.index }, seenMs);
            this.nextIndex = Math.max(this.nextIndex, entry.index + 1);
          }
        }
      } catch (error) {
        if (!(error instanceof NoVerifiedCopyError) || error.entryIndex !== this.nextIndex) throw error;
        // Skipped only once every session read so far is forgotten (SessionTable.expire forgets
        // one idle for more than ttlMs): a session still remembered without the batch that ended
        // here would take that batch's retry for new and append it again.
        if (this.ctx.nowMs() - seenMs <= this.ctx.options.ttlMs) {
          throw new SessionTableRebuildingError(this.nextIndex, end, { cause: error, unreadable: true });
        }
        this.skipped.push(this.nextIndex);
        this.nextIndex += 1;
      }
    }
  }

  /** Entries the rebuild gave up on (no verified copy for ttlMs): a batch that ended there is not known. */
  readonly skipped: number[] = [];
}
