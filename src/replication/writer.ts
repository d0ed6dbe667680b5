// The write path of one log while this node is its writer (after BookKeeper's ledgers).
//
// The writer holds an epoch from the log's writer election; every node it writes to refuses
// lower epochs, so an older writer cannot add entries once a newer one has fenced it. On start
// it recovers any segment an earlier writer left open: fences the ensemble, reads the tail from
// enough nodes to intersect every ack quorum, copies what some of them lack, seals the segment
// at the highest index found and records it in etcd (compare-and-swap). Then it appends: client
// batches are encoded once into frames, sent to every node of the segment's ensemble, and
// acknowledged once an ack quorum has fsynced them. A member that fails makes the writer seal
// the segment and open the next one with the members that are live (an ensemble change); the
// member catches up on the sealed segment by itself.
//
// Fault model: any member (the writer included) may crash or stall at any time; etcd may be
// briefly unreachable; another node may become writer at any time (then every call of this one
// fails on its old epoch, and it stops).
import { activeTraceContext, withSpan } from '../observability/tracing.js';
import type { Logger } from 'pino';
import type { Clock } from '../io/index.js';
import { type AppendResult, type SegmentAggregate, type SegmentStart, AGGREGATE_EMPTY as AGGREGATE_EMPTY_CHECKSUM, checksumHex, format, newAggregate } from '../wal/index.js';
import type { LeaderGuard, PeerResolver, SegmentDirectory, PeerApi } from './api.js';
import { AppendExpiredError, BadRequestError, FencedError, NotWriterError, PartialAppendError, QuorumUnavailableError, ReplicationError, SessionTableRebuildingError } from './errors.js';
import type { LogMeta, SegmentMeta } from './metadata.js';
import type { SegmentHolding } from './peer.js';

export interface WriterOptions {
  readonly log: string;
  readonly self: string;
  readonly epoch: number;
  readonly logMeta: LogMeta;
  readonly directory: SegmentDirectory;
  /** The election key that makes this node writer: segment records are created only while it holds. */
  readonly leader?: LeaderGuard;
  readonly peers: PeerResolver;
  /** Ids of the members registered in etcd now. */
  readonly liveMembers: () => readonly string[];
  /** When a member's current process started (a restarted member is no longer suspect). */
  readonly memberStartedMs?: (node: string) => number | undefined;
  readonly logger: Logger;
  /** Entry timestamps, createdMs and suspect times (nowMs); waits between recovery attempts. */
  readonly clock: Clock;
  readonly onCommitted: (index: number) => void;
  /** Called once when the writer stops by itself (not through stop() from outside). */
  readonly onFailed?: (reason: Error) => void;
  /** A member acknowledged everything up to lastIndex (for replication-lag metrics). */
  readonly onReplicated?: (node: string, lastIndex: number, committedIndex: number) => void;
  readonly groupCommitBytesMax: number;
  readonly entryBytesMax: number;
  /** Frames per ReadFrames call while copying a tail during recovery. */
  readonly copyBytesMax?: number;
  /** Bytes waiting before a batch is pipelined behind another (PIPELINE_BACKLOG_BYTES_MIN when absent). */
  readonly pipelineBacklogBytesMin?: number;
  /** Batches in flight before the earliest reached its ack quorum (PIPELINE_BATCHES_MAX_DEFAULT, 1, when absent). */
  readonly pipelineBatchesMax?: number;
}

export interface WriterAppendOptions {
  /** Tags the batch's last entry as a session's batch (exactly-once appends, src/replication/sessions.ts). */
  readonly session?: format.SessionTag;
  /**
   * The monotonic time (clock.monotonicMs) after which the append, if still queued, fails with
   * AppendExpiredError instead of being written: a caller that gave up never sees it commit later.
   */
  readonly expiresAtMs?: number;
}

interface Pending {
  readonly payloads: readonly Uint8Array[];
  readonly session: format.SessionTag | undefined;
  readonly expiresAtMs: number;
  readonly bytes: number;
  readonly resolve: (result: AppendResult) => void;
  readonly reject: (error: unknown) => void;
}

interface OpenSegment {
  meta: SegmentMeta;
  modRevision: number;
  readonly start: SegmentStart;
  nextIndex: number;
  byteLength: number;
  /** The running aggregate of the frames a quorum acknowledged (copied per batch). */
  aggregate: SegmentAggregate;
  /** A member failed a send: seal at the next chance and open the next segment without it. */
  degraded: boolean;
  /**
   * Members that failed a send in this segment. Later sends to them fail at once instead of
   * each waiting out its own deadline behind the one before (a hung member would otherwise hold
   * the writer for up to MEMBER_BATCHES_IN_FLIGHT_MAX + 1 deadlines); they catch up by themselves.
   */
  readonly failed: Set<string>;
}

const RECOVERY_ATTEMPTS_MAX = 5;
/** How long a member that failed a send is left out of new ensembles. */
const SUSPECT_MS = 5_000;
/**
 * Entries one Append call may carry (the CLI and WalClient batch at most this many). One call is
 * one turn of the writer: a call of a million tiny entries would hold the log for everyone else.
 */
export const APPEND_ENTRIES_MAX = 4096;

/** Batches sent to one member and not yet answered, before the writer waits for it. */
const MEMBER_BATCHES_IN_FLIGHT_MAX = 8;
/**
 * Batches the writer sends before the earliest of them reached its ack quorum (pipelining): each
 * member receives them in order (one chain per member), and they are acknowledged in order.
 * Default 1 (no batch overlaps another): on this 2-core machine depth 1 measured faster
 * (docs/CLUSTER.md, write path). The --etcd-restore --pipeline seeds that failed with 4 (1304,
 * 1267, 1297, 1260) were defects of code every depth runs (rule 8's records after a restore, the
 * repair hold-off), fixed; the default is the lead's decision.
 */
const PIPELINE_BATCHES_MAX_DEFAULT = 1;
/**
 * Bytes that must be waiting before a batch is sent while another is still in flight: a smaller
 * backlog waits for the batch in flight and goes out as one larger batch after it. Measured on
 * 2 cores (bench 6): pipelining small batches multiplies Replicate calls and costs more CPU per
 * entry than it saves in waiting.
 */
const PIPELINE_BACKLOG_BYTES_MIN = 64 * 1024;

/** Segment ids past the last record asked for when no member holds the next one (rederiveEmptyRecord). */
const EMPTY_SEGMENTS_PROBED = 4;

export class LogWriter {
  private stopped: Error | undefined;
  private current: OpenSegment | undefined;
  private committed = 0;
  private nextSegmentId = 1;
  private nextFirstIndex = 1;
  /**
   * The mod revision of segment nextSegmentId - 1's record as this writer last listed or wrote
   * it: the next segment's record is created only while that record is unchanged (one etcd
   * transaction). etcd restored from an older snapshot, or wiped, takes it back; a writer that
   * kept the election across that re-derives the records first (docs/CLUSTER.md, rule 8).
   */
  private previousModRevision: number | undefined;
  /**
   * The highest index that entered the log through this writer's recovery rather than its own
   * appends (adoptedIndex): records re-derived or segments sealed past what it had committed.
   */
  private adopted = 0;
  private readonly queue: Pending[] = [];
  private running: Promise<void> | undefined;
  private readonly ready: Promise<void>;
  private readyDone = false;
  private readonly chains = new Map<string, Promise<void>>();
  private readonly suspects = new Map<string, number>();
  /** A seal reached the members but not etcd: recover the open segment before the next batch. */
  private needsRecovery = false;
  /** A segment whose create failed without an answer: etcd may have applied it anyway. */
  private createInDoubt = 0;
  private highestOpenedSegmentId = 0;
  /** The segment this writer opened last: what it acknowledged in it (nextIndex, aggregate). */
  private lastOpened: OpenSegment | undefined;
  private readonly inFlight = new Map<string, number>();
  /** Pipelined batches of the open segment not settled yet, oldest first (settle in that order). */
  private pipelined: Array<Promise<boolean>> = [];
  /** Where the next pipelined batch goes (past what is in flight), while pipelined is not empty. */
  private sent: { readonly segment: OpenSegment; nextIndex: number; byteLength: number; aggregate: SegmentAggregate } | undefined;

  constructor(private readonly o: WriterOptions) {
    const depth = o.pipelineBatchesMax;
    // 0 would wait on nothing in a loop that never yields; NaN would remove the cap.
    if (depth !== undefined && (!Number.isSafeInteger(depth) || depth < 1)) throw new Error(`writer: pipelineBatchesMax must be an integer >= 1, not ${depth}`);
    this.ready = this.recover();
    this.ready.then(() => (this.readyDone = true), () => undefined);
    this.ready.catch((error: unknown) => this.stop(error instanceof Error ? error : new Error(String(error))));
  }

  get epoch(): number {
    return this.o.epoch;
  }

