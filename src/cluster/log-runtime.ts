// Everything one node does for one log: its local store, the writer election (and the writer
// while this node holds it), catch-up on sealed segments, and the client-facing append and read.
// A node whose own store of the log is stuck or failed (LocalStoreHealth) gives up the writer
// role: it stops its writer and resigns from the election until the store answers again, so that
// another node takes over (its process, and so its lease, being alive would otherwise keep it).
import type { Logger } from 'pino';
import type { Clock, Disk, Random } from '../io/index.js';
import type { AppendResult, WalStore } from '../wal/index.js';
import {
  type LogMeta,
  type PeerHandlers,
  type PeerResolver,
  type ReadEntry,
  type SegmentDirectory,
  type SegmentMeta,
  BadRequestError,
  FencedError,
  LogReader,
  LogWriter,
  APPEND_ENTRIES_MAX,
  NotWriterError,
  QuorumUnavailableError,
  SESSION_DEFAULTS,
  SessionGate,
  type SessionOptions,
  type SessionRef,
  catchUpLog,
} from '../replication/index.js';
import type { Counter, Gauge, Histogram } from 'prom-client';
import { Backoff } from './backoff.js';
import type { CandidateLease, Election } from './election.js';
import { OwnStoreFailingError } from './errors.js';
import type { LocalStoreHealth } from './local-peer.js';

/** What a log's runtime needs of its writer election (Election in production). */
export type WriterElection = Pick<Election<CandidateLease>, 'onChange' | 'start' | 'stop' | 'leadership' | 'isLeader' | 'resign' | 'rejoin' | 'outbid'>;

export interface LogRuntimeContext {
  readonly self: string;
  /** Calls onChange after every change of the log's segment records in etcd, until the returned function. */
  readonly watchSegments: (log: string, onChange: () => void) => Promise<() => Promise<void>>;
  /** The log's writer election (not started). */
  readonly writerElection: (log: string, logger: Logger) => WriterElection;
  readonly directory: SegmentDirectory;
  /** Whether this node's own store of a log is stuck or failed (its PeerApi calls overrun their deadline). */
  readonly localStore: LocalStoreHealth;
  readonly handlers: PeerHandlers;
  readonly peers: PeerResolver;
  readonly liveMembers: () => readonly string[];
  /** Forwards an append to the writer's address (a WalService call marked as forwarded). */
  readonly forwardAppend: (address: string, log: string, payloads: readonly Uint8Array[], deadlineMs: number, session?: SessionRef) => Promise<AppendResult>;
  /** Bounds of the writer's session table (exactly-once appends); SESSION_DEFAULTS when absent. */
  readonly sessions?: SessionOptions;
  /** Bytes per ReadFrames call while a recovery copies a tail (the writer's 4 MiB when absent; the simulator makes it small). */
  readonly copyBytesMax?: number;
  /** Writer pipelining (the writer's defaults when absent: 64 KiB of backlog, 1 batch in flight; the simulator's --pipeline: 0 and 4). */
  readonly pipelineBacklogBytesMin?: number;
  readonly pipelineBatchesMax?: number;
  /** The committed index the node at address reports for a log. */
  readonly remoteCommitted: (address: string, log: string) => Promise<number>;
  readonly addressOf: (nodeId: string) => string | undefined;
  readonly memberStartedMs: (nodeId: string) => number | undefined;
  /** The node's metrics this runtime sets (NodeMetrics in production). */
  readonly metrics: {
    readonly appendLatency: Pick<Histogram<'log'>, 'observe'>;
    readonly appendedEntries: Pick<Counter<'log'>, 'inc'>;
    readonly segmentsBehind: Pick<Gauge<'log'>, 'set'>;
    readonly replicationLag: Pick<Gauge<'log' | 'peer'>, 'set'>;
  };
  readonly logger: Logger;
  readonly groupCommitBytesMax: number;
  readonly entryBytesMax: number;
  readonly catchUpIntervalMs: number;
  /**
   * How long a read to the committed end waits for this node's own writer to finish its
   * recovery before it answers UNAVAILABLE (default READ_WAIT_FOR_WRITER_MS).
   */
  readonly readWaitForWriterMs?: number;
  /** How long start() waits for its first catch-up (default STARTUP_CATCH_UP_WAIT_MS). */
  readonly startCatchUpWaitMs?: number;
  /** Copies a member's whole sealed segment file (FetchSegment) to path. */
  readonly fetchFile: (node: string, log: string, segmentId: number, path: string) => Promise<void>;
  /** A damaged local copy was found (read path): the node repairs it from replicas. */
  readonly onDamage: (log: string, segmentId: number, detail: string) => void;
  /** The writer's clock; catch-up timer, append deadlines and backoff waits. */
  readonly clock: Clock;
  /** Backoff jitter. */
  readonly random: Random;
  /** The disk the log's store is on (catch-up's temporary copies). */
  readonly disk: Disk;
}

