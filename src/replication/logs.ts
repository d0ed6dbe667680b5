// The logs a node keeps: one WalStore per log (replica mode) under <data-dir>/logs/<log>/, and
// the highest writer epoch the node has been fenced with for each, kept durably in EPOCH. Every
// file is reached through the injected Disk, and the stores take the same Disk and Clock.
import { join } from 'node:path';
import type { Logger } from 'pino';
import { type Clock, type Disk, isNotFound } from '../io/index.js';
import type { RecoveryMetrics } from '../recovery/index.js';
import { type AppendResult, type GoodCopySource, type SegmentStart, WalStore, checksum64, checksumHex, writeFileAtomic } from '../wal/index.js';
import { BadRequestError, FenceFileDamagedError, FencedError, UnknownLogError } from './errors.js';
import { isValidLogName } from './metadata.js';

export interface LogStoresOptions {
  readonly dataDir: string;
  readonly backupRetentionCount: number;
  readonly entryBytesMax: number;
  readonly logger: Logger;
  readonly metrics: RecoveryMetrics;
  /** Where the stores and EPOCH files live (nodeDisk in production). */
  readonly disk: Disk;
  /** The stores' entry timestamps and durations (systemClock in production). */
  readonly clock: Clock;
  /** Sources of verified copies for the recovery a store runs when it opens (replicas). */
  readonly sourcesFor?: (log: string) => readonly GoodCopySource[];
  /**
   * When a log this node kept has lost its EPOCH (missing, unreadable, or failing its checksum):
   * the highest epoch that can have fenced this node, from the cluster's records (every writer
   * and recovery records its epoch in etcd before it fences or writes; 0 when none ever did). The
   * fence is restored to it; when it fails the log does not open (the next call tries again).
   */
  readonly fenceFloor?: (log: string) => Promise<number>;
  /**
   * Whether a writer call whose caller was not verified (no identity: --insecure) may create a
   * log this node does not keep: the cluster has it (its record in etcd). None: any may (a lone
   * node, the simulator). A verified epoch holder always may: the log has a writer election.
   */
  readonly mayCreate?: (log: string) => Promise<boolean>;
  /** Called as soon as a store has opened, before any call can use it (the simulator checks what open kept). */
  readonly onOpened?: (log: string, store: WalStore) => void;
}

interface OpenLog {
  readonly store: WalStore;
  fencedEpoch: number;
  /**
   * The writer-facing operations on this log (replicate, fence, seal), one at a time in arrival
   * order, each with its epoch check inside. This is what makes a fence atomic with writes: a
   * Replicate that arrived before Fence(e) is written (and covered by Fence's answer) before
   * Fence runs; one that arrives after finds the fence raised and is refused. Without it, a
   * write checked against the old epoch could be acknowledged after Fence answered a lower
   * last index, and the new writer would seal below an acknowledged entry.
   */
  chain: Promise<void>;
  /**
   * Replicate calls queued at the end of the chain and not started yet, all of one epoch: a new
   * Replicate of that epoch joins them (group commit: one write and one fdatasync for all); any
   * other operation chained after them closes the group, so arrival order is kept.
   */
  replicateGroup?: ReplicateGroup | undefined;
}

interface ReplicateGroup {
  readonly epoch: number;
  readonly requests: Array<{ readonly start: SegmentStart; readonly frames: readonly Buffer[]; readonly resolve: (result: AppendResult) => void; readonly reject: (error: unknown) => void }>;
}

export class LogStores {
  private readonly logs = new Map<string, Promise<OpenLog>>();

  constructor(private readonly options: LogStoresOptions) {}

  /** The disk every store of this node uses (segment files are served from it too). */
  get disk(): Disk {
    return this.options.disk;
  }

  logDir(log: string): string {
    if (!isValidLogName(log)) throw new BadRequestError('log', `invalid log name '${log.slice(0, 80)}'`);
    return join(this.options.dataDir, 'logs', log);
  }

  /** The log's store, opened (and recovered) on first use; created if this node has none. */
  async store(log: string): Promise<WalStore> {
    return (await this.open(log)).store;
  }

  /**
   * The store of a log this node already keeps, for calls that only read: a log it does not
   * keep is UnknownLogError, and nothing is created (a caller cannot make directories appear).
   */
  async existingStore(log: string): Promise<WalStore> {
    if (!this.logs.has(log) && (await this.options.disk.stat(this.logDir(log))) === undefined) throw new UnknownLogError(log);
    return this.store(log);
  }