  get committedIndex(): number {
    return this.committed;
  }

  /** The highest index that entered the log through this writer's recovery, not its appends (0: none). */
  get adoptedIndex(): number {
    return this.adopted;
  }

  /** True once earlier writers' segments are recovered: committedIndex is exact from then on. */
  get isReady(): boolean {
    return this.readyDone;
  }

  /** Resolves once earlier writers' segments are sealed and appends can start. */
  whenReady(): Promise<void> {
    return this.ready;
  }

  append(payloads: readonly Uint8Array[], options: WriterAppendOptions = {}): Promise<AppendResult> {
    if (this.stopped) return Promise.reject(new NotWriterError(this.o.log, undefined));
    if (payloads.length === 0) return Promise.reject(new BadRequestError('payloads', 'at least one payload is needed'));
    // A session batch's entries leave room for the tag its last entry carries (docs/FORMAT.md).
    const payloadBytesMax = this.o.entryBytesMax - (options.session ? format.SESSION_TAG_BYTES : 0);
    let bytes = options.session ? format.SESSION_TAG_BYTES : 0;
    for (const payload of payloads) {
      // Refused here: every member would refuse it, and the writer would take them all for failed.
      if (payload.byteLength > payloadBytesMax) return Promise.reject(new BadRequestError('payloads', `an entry of ${payload.byteLength} bytes exceeds the limit of ${payloadBytesMax}`));
      bytes += format.ENTRY_HEADER_BYTES + payload.byteLength;
    }
    // A session batch never spans segments (below): it must fit an empty one.
    const segmentRoom = this.o.logMeta.segmentBytesMax - format.SEGMENT_HEADER_BYTES - format.TRAILER_BYTES;
    if (options.session && bytes > segmentRoom) return Promise.reject(new BadRequestError('payloads', `a session batch of ${bytes} bytes does not fit one segment (${segmentRoom} bytes)`));
    return new Promise((resolve, reject) => {
      this.queue.push({ payloads, session: options.session, expiresAtMs: options.expiresAtMs ?? Number.POSITIVE_INFINITY, bytes, resolve, reject });
      this.running ??= this.loop();
    });
  }

  /** Stops accepting appends; queued ones fail with NotWriterError (clients retry elsewhere). */
  stop(reason?: Error): void {
    if (this.stopped) return;
    this.stopped = reason ?? new NotWriterError(this.o.log, undefined);
    if (reason && !(reason instanceof NotWriterError)) this.o.logger.warn({ log: this.o.log, epoch: this.o.epoch, err: reason }, 'writer stopped');
    for (const pending of this.queue.splice(0)) pending.reject(new NotWriterError(this.o.log, undefined));
    if (reason) this.o.onFailed?.(reason);
  }

  // -------------------------------------------------------------------------------------------
  // Recovery of segments earlier writers left open

  private async recover(): Promise<void> {
    for (let attempt = 1; ; attempt += 1) {
      if (this.stopped) throw this.stopped;
      const segments = await this.o.directory.list(this.o.log);
      const unsealed = segments.filter((s) => s.meta.state !== 'SEALED');
      if (unsealed.length === 0) {
        const last = segments[segments.length - 1]?.meta;
        // Members may hold segments past the last record (etcd restored or wiped): their records
        // are re-derived first, so that no new segment takes their ids or indices.
        if (await this.rederiveNextRecord(last, segments.map((r) => r.meta))) continue;
        // Stopped while it listed or asked the members: a stopped writer never becomes ready. Its
        // runtime dropped it, and a start-up loop still awaiting it would take it for the writer
        // and end, leaving the node elected with no writer (--etcd-restore --seed 1512).
        if (this.stopped) throw this.stopped;
        this.nextSegmentId = (last?.segmentId ?? 0) + 1;
        this.nextFirstIndex = (last?.lastIndex ?? 0) + 1;
        this.previousModRevision = segments[segments.length - 1]?.modRevision;
        // Past what this writer committed itself: another writer's entries, its session batches
        // among them (the session table reads them, SessionGateContext.adoptedIndex).
        if (this.nextFirstIndex - 1 > this.committed) this.adopted = this.nextFirstIndex - 1;
        this.committed = this.nextFirstIndex - 1;
        this.o.onCommitted(this.committed);
        this.o.logger.info({ log: this.o.log, epoch: this.o.epoch, nextIndex: this.nextFirstIndex }, 'writer ready');
        return;
      }
      try {
        for (const segment of unsealed) await this.recoverSegment(segment.meta, segment.modRevision);
      } catch (error) {
        if (error instanceof FencedError || attempt >= RECOVERY_ATTEMPTS_MAX) throw error;
        this.o.logger.warn({ log: this.o.log, epoch: this.o.epoch, err: error, attempt }, 'failed to recover an open segment; retrying');
        await this.o.clock.sleep(200 * attempt);
      }
    }
  }

  /**
   * Asks every live member (Fence with this writer's epoch) whether it holds the segment after
   * last. If one does, its record is missing from etcd (restored from an older snapshot, or
   * wiped): it is created again from the members' copies (SEALED when the sealed copies agree,
   * else OPEN, for recovery to seal at a point an ack quorum holds) and true is returned. A
   * member fenced higher throws FencedError with the epoch it reported (the election's floor).
   */
  private async rederiveNextRecord(last: SegmentMeta | undefined, records: readonly SegmentMeta[]): Promise<boolean> {
    const { log, epoch } = this.o;
    const segmentId = (last?.segmentId ?? 0) + 1;
    // Every node that may hold it: members of any recorded ensemble, and live members. The answers
    // must intersect every ack quorum among them (a node not registered yet, after a wipe, counts).
    const known = new Set([...this.o.liveMembers(), ...records.flatMap((r) => [...r.ensemble, ...(r.formerMembers ?? []), ...(r.joiners ?? [])])]);
    const answers = await settle([...known].sort(), (node) => this.peer(node).fence(log, segmentId, epoch));
    if (answers.failed.some((f) => isFenced(f.error))) throw new FencedError(log, epoch, fencedEpochOf(answers.failed, epoch));
    // Fewer nodes known than an ensemble has (members not registered again yet): count the
    // unknown ones as silent, so the answers still intersect every ack quorum.
    const needed = Math.max(known.size, this.o.logMeta.replicationFactor) - this.o.logMeta.ackQuorum + 1;
    if (answers.ok.length < needed) throw new QuorumUnavailableError(log, answers.ok.length, needed);
    const holders = answers.ok.filter((a) => a.value.present);
    if (holders.length === 0) return this.rederiveEmptyRecord(last, answers.ok.map((a) => a.node));
    // The sealed copies that agree with the most others (healthy sealed copies are identical).
    let sealed = holders.filter((h) => h.value.sealed);
    const points = new Set(sealed.map((h) => h.value.lastIndex));
    // Where the next segment begins, when a node holds it, is where this one was sealed in etcd
    // (a writer creates a segment only after its predecessor's SEALED record): entries a copy holds
    // past it were never acknowledged (an open copy's unacknowledged tail), and recording them would
    // put their indices in two segments (seed 719).
    const ends = await this.followingEnds(answers.ok.map((a) => a.node), segmentId);
    const following = ends[0];
    if (points.size > 1 || (following !== undefined && sealed.some((h) => h.value.lastIndex !== following))) {
      // Sealed at different points: a former member's catch-up seals its copy at its own prefix
      // (catchup.ts), below the record, and a copy a failed recovery sealed past the record may be
      // left uncut. Votes cannot tell them apart (a tie went to the node sorted first, sealing
      // short of acknowledged entries): the next segment's first index does, when a node holds
      // it; else the highest point (entries past the lost record were never acknowledged, and no
      // segment follows them). A point no answering copy is sealed at waits for one.
      const end = following ?? Math.max(...points);
      sealed = sealed.filter((h) => h.value.lastIndex === end);
      // The next segment begins where this one does: etcd recorded it SEALED empty (a recovery
      // whose fence quorum held nothing of it), and no copy needs to agree on nothing. Copies sealed
      // past it hold entries never acknowledged (one member's, a recovery's fence quorum missed
      // them). Recorded OPEN with that point as its floor, the recovery seals it empty at the cap
      // (rule 3); waiting for a copy sealed there waited for ever, as no member need hold an empty
      // segment at all (--etcd-restore --pipeline --seed 1260 on 472f0af: a stall after etcd was wiped).
      // Only when every copy of the next segment begins there: a copy from an etcd history rolled
      // back since (its segment recorded empty there, then re-derived and sealed with entries after
      // a restore that lost that record) begins lower than the next segment of record, and taken
      // for its start it recorded committed entries away (test "a stale copy of the next segment").
      // Copies that disagree are told apart by no vote: the re-derivation waits, as before.
      const empty = following !== undefined && ends.length === 1 && holders.every((h) => h.value.firstIndex === following + 1);
      if (sealed.length === 0 && !empty) throw new QuorumUnavailableError(log, 0, 1, { cause: new Error(`segment ${segmentId} follows on at ${end + 1}: no answering copy is sealed at ${end}`) });
    }
    const key = (h: SegmentHolding): string => `${h.lastIndex}/${h.aggregate}`;
    const best = sealed.map((h) => key(h.value)).sort((a, b) => sealed.filter((h) => key(h.value) === b).length - sealed.filter((h) => key(h.value) === a).length)[0];
    const agreeing = sealed.filter((h) => key(h.value) === best);
    const model = (agreeing[0] ?? holders[0])?.value as SegmentHolding;
    const ensemble = [...agreeing.map((h) => h.node), ...holders.filter((h) => !agreeing.includes(h)).map((h) => h.node)];
    // An OPEN record names only the holders that answered, not the ensemble the writer wrote to:
    // its fence quorum no longer intersects every ack quorum (with a holder gone after this, the
    // others and a joiner could seal short of acknowledged entries). These answers do intersect
    // every ack quorum: the highest index they hold is recorded as the floor the recovery's
    // answers must reach (lastIndex of a record not SEALED, see recoverSegment).
    const floor = Math.min(Math.max(...holders.map((h) => h.value.lastIndex)), following ?? Infinity);
    const meta: SegmentMeta = {
      log,
      segmentId,
      ensemble,
      ackQuorum: Math.min(this.o.logMeta.ackQuorum, ensemble.length),
      state: agreeing.length > 0 ? 'SEALED' : 'OPEN',
      writerEpoch: epoch,
      firstIndex: model.firstIndex,
      lastIndex: agreeing.length > 0 ? model.lastIndex : Math.max(model.firstIndex - 1, floor),
      indexCount: agreeing.length > 0 ? model.indexCount : 0,
      byteLength: agreeing.length > 0 ? model.byteLength : 0,
      aggregate: agreeing.length > 0 ? model.aggregate : '',
      createdMs: this.o.clock.nowMs(),
    };
    this.o.logger.warn({ log, segment: segmentId, ensemble, state: meta.state, lastIndex: meta.lastIndex }, 'members hold a segment etcd has no record of: re-deriving its record from their copies');
    await this.o.directory.create(meta, this.o.leader);
    return true;
  }