export class LogRuntime {
  private writer: LogWriter | undefined;
  /** The session table of each writer this node ran (a new writer rebuilds its own from the log). */
  private readonly gates = new WeakMap<LogWriter, SessionGate>();
  private election: WriterElection | undefined;
  private unwatchLocalStore: (() => void) | undefined;
  private segments: Array<{ meta: SegmentMeta; modRevision: number }> = [];
  private catchUpRunning: Promise<void> | undefined;
  private catchUpAgain = false;
  private unwatch: (() => Promise<void>) | undefined;
  private cancelTimer: (() => void) | undefined;
  private stopped = false;
  /** The epoch whose writer start-up loop is running, if any. */
  private startingEpoch: number | undefined;
  private readonly logger: Logger;
  private readonly reader: LogReader;

  constructor(
    private readonly ctx: LogRuntimeContext,
    readonly meta: LogMeta,
    readonly store: WalStore,
  ) {
    this.logger = ctx.logger.child({ log: meta.log });
    this.reader = new LogReader({
      log: meta.log,
      self: ctx.self,
      store,
      directory: ctx.directory,
      peers: ctx.peers,
      logger: ctx.logger,
      localCommitted: () => this.localCommitted(),
      writerCommitted: () => this.writerCommitted(),
      onDamage: (segmentId, detail) => ctx.onDamage(meta.log, segmentId, detail),
    });
  }

  get log(): string {
    return this.meta.log;
  }

  async start(): Promise<void> {
    // The first catch-up is awaited a bounded time, then goes on in the background: a member that
    // hangs a fetch until its deadline (60 s a segment) must not keep this node from campaigning
    // or, through node.ts, which awaits every runtime's start, from registering at all. A writer's
    // start catches up again; a node in a new ensemble while still behind on older segments only
    // serves those from other members until its copy is complete.
    this.scheduleCatchUp();
    const first = this.catchUpRunning;
    if (first) {
      await new Promise<void>((resolve) => {
        const cancel = this.ctx.clock.setTimer(this.ctx.startCatchUpWaitMs ?? STARTUP_CATCH_UP_WAIT_MS, resolve);
        void first.finally(() => {
          cancel();
          resolve();
        });
      });
    }
    this.unwatch = await this.ctx.watchSegments(this.log, () => this.scheduleCatchUp());
    this.armCatchUpTimer();
    const election = this.ctx.writerElection(this.log, this.logger);
    this.election = election;
    election.onChange((state, isSelf) => this.onLeader(state?.epoch, isSelf));
    this.unwatchLocalStore = this.ctx.localStore.onChange((log, failing) => {
      if (log === this.log) void this.onLocalStore(failing);
    });
    // Resigned before the first lease: a node whose store is failing never campaigns.
    if (this.ctx.localStore.failing(this.log)) await this.onLocalStore(true);
    await election.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unwatchLocalStore?.();
    this.cancelTimer?.();
    this.writer?.stop();
    await this.election?.stop();
    await this.unwatch?.();
    await this.catchUpRunning;
  }

  writerStatus(): { writer: string; epoch: number } {
    const leadership = this.election?.leadership();
    return { writer: leadership?.leader ?? '', epoch: leadership?.epoch ?? 0 };
  }

  segmentList(): ReadonlyArray<{ meta: SegmentMeta }> {
    return this.segments;
  }

  /** The last index known acknowledged: exact on the writer, a lower bound elsewhere. */
  committedIndex(): number {
    return this.reader.committedIndex();
  }

  /**
   * The ready writer knows exactly; anyone else (a writer still recovering included: its own
   * count starts at 0) knows what the writer reported to this node as a member.
   */
  private localCommitted(): number {
    const writer = this.writer;
    const own = writer && writer.isReady && this.election?.isLeader() ? writer.committedIndex : 0;
    return Math.max(own, this.ctx.handlers.committedIndex(this.log));
  }

