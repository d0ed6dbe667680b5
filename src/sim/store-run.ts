// The single-store part of a simulation run: one WalStore (no cluster) on its own simulated
// disk, with appenders, readers and crashes of every crash mode. The store is the library most
// users embed; its promises are the same as the cluster's, on one machine: an append resolved
// is durable (survives any crash), and a read never returns an entry that a crash can take away
// (one not yet synced) or that differs from what was appended there.
import pino from 'pino';
import type { SeededRandom } from '../io/index.js';
import { RecoveryMetrics } from '../recovery/index.js';
import { WalStore } from '../wal/index.js';
import { describe } from './cluster.js';
import { CRASH_MODES, type CrashMode, HEALTHY_DISK, SimFileSystem } from './disk.js';
import { DISK_FAULT_KINDS, type DiskFaultTarget, injectDiskFault } from './disk-faults.js';
import type { SimLoop, SimProcess } from './loop.js';
import { Model } from './model.js';

const STORE_DIR = '/store';
const SEGMENT_BYTES_MAX = 8 * 1024;
/**
 * Explicit, and small against the payloads below: a group commit of large payloads spans several
 * 4 KiB pages (and is split into several write + fdatasync steps), so a crash that writes pages
 * back out of order can leave intact frames after a torn one.
 */
const GROUP_COMMIT_BYTES_MAX = 4 * 1024;
const logger = pino({ level: process.env['WAL_SIM_LOG'] ?? 'silent' });

/**
 * One append request: mostly a few small payloads; sometimes payloads of a few KiB; now and then
 * a batch of several KiB-sized payloads over 4 KiB in all (one group commit over several pages).
 */
function workloadBatch(random: SeededRandom, next: () => number): string[] {
  const roll = random.next();
  const count = roll < 0.1 ? 2 + random.int(2) : 1 + random.int(3);
  const fillerMax = roll < 0.1 ? 3 * 1024 : roll < 0.3 ? 4 * 1024 : 300;
  const fillerMin = roll < 0.1 ? 2 * 1024 : 0;
  return Array.from({ length: count }, () => `s-${next()}-${'y'.repeat(fillerMin + random.int(fillerMax - fillerMin))}`);
}

export interface StoreRunHandle {
  readonly model: Model;
  /** Stops the workload, reopens the store after the last crash and checks the final log. */
  finish(): Promise<void>;
}