  /**
   * No answering member holds the segment after last. It may still be an empty segment (sealed
   * empty by a recovery whose fence quorum held nothing; no member need hold it) with later
   * segments the members do hold, etcd having lost all their records: stopping here opened the
   * next segment over their acknowledged indices (--etcd-restore --pipeline --seed 3033; unit
   * test "an empty segment no member holds"). The next few segment ids are asked for too: one
   * held that begins right after last means the segments between are empty, and the first is
   * recorded SEALED empty (the next round of recover() does the rest); one that begins elsewhere
   * waits. True when a record was created.
   */
  private async rederiveEmptyRecord(last: SegmentMeta | undefined, nodes: readonly string[]): Promise<boolean> {
    const { log, epoch } = this.o;
    const segmentId = (last?.segmentId ?? 0) + 1;
    const end = last?.lastIndex ?? 0;
    for (let ahead = 1; ahead <= EMPTY_SEGMENTS_PROBED; ahead += 1) {
      const ends = await this.followingEnds(nodes, segmentId + ahead - 1);
      if (ends.length === 0) continue;
      if (ends.some((e) => e !== end)) {
        throw new QuorumUnavailableError(log, 0, 1, { cause: new Error(`no answering member holds segment ${segmentId}, and segment ${segmentId + ahead} begins at ${Math.min(...ends) + 1}, not ${end + 1}`) });
      }
      const ensemble = [...(last?.ensemble ?? nodes)].slice(0, this.o.logMeta.replicationFactor);
      const meta: SegmentMeta = {
        log,
        segmentId,
        ensemble,
        ackQuorum: Math.min(this.o.logMeta.ackQuorum, ensemble.length),
        state: 'SEALED',
        writerEpoch: epoch,
        firstIndex: end + 1,
        lastIndex: end,
        indexCount: 0,
        byteLength: 0,
        aggregate: '',
        createdMs: this.o.clock.nowMs(),
      };
      this.o.logger.warn({ log, segment: segmentId, following: segmentId + ahead }, 'members hold a later segment than the last record and none holds the one between: re-deriving it as an empty segment');
      await this.o.directory.create(meta, this.o.leader);
      return true;
    }
    return false;
  }

  /**
   * The index segment segmentId ends at as the next segment's copies show it (the lowest first
   * index less one among the nodes given that hold segment segmentId + 1), or undefined when none
   * of them holds it. The next segment exists on a node only once a writer recorded this one
   * SEALED there (etcd restored from an older snapshot lost that record, or left it OPEN), so no
   * entry past that point was acknowledged. Fences the next segment with this writer's epoch, as
   * rederiveNextRecord does; nodes that do not answer are left out.
   */
  private async followingEnd(nodes: readonly string[], segmentId: number): Promise<number | undefined> {
    return (await this.followingEnds(nodes, segmentId))[0];
  }

  /** Every end the copies of segment segmentId + 1 on nodes show (followingEnd), lowest first. */
  private async followingEnds(nodes: readonly string[], segmentId: number): Promise<number[]> {
    const next = await settle(nodes, (node) => this.peer(node).fence(this.o.log, segmentId + 1, this.o.epoch));
    return [...new Set(next.ok.filter((a) => a.value.present).map((a) => a.value.firstIndex - 1))].sort((a, b) => a - b);
  }