  /**
   * The writer's committed index: asked over the network, or this node's own writer's once it is
   * ready (undefined when there is no writer). This node elected with its writer still
   * recovering (or not started) knows only a lower bound, 0 after a restart: the read waits for
   * it up to readWaitForWriterMs, then answers UNAVAILABLE (issue 9 #6: it answered an empty,
   * successful stream).
   */
  private async writerCommitted(): Promise<number | undefined> {
    const leadership = this.election?.leadership();
    if (leadership?.leader === this.ctx.self) {
      const writer = this.writer;
      if (writer?.isReady && this.election?.isLeader()) return writer.committedIndex;
      if (!writer || !(await this.readyWithin(writer, this.ctx.readWaitForWriterMs ?? READ_WAIT_FOR_WRITER_MS))) throw new NotWriterError(this.log, undefined);
      return writer.committedIndex;
    }
    const address = leadership && leadership.leader !== this.ctx.self ? this.ctx.addressOf(leadership.leader) : undefined;
    return address ? this.ctx.remoteCommitted(address, this.log) : undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Writer

  /**
   * This node's store of the log stopped answering within the deadline (or failed), or answers
   * again. While it fails, the node is no writer and no candidate: its writer stops (queued
   * appends fail with NotWriterError, clients retry on the next writer) and it resigns, so the
   * election moves on. When every overrunning call has settled, it campaigns again.
   */
  private async onLocalStore(failing: boolean): Promise<void> {
    if (this.stopped) return;
    if (failing) {
      this.logger.error({ node: this.ctx.self }, 'failed to get answers from this node\'s own store within the deadline: giving up the writer role until it answers');
      const writer = this.writer;
      this.writer = undefined;
      writer?.stop(new OwnStoreFailingError(this.log));
      await this.election?.resign();
    } else {
      this.logger.info({ node: this.ctx.self }, 'this node\'s own store answers again: campaigning for the writer role');
      this.election?.rejoin();
    }
  }

  private onLeader(epoch: number | undefined, isSelf: boolean): void {
    if (this.stopped) return;
    if (isSelf && epoch !== undefined && !this.ctx.localStore.failing(this.log)) {
      if (this.writer?.epoch === epoch) return;
      this.writer?.stop();
      this.writer = undefined;
      void this.startWriter(epoch);
    } else if (this.writer) {
      this.logger.info({ epoch: this.writer.epoch }, 'no longer the writer');
      this.writer.stop();
      this.writer = undefined;
    }
  }

  /** Starts the writer for epoch unless a start-up loop for it already runs (one writer per epoch). */
  private startWriter(epoch: number): Promise<void> {
    if (this.startingEpoch === epoch) return Promise.resolve();
    this.startingEpoch = epoch;
    return this.runWriterStart(epoch).finally(() => {
      if (this.startingEpoch === epoch) this.startingEpoch = undefined;
    });
  }

  private async runWriterStart(epoch: number): Promise<void> {
    const backoff = new Backoff({ initialMs: 200, maxMs: 3_000 }, this.ctx.random);
    for (;;) {
      const leadership = this.election?.leadership();
      if (this.stopped || leadership?.epoch !== epoch || !this.election?.isLeader() || this.ctx.localStore.failing(this.log)) return;
      await this.runCatchUp();
      let ready = false;
      const writer = new LogWriter({
        log: this.log,
        self: this.ctx.self,
        epoch,
        logMeta: this.meta,
        directory: this.ctx.directory,
        // The guard etcd compares is the election key's create revision (the epoch less its floor).
        leader: { key: leadership.key, epoch: leadership.createRevision },
        peers: this.ctx.peers,
        liveMembers: () => this.ctx.liveMembers(),
        memberStartedMs: (node) => this.ctx.memberStartedMs(node),
        logger: this.ctx.logger, // the writer names the log in every line itself
        clock: this.ctx.clock,
        onCommitted: (index) => this.ctx.handlers.noteCommitted(this.log, index),
        onReplicated: (peer, lastIndex, committed) => this.ctx.metrics.replicationLag.set({ log: this.log, peer }, Math.max(0, committed - lastIndex)),
        groupCommitBytesMax: this.ctx.groupCommitBytesMax,
        entryBytesMax: this.ctx.entryBytesMax,
        ...(this.ctx.copyBytesMax !== undefined ? { copyBytesMax: this.ctx.copyBytesMax } : {}),
        ...(this.ctx.pipelineBacklogBytesMin !== undefined ? { pipelineBacklogBytesMin: this.ctx.pipelineBacklogBytesMin } : {}),
        ...(this.ctx.pipelineBatchesMax !== undefined ? { pipelineBatchesMax: this.ctx.pipelineBatchesMax } : {}),
        // A writer that fails on its own (etcd unreachable while it sealed, a quorum gone, a
        // record of another epoch) while this node still holds the election must come back:
        // nothing else would restart it. A writer truly deposed finds the election moved and
        // the start-up loop ends there.
        onFailed: () => {
          // Before it was ready, this loop retries by itself.
          if (!ready || this.writer !== writer) return;
          this.writer = undefined;
          void this.ctx.clock.sleep(backoff.next()).then(() => this.startWriter(epoch));
        },
      });
      this.writer = writer;
      try {
        await writer.whenReady();
        ready = true;
        this.logger.info({ epoch }, 'became the writer');
        return;
      } catch (error) {
        if (this.writer === writer) this.writer = undefined;
        this.logger.warn({ epoch, err: error }, 'failed to take over as writer; retrying');
        // Fenced by a higher epoch while this node still leads: etcd went back (restored or
        // wiped). Raise the epoch floor past it and campaign again; waiting would never help.
        if (error instanceof FencedError && error.fencedEpoch > epoch && !this.ctx.localStore.failing(this.log)) {
          await this.election?.outbid(error.fencedEpoch).catch((failure: unknown) => this.logger.warn({ epoch, err: failure }, 'failed to raise the epoch floor; retrying'));
        }
        await this.ctx.clock.sleep(backoff.next());
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Catch-up

  /** A catch-up every catchUpIntervalMs until stop() (the segment watch may miss changes). */
  private armCatchUpTimer(): void {
    if (this.stopped) return;
    this.cancelTimer = this.ctx.clock.setTimer(this.ctx.catchUpIntervalMs, () => {
      this.scheduleCatchUp();
      this.armCatchUpTimer();
    });
  }

  private scheduleCatchUp(): void {
    if (this.stopped) return;
    if (this.catchUpRunning) {
      this.catchUpAgain = true;
      return;
    }
    this.catchUpRunning = this.runCatchUp().finally(() => {
      this.catchUpRunning = undefined;
      if (this.catchUpAgain) {
        this.catchUpAgain = false;
        this.scheduleCatchUp();
      }
    });
  }

  private async runCatchUp(): Promise<void> {
    try {
      this.segments = await this.ctx.directory.list(this.log);
      this.reader.setRecords(this.segments);
      const result = await catchUpLog({
        log: this.log,
        self: this.ctx.self,
        store: this.store,
        directory: this.ctx.directory,
        peers: this.ctx.peers,
        logger: this.ctx.logger, // catch-up names the log in every line itself
        fetchFile: (node, segmentId, path) => this.ctx.fetchFile(node, this.log, segmentId, path),
        tempDir: this.store.dataDir,
        disk: this.ctx.disk,
      });
      this.ctx.metrics.segmentsBehind.set({ log: this.log }, result.behind.length);
      // A copy that disagrees with its record is never served (src/replication/reader.ts) and
      // is replaced at once, not at the next scrub.
      for (const segmentId of result.mismatched) this.ctx.onDamage(this.log, segmentId, 'catch-up: the sealed copy disagrees with its record in etcd');
    } catch (error) {
      this.logger.debug({ err: error }, 'failed to catch up; will retry');
    }
  }

  // -------------------------------------------------------------------------------------------
  // Client requests

  /**
   * Appends through the writer (here, or forwarded to it), retrying within deadlineMs only what
   * is known not to have been appended, unless the batch has a session: the writer answers a
   * session's retried batch with its original indices, so every transient failure is retried.
   */
  async append(payloads: readonly Uint8Array[], forwarded: boolean, deadlineMs: number, session?: SessionRef): Promise<AppendResult> {
    if (payloads.length === 0) throw new BadRequestError('payloads', 'at least one payload is needed');
    if (payloads.length > APPEND_ENTRIES_MAX) throw new BadRequestError('payloads', `${payloads.length} entries in one call; at most ${APPEND_ENTRIES_MAX}`);
    for (const payload of payloads) {
      if (payload.byteLength > this.ctx.entryBytesMax) throw new BadRequestError('payloads', `an entry of ${payload.byteLength} bytes exceeds the limit of ${this.ctx.entryBytesMax}`);
    }
    const { clock } = this.ctx;
    const started = clock.monotonicMs();
    const end = started + deadlineMs;
    const backoff = new Backoff({ initialMs: 50, maxMs: 1_000 }, this.ctx.random);
    for (;;) {
      try {
        const result = await this.appendOnce(payloads, forwarded, end, session);
        this.ctx.metrics.appendLatency.observe({ log: this.log }, (clock.monotonicMs() - started) / 1000);
        this.ctx.metrics.appendedEntries.inc({ log: this.log }, payloads.length);
        return result;
      } catch (error) {
        // A forwarded call is answered as it is: its sender retries. Without a session, only a
        // local NotWriterError (nothing was queued) is safe: a remote UNAVAILABLE, ABORTED or
        // DEADLINE_EXCEEDED may come after the writer appended it (issue 12).
        const retryable = error instanceof NotWriterError || (session !== undefined && (isUnavailable(error) || error instanceof QuorumUnavailableError));
        // A forwarded append that found this node elected but its writer still starting waits for
        // it (nothing was queued); one for a writer elsewhere goes back to its sender.
        const startingHere = error instanceof NotWriterError && this.election?.leadership()?.leader === this.ctx.self;
        if ((forwarded && !startingHere) || !retryable || clock.monotonicMs() + 50 >= end) throw error;
        await clock.sleep(Math.min(backoff.next(), Math.max(0, end - clock.monotonicMs())));
      }
    }
  }

  private async appendOnce(payloads: readonly Uint8Array[], forwarded: boolean, endMs: number, session: SessionRef | undefined): Promise<AppendResult> {
    const remainingMs = endMs - this.ctx.clock.monotonicMs();
    const leadership = this.election?.leadership();
    const writer = this.writer;
    if (writer && this.election?.isLeader()) {
      // The same writer after the await: this.writer may have been stopped or replaced meanwhile
      // (then this one refuses with NotWriterError, which the caller retries). A writer still
      // recovering when the call's deadline comes answers UNAVAILABLE then, not whenever it is
      // ready: nothing was queued, so nothing commits after the caller gave up.
      if (!(await this.readyWithin(writer, remainingMs))) throw new NotWriterError(this.log, undefined);
      if (!session) return writer.append(payloads, { expiresAtMs: endMs });
      // The wait for the session table's rebuild is bounded by the call's deadline.
      return this.gateOf(writer).append(session, (tag) => writer.append(payloads, { session: tag, expiresAtMs: endMs }), payloads.length, Math.max(0, endMs - this.ctx.clock.monotonicMs() - 50));
    }
    if (forwarded || !leadership) throw new NotWriterError(this.log, leadership?.leader);
    if (leadership.leader === this.ctx.self) throw new NotWriterError(this.log, undefined); // elected, writer starting
    const address = this.ctx.addressOf(leadership.leader);
    if (!address) throw new NotWriterError(this.log, leadership.leader);
    return this.ctx.forwardAppend(address, this.log, payloads, Math.max(100, remainingMs), session);
  }

  /** The ready writer's session table, rebuilt from the log's recent entries on first use. */
  private gateOf(writer: LogWriter): SessionGate {
    let gate = this.gates.get(writer);
    if (!gate) {
      gate = new SessionGate({
        options: this.ctx.sessions ?? SESSION_DEFAULTS,
        // Idleness on the monotonic clock: a wall clock that jumps would forget live sessions.
        nowMs: () => this.ctx.clock.monotonicMs(),
        committedIndex: () => writer.committedIndex,
        adoptedIndex: () => writer.adoptedIndex,
        readEntries: (from, to) => this.reader.read(from, to, 4096),
        sleep: (ms) => this.ctx.clock.sleep(ms),
      });
      this.gates.set(writer, gate);
    }
    return gate;
  }

  /** Whether writer becomes ready within ms; rejects as its start does, if that comes first. */
  private readyWithin(writer: LogWriter, ms: number): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      const cancel = this.ctx.clock.setTimer(Math.max(0, ms), () => resolve(false));
      writer.whenReady().then(
        () => {
          cancel();
          resolve(true);
        },
        (error: unknown) => {
          cancel();
          reject(error);
        },
      );
    });
  }

  /** Verified, acknowledged entries from..to (to 0: the committed end); see src/replication/reader.ts. */
  read(from: number, to: number, batchMax: number): AsyncGenerator<ReadEntry[]> {
    return this.reader.read(from, to, batchMax);
  }

  /** The committed index, asking the writer when this node's own knowledge may be behind. */
  knownCommitted(wanted: number): Promise<number> {
    return this.reader.knownCommitted(wanted);
  }
}

/** How long a log's start waits for its first catch-up before it campaigns and lets the node register. */
export const STARTUP_CATCH_UP_WAIT_MS = 10_000;

/** How long a read waits for this node's own writer to be ready (the RPC deadline's default). */
export const READ_WAIT_FOR_WRITER_MS = 5_000;

function isUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === 14 || code === 4 || code === 10; // UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED
}