  /**
   * The log for a writer call: one this node keeps, or a new one when the caller was verified as
   * the epoch's holder, or (no identity) when the cluster has the log. Otherwise UnknownLogError,
   * and nothing is created: a refused call leaves no directory behind.
   */
  private async openForWriter(log: string, verified: boolean): Promise<OpenLog> {
    if (this.logs.has(log) || verified || (await this.options.disk.stat(this.logDir(log))) !== undefined) return this.open(log);
    if (this.options.mayCreate && !(await this.options.mayCreate(log))) throw new UnknownLogError(log);
    return this.open(log);
  }

  private open(log: string): Promise<OpenLog> {
    const dir = this.logDir(log);
    let pending = this.logs.get(log);
    if (!pending) {
      pending = (async () => {
        const { disk } = this.options;
        const existed = (await disk.stat(dir)) !== undefined;
        await disk.mkdirp(dir);
        // A new log directory is made durable in its parents before anything in it counts: a
        // crash must not drop logs/<log> (and with it a fence this node answered).
        if (!existed) {
          await disk.fsyncDir(join(this.options.dataDir, 'logs'));
          await disk.fsyncDir(this.options.dataDir);
        }
        const store = await WalStore.open(dir, {
          logName: log,
          // A replica holds whatever entries the writer sends; the writer enforces the limit.
          entryBytesMax: this.options.entryBytesMax,
          segmentBytesMax: 1024 * 1024 * 1024,
          sealOnClose: false,
          allowSegmentGaps: true,
          recovery: { backupRetentionCount: this.options.backupRetentionCount },
          // Damage found on open (say, inside the open segment) is rebuilt from the replicas.
          sources: this.options.sourcesFor?.(log) ?? [],
          logger: this.options.logger, // the store names the log in its lines itself
          metrics: this.options.metrics,
          disk,
          clock: this.options.clock,
        });
        this.options.onOpened?.(log, store);
        const fencedEpoch = await this.fenceOf(log, store, existed).catch(async (error: unknown) => {
          await store.close().catch(() => undefined);
          throw error;
        });
        return { store, fencedEpoch, chain: Promise.resolve() };
      })();
      this.logs.set(log, pending);
      pending.catch(() => this.logs.delete(log));
    }
    return pending;
  }

  /**
   * The persisted fence of a log, restored from the cluster's records when it was lost, and
   * raised to them when it is below (an older copy of the file put back: a valid fence, but
   * lower than one this node may have answered). A valid file is used as it is when the records
   * cannot be read (the check is best effort there; the file was not damaged as far as it shows).
   */
  private async fenceOf(log: string, store: WalStore, existed: boolean): Promise<number> {
    const path = join(this.logDir(log), 'EPOCH');
    const { disk } = this.options;
    const read = await readFencedEpoch(disk, path, log);
    if (typeof read === 'number') return this.raisedToRecords(log, path, read);
    // A log directory this open created was never fenced here.
    if (read === 'missing' && !existed) return 0;
    // Otherwise the fence may have been raised (a Fence answered "not present" counts toward a
    // fence quorum too): it is restored from the cluster's records, never taken for 0.
    const damage = read === 'missing' ? new FenceFileDamagedError(log, path, 'is missing') : read;
    if (!this.options.fenceFloor) {
      if (read === 'missing' && store.segmentRecords().length === 0) return 0; // a lone store (no cluster): nothing to protect
      throw damage;
    }
    let floor: number;
    try {
      floor = await this.options.fenceFloor(log);
    } catch (error) {
      throw new FenceFileDamagedError(log, path, `was lost and the cluster's records could not be read (${error instanceof Error ? error.message : String(error)})`, { cause: damage });
    }
    if (floor === 0) return 0; // no writer ever recorded an epoch for this log: none can have fenced it
    checkEpoch(floor);
    await writeFileAtomic(disk, path, this.logDir(log), encodeFence(floor));
    this.options.logger.warn({ log, epoch: floor, err: damage }, 'the fence file was lost; restored it from the epochs the cluster recorded');
    return floor;
  }

  /** A valid persisted fence, raised (durably) to the cluster's records when they are higher. */
  private async raisedToRecords(log: string, path: string, read: number): Promise<number> {
    if (!this.options.fenceFloor) return read;
    let floor: number;
    try {
      floor = await this.options.fenceFloor(log);
    } catch (error) {
      this.options.logger.warn({ log, epoch: read, err: error }, 'failed to compare the fence file with the epochs the cluster recorded; using the file');
      return read;
    }
    if (floor <= read) return read;
    checkEpoch(floor);
    await writeFileAtomic(this.options.disk, path, this.logDir(log), encodeFence(floor));
    this.options.logger.warn({ log, epoch: floor, fileEpoch: read }, 'the fence file is below the epochs the cluster recorded (an older copy?); raised it');
    return floor;
  }