  private async recoverSegment(meta: SegmentMeta, modRevision: number): Promise<void> {
    const { log, epoch } = this.o;
    if (meta.writerEpoch > epoch) throw new FencedError(log, epoch, meta.writerEpoch);
    let recovering: SegmentMeta = { ...meta, state: 'RECOVERING', writerEpoch: epoch };
    let revision = await this.o.directory.update(recovering, modRevision);
    if (revision === undefined) throw new ReplicationError(`segment ${meta.segmentId} changed in etcd while recovering it`);
    // The fence quorum is counted over the ensemble alone: joiners an earlier recovery added
    // (rule 4) never held an entry a writer acknowledged, so a joiner that crashed mid-copy
    // cannot hold the log back; they are fenced too, and what they answer is used like a
    // member's answer (their copies came from a member, up to a seal point of a fence quorum).
    const answers = await settle(meta.ensemble, (node) => this.peer(node).fence(log, meta.segmentId, epoch));
    // A member fenced by a higher epoch (its persisted fence; after etcd was restored from an older
    // snapshot it may be this node's own store) refuses this epoch for good, even when the others
    // form a fence quorum: with it counted as silent the recovery would look for joiners and retry
    // forever at an epoch that member never accepts. A higher epoch wins: FencedError, so that the
    // election raises its floor past it (log-runtime.ts) and campaigns again.
    if (answers.failed.some((f) => isFenced(f.error))) throw new FencedError(log, epoch, fencedEpochOf(answers.failed, epoch));
    const needed = meta.ensemble.length - meta.ackQuorum + 1;
    if (answers.ok.length < needed) throw new QuorumUnavailableError(log, answers.ok.length, needed);
    const earlierJoiners = await settle(meta.joiners ?? [], (node) => this.peer(node).fence(log, meta.segmentId, epoch));
    if (earlierJoiners.failed.some((f) => isFenced(f.error))) throw new FencedError(log, epoch, fencedEpochOf(earlierJoiners.failed, epoch));
    answers.ok.push(...earlierJoiners.ok);
    // A record re-derived after etcd was restored names a floor (rederiveNextRecord): answers that
    // reach none of it miss a member that may hold acknowledged entries (joiners added below hold
    // nothing yet). A sealed copy covers every acknowledgement by itself (a recovery may have
    // lowered the floor to a session batch's boundary).
    if (meta.lastIndex >= meta.firstIndex && !answers.ok.some((a) => a.value.sealed || (a.value.present && a.value.lastIndex >= meta.lastIndex))) {
      throw new QuorumUnavailableError(log, answers.ok.length, needed, { cause: new Error(`no answer reaches ${meta.lastIndex}, the highest index the holders held when the record was re-derived`) });
    }
    if (answers.ok.length < meta.ackQuorum) {
      // The answers intersect every ack quorum, yet fewer nodes answer than a seal needs (a
      // two-member ensemble with one member gone, maybe for good): the segment could never be
      // sealed and the log would stop. Live nodes outside the ensemble join it as joiners
      // (recorded before they get a byte, so the record names every node that may hold a copy),
      // are fenced, get the entries copied below and seal with the members that answered.
      const grown = await this.addJoiners(recovering, revision, meta.ackQuorum - answers.ok.length);
      recovering = grown.meta;
      revision = grown.revision;
      const joined = await settle(grown.added, (node) => this.peer(node).fence(log, meta.segmentId, epoch));
      if (joined.failed.some((f) => isFenced(f.error))) throw new FencedError(log, epoch, fencedEpochOf(joined.failed, epoch));
      answers.ok.push(...joined.ok);
    }
    const lastOf = (h: SegmentHolding): number => (h.present ? h.lastIndex : meta.firstIndex - 1);
    // A member that holds the segment sealed was sealed by its writer (at its committed index)
    // or by an earlier recovery (at the highest index of a fence quorum, which intersects every
    // ack quorum): either way that point covers every acknowledged entry. Entries another member
    // holds past it were never acknowledged. Two such points can differ (a recovery that failed
    // its quorum sealed one member at its choice, the old writer sealed another at its committed
    // index); both cover every acknowledgement, so the lowest is safe, and it is the only one the
    // members sealed below the others can still reach: a sealed copy is never extended (copies
    // sealed below the next segment's first index are prefixes, not seal points: see the cap below).
    // This writer's own segment (a batch or a seal of it failed): its committed index is exact,
    // and its own acknowledgements show that an ack quorum durably holds every entry up to it,
    // whether those members answer now or not. It seals there, as sealCurrent does; entries past
    // it were never acknowledged. Sealing at the highest index instead would need an ack quorum
    // to take the unacknowledged tail, and with a member down (a two-member ensemble after a
    // failure) the log would stop until it returned. A writer that did not open the segment
    // cannot know what was acknowledged: it takes the highest index a fence quorum holds.
    const opened = this.lastOpened;
    const own = opened !== undefined && opened.meta.segmentId === meta.segmentId && meta.writerEpoch === epoch;
    const highest = Math.max(meta.firstIndex - 1, ...answers.ok.map((a) => lastOf(a.value)));
    const start: SegmentStart = { segmentId: meta.segmentId, firstIndex: meta.firstIndex, createdMs: meta.createdMs };
    // The highest index may fall inside a session batch that no member holds whole (the copy of
    // a tail goes in chunks; a member writes a large request in several steps): sealing there
    // would commit the batch's first entries without its tag, and the client's retry would append
    // them again. Such a batch was never acknowledged (it is acknowledged whole, and a fence
    // quorum intersects every ack quorum): the seal point goes back to just before it. The other
    // two points are batch boundaries already: a writer's committed index, and points sealed by
    // a writer or by a recovery that lowered them (members refuse to seal inside a batch).
    // A copy of the next segment held by any answering or live node caps the point (followingEnd):
    // only etcd restored from an older snapshot leaves a segment unsealed once its successor
    // exists, and the entries a copy holds past that cap were never acknowledged. The cap is a
    // point a writer sealed at, so a batch boundary too.
    const cap = own ? undefined : await this.followingEnd([...new Set([...answers.ok.map((a) => a.node), ...this.o.liveMembers()])].sort(), meta.segmentId);
    // A copy sealed below the cap is no seal point but a prefix: a member the coordinator replaced
    // seals the open copy it held at its own end when it comes back (catchup.ts), short of the
    // record; etcd restored to a snapshot that still names it a member of the OPEN segment brings
    // it into these answers. Taken for the lowest point, it cut the copies of record short of
    // acknowledged entries. The cap is where the segment was sealed in etcd: copies below it
    // neither choose the point nor count for it.
    const prefixes = new Set(cap === undefined ? [] : answers.ok.filter((a) => a.value.present && a.value.sealed && a.value.lastIndex < cap).map((a) => a.node));
    const sealedAt = answers.ok.filter((a) => a.value.present && a.value.sealed && !prefixes.has(a.node));
    const sealedPoints = new Set(sealedAt.map((a) => a.value.lastIndex));
    const lowestSealed = sealedPoints.size === 0 ? undefined : Math.min(...sealedPoints);
    if (cap !== undefined && prefixes.size > 0 && !answers.ok.some((a) => !prefixes.has(a.node) && lastOf(a.value) >= cap)) {
      throw new QuorumUnavailableError(log, answers.ok.length - prefixes.size, needed, { cause: new Error(`segment ${meta.segmentId} was sealed at ${cap} (the next segment begins at ${cap + 1}): only prefixes below it answered`) });
    }
    const last = Math.min(
      lowestSealed ?? (own ? opened.nextIndex - 1 : cap !== undefined && cap < highest ? cap : await this.pointOutsideSessionBatch(start, answers.ok.filter((a) => lastOf(a.value) >= highest && a.value.present).map((a) => a.node), highest)),
      cap ?? Infinity,
    );
    // Never below what this writer acknowledged (members refuse it too: Seal below the committed
    // index they were told). Cannot happen by the argument above; a failed recovery is retried.
    // A segment before the one this writer opened last, or before the last one it knows of (its
    // record went back to OPEN with an etcd restored from an older snapshot, while this writer,
    // maybe one that has opened nothing yet, kept the election) ends before the acknowledged
    // index: not compared with it (it stalled the log, --etcd-restore --pipeline --seed 1304).
    const before = meta.segmentId < Math.max(this.lastOpened?.meta.segmentId ?? 0, this.nextSegmentId - 1);
    if (!before && last < this.committed) throw new ReplicationError(`segment ${meta.segmentId}: seal point ${last} is below the acknowledged index ${this.committed}`);
    const source = answers.ok.find((a) => lastOf(a.value) >= last && a.value.present);
    for (const answer of answers.ok) {
      if (source && answer.node !== source.node && !answer.value.sealed && lastOf(answer.value) < last) {
        await this.copyTail(start, source.node, answer.node, lastOf(answer.value) + 1, last).catch((error: unknown) =>
          this.o.logger.warn({ log, segment: meta.segmentId, peer: answer.node, err: error }, 'failed to copy the tail to a member'),
        );
      }
    }
    // Members that lacked the segment and got the tail copied now hold it; the rest answer with an error.
    const holders = answers.ok.map((a) => a.node);
    const seals = await settle(holders, (node) => this.peer(node).seal(log, meta.segmentId, epoch, last, ''));
    const sealed = seals.ok.filter((s) => s.value.aggregate !== '' && s.value.lastIndex === last);
    // Members sealed past the point are cut to it, once their entries up to it add up to what
    // the members sealed there hold (the member checks; the entries past it were never
    // acknowledged). Only then do they count: a copy the record does not describe is no copy.
    const past = sealedAt.filter((a) => a.value.lastIndex > last).map((a) => a.node);
    const reference = sealed[0]?.value.aggregate;
    if (past.length > 0 && reference !== undefined) {
      const cuts = await settle(past, (node) => this.peer(node).seal(log, meta.segmentId, epoch, last, reference));
      for (const f of cuts.failed) this.o.logger.warn({ log, segment: meta.segmentId, peer: f.node, err: f.error }, 'failed to cut a copy sealed past the seal point');
      sealed.push(...cuts.ok.filter((s) => s.value.lastIndex === last));
    }
    // One writer per epoch wrote every frame, so sealed copies agree unless one is damaged.
    const votes = new Map<string, number>();
    for (const s of sealed) votes.set(s.value.aggregate, (votes.get(s.value.aggregate) ?? 0) + 1);
    const [majority, agreeing] = [...votes.entries()].sort((a, b) => b[1] - a[1])[0] ?? ['', 0];
    const agreed = sealed.find((s) => s.value.aggregate === majority)?.value;
    // The record says SEALED only once an ack quorum holds the segment up to that point with the
    // same contents: sealed there alike, or (its own segment, up to its committed index) as this
    // writer's acknowledgements show. A seal point one member holds alone would be committed with
    // one copy.
    const acknowledgedByQuorum = own && last === opened.nextIndex - 1 && agreed?.aggregate === checksumHex(opened.aggregate.value());
    if (last >= meta.firstIndex && agreeing < meta.ackQuorum && !acknowledgedByQuorum) throw new QuorumUnavailableError(log, agreeing, meta.ackQuorum);
    if (past.length > 0) this.o.logger.warn({ log, segment: meta.segmentId, lastIndex: last, points: [...sealedPoints] }, 'members were sealed at different points; sealed at the lowest, copies past it cut to it');
    if (votes.size > 1) {
      this.o.logger.error({ log, segment: meta.segmentId, aggregates: sealed.map((s) => [s.node, s.value.aggregate]) }, 'members sealed different contents; the majority is recorded and the others will be repaired');
    }
    const { joiners: _joiners, ...withoutJoiners } = recovering;
    const final: SegmentMeta = {
      ...withoutJoiners,
      ...this.membersOnceSealed(recovering, answers.ok.map((a) => a.node), sealed.filter((s) => s.value.aggregate === majority).map((s) => s.node)),
      state: 'SEALED',
      lastIndex: last,
      indexCount: last - meta.firstIndex + 1,
      byteLength: agreed?.byteLength ?? format.SEGMENT_HEADER_BYTES + format.TRAILER_BYTES,
      aggregate: agreed?.aggregate ?? checksumHex(AGGREGATE_EMPTY_CHECKSUM),
    };
    if ((await this.o.directory.update(final, revision)) === undefined) throw new ReplicationError(`segment ${meta.segmentId} changed in etcd while sealing it`);
    this.o.logger.info({ log, segment: meta.segmentId, epoch, lastIndex: last, holders: holders.length, sealedOn: agreeing, own }, 'recovered and sealed a segment an earlier writer left open');
  }

