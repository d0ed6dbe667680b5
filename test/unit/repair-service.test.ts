// RepairService's give-up hold-off. Found by a container chaos run (seed 2447816637): a deleted
// segment file was detected while etcd was down, every repair round failed (the directory could
// not be read), the report of the give-up failed too (etcd down), and the 10-minute hold-off then
// kept every later scrub detection from trying again, though nobody else knew of the copy: it was
// never repaired. A give-up holds detections off only once the coordinator has the report.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { RepairService, type RecoveryEventView } from '../../src/cluster/repairs.js';
import { SeededRandom, nodeDisk, systemClock } from '../../src/io/index.js';
import type { LogStores } from '../../src/replication/index.js';

function serviceWith(report: () => Promise<void>): { service: RepairService; events: RecoveryEventView[] } {
  const service = new RepairService({
    self: 'n1',
    logs: {} as LogStores,
    directory: { list: async () => Promise.reject(new Error('etcd unreachable')) },
    replicaSource: () => {
      throw new Error('no repair gets as far as its sources here (etcd is unreachable)');
    },
    strategy: 'partial',
    roundsMax: 1,
    logger: pino({ level: 'silent' }),
    report,
    clock: systemClock,
    random: new SeededRandom(1),
    disk: nodeDisk,
  });
  const events: RecoveryEventView[] = [];
  service.onEvent((e) => events.push(e));
  return { service, events };
}

const detections = (events: readonly RecoveryEventView[]): number => events.filter((e) => e.kind === 'detected').length;

describe('a repair given up on', () => {
  it('whose report could not be recorded is tried again at the next detection', async () => {
    const { service, events } = serviceWith(async () => Promise.reject(new Error('etcd unreachable')));
    service.schedule('l', 99, 'scrub', 'ENOENT');
    expect(detections(events)).toBe(1);
    // Once the first round has given up, a new detection starts another one.
    await expect.poll(() => {
      service.schedule('l', 99, 'scrub', 'ENOENT');
      return detections(events);
    }, { timeout: 20_000 }).toBe(2);
    service.stop();
  });

  it('whose report was recorded holds later scrub detections off (the coordinator retries it)', async () => {
    const reports: string[] = [];
    const { service, events } = serviceWith(async () => void reports.push('recorded'));
    service.schedule('l', 99, 'scrub', 'ENOENT');
    await expect.poll(() => reports, { timeout: 20_000 }).toEqual(['recorded']);
    await new Promise((resolve) => setImmediate(resolve));
    service.schedule('l', 99, 'scrub', 'ENOENT');
    expect(detections(events)).toBe(1);
    service.stop();
  });
});

// `--etcd-restore --seed 1273`: n2's copy of sealed segment 36 had a latent sector error while
// etcd was wiped; every round failed ("log sim has no segment 36") and n2 reported the give-up.
// The record was then re-derived without n2 ([n1, n3]), so the coordinator's retry on n2 answered
// 'done' ("not in the segment's ensemble") and removed the report; a moment later the coordinator
// completed the short ensemble with n2, whose damaged copy it already held. The hold-off of the
// give-up still stood, so every scrub detection of that copy was ignored for 10 minutes: n2 was a
// member that could not serve 778. A repair that ends 'done' (the report is cleared) ends the hold-off.
describe('a repair given up on, then finished by the coordinator', () => {
  it('no longer holds later detections off', async () => {
    type Record = { meta: { segmentId: number; ensemble: string[]; state: string } };
    let records: Record[] | undefined;
    const reports: string[] = [];
    const service = new RepairService({
      self: 'n1',
      logs: { store: async () => ({ segmentRecord: () => undefined }) } as unknown as LogStores,
      directory: { list: async () => (records ? records as never : Promise.reject(new Error('etcd unreachable'))) },
      replicaSource: () => {
        throw new Error('no repair gets as far as its sources here');
      },
      strategy: 'partial',
      roundsMax: 1,
      logger: pino({ level: 'silent' }),
      report: async (_log, _segment, failure) => void reports.push(failure ? 'recorded' : 'cleared'),
      clock: systemClock,
      random: new SeededRandom(1),
      disk: nodeDisk,
    });
    const events: RecoveryEventView[] = [];
    service.onEvent((e) => events.push(e));
    service.schedule('l', 36, 'scrub', 'EIO');
    await expect.poll(() => reports, { timeout: 20_000 }).toEqual(['recorded']);
    await new Promise((resolve) => setImmediate(resolve));
    // The coordinator's retry: the re-derived record leaves n1 out, so there is nothing to repair.
    records = [{ meta: { segmentId: 36, ensemble: ['n2', 'n3'], state: 'SEALED' } }];
    expect((await service.repairNow('l', 36, { strategy: 'partial', dryRun: false, source: 'coordinator' })).outcome).toBe('done');
    // n1 is added to the ensemble again, and the scrubber finds its copy damaged: a new round starts.
    records = [{ meta: { segmentId: 36, ensemble: ['n2', 'n3', 'n1'], state: 'SEALED' } }];
    service.schedule('l', 36, 'scrub', 'EIO');
    expect(detections(events)).toBe(2);
    service.stop();
  });
});