  /**
   * Checks the fence file of every open log against the fence in force (kept in memory since the
   * log opened, never lower than the file, raised to the cluster's records when they are higher):
   * a file deleted, garbled or put back older is written again at once, inside the log's order of writer operations, so a restart finds the right fence.
   * Returns the logs whose file was rewritten.
   */
  async checkFences(): Promise<string[]> {
    const repaired: string[] = [];
    for (const [log, pending] of [...this.logs.entries()]) {
      const open = await pending.catch(() => undefined);
      if (!open) continue;
      // The cluster's records too: a log opened before etcd answered kept its file's fence,
      // which may be an older copy. Raising a fence to them is always safe.
      const floor = this.options.fenceFloor ? await this.options.fenceFloor(log).catch(() => 0) : 0;
      if (open.fencedEpoch === 0 && floor === 0) continue;
      open.replicateGroup = undefined; // Replicates arriving after this check run after it
      const run = open.chain.then(async () => {
        if (floor > open.fencedEpoch) {
          checkEpoch(floor);
          this.options.logger.warn({ log, epoch: floor, fenced: open.fencedEpoch }, 'the fence in force is below the epochs the cluster recorded; raised it');
          open.fencedEpoch = floor;
        }
        return this.checkFenceFile(log, open);
      });
      open.chain = run.then(
        () => undefined,
        () => undefined,
      );
      if (await run.catch((error: unknown) => (this.options.logger.warn({ log, err: error }, 'failed to check the fence file'), false))) repaired.push(log);
    }
    return repaired;
  }

  /**
   * Compares the fence file with the fence in force (run inside the log's chain): a file deleted,
   * garbled or put back older is written again from the fence in force; a higher one on disk is
   * taken in (a fence is never lowered). True when the file was rewritten.
   */
  private async checkFenceFile(log: string, open: OpenLog): Promise<boolean> {
    const path = join(this.logDir(log), 'EPOCH');
    const read = await readFencedEpoch(this.options.disk, path, log);
    if (read === open.fencedEpoch) return false;
    if (typeof read === 'number' && read > open.fencedEpoch) {
      open.fencedEpoch = read;
      return false;
    }
    if (read === 'missing' && open.fencedEpoch === 0) return false; // never fenced here
    await writeFileAtomic(this.options.disk, path, this.logDir(log), encodeFence(open.fencedEpoch));
    const found = typeof read === 'number' ? `holds ${read}` : read === 'missing' ? 'is missing' : read.message;
    this.options.logger.warn({ log, epoch: open.fencedEpoch }, `the fence file ${found}; rewrote it from the fence in force`);
    this.onFenceFileRewritten?.(log);
    return true;
  }

  /** Told of each fence file rewritten because it was missing, damaged or older (a metric, a test). */
  onFenceFileRewritten: ((log: string) => void) | undefined;