  /**
   * Records up to count live nodes outside a recovering segment's ensemble and joiners as joiners
   * (compare-and-swap of the record), nodes that did not fail a send lately first. Fails when
   * none is live.
   */
  private async addJoiners(meta: SegmentMeta, modRevision: number, count: number): Promise<{ meta: SegmentMeta; revision: number; added: string[] }> {
    const now = this.o.clock.nowMs();
    const suspect = (n: string): boolean => now - (this.suspects.get(n) ?? -Infinity) <= SUSPECT_MS;
    const known = new Set([...meta.ensemble, ...(meta.joiners ?? [])]);
    const candidates = this.o.liveMembers().filter((n) => !known.has(n)).sort((a, b) => Number(suspect(a)) - Number(suspect(b)) || a.localeCompare(b));
    const added = candidates.slice(0, count);
    if (added.length === 0) throw new QuorumUnavailableError(this.o.log, meta.ackQuorum - count, meta.ackQuorum);
    const grown: SegmentMeta = { ...meta, joiners: [...(meta.joiners ?? []), ...added] };
    const revision = await this.o.directory.update(grown, modRevision);
    if (revision === undefined) throw new ReplicationError(`segment ${meta.segmentId} changed in etcd while recovering it`);
    this.o.logger.warn({ log: this.o.log, segment: meta.segmentId, added, ensemble: grown.ensemble, joiners: grown.joiners }, 'too few members answer to seal a segment: live nodes join it and get its entries');
    return { meta: grown, revision, added };
  }

  /**
   * The ensemble (and former members) a recovered segment's SEALED record names: joiners whose
   * sealed copy agrees become members; the others (crashed mid-copy, or never reached) become
   * former members, as they may hold part of a copy. The ensemble stays within the replication
   * factor (it could pass it when the ack quorum is more than a majority, e.g. 3 of 4 with two
   * members silent, or when joiners of several attempts all sealed): members that did not answer
   * make room, last first, then joiners beyond what the record needs; both become former members
   * (as the coordinator does with gone members; a member that comes back keeps its copy as no
   * replica of record, catch-up seals it at the record).
   */
  private membersOnceSealed(meta: SegmentMeta, answered: readonly string[], agreeing: readonly string[]): { ensemble: string[]; formerMembers?: string[] } {
    const joiners = meta.joiners ?? [];
    if (joiners.length === 0) return { ensemble: [...meta.ensemble], ...(meta.formerMembers ? { formerMembers: [...meta.formerMembers] } : {}) };
    const { replicationFactor } = this.o.logMeta;
    let joined = joiners.filter((n) => agreeing.includes(n));
    const ensemble = [...meta.ensemble];
    const dropped = joiners.filter((n) => !joined.includes(n));
    for (let i = ensemble.length - 1; i >= 0 && ensemble.length + joined.length > replicationFactor; i -= 1) {
      const node = ensemble[i] as string;
      if (answered.includes(node)) continue;
      ensemble.splice(i, 1);
      dropped.push(node);
    }
    // Joiners of several attempts that all sealed, every member answering: keep those that fit,
    // and as many as the record needs to name ackQuorum agreeing copies.
    const keep = Math.max(replicationFactor - ensemble.length, meta.ackQuorum - ensemble.filter((n) => agreeing.includes(n)).length);
    dropped.push(...joined.slice(keep));
    joined = joined.slice(0, keep);
    const formerMembers = [...new Set([...(meta.formerMembers ?? []), ...dropped])];
    return { ensemble: [...ensemble, ...joined], ...(formerMembers.length > 0 ? { formerMembers } : {}) };
  }

  /**
   * The seal point a recovery may use when the highest index its members hold is point: that
   * point, or when the entry there continues a session batch (FLAG_BATCH_OPEN), the index just
   * before that batch's first entry (the batch never spans segments: at least firstIndex - 1).
   * Reads backward from point on the holders given (each holds point), in windows that grow
   * (1, 4, 16, ... entries), so a point at a batch boundary costs one frame read.
   */
  private async pointOutsideSessionBatch(start: SegmentStart, holders: readonly string[], point: number): Promise<number> {
    let end = point; // every entry in (end, point] continues the batch
    let span = 1;
    while (end >= start.firstIndex) {
      const from = Math.max(start.firstIndex, end - span + 1);
      const frames = await this.readRange(start, holders, from, end);
      for (let i = frames.length - 1; i >= 0; i -= 1) {
        if (!format.isBatchOpenFrame(frames[i] as Buffer)) {
          if (from + i < point) this.o.logger.warn({ log: this.o.log, segment: start.segmentId, highest: point, sealAt: from + i }, 'the highest index held falls inside a session batch no member holds whole: sealing just before the batch');
          return from + i;
        }
      }
      end = from - 1;
      span = Math.min(span * 4, 1024);
    }
    this.o.logger.warn({ log: this.o.log, segment: start.segmentId, highest: point, sealAt: start.firstIndex - 1 }, 'the highest index held falls inside a session batch no member holds whole: sealing just before the batch');
    return start.firstIndex - 1;
  }

  /** Every verified frame from..to of the segment, from the first of holders that serves them all. */
  private async readRange(start: SegmentStart, holders: readonly string[], from: number, to: number): Promise<Buffer[]> {
    let failure: unknown = new ReplicationError(`no member holds entries ${from}..${to} of segment ${start.segmentId}`);
    for (const node of holders) {
      try {
        const frames: Buffer[] = [];
        while (from + frames.length <= to) {
          const answer = await this.peer(node).readFrames(this.o.log, start.segmentId, from + frames.length, to, this.o.copyBytesMax ?? 4 * 1024 * 1024);
          if (answer.frames.length === 0 || answer.faulty.length > 0) throw new ReplicationError(`member ${node} did not serve entries ${from + frames.length}..${to} verified`);
          frames.push(...answer.frames);
        }
        return frames.slice(0, to - from + 1);
      } catch (error) {
        failure = error;
      }
    }
    throw failure;
  }

  private async copyTail(start: SegmentStart, from: string, to: string, first: number, last: number): Promise<void> {
    let next = first;
    while (next <= last) {
      const { frames } = await this.peer(from).readFrames(this.o.log, start.segmentId, next, last, this.o.copyBytesMax ?? 4 * 1024 * 1024);
      if (frames.length === 0) throw new ReplicationError(`member ${from} returned no frames from ${next}`);
      await this.peer(to).replicate(this.o.log, this.o.epoch, start, frames, this.committed);
      next += frames.length;
    }
  }

  private peer(node: string): PeerApi {
    const peer = this.o.peers(node);
    if (!peer) throw new QuorumUnavailableError(this.o.log, 0, 1, { cause: new Error(`member ${node} is not live`) });
    return peer;
  }

  // -------------------------------------------------------------------------------------------
  // Appends

  private async loop(): Promise<void> {
    try {
      await this.ready;
      while ((this.queue.length > 0 || this.sealDue()) && !this.stopped) {
        if (this.queue.length === 0) {
          // A member failed a batch and no append follows: the segment is sealed now, as after a
          // batch of writeBatch, so that the member is replaced and catches up (on sealed
          // segments only) instead of the segment staying open on fewer copies while the log idles.
          await this.drainPipeline();
          if (this.sealDue()) await this.sealDegraded();
          continue;
        }
        if (this.pipelined.length > 0 && this.queuedBytes() < (this.o.pipelineBacklogBytesMin ?? PIPELINE_BACKLOG_BYTES_MIN)) {
          await this.pipelined[0]; // a small backlog joins the next batch instead of a batch of its own
          continue;
        }
        let bytes = 0;
        let take = 0;
        for (let next = this.queue[0]; next && (take === 0 || bytes + next.bytes <= this.o.groupCommitBytesMax); next = this.queue[take]) {
          bytes += next.bytes;
          take += 1;
        }
        const batch = this.unexpired(this.queue.splice(0, take));
        if (batch.length === 0) continue;
        if (await this.sendPipelined(batch)) continue;
        // Anything else (a seal, a new segment, recovery) starts once every pipelined batch settled.
        await this.drainPipeline();
        await this.writeBatch(batch);
      }
    } catch (error) {
      this.stop(error instanceof Error ? error : new Error(String(error)));
    } finally {
      this.running = undefined;
      if (this.queue.length > 0 && !this.stopped) this.running = this.loop();
    }
  }

