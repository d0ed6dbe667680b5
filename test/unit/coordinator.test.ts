// The coordinator's two duties on fakes (its election, the segment records with etcd's CAS, the
// repair reports, and repairs that answer late or never): restoring replication away from a gone
// member never waits behind retried repair reports (issue 9, defect 9: reports were retried one at
// a time with a 300 s deadline each, inside the same round); each retry is waited for at most
// reportRetryDeadlineMs; at most repairConcurrencyMax retries run at once.
import { Gauge } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { Coordinator, type CoordinatorOptions, type RepairReportRecord, type RepairReportStore } from '../../src/cluster/coordinator.js';
import type { Leadership } from '../../src/cluster/election.js';
import type { Versioned } from '../../src/cluster/etcd.js';
import type { SegmentMeta } from '../../src/replication/index.js';
import { MemoryDirectory, SteppingClock, logMetaOf, silent, until } from '../support/replication-fakes.js';

const LOG = 'events';

class FakeElection {
  private readonly listeners: Array<(state: Leadership | undefined, isSelf: boolean) => void> = [];
  onChange(listener: (state: Leadership | undefined, isSelf: boolean) => void): void {
    this.listeners.push(listener);
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  lead(epoch = 1): void {
    for (const listener of this.listeners) listener({ leader: 'a', epoch, key: `coordinator/a-${epoch}`, createRevision: epoch }, true);
  }
  /** Another node leads now. */
  lose(epoch: number): void {
    for (const listener of this.listeners) listener({ leader: 'b', epoch, key: `coordinator/b-${epoch}`, createRevision: epoch }, false);
  }
}

class FakeReports implements RepairReportStore {
  private revision = 0;
  readonly records = new Map<string, { value: RepairReportRecord; modRevision: number }>();

  add(node: string, segmentId: number): void {
    this.revision += 1;
    this.records.set(`${LOG}/${segmentId}/${node}`, { value: { log: LOG, segmentId, node, state: 'failed', detail: 'no intact copy', attempts: 0, updatedMs: 0 }, modRevision: this.revision });
  }
  async list(): Promise<Array<Versioned<RepairReportRecord>>> {
    return [...this.records.entries()].map(([key, r]) => ({ key, value: r.value, createRevision: 1, modRevision: r.modRevision, lease: '0' }));
  }
  async remove(key: string, modRevision: number): Promise<void> {
    if (this.records.get(key)?.modRevision === modRevision) this.records.delete(key);
  }
  async update(key: string, value: RepairReportRecord, modRevision: number): Promise<void> {
    if (this.records.get(key)?.modRevision !== modRevision) return;
    this.revision += 1;
    this.records.set(key, { value, modRevision: this.revision });
  }
}

/** Repairs that answer when the test says (or never), counting how many are in flight. */
class FakeRepairs {
  inFlight = 0;
  inFlightMax = 0;
  calls = 0;
  deadlines: number[] = [];
  private readonly waiting: Array<(intact: boolean) => void> = [];
  /** Answer after this many ms (undefined: never). */
  answerAfterMs: number | undefined;