  /**
   * Runs fn on the log's store under epoch, in the log's order of writer operations: refuses an
   * epoch below the fenced one, raises (durably) the fence to a higher one, then runs fn with no
   * other writer operation of this log in between. With checkFile (Fence and Seal: a new writer
   * starting, or a segment ending), the fence file is checked first and rewritten when it was
   * damaged, so a restart after this call never depends on a damaged file; Replicate, the hot
   * path, relies on the scrubber's pass (checkFences) and on the check at open.
   */
  async withEpoch<T>(log: string, epoch: number, fn: (store: WalStore) => Promise<T>, how: { readonly verified?: boolean; readonly checkFile?: boolean } = {}): Promise<T> {
    checkEpoch(epoch);
    const open = await this.openForWriter(log, how.verified === true);
    open.replicateGroup = undefined; // Replicates arriving after this call run after it
    const run = open.chain.then(async () => {
      if (how.checkFile === true) await this.checkFenceFile(log, open);
      await this.checkAndRaiseFence(log, open, epoch);
      return fn(open.store);
    });
    open.chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Inside the log's chain: refuses an epoch below the fence, raises (durably) the fence to a higher one. */
  private async checkAndRaiseFence(log: string, open: OpenLog, epoch: number): Promise<void> {
    if (epoch < open.fencedEpoch) throw new FencedError(log, epoch, open.fencedEpoch);
    if (epoch > open.fencedEpoch) {
      await writeFileAtomic(this.options.disk, join(this.logDir(log), 'EPOCH'), this.logDir(log), encodeFence(epoch));
      open.fencedEpoch = epoch;
    }
  }

  /**
   * A writer's Replicate: store.appendFrames under epoch, in the log's order of writer operations
   * exactly as withEpoch runs it, except that Replicates of one epoch queued behind a running
   * operation (and after every other operation queued) run as one group: one epoch check inside
   * the chain, then their frames in one write and one fdatasync (WalStore.appendFrameGroups). A
   * Fence or Seal arriving meanwhile closes the group: later Replicates run after it.
   */
  async replicate(log: string, epoch: number, start: SegmentStart, frames: readonly Buffer[], how: { readonly verified?: boolean } = {}): Promise<AppendResult> {
    checkEpoch(epoch);
    const open = await this.openForWriter(log, how.verified === true);
    return new Promise<AppendResult>((resolve, reject) => {
      const joining = open.replicateGroup;
      if (joining && joining.epoch === epoch) {
        joining.requests.push({ start, frames, resolve, reject });
        return;
      }
      const group: ReplicateGroup = { epoch, requests: [{ start, frames, resolve, reject }] };
      open.replicateGroup = group;
      open.chain = open.chain.then(async () => {
        if (open.replicateGroup === group) open.replicateGroup = undefined; // started: no more joins
        try {
          await this.checkAndRaiseFence(log, open, epoch);
          const outcomes = await open.store.appendFrameGroups(group.requests);
          group.requests.forEach((request, i) => {
            const outcome = outcomes[i];
            if (outcome === undefined || outcome instanceof Error) request.reject(outcome ?? new Error('no outcome'));
            else request.resolve(outcome);
          });
        } catch (error) {
          for (const request of group.requests) request.reject(error);
        }
      });
    });
  }

  async fencedEpoch(log: string): Promise<number> {
    return (await this.open(log)).fencedEpoch;
  }

  openLogs(): string[] {
    return [...this.logs.keys()];
  }

  async closeAll(): Promise<void> {
    for (const pending of this.logs.values()) {
      const open = await pending.catch(() => undefined);
      await open?.store.close().catch((error: unknown) => this.options.logger.error({ err: error }, 'failed to close a log store'));
    }
    this.logs.clear();
  }
}

/** A writer epoch: an integer from 1 to 2^53 - 1 (etcd revisions; exact as a JS number). */
export function checkEpoch(epoch: number): number {
  if (!Number.isSafeInteger(epoch) || epoch < 1) throw new BadRequestError('epoch', `must be an integer from 1 to 2^53-1, got ${String(epoch).slice(0, 40)}`);
  return epoch;
}

/**
 * EPOCH holds `<epoch> <checksum>\n`, the checksum being the first 8 bytes of SHA3-256 over the
 * decimal epoch: a flipped digit would otherwise read as another, lower fence.
 */
export function encodeFence(epoch: number): Buffer {
  const digits = String(epoch);
  return Buffer.from(`${digits} ${checksumHex(checksum64(Buffer.from(digits)))}\n`);
}

/**
 * The persisted fence, 'missing', or the damage that makes it unusable. Unreadable or garbled is
 * damage: taking it for 0 would let a deposed writer's writes in after this node answered a newer
 * writer's Fence (DESIGN section 6, invariant 8). Files of the older format (digits alone) are read.
 */
async function readFencedEpoch(disk: Disk, path: string, log: string): Promise<number | 'missing' | FenceFileDamagedError> {
  let text: string;
  try {
    text = (await disk.readFile(path)).toString('utf8');
  } catch (error) {
    if (isNotFound(error)) return 'missing';
    return new FenceFileDamagedError(log, path, 'cannot be read', { cause: error });
  }
  // The current form, or the older one exactly as it was written (digits and a newline): a
  // truncated current file (digits alone, no newline) is damage, not an older fence.
  const match = /^(\d{1,16}) ([0-9a-f]{16})\n$/.exec(text) ?? /^(\d{1,16})\n$/.exec(text);
  const digits = match?.[1];
  const epoch = digits === undefined ? Number.NaN : Number(digits);
  const sum = match?.[2];
  if (!Number.isSafeInteger(epoch) || (sum !== undefined && sum !== checksumHex(checksum64(Buffer.from(digits as string))))) {
    return new FenceFileDamagedError(log, path, `is damaged (${JSON.stringify(text.slice(0, 40))})`);
  }
  return epoch;
}