  /**
   * The appends of batch whose deadline has not passed; the others fail with AppendExpiredError.
   * Checked again right before a batch is first sent (after any wait for earlier batches, a seal
   * or a recovery): nothing of an expired append has been sent anywhere, so failing it is exact.
   */
  private unexpired(batch: readonly Pending[]): Pending[] {
    const now = this.o.clock.monotonicMs();
    return batch.filter((pending) => {
      if (pending.expiresAtMs > now) return true;
      pending.reject(new AppendExpiredError(this.o.log));
      return false;
    });
  }

  /** Bytes of the appends waiting in the queue, up to the group commit cap (what one batch could take). */
  private queuedBytes(): number {
    let bytes = 0;
    for (const pending of this.queue) {
      bytes += pending.bytes;
      if (bytes >= this.o.groupCommitBytesMax) break;
    }
    return bytes;
  }

  /** The open segment has a member that failed a send and nothing else is due first. */
  private sealDue(): boolean {
    return this.current?.degraded === true && !this.needsRecovery;
  }

  /** Seals a segment a member failed a send in; a seal that fails (not fenced) leaves it for recovery. */
  private async sealDegraded(): Promise<void> {
    try {
      await this.sealCurrent();
    } catch (error) {
      if (error instanceof FencedError) throw error;
      this.needsRecovery = true; // the seal may have reached some members: recover it first
    }
  }

  /** Waits until every pipelined batch settled. */
  private async drainPipeline(): Promise<void> {
    while (this.pipelined.length > 0) await this.pipelined[0];
  }

  /**
   * The fast path: a batch that fits the open segment whole (no seal, no new segment, nothing to
   * recover, no member failed) is sent at once, behind at most pipelineBatchesMax - 1 others
   * still waiting for their ack quorum, and acknowledged only after every batch sent before it.
   * When one fails, every batch after it fails too (none is acknowledged past a gap) and the
   * segment is recovered before the next batch, as after a failure of the sequential path.
   * False when the batch must take the sequential path (writeBatch); true when it was sent or
   * every append of it expired while waiting here.
   */
  private async sendPipelined(taken: readonly Pending[]): Promise<boolean> {
    let batch = taken;
    for (;;) {
      batch = this.unexpired(batch); // it may have waited below
      if (batch.length === 0) return true;
      const segment = this.current;
      if (!segment || segment.degraded || this.needsRecovery || this.stopped) return false;
      const base = this.pipelined.length > 0 && this.sent?.segment === segment ? this.sent : segment;
      const bytes = batch.reduce((sum, pending) => sum + pending.bytes, 0);
      // Room for the batch with the segment still below its limit afterwards (no seal after it).
      if (base.byteLength + bytes + format.TRAILER_BYTES >= this.o.logMeta.segmentBytesMax) return false;
      if (this.pipelined.length >= (this.o.pipelineBatchesMax ?? PIPELINE_BATCHES_MAX_DEFAULT)) {
        await this.pipelined[0];
        continue; // the segment may have failed meanwhile: check again
      }
      if (!(await this.memberRoom(segment.meta.ensemble))) continue;
      if (this.current !== segment || segment.degraded || this.needsRecovery) continue;
      this.pipeline(segment, this.pipelined.length > 0 && this.sent?.segment === segment ? this.sent : segment, batch, bytes);
      return true;
    }
  }

  private pipeline(segment: OpenSegment, base: { nextIndex: number; byteLength: number; aggregate: SegmentAggregate }, batch: readonly Pending[], bytes: number): void {
    const timestampMs = this.o.clock.nowMs();
    const aggregate = base.aggregate.copy();
    const frames: Buffer[] = [];
    const ranges: AppendResult[] = [];
    let index = base.nextIndex;
    for (const pending of batch) {
      const firstIndex = index;
      pending.payloads.forEach((payload, i) => {
        const last = i === pending.payloads.length - 1;
        const session = last ? pending.session : undefined;
        const flags = pending.session && !last ? format.FLAG_BATCH_OPEN : 0;
        const { frame } = format.encodeEntry({ index, timestampMs, flags, payload, ...(session ? { session } : {}) });
        frames.push(frame);
        aggregate.addStored(frame, 8);
        index += 1;
      });
      ranges.push({ firstIndex, lastIndex: index - 1 });
    }
    const next = { segment, nextIndex: index, byteLength: base.byteLength + bytes, aggregate };
    this.sent = next;
    const earlier = this.pipelined[this.pipelined.length - 1] ?? Promise.resolve(true);
    const outcome = this.sendToEnsemble(segment, frames, () => undefined);
    const settled = (async (): Promise<boolean> => {
      const { acks, fenced } = await outcome;
      const earlierOk = await earlier;
      if (earlierOk && acks >= segment.meta.ackQuorum && this.current === segment) {
        segment.nextIndex = next.nextIndex;
        segment.byteLength = next.byteLength;
        segment.aggregate = next.aggregate;
        this.committed = next.nextIndex - 1;
        this.o.onCommitted(this.committed);
        batch.forEach((pending, i) => pending.resolve(ranges[i] as AppendResult));
        return true;
      }
      const error = fenced
        ? new FencedError(this.o.log, this.o.epoch, this.o.epoch + 1)
        : new QuorumUnavailableError(this.o.log, earlierOk ? acks : 0, segment.meta.ackQuorum, earlierOk ? undefined : { cause: new ReplicationError('an earlier batch failed its ack quorum') });
      // As after a failed batch of writeBatch: the segment is recovered before the next batch.
      if (this.current === segment) {
        this.current = undefined;
        this.needsRecovery = true;
      }
      batch.forEach((pending) => pending.reject(error));
      if (fenced) this.stop(error);
      return false;
    })();
    this.pipelined.push(settled);
    void settled.finally(() => {
      this.pipelined.splice(this.pipelined.indexOf(settled), 1);
      if (this.pipelined.length === 0 && this.sent === next) this.sent = undefined;
    });
  }

