// The logs a node keeps: one WalStore per log (replica mode) under <data-dir>/logs/<log>/, and
// the highest writer epoch the node has been fenced with for each, kept durably in EPOCH. Every
// file is reached through the injected Disk, and the stores take the same Disk and Clock.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Clock, Disk } from '../io/index.js';
import type { RecoveryMetrics } from '../recovery/index.js';
import { type GoodCopySource, WalStore } from '../wal/index.js';
import { writeFileAtomic } from '../wal/index.js';
import { BadRequestError, FencedError } from './errors.js';
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
}

interface OpenLog {
  readonly store: WalStore;
  fencedEpoch: number;
  /** Raises of the fenced epoch, one at a time (they share EPOCH's temp file). */
  raising: Promise<void>;
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

  /** The log's store, opened (and recovered) on first use. */
  async store(log: string): Promise<WalStore> {
    return (await this.open(log)).store;
  }

  private open(log: string): Promise<OpenLog> {
    const dir = this.logDir(log);
    let pending = this.logs.get(log);
    if (!pending) {
      pending = (async () => {
        const { disk } = this.options;
        await disk.mkdirp(dir);
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
        const raw = await disk.readFile(join(dir, 'EPOCH')).then((bytes) => bytes.toString('utf8'), () => '0');
        const fencedEpoch = Number.parseInt(raw, 10);
        return { store, fencedEpoch: Number.isSafeInteger(fencedEpoch) ? fencedEpoch : 0, raising: Promise.resolve() };
      })();
      this.logs.set(log, pending);
      pending.catch(() => this.logs.delete(log));
    }
    return pending;
  }

  /** Refuses epochs below the fenced one; raises (durably) the fenced epoch to `epoch`. */
  async checkEpoch(log: string, epoch: number): Promise<WalStore> {
    const open = await this.open(log);
    if (epoch < open.fencedEpoch) throw new FencedError(log, epoch, open.fencedEpoch);
    if (epoch > open.fencedEpoch) {
      // Serialized: two raises at once would race on EPOCH.tmp, and a lower epoch finishing last
      // would lower the fence again. A request whose epoch was overtaken meanwhile is refused.
      const raise = open.raising.then(async () => {
        if (epoch <= open.fencedEpoch) return;
        await writeFileAtomic(this.options.disk, join(this.logDir(log), 'EPOCH'), this.logDir(log), Buffer.from(`${epoch}\n`));
        open.fencedEpoch = epoch;
      });
      open.raising = raise.catch(() => undefined);
      await raise;
      if (epoch < open.fencedEpoch) throw new FencedError(log, epoch, open.fencedEpoch);
    }
    return open.store;
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
