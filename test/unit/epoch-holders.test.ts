// EtcdEpochHolders under a flood of writer calls from one peer certificate: unknown epochs and
// re-checks of known ones are bounded (one etcd read per (log, epoch) per 250 ms, reads shared
// while in progress, a rate per caller), and a holder created since is still found.
import { describe, expect, it } from 'vitest';
import { EPOCH_HOLDERS_CACHED_MAX, EPOCH_UNKNOWN_TTL_MS, EtcdEpochHolders } from '../../src/cluster/epoch-holders.js';
import type { ClusterMetadata } from '../../src/cluster/metadata.js';
import { EpochLookupsLimitedError } from '../../src/replication/index.js';

/** A metadata store that holds one candidacy list and counts the reads of it. */
function fakeMeta(candidates: Array<{ node: string; createRevision: number; floor: number }>): { meta: ClusterMetadata; reads: () => number } {
  let reads = 0;
  const meta = {
    keys: { writerPrefix: (log: string) => `/w/${log}/` },
    list: async <T>(_prefix: string, parse: (raw: unknown) => T) => {
      reads += 1;
      await new Promise((r) => setTimeout(r, 1));
      return candidates.map((c) => ({ key: c.node, createRevision: c.createRevision, modRevision: c.createRevision, version: 1, value: parse({ node: c.node, floor: c.floor }) }));
    },
  } as unknown as ClusterMetadata;
  return { meta, reads: () => reads };
}

describe('EtcdEpochHolders bounds the etcd reads a caller can cause', () => {
  it('the same unknown epoch, 1000 times at once and then in a row, costs one read', async () => {
    const { meta, reads } = fakeMeta([{ node: 'n1', createRevision: 10, floor: 0 }]);
    let nowMs = 0;
    const holders = new EtcdEpochHolders(() => meta, { monotonicMs: () => nowMs });
    const answers = await Promise.all(Array.from({ length: 1000 }, () => holders.holderOf('l', 999, false, 'n9')));
    for (let i = 0; i < 1000; i += 1) answers.push(await holders.holderOf('l', 999, false, 'n9'));
    expect(answers.every((a) => a === undefined)).toBe(true);
    expect(reads()).toBe(1);
    nowMs += EPOCH_UNKNOWN_TTL_MS; // remembered that long only: a candidacy created since is found
    await holders.holderOf('l', 999, false, 'n9');
    expect(reads()).toBe(2);
  });

  it('distinct unknown epochs from one caller are rate limited (RESOURCE_EXHAUSTED), other callers are not', async () => {
    const { meta, reads } = fakeMeta([{ node: 'n1', createRevision: 10, floor: 0 }]);
    let nowMs = 0;
    const holders = new EtcdEpochHolders(() => meta, { monotonicMs: () => nowMs, lookupsPerSecondMax: 100, lookupsBurstMax: 200 });
    let limited = 0;
    for (let epoch = 1000; epoch < 3000; epoch += 1) {
      await holders.holderOf('l', epoch, false, 'n9').catch((error: unknown) => {
        expect(error).toBeInstanceOf(EpochLookupsLimitedError);
        limited += 1;
      });
    }
    expect(reads()).toBe(200);
    expect(limited).toBe(1800);
    expect(await holders.holderOf('l', 10, false, 'n1')).toBe('n1'); // the writer is not held up by n9's flood
    nowMs += 1000; // a second later, 100 more
    for (let epoch = 5000; epoch < 5200; epoch += 1) await holders.holderOf('l', epoch, false, 'n9').catch(() => undefined);
    expect(reads()).toBe(200 + 1 + 100);
  });

  it('re-checks of a known holder for another caller (fresh) read etcd at most once per 250 ms', async () => {
    const { meta, reads } = fakeMeta([{ node: 'n1', createRevision: 10, floor: 0 }]);
    let nowMs = 0;
    const holders = new EtcdEpochHolders(() => meta, { monotonicMs: () => nowMs });
    expect(await holders.holderOf('l', 10, false, 'n1')).toBe('n1');
    for (let i = 0; i < 500; i += 1) expect(await holders.holderOf('l', 10, true, 'n9')).toBe('n1');
    expect(reads()).toBe(1);
    nowMs += EPOCH_UNKNOWN_TTL_MS;
    await holders.holderOf('l', 10, true, 'n9');
    expect(reads()).toBe(2);
    // Not fresh: a found holder is kept for good, whatever the time.
    nowMs += 3_600_000;
    await holders.holderOf('l', 10, false, 'n1');
    expect(reads()).toBe(2);
  });

  it('a writer whose calls confirm it holds the epoch is never rate limited, even past the cache (more logs than EPOCH_HOLDERS_CACHED_MAX)', async () => {
    // Review of issue 11: the bucket was charged for every etcd read, also the reads that found
    // the caller holding the epoch. A writer of more logs than the cache keeps (--logs-max above
    // 4096; or a node taking over more than the burst of logs at once) re-reads on every call and
    // was answered RESOURCE_EXHAUSTED on its own legitimate Replicate/Fence/Seal calls.
    const { meta } = fakeMeta([{ node: 'n1', createRevision: 10, floor: 0 }]);
    const nowMs = 0; // all within one instant: no token comes back by time
    const holders = new EtcdEpochHolders(() => meta, { monotonicMs: () => nowMs, lookupsPerSecondMax: 100, lookupsBurstMax: 200 });
    let limited = 0;
    for (let pass = 0; pass < 2; pass += 1) {
      for (let i = 0; i < EPOCH_HOLDERS_CACHED_MAX + 500; i += 1) {
        try {
          expect(await holders.holderOf(`log${i}`, 10, false, 'n1')).toBe('n1');
        } catch (error) {
          if (!(error instanceof EpochLookupsLimitedError)) throw error;
          limited += 1;
        }
      }
    }
    expect(limited).toBe(0);
    // A flood of epochs the caller does not hold is still limited.
    const flood = await Promise.allSettled(Array.from({ length: 400 }, (_, i) => holders.holderOf('l', 1000 + i, false, 'n1')));
    expect(flood.filter((r) => r.status === 'rejected').length).toBeGreaterThan(0);
  }, 60_000);
});