  /**
   * Writes a batch of client appends, in chunks that fit the open segment: a segment is sealed
   * when the next entry would take it past segmentBytesMax, and the batch goes on in the next one.
   * Clients are answered once every chunk of the batch reached the ack quorum.
   */
  private async writeBatch(taken: readonly Pending[]): Promise<void> {
    let batch = taken;
    const adoptedBefore = this.adopted;
    if (this.current?.degraded) {
      // A member failed a pipelined batch (acknowledged by the others): the segment is sealed
      // before anything else, as writeBatch seals after its own batch when a member failed.
      try {
        await this.sealDegraded();
      } catch (error) {
        for (const pending of batch) pending.reject(error);
        throw error;
      }
    }
    if (this.needsRecovery) {
      try {
        await this.recover();
        this.needsRecovery = false;
      } catch (error) {
        for (const pending of batch) pending.reject(error);
        if (error instanceof FencedError) throw error;
        return;
      }
    }
    // Waited for the pipelined batches before it, a seal or a recovery: nothing of it sent yet.
    batch = this.unexpired(batch);
    if (this.adopted > adoptedBefore) batch = this.withoutSessionBatches(batch);
    if (batch.length === 0) return;
    if (!this.current) {
      // Opening may recover and re-derive records etcd lost (openSegment): nothing sent yet.
      const adoptedBeforeOpen = this.adopted;
      try {
        await this.openSegment();
      } catch (error) {
        for (const pending of batch) pending.reject(error);
        if (error instanceof FencedError) throw error;
        return;
      }
      if (this.adopted > adoptedBeforeOpen) batch = this.withoutSessionBatches(batch);
      if (batch.length === 0) return;
    }
    // wholeBytes: on the first item of a session batch, the batch's bytes. A session batch is
    // written into one segment or not at all: split across a seal, its first part could commit
    // without its tag, and a retry would append that part again.
    const items: Array<{ payload: Uint8Array; owner: number; session: format.SessionTag | undefined; flags: number; wholeBytes: number }> = [];
    batch.forEach((pending, owner) =>
      pending.payloads.forEach((payload, i) =>
        items.push({
          payload,
          owner,
          session: i === pending.payloads.length - 1 ? pending.session : undefined,
          // Every entry of a session batch but its last: no seal point may fall on it.
          flags: pending.session && i < pending.payloads.length - 1 ? format.FLAG_BATCH_OPEN : 0,
          wholeBytes: i === 0 && pending.session ? pending.bytes : 0,
        }),
      ),
    );
    const firsts = new Array<number>(batch.length).fill(0);
    const lasts = new Array<number>(batch.length).fill(0);
    const timestampMs = this.o.clock.nowMs();
    let at = 0;
    try {
      while (at < items.length) {
        const segment = this.current ?? (await this.openSegment());
        const room = this.o.logMeta.segmentBytesMax - format.TRAILER_BYTES - segment.byteLength;
        const hasEntries = segment.nextIndex > segment.meta.firstIndex;
        const frames: Buffer[] = [];
        const owners: number[] = [];
        let bytes = 0;
        let index = segment.nextIndex;
        const aggregate = segment.aggregate.copy();
        while (at < items.length) {
          const item = items[at] as (typeof items)[number];
          const size = format.ENTRY_HEADER_BYTES + item.payload.byteLength + (item.session ? format.SESSION_TAG_BYTES : 0);
          if ((frames.length > 0 || hasEntries) && bytes + Math.max(size, item.wholeBytes) > room) break;
          const { frame } = format.encodeEntry({ index, timestampMs, flags: item.flags, payload: item.payload, ...(item.session ? { session: item.session } : {}) });
          frames.push(frame);
          owners.push(item.owner);
          aggregate.addStored(frame, 8);
          bytes += size;
          index += 1;
          at += 1;
        }
        if (frames.length === 0) {
          await this.sealCurrent(); // full: the rest of the batch goes to the next segment
          continue;
        }
        const first = segment.nextIndex;
        const outcome = await this.replicateToQuorum(segment, frames, () => {
          segment.nextIndex = index;
          segment.byteLength += bytes;
          segment.aggregate = aggregate;
          this.committed = index - 1;
          this.o.onCommitted(this.committed);
          owners.forEach((owner, i) => {
            if (firsts[owner] === 0) firsts[owner] = first + i;
            lasts[owner] = first + i;
          });
        });
        if (outcome.acks < segment.meta.ackQuorum) {
          const error = outcome.fenced ? new FencedError(this.o.log, this.o.epoch, this.o.epoch + 1) : new QuorumUnavailableError(this.o.log, outcome.acks, segment.meta.ackQuorum);
          // Some members may hold this chunk without a quorum, others may be in a state this writer
          // does not know: before the next batch, the segment is recovered from what the members
          // hold (fence, highest index, seal, record), exactly as a new writer would.
          this.current = undefined;
          this.needsRecovery = true;
          throw error;
        }
        if (segment.degraded || segment.byteLength + format.TRAILER_BYTES >= this.o.logMeta.segmentBytesMax) {
          await this.sealCurrent();
        }
      }
    } catch (error) {
      // An append whose entries all reached the ack quorum is acknowledged, whatever failed after
      // (a seal, the next chunk): a recovery seals at or past them. Failing it would invite a
      // retry that appends the same payloads a second time.
      batch.forEach((pending, i) => {
        const committed = firsts[i] !== 0 && (lasts[i] as number) - (firsts[i] as number) + 1 === pending.payloads.length;
        if (committed) pending.resolve({ firstIndex: firsts[i] as number, lastIndex: lasts[i] as number });
        else if (firsts[i] !== 0) pending.reject(new PartialAppendError(this.o.log, firsts[i] as number, lasts[i] as number, pending.payloads.length, { cause: error }));
        else pending.reject(error);
      });
      if (error instanceof FencedError) throw error;
      return;
    }
    batch.forEach((pending, i) => pending.resolve({ firstIndex: firsts[i] as number, lastIndex: lasts[i] as number }));
  }

  /**
   * Sends frames to every member and resolves as soon as ackQuorum have fsynced them (calling
   * onQuorum first), or as soon as a quorum can no longer be reached. Sends to one member are
   * chained, so each member receives batches in order while the writer goes on with the next
   * batch: a slow member holds back only itself, up to MEMBER_BATCHES_IN_FLIGHT_MAX batches.
   * A member that fails marks the segment degraded: the writer seals it and opens the next one.
   */
  private async replicateToQuorum(segment: OpenSegment, frames: readonly Buffer[], onQuorum: () => void): Promise<{ acks: number; fenced: boolean }> {
    while (!(await this.memberRoom(segment.meta.ensemble)));
    return this.sendToEnsemble(segment, frames, onQuorum);
  }

  /**
   * True when every member has room for one more batch now; else waits until the sends to the
   * first member without room settled and returns false (check again: sends are only started right after a true answer, so
   * no other send can take the room in between and each member still gets them in order).
   */
  private async memberRoom(ensemble: readonly string[]): Promise<boolean> {
    for (const node of ensemble) {
      if ((this.inFlight.get(node) ?? 0) >= MEMBER_BATCHES_IN_FLIGHT_MAX) {
        await this.chains.get(node);
        return false;
      }
    }
    return true;
  }

  /** Starts the sends of frames to every member of the ensemble (in each member's order); resolves as replicateToQuorum does. */
  private sendToEnsemble(segment: OpenSegment, frames: readonly Buffer[], onQuorum: () => void): Promise<{ acks: number; fenced: boolean }> {
    const committed = this.committed;
    const ensemble = segment.meta.ensemble;
    const quorum = segment.meta.ackQuorum;
    const trace = activeTraceContext(); // sends run from each member's chain: parent them here
    return new Promise((resolve) => {
      let acks = 0;
      let failures = 0;
      let fenced = false;
      let settled = false;
      const settle = (): void => {
        if (settled) return;
        if (acks >= quorum) {
          settled = true;
          onQuorum();
          resolve({ acks, fenced });
        } else if (ensemble.length - failures < quorum) {
          settled = true;
          resolve({ acks, fenced });
        }
      };
      for (const node of ensemble) {
        const send = (): Promise<{ lastIndex: number }> => this.skipFailed(segment, node) ?? this.peer(node).replicate(this.o.log, this.o.epoch, segment.start, frames, committed);
        void this.sendInOrder(node, () => (trace ? withSpan('replicate', { 'wal.peer': node, 'wal.segment': segment.meta.segmentId }, send, trace) : send())).then(
          (answer) => {
            acks += 1;
            settle();
            this.o.onReplicated?.(node, answer.lastIndex, this.committed);
          },
          (error: unknown) => {
            failures += 1;
            segment.degraded = true;
            segment.failed.add(node);
            this.suspects.set(node, this.o.clock.nowMs());
            if (isFenced(error)) fenced = true;
            this.o.logger.warn({ log: this.o.log, segment: segment.meta.segmentId, peer: node, err: error }, 'failed to replicate to a member');
            settle();
            // With no append queued, the loop is not running: start it to seal the segment.
            if (this.current === segment && !this.stopped) this.running ??= this.loop();
          },
        );
      }
    });
  }

  /** A rejection for a member that already failed a send in this segment, else undefined. */
  private skipFailed(segment: OpenSegment, node: string): Promise<never> | undefined {
    if (!segment.failed.has(node)) return undefined;
    return Promise.reject(new ReplicationError(`member ${node} failed an earlier send in segment ${segment.meta.segmentId}`));
  }

  /** Runs send after every earlier send to the same member has settled. */
  private sendInOrder<T>(node: string, send: () => Promise<T>): Promise<T> {
    const previous = this.chains.get(node) ?? Promise.resolve();
    this.inFlight.set(node, (this.inFlight.get(node) ?? 0) + 1);
    const next = previous.then(send).finally(() => this.inFlight.set(node, (this.inFlight.get(node) ?? 1) - 1));
    this.chains.set(node, next.then(() => undefined, () => undefined));
    return next;
  }

  /**
   * A recovery brought another writer's entries into the log after these session batches passed
   * the session table (SessionGate), which has not read them: one of them may be a batch whose
   * earlier attempt is among those entries. They fail, nothing appended, and their retry is
   * checked against the table grown over the new entries (--etcd-restore --pipeline --seed 3033:
   * one batch at 1379 and 1382). Appends without a session go on.
   */
  private withoutSessionBatches(batch: readonly Pending[]): Pending[] {
    const kept: Pending[] = [];
    for (const pending of batch) {
      if (pending.session) pending.reject(new SessionTableRebuildingError(this.adopted + 1, this.adopted));
      else kept.push(pending);
    }
    return kept;
  }

  private async openSegment(): Promise<OpenSegment> {
    for (;;) {
      const opened = await this.createOrAdopt(this.nextRecord());
      if ('meta' in opened) return this.opened(opened);
      const before = opened.previous?.meta;
      if (before?.state === 'SEALED' && before.lastIndex === this.nextFirstIndex - 1) {
        // Rewritten where it ends (the coordinator replaced a member): create after it as it is now.
        this.previousModRevision = opened.previous?.modRevision;
        continue;
      }
      // etcd went back (restored from an older snapshot, or wiped) while this writer kept the
      // election: the records of segments it sealed since may be gone or OPEN again. Recovered
      // and re-derived from the members' copies, as at a writer's start, before any new segment
      // takes their ids or indices (--etcd-restore --pipeline --seed 1304, any pipeline depth).
      this.o.logger.warn({ log: this.o.log, segment: this.nextSegmentId - 1, epoch: this.o.epoch, state: before?.state ?? 'absent' }, 'the last segment record changed in etcd (restored?); recovering the records before opening the next segment');
      this.needsRecovery = true;
      await this.recover();
      this.needsRecovery = false;
    }
  }

