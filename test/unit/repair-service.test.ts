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