  readonly repairOn = (_node: string, _log: string, _segmentId: number, deadlineMs: number): Promise<boolean> => {
    this.calls += 1;
    this.deadlines.push(deadlineMs);
    this.inFlight += 1;
    this.inFlightMax = Math.max(this.inFlightMax, this.inFlight);
    return new Promise<boolean>((resolve) => {
      const answer = (intact: boolean): void => {
        this.inFlight -= 1;
        resolve(intact);
      };
      if (this.answerAfterMs === undefined) this.waiting.push(answer);
      else setTimeout(() => answer(true), this.answerAfterMs);
    });
  };
}

function sealed(segmentId: number, ensemble: readonly string[]): SegmentMeta {
  return { log: LOG, segmentId, ensemble, ackQuorum: 2, state: 'SEALED', writerEpoch: 1, firstIndex: segmentId * 10, lastIndex: segmentId * 10 + 9, indexCount: 10, byteLength: 1000, aggregate: '0123456789abcdef', createdMs: 1 };
}

interface Harness {
  readonly coordinator: Coordinator;
  readonly election: FakeElection;
  readonly directory: MemoryDirectory;
  readonly reports: FakeReports;
  readonly repairs: FakeRepairs;
  readonly live: Set<string>;
  readonly clock: SteppingClock;
}

const running: Coordinator[] = [];

afterEach(async () => {
  for (const coordinator of running.splice(0)) await coordinator.stop();
  listLogsHangs = [];
  listGate = undefined;
  listCalls = 0;
});

/** listLogs calls that never answer, in call order (true: this call hangs), as etcd's answer lost with no deadline. */
let listLogsHangs: boolean[] = [];
/** While set, directory.list calls wait for it (an etcd answer that comes late); listCalls counts them. */
let listGate: Promise<void> | undefined;
let listCalls = 0;

async function harness(overrides: Partial<CoordinatorOptions> = {}): Promise<Harness> {
  const election = new FakeElection();
  const directory = new MemoryDirectory();
  const reports = new FakeReports();
  const repairs = new FakeRepairs();
  const live = new Set(['a', 'b', 'c', 'd', 'e']);
  const clock = new SteppingClock();
  await directory.create(sealed(1, ['a', 'b', 'e']));
  await directory.create(sealed(2, ['b', 'c', 'd']));
  const coordinator = new Coordinator({
    self: 'a',
    election,
    directory: { listLogs: () => (listLogsHangs.shift() === true ? new Promise(() => undefined) : Promise.resolve([logMetaOf(LOG, 1024 * 1024)])), list: (log) => {
        listCalls += 1;
        return (listGate ?? Promise.resolve()).then(() => directory.list(log));
      }, update: (meta, revision) => directory.update(meta, revision) },
    reports,
    liveMembers: () => [...live].sort(),
    repairOn: repairs.repairOn,
    metrics: { underReplicatedSegments: new Gauge({ name: 'test_under_replicated', help: 'test', registers: [] }) },
    logger: silent,
    goneAfterMs: 200,
    intervalMs: 50,
    maxRecoveryAttempts: 3,
    reportRetryDeadlineMs: 60_000,
    repairConcurrencyMax: 2,
    clock,
    ...overrides,
  });
  running.push(coordinator);
  return { coordinator, election, directory, reports, repairs, live, clock };
}

describe('coordinator duties', () => {
  it('re-replication away from a gone member is not held behind report retries that never answer', async () => {
    const h = await harness();
    for (let segmentId = 10; segmentId < 16; segmentId += 1) h.reports.add('b', segmentId);
    await h.coordinator.start();
    h.election.lead();
    await until(() => h.repairs.inFlight === 2); // the retries hang (within their 60 s deadline)
    h.live.delete('e'); // e leaves; after goneAfterMs its sealed segments get a new member
    await until(() => !h.directory.segment(LOG, 1).ensemble.includes('e'), 5_000);
    expect(h.directory.segment(LOG, 1).ensemble).toEqual(['a', 'b', 'c']);
    expect(h.directory.segment(LOG, 2).ensemble).toEqual(['b', 'c', 'd']);
    expect(h.repairs.inFlight).toBe(2); // still hanging: replication did not wait for them
  });

  it('a sealed segment created with a short ensemble (a member was down when it opened) gets members up to the replication factor; an empty one does not', async () => {
    const h = await harness();
    await h.directory.create(sealed(3, ['c', 'd']));
    await h.directory.create({ ...sealed(4, ['d', 'e']), lastIndex: 39, indexCount: 0 });
    expect(await h.coordinator.restoreReplication()).toEqual({ reassigned: 1, underReplicated: 0 });
    expect(h.directory.segment(LOG, 3).ensemble).toEqual(['c', 'd', 'a']);
    expect(h.directory.segment(LOG, 4).ensemble).toEqual(['d', 'e']);
    h.live.clear();
    for (const node of ['c', 'd']) h.live.add(node);
    await h.directory.create(sealed(5, ['c', 'd']));
    expect(await h.coordinator.restoreReplication()).toMatchObject({ underReplicated: 1 }); // no node outside it: reported
    expect(h.directory.segment(LOG, 5).ensemble).toEqual(['c', 'd']);
  });

  it('a retry that gets no answer within reportRetryDeadlineMs counts as a failed attempt, and the report is abandoned after maxRecoveryAttempts', async () => {
    const h = await harness({ reportRetryDeadlineMs: 100 });
    h.reports.add('b', 10);
    for (let round = 1; round <= 3; round += 1) {
      const started = Date.now();
      expect(await h.coordinator.retryReports()).toBe(1);
      expect(Date.now() - started).toBeLessThan(5_000);
      expect([...h.reports.records.values()][0]?.value).toMatchObject({ attempts: round, state: round < 3 ? 'failed' : 'abandoned' });
      h.clock.advance(60_000); // past the report's backoff
    }
    expect([...h.reports.records.values()][0]?.value.detail).toContain('no answer within 100 ms');
    expect(h.repairs.deadlines).toEqual([100, 100, 100]);
    expect(await h.coordinator.retryReports()).toBe(0); // abandoned: an operator's decision now
  });

  it('at most repairConcurrencyMax retries run at once, and every due report is retried in one pass', async () => {
    const h = await harness();
    h.repairs.answerAfterMs = 30;
    for (let segmentId = 10; segmentId < 15; segmentId += 1) h.reports.add(segmentId % 2 === 0 ? 'b' : 'c', segmentId);
    expect(await h.coordinator.retryReports()).toBe(5);
    expect(h.repairs.calls).toBe(5);
    expect(h.repairs.inFlightMax).toBe(2);
    expect(h.reports.records.size).toBe(0); // each answered intact: its report is removed
  });

  it('stop() does not wait for retries that never answer', async () => {
    const h = await harness();
    h.reports.add('b', 10);
    await h.coordinator.start();
    h.election.lead();
    await until(() => h.repairs.inFlight === 1);
    const started = Date.now();
    await h.coordinator.stop();
    expect(Date.now() - started).toBeLessThan(2_000);
    expect([...h.reports.records.values()][0]?.value.attempts).toBe(0); // a stopped coordinator records nothing
  });

  it('a new term runs its duties even while a round of an earlier term never answered (sim --etcd-restore --seed 938)', async () => {
    const h = await harness({ roundDeadlineMs: 600_000 });
    listLogsHangs = [true]; // the first term's first round hangs for good
    await h.coordinator.start();
    h.election.lead(1);
    h.election.lose(2);
    h.election.lead(3);
    h.live.delete('e');
    await until(() => !h.directory.segment(LOG, 1).ensemble.includes('e'), 5_000);
    expect(h.directory.segment(LOG, 1).ensemble).toEqual(['a', 'b', 'c']);
  });

  it('a round that never answers is waited for at most roundDeadlineMs; the next round runs in the same term', async () => {
    const h = await harness({ roundDeadlineMs: 300 });
    listLogsHangs = [true];
    await h.coordinator.start();
    h.election.lead();
    h.live.delete('e');
    await until(() => !h.directory.segment(LOG, 1).ensemble.includes('e'), 5_000);
    expect(h.directory.segment(LOG, 1).ensemble).toEqual(['a', 'b', 'c']);
    const started = Date.now();
    await h.coordinator.stop();
    expect(Date.now() - started).toBeLessThan(2_000); // the hung call is not waited for at stop either
  });

  it('a round given up on (past roundDeadlineMs) starts no more retries: with more due reports than repairConcurrencyMax, retries of successive rounds never overlap beyond it', async () => {
    const h = await harness({ roundDeadlineMs: 200 });
    for (let segmentId = 10; segmentId < 20; segmentId += 1) h.reports.add('b', segmentId); // the retries hang (60 s deadline)
    await h.coordinator.start();
    h.election.lead();
    await until(() => h.repairs.inFlight === 2);
    await new Promise((resolve) => setTimeout(resolve, 1_000)); // several rounds time out meanwhile
    expect(h.repairs.inFlightMax).toBe(2);
    expect(h.repairs.calls).toBe(2);
  });

  it('a retry that outlives its round (given up on, same term) still records its attempt, and the reports past the limit are retried by later rounds', async () => {
    const h = await harness({ roundDeadlineMs: 100, reportRetryDeadlineMs: 300 });
    for (let segmentId = 10; segmentId < 13; segmentId += 1) h.reports.add('b', segmentId); // the retries hang
    await h.coordinator.start();
    h.election.lead();
    await until(() => [...h.reports.records.values()].every((r) => r.value.attempts === 1), 5_000);
    expect(h.repairs.calls).toBe(3); // one each: the third once a retry's wait ended (the fake's calls never end)
  });

  it('a round of a term that ended writes nothing to etcd when its late answer comes (a stale view: the new coordinator decides)', async () => {
    const h = await harness({ goneAfterMs: 200 });
    h.live.delete('e');
    await h.coordinator.start();
    h.election.lead(1);
    await until(() => listCalls >= 1); // the first round saw e missing
    let release = (): void => undefined;
    listGate = new Promise<void>((resolve) => (release = resolve));
    h.clock.advance(10_000); // the next round finds e gone long enough, and waits for etcd's answer
    const gated = listCalls;
    await until(() => listCalls > gated);
    h.election.lose(2); // another node coordinates now
    release();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(h.directory.segment(LOG, 1).ensemble).toEqual(['a', 'b', 'e']); // unchanged by the deposed coordinator
  });

  it('a scrub budgets round of a term that ended sets no budget when its late answer comes', async () => {
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const put: string[] = [];
    let listed = 0;
    const h = await harness({
      scrubBudgets: {
        publishScore: async () => undefined,
        listScores: async () => {
          listed += 1;
          await gate;
          return [{ node: 'b', riskRatio: 200, latencyFactor: 1, segmentScoreMax: 0, throttleShare: 0, deficitSeconds: 0, updatedMs: h.clock.nowMs() }];
        },
        listBudgets: async () => [],
        putBudget: async (budget) => {
          put.push(budget.node);
        },
        removeBudget: async () => undefined,
        budgetOf: async () => 1,
      },
    });
    await h.coordinator.start();
    h.election.lead(1);
    await until(() => listed >= 1);
    h.election.lose(2);
    release();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(put).toEqual([]);
  });
  it('a report whose retry ended is not retried again while the outcome is being written (its CAS still on the way to etcd)', async () => {
    const h = await harness({ roundDeadlineMs: 100 });
    h.reports.add('b', 10);
    h.repairs.answerAfterMs = 0; // the repair succeeds at once
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const remove = h.reports.remove.bind(h.reports);
    h.reports.remove = async (key, modRevision) => {
      await gate; // etcd answers the remove late: rounds after the one given up on list the report still
      return remove(key, modRevision);
    };
    await h.coordinator.start();
    h.election.lead();
    await until(() => h.repairs.calls >= 1);
    await new Promise((resolve) => setTimeout(resolve, 600)); // several rounds meanwhile
    release();
    expect(h.repairs.calls, 'the same repair was started again while the first one\'s outcome was written').toBe(1);
  });
});