  /** The record of the next segment to open: its ensemble chosen from the live members. */
  private nextRecord(): SegmentMeta {
    const { logMeta } = this.o;
    const live = new Set(this.o.liveMembers());
    // A member that just failed a send stays out of new ensembles for a while (its etcd lease
    // may take seconds to expire), unless it is needed to reach the ack quorum.
    // Wall-clock time: it is compared with the member's start time, recorded by its own process.
    const now = this.o.clock.nowMs();
    const healthy = (n: string): boolean => {
      const failedAt = this.suspects.get(n) ?? 0;
      return now - failedAt > SUSPECT_MS || (this.o.memberStartedMs?.(n) ?? 0) > failedAt;
    };
    const others = [...live].filter((n) => n !== this.o.self).sort((a, b) => Number(healthy(b)) - Number(healthy(a)) || a.localeCompare(b));
    const ordered = live.has(this.o.self) ? [this.o.self, ...others] : others;
    const preferred = ordered.filter(healthy);
    const ensemble = (preferred.length >= logMeta.ackQuorum ? preferred : ordered).slice(0, logMeta.replicationFactor);
    if (ensemble.length < logMeta.ackQuorum) throw new QuorumUnavailableError(this.o.log, ensemble.length, logMeta.ackQuorum);
    return {
      log: this.o.log,
      segmentId: this.nextSegmentId,
      ensemble,
      ackQuorum: logMeta.ackQuorum,
      state: 'OPEN',
      writerEpoch: this.o.epoch,
      firstIndex: this.nextFirstIndex,
      lastIndex: this.nextFirstIndex - 1,
      indexCount: 0,
      byteLength: 0,
      aggregate: '',
      createdMs: this.o.clock.nowMs(),
    };
  }

  private opened(opened: { meta: SegmentMeta; modRevision: number }): OpenSegment {
    const { meta } = opened;
    this.highestOpenedSegmentId = Math.max(this.highestOpenedSegmentId, meta.segmentId);
    this.current = this.lastOpened = {
      meta,
      modRevision: opened.modRevision,
      start: { segmentId: meta.segmentId, firstIndex: meta.firstIndex, createdMs: meta.createdMs },
      nextIndex: meta.firstIndex,
      byteLength: format.SEGMENT_HEADER_BYTES,
      aggregate: newAggregate(format.FORMAT_VERSION),
      degraded: false,
      failed: new Set(),
    };
    this.o.logger.info({ log: this.o.log, segment: meta.segmentId, ensemble: meta.ensemble, firstIndex: meta.firstIndex }, 'opened segment');
    return this.current;
  }

  /**
   * Creates the segment's record. When it exists already, it may be this writer's own earlier
   * create that failed without an answer but was applied by etcd (etcd restarting): such a record
   * (this epoch, OPEN, same first index; nothing was replicated under it) is adopted. Any other record
   * means another writer got there first.
   */
  private async createOrAdopt(meta: SegmentMeta): Promise<{ meta: SegmentMeta; modRevision: number } | { previous: { meta: SegmentMeta; modRevision: number } | undefined }> {
    const previousModRevision = meta.segmentId > 1 ? this.previousModRevision : undefined;
    let modRevision: number | undefined;
    try {
      modRevision = await this.o.directory.create(meta, this.o.leader, previousModRevision);
    } catch (error) {
      this.createInDoubt = meta.segmentId;
      throw error;
    }
    if (modRevision !== undefined) return { meta, modRevision };
    const records = await this.o.directory.list(this.o.log);
    const existing = records.find((s) => s.meta.segmentId === meta.segmentId);
    if (!existing) {
      const previous = records.find((s) => s.meta.segmentId === meta.segmentId - 1);
      if (previousModRevision !== undefined && previous?.modRevision !== previousModRevision) return { previous };
      throw new FencedError(this.o.log, this.o.epoch, this.o.epoch + 1); // our election key is gone
    }
    if (existing.meta.writerEpoch < this.o.epoch) {
      // An older writer, deposed but not yet told, opened this segment after this writer's
      // recovery found every segment sealed. A higher epoch always wins: recover it (fence its
      // members, seal it where a quorum holds it) before the next batch, then go on.
      this.needsRecovery = true;
      throw new ReplicationError(`segment ${meta.segmentId} was opened by an older writer (epoch ${existing.meta.writerEpoch}); recovering it first`);
    }
    // Never adopt a segment this writer had open before (e.g. one whose seal failed in etcd):
    // frames were written under it, and the new attempt would start it again from the beginning.
    const inDoubt = this.createInDoubt === meta.segmentId && this.highestOpenedSegmentId < meta.segmentId;
    if (!inDoubt || existing.meta.writerEpoch !== this.o.epoch || existing.meta.state !== 'OPEN' || existing.meta.firstIndex !== meta.firstIndex) {
      throw new FencedError(this.o.log, this.o.epoch, existing.meta.writerEpoch);
    }
    this.o.logger.info({ log: this.o.log, segment: meta.segmentId, epoch: this.o.epoch }, 'adopted a segment record created by an earlier attempt');
    return existing;
  }

  /** Seals the open segment at the committed index on its members and records it in etcd. */
  private sealCurrent(): Promise<void> {
    const segment = this.current;
    if (!segment) return Promise.resolve();
    return withSpan('seal', { 'wal.log': this.o.log, 'wal.segment': segment.meta.segmentId }, () => this.sealOpenSegment(segment));
  }

  private async sealOpenSegment(segment: OpenSegment): Promise<void> {
    this.current = undefined;
    const last = this.committed;
    const expected = last >= segment.meta.firstIndex ? checksumHex(segment.aggregate.value()) : '';
    // Chained after the member's replicate calls still in flight: a seal never overtakes them.
    const seals = await settle(segment.meta.ensemble, (node) => this.sendInOrder(node, () => this.skipFailed(segment, node) ?? this.peer(node).seal(this.o.log, segment.meta.segmentId, this.o.epoch, last, expected)));
    for (const s of seals.ok) {
      if (expected !== '' && s.value.aggregate !== expected) this.o.logger.error({ log: this.o.log, segment: segment.meta.segmentId, peer: s.node, aggregate: s.value.aggregate, expected }, 'member sealed different contents');
    }
    const agreeing = seals.ok.filter((s) => expected === '' || s.value.aggregate === expected).length;
    if (agreeing < segment.meta.ackQuorum) {
      // Never record contents an ack quorum of members does not hold: recover from what they do.
      this.needsRecovery = true;
      throw new QuorumUnavailableError(this.o.log, agreeing, segment.meta.ackQuorum);
    }
    const final: SegmentMeta = {
      ...segment.meta,
      state: 'SEALED',
      lastIndex: last,
      indexCount: last - segment.meta.firstIndex + 1,
      byteLength: segment.byteLength + format.TRAILER_BYTES,
      aggregate: checksumHex(segment.aggregate.value()),
    };
    let revision: number | undefined;
    try {
      revision = await this.o.directory.update(final, segment.modRevision);
    } catch (error) {
      // etcd unreachable: the members hold the seal but etcd still says OPEN. Before anything
      // else, the next batch recovers the segment as a new writer would (same epoch).
      this.needsRecovery = true;
      throw error;
    }
    if (revision === undefined) throw new FencedError(this.o.log, this.o.epoch, this.o.epoch + 1);
    this.nextSegmentId = segment.meta.segmentId + 1;
    this.nextFirstIndex = last + 1;
    this.previousModRevision = revision;
    this.o.logger.info({ log: this.o.log, segment: segment.meta.segmentId, lastIndex: last, sealedOn: seals.ok.length }, 'sealed segment');
  }
}

/** The highest epoch that fenced epoch, where known (this node's own store says; a remote ABORTED does not). */
function fencedEpochOf(failed: ReadonlyArray<{ error: unknown }>, epoch: number): number {
  return Math.max(epoch + 1, ...failed.map((f) => (f.error instanceof FencedError ? f.error.fencedEpoch : 0)));
}

function isFenced(error: unknown): boolean {
  if (error instanceof FencedError) return true;
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === 10; // ABORTED from a remote member: its fenced epoch is higher (src/rpc/status.ts)
}

async function settle<T>(nodes: readonly string[], call: (node: string) => Promise<T>): Promise<{ ok: Array<{ node: string; value: T }>; failed: Array<{ node: string; error: unknown }> }> {
  const results = await Promise.allSettled(nodes.map(async (node) => ({ node, value: await call(node) })));
  const ok: Array<{ node: string; value: T }> = [];
  const failed: Array<{ node: string; error: unknown }> = [];
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') ok.push(r.value);
    else failed.push({ node: nodes[i] as string, error: r.reason });
  });
  return { ok, failed };
}