export function startStoreWorkload(loop: SimLoop, random: SeededRandom, trace: (line: string) => void, countFault: (kind: string) => void, stopped: () => boolean): StoreRunHandle {
  const fs = new SimFileSystem('store', random.fork());
  const model = new Model(() => loop.nowMs);
  const metrics = new RecoveryMetrics();
  let incarnation = 0;
  let current: { process: SimProcess; store: Promise<WalStore> } | undefined;
  let sequence = 0;

  const start = (): void => {
    const process: SimProcess = { name: `store#${(incarnation += 1)}`, incarnation, alive: true };
    const disk = fs.diskFor(loop, process);
    const store = WalStore.open(STORE_DIR, {
      disk,
      clock: loop.clockFor(process),
      logger,
      metrics,
      segmentBytesMax: SEGMENT_BYTES_MAX,
      groupCommitBytesMax: GROUP_COMMIT_BYTES_MAX,
      checkpointBytes: 4 * 1024,
      recovery: { backupRetentionCount: 1 },
    });
    store.catch((error: unknown) => {
      if (!process.alive) return;
      if (fs.faults === HEALTHY_DISK) {
        model.violate('store-reopens', `the store failed to open after a crash: ${describe(error)}`);
        return;
      }
      // Open has to write (a cut torn tail, the catalog): with a full or failing disk it fails
      // cleanly, and the application tries again later.
      trace(`store open failed on a faulty disk (${describe(error)}); again later`);
      loop.schedule(50 + random.next() * 200, () => {
        if (current?.process !== process) return;
        process.alive = false;
        current = undefined;
        start();
      });
    });
    current = { process, store };
  };

  const crash = (mode: CrashMode): void => {
    if (!current) return;
    current.process.alive = false;
    current = undefined;
    fs.crash(mode);
  };

  const appender = async (): Promise<void> => {
    while (!stopped()) {
      const target = current;
      if (target) {
        const payloads = workloadBatch(random, () => (sequence += 1));
        try {
          const store = await target.store;
          const result = await store.append(payloads.map((p) => Buffer.from(p)));
          if (target.process.alive) {
            trace(`store ack ${result.firstIndex}..${result.lastIndex}`);
            model.ack(result.firstIndex, result.lastIndex, payloads);
          }
        } catch {
          model.appendsFailed += 1;
        }
      }
      await loop.sleep(random.next() * 5);
    }
  };

  const reader = async (): Promise<void> => {
    while (!stopped()) {
      const target = current;
      if (target) {
        try {
          const store = await target.store;
          const last = store.lastIndex;
          if (last >= store.firstIndex) {
            const index = store.firstIndex + random.int(last - store.firstIndex + 1);
            const entry = await store.read(index);
            if (target.process.alive) {
              trace(`store read ${index}`);
              model.read(index, entry.payload.toString(), 'store');
            }
          }
        } catch {
          model.readsFailed += 1;
        }
      }
      await loop.sleep(random.next() * 5);
    }
  };

  // Silent faults hit only what has another copy or can be rebuilt: the catalog (from the
  // segment files), backups and quarantine. The segments are the store's only copy.
  const rebuildable = (path: string): boolean => path.startsWith(`${STORE_DIR}/CATALOG`) || path.startsWith(`${STORE_DIR}/backups/`) || path.startsWith(`${STORE_DIR}/quarantine/`);
  const diskTarget: DiskFaultTarget = {
    label: 'store',
    fs,
    silentWritePaths: rebuildable,
    latentErrorFiles: () => fs.files(STORE_DIR).filter(rebuildable).map((path) => ({ path, byteLength: fs.bytesOf(path)?.byteLength ?? 0 })).filter((f) => f.byteLength > 0),
    damaged: () => undefined,
  };

  const chaos = (): void => {
    loop.schedule(200 + random.next() * 1_500, () => {
      if (stopped()) return;
      if (random.chance(0.3)) {
        injectDiskFault(random.pick(DISK_FAULT_KINDS), diskTarget, { loop, random, trace, countFault: (kind) => countFault(`store-${kind}`) });
        return chaos();
      }
      if (!current) return chaos(); // still down from the last crash
      const mode = random.pick(CRASH_MODES);
      countFault(`store-crash:${mode}`);
      trace(`store crash ${mode}`);
      crash(mode);
      loop.schedule(random.next() * 50, () => {
        if (!current) start();
      });
      chaos();
    });
  };

  start();
  for (let i = 0; i < 3; i += 1) void appender();
  void reader();
  chaos();

  return {
    model,
    async finish(): Promise<void> {
      fs.faults = HEALTHY_DISK;
      let store: WalStore | undefined;
      let failure: unknown;
      // An open that failed while the disk was faulty is tried once more on the healed disk.
      for (let attempt = 0; attempt < 2 && !store; attempt += 1) {
        if (current && attempt > 0) {
          current.process.alive = false;
          current = undefined;
        }
        if (!current) start();
        const target = current as { process: SimProcess; store: Promise<WalStore> };
        let done = false;
        target.store.then((s) => (store = s), (e: unknown) => (failure = e)).finally(() => (done = true));
        while (!done) await loop.run(loop.nowMs + 1_000, () => done);
      }
      if (!store) {
        model.violate('store-reopens', `the store failed to open at the end: ${describe(failure)}`);
        return;
      }
      const finalLog = new Map<number, string>();
      const open = store;
      const readAll = (async () => {
        for (let index = open.firstIndex; index <= open.lastIndex; index += 1) {
          const entry = await open.read(index).catch(() => undefined);
          if (entry) finalLog.set(index, entry.payload.toString());
        }
      })();
      let finished = false;
      void readAll.finally(() => (finished = true));
      while (!finished) await loop.run(loop.nowMs + 1_000, () => finished);
      model.checkFinal(finalLog, open.lastIndex);
    },
  };
}
