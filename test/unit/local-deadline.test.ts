// A node's own store that hangs (issue 9, defect 5): calls a node made to its own store had no
// deadline while remote members have the RPC deadline, so with a hung local fsync the writer
// blocked, recovery waited forever on its own Fence, appends never answered, and the node kept its
// lease and the writer role. Here, on real stores whose fdatasyncs the test holds (the fakes of
// test/support/replication-fakes.ts): a local call past the deadline rejects as DEADLINE_EXCEEDED
// without cancelling the store's operation; the writer goes on with the other members; a new
// writer's recovery ends; and a LogRuntime whose store hangs stops its writer and resigns until
// the store answers again.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalPeer } from '../../src/cluster/local-peer.js';
import { LogRuntime, type LogRuntimeContext, type WriterElection } from '../../src/cluster/log-runtime.js';
import type { Leadership } from '../../src/cluster/election.js';
import { SeededRandom, systemClock } from '../../src/io/index.js';
import { NodeMetrics } from '../../src/observability/index.js';
import { RecoveryMetrics } from '../../src/recovery/index.js';
import { LogWriter, NotWriterError, type PeerApi, type PeerResolver } from '../../src/replication/index.js';
import { isServiceError, toStatus } from '../../src/rpc/index.js';
import { StoreFailedError, format } from '../../src/wal/index.js';
import { ENTRY_BYTES_MAX, TestCluster, logMetaOf, payloadOf, silent, until } from '../support/replication-fakes.js';

const LOG = 'events';
// Wall-clock, and generous: on a loaded machine a healthy local call (a real fsync) can take a few
// hundred milliseconds, and must not be taken for a hung one.
const DEADLINE_MS = 1_500;
const SEGMENT_BYTES = 1024 * 1024;
/** How long a read waits for a recovering writer on its node here. */
const READ_WAIT_MS = 300;

let cluster: TestCluster;
const cleanups: Array<() => unknown> = [];

beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'b', 'c']);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await cluster.close();
});

/** Node self's resolver, its own store behind a LocalPeer (as src/cluster/node.ts builds it). */
function resolverWithLocalPeer(self: string, local: LocalPeer): PeerResolver {
  const network = cluster.network.resolverFor(self);
  return (id) => (id === self ? local : network(id));
}

function localPeerOf(self: string): LocalPeer {
  const direct = cluster.network.resolverFor(self)(self) as PeerApi;
  return new LocalPeer(direct, { deadlineMs: DEADLINE_MS, clock: systemClock });
}

function frame(index: number): Buffer {
  return format.encodeEntry({ index, timestampMs: 1, flags: 0, payload: payloadOf(index) }).frame;
}

function writerOn(self: string, epoch: number, peers: PeerResolver): LogWriter {
  const writer = new LogWriter({
    log: LOG,
    self,
    epoch,
    logMeta: logMetaOf(LOG, SEGMENT_BYTES),
    directory: cluster.directory,
    peers,
    liveMembers: () => ['a', 'b', 'c'],
    logger: silent,
    clock: systemClock,
    onCommitted: () => undefined,
    groupCommitBytesMax: 256 * 1024,
    entryBytesMax: ENTRY_BYTES_MAX,
  });
  cleanups.push(() => writer.stop());
  return writer;
}

describe('local peer deadline', () => {
  it('a local call whose fsync hangs rejects at the RPC deadline as DEADLINE_EXCEEDED, and the store still completes it', async () => {
    const local = localPeerOf('a');
    const changes: boolean[] = [];
    local.onChange((log, failing) => log === LOG && changes.push(failing));
    cluster.node('a').disk.holdDatasyncs();
    const started = Date.now();
    const error: unknown = await local.replicate(LOG, 1, { segmentId: 1, firstIndex: 1, createdMs: 1 }, [frame(1)], 0).then(
      () => new Error('answered while its fsync was held'),
      (e: unknown) => e,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(DEADLINE_MS - 5);
    expect(isServiceError(error)).toBe(true);
    expect(toStatus(error).code).toBe(4); // DEADLINE_EXCEEDED, as grpc-js reports a remote call's
    expect(local.failing(LOG)).toBe(true);
    expect(changes).toEqual([true]);
    // Not cancelled: once the fsync returns, the store has the entry and the log is healthy again.
    cluster.node('a').disk.releaseDatasyncs();
    await until(() => !local.failing(LOG));
    expect((await cluster.node('a').store(LOG)).segmentRecord(1)).toMatchObject({ state: 'open', lastIndex: 1 });
    expect(changes).toEqual([true, false]);
  });

  it('calls that answer in time pass through unchanged (answers and errors)', async () => {
    const local = localPeerOf('a');
    expect(await local.replicate(LOG, 1, { segmentId: 1, firstIndex: 1, createdMs: 1 }, [frame(1)], 0)).toEqual({ lastIndex: 1 });
    const refused: unknown = await local.replicate(LOG, 1, { segmentId: 1, firstIndex: 1, createdMs: 1 }, [frame(3)], 0).catch((e: unknown) => e);
    expect(toStatus(refused).code).toBe(9); // FAILED_PRECONDITION: an index gap, the store's own answer
    expect(local.failing(LOG)).toBe(false);
  });

  it('a store that failed for good counts as failing until a call to it succeeds', async () => {
    let fail = true;
    const inner: PeerApi = {
      replicate: async () => {
        if (fail) throw new StoreFailedError({ cause: new Error('EIO') });
        return { lastIndex: 1 };
      },
      fence: async () => ({ present: false, sealed: false, firstIndex: 0, lastIndex: 0, indexCount: 0, byteLength: 0, aggregate: '' }),
      seal: async () => ({ present: false, sealed: false, firstIndex: 0, lastIndex: 0, indexCount: 0, byteLength: 0, aggregate: '' }),
      readFrames: async () => ({ frames: [], faulty: [], lastIndex: 0, sealed: false, aggregate: '' }),
    };
    const local = new LocalPeer(inner, { deadlineMs: DEADLINE_MS, clock: systemClock });
    await expect(local.replicate(LOG, 1, { segmentId: 1, firstIndex: 1, createdMs: 1 }, [frame(1)], 0)).rejects.toBeInstanceOf(StoreFailedError);
    expect(local.failing(LOG)).toBe(true);
    expect(local.failing('other')).toBe(false);
    fail = false;
    await local.replicate(LOG, 1, { segmentId: 1, firstIndex: 1, createdMs: 1 }, [frame(1)], 0);
    expect(local.failing(LOG)).toBe(false);
  });
});

describe('a writer whose own store hangs', () => {
  it('keeps answering appends from the other members instead of blocking behind its own fsync', async () => {
    const local = localPeerOf('a');
    const writer = writerOn('a', 1, resolverWithLocalPeer('a', local));
    await writer.append([payloadOf(1)]);
    cluster.node('a').disk.holdDatasyncs();
    // More batches than a member may have in flight (8): without a local deadline the writer
    // waited for its own send chain, which never settles.
    const started = Date.now();
    for (let n = 2; n <= 14; n += 1) await writer.append([payloadOf(n)]);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(local.failing(LOG)).toBe(true);
    // The segment a was failing in is sealed by b and c; the next one leaves a out.
    expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED' });
    expect(cluster.directory.snapshot(LOG).at(-1)?.meta.ensemble).not.toContain('a');
  });

  it('a new writer whose own Fence hangs recovers the open segment from the other members', async () => {
    const previous = writerOn('b', 1, cluster.network.resolverFor('b'));
    await previous.append([payloadOf(1), payloadOf(2)]);
    cluster.node('a').disk.holdDatasyncs();
    await previous.append([payloadOf(3)]); // b and c acknowledge; a's copy waits on its fsync
    previous.stop();
    // a's Fence is queued behind its hung append (one order of writer operations per log).
    const local = localPeerOf('a');
    const writer = writerOn('a', 2, resolverWithLocalPeer('a', local));
    await writer.whenReady();
    expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', lastIndex: 3, writerEpoch: 2 });
    expect(local.failing(LOG)).toBe(true);
  });
});

/** The writer election as LogRuntime sees it; resign() hands the role to b as etcd would. */
class FakeWriterElection implements WriterElection {
  state: Leadership | undefined;
  resigned = 0;
  rejoined = 0;
  started = false;
  private readonly listeners: Array<(state: Leadership | undefined, isSelf: boolean) => void> = [];
  constructor(private readonly self: string) {}
  onChange(listener: (state: Leadership | undefined, isSelf: boolean) => void): void {
    this.listeners.push(listener);
  }
  async start(): Promise<void> {
    this.started = true;
  }
  async stop(): Promise<void> {}
  leadership(): Leadership | undefined {
    return this.state;
  }
  isLeader(): boolean {
    return this.state?.leader === this.self;
  }
  async resign(): Promise<void> {
    this.resigned += 1;
    this.elect('b', (this.state?.epoch ?? 0) + 1);
  }
  rejoin(): void {
    this.rejoined += 1;
  }
  async outbid(): Promise<void> {}
  elect(leader: string, epoch: number): void {
    this.state = { leader, epoch, key: `writer/${leader}-${epoch}`, createRevision: epoch };
    for (const listener of this.listeners) listener(this.state, leader === this.self);
  }
}

/** A LogRuntime on node a, its own store behind a LocalPeer, with a fake writer election. */
async function runtimeOnA(forward?: LogRuntimeContext['forwardAppend'], overrides: Partial<LogRuntimeContext> = {}, start = true): Promise<{ runtime: LogRuntime; election: FakeWriterElection; local: LocalPeer; forwarded: string[] }> {
  const a = cluster.node('a');
    const local = localPeerOf('a');
    const election = new FakeWriterElection('a');
    const forwarded: string[] = [];
    const runtime = new LogRuntime(
      {
        self: 'a',
        watchSegments: async () => async () => undefined,
        writerElection: () => election,
        directory: cluster.directory,
        localStore: local,
        handlers: a.handlers,
        peers: resolverWithLocalPeer('a', local),
        liveMembers: () => ['a', 'b', 'c'],
        forwardAppend: async (address, log, payloads, deadlineMs, session) => {
          forwarded.push(address);
          if (forward) return forward(address, log, payloads, deadlineMs, session);
          return { firstIndex: 100, lastIndex: 99 + payloads.length };
        },
        remoteCommitted: async () => 0,
        addressOf: (node) => `${node}:1`,
        memberStartedMs: () => undefined,
        metrics: new NodeMetrics(new RecoveryMetrics(), { node: 'a', cluster: 'test' }),
        logger: silent,
        groupCommitBytesMax: 256 * 1024,
        entryBytesMax: ENTRY_BYTES_MAX,
        catchUpIntervalMs: 60_000,
        readWaitForWriterMs: READ_WAIT_MS,
        fetchFile: async () => {
          throw new Error('not used');
        },
        onDamage: () => undefined,
        clock: systemClock,
        random: new SeededRandom(5),
        disk: a.disk,
        ...overrides,
      },
      logMetaOf(LOG, SEGMENT_BYTES),
      await a.store(LOG),
    );
  cleanups.push(() => runtime.stop());
  if (start) await runtime.start();
  return { runtime, election, local, forwarded };
}

describe('a LogRuntime whose own store hangs', () => {
  it('stops its writer and resigns, so appends go to the next writer; it campaigns again once the store answers', async () => {
    const a = cluster.node('a');
    const { runtime, election, local, forwarded } = await runtimeOnA();
    cluster.directory.leaderEpoch = 1;
    election.elect('a', 1);
    expect(await runtime.append([payloadOf(1)], false, 5_000)).toEqual({ firstIndex: 1, lastIndex: 1 });

    a.disk.holdDatasyncs();
    await runtime.append([payloadOf(2)], false, 5_000); // b and c acknowledge it
    await until(() => election.resigned === 1); // a's own send overran the deadline
    expect(election.isLeader()).toBe(false);
    expect(await runtime.append([payloadOf(3)], false, 5_000)).toMatchObject({ firstIndex: 100 });
    expect(forwarded).toEqual(['b:1']);
    // Elected again while the store still hangs: no writer starts.
    election.elect('a', 3);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(runtime.committedIndex()).toBeLessThan(3);

    a.disk.releaseDatasyncs();
    await until(() => election.rejoined === 1);
    expect(local.failing(LOG)).toBe(false);
  });
});

describe('a LogRuntime whose first catch-up hangs', () => {
  it('starts (campaigns, and lets its node register) once startCatchUpWaitMs passed, although a fetch of a segment it lacks has not answered; the catch-up goes on', async () => {
    // Segment 1 was sealed on b and c while a was down; its record names a, so a copies it whole.
    const start = { segmentId: 1, firstIndex: 1, createdMs: 1 };
    let sealed = { byteLength: 0, aggregate: '' };
    for (const node of ['b', 'c']) {
      await cluster.node(node).handlers.replicate(LOG, 1, start, [frame(1), frame(2), frame(3)], 0);
      sealed = await cluster.node(node).handlers.seal(LOG, 1, 1, 3, '');
    }
    await cluster.directory.create({ log: LOG, segmentId: 1, ensemble: ['a', 'b', 'c'], ackQuorum: 2, state: 'SEALED', writerEpoch: 1, firstIndex: 1, lastIndex: 3, indexCount: 3, byteLength: sealed.byteLength, aggregate: sealed.aggregate, createdMs: 1 });
    // The member asked first hangs the copy (a FetchSegment waiting for its 60 s deadline).
    let release = (): void => undefined;
    const fetchFile = (node: string, log: string, segmentId: number, path: string): Promise<void> =>
      new Promise<void>((resolve) => (release = resolve)).then(() => cluster.fetchFile(node, log, segmentId, path));
    const { runtime, election } = await runtimeOnA(undefined, { fetchFile, startCatchUpWaitMs: 300 }, false);
    cleanups.push(() => release()); // runs before the runtime's stop, which waits for its catch-up
    const began = Date.now();
    const outcome = await Promise.race([runtime.start().then(() => 'started'), new Promise((resolve) => setTimeout(() => resolve('still catching up'), 5_000))]);
    expect(outcome).toBe('started');
    expect(Date.now() - began).toBeGreaterThanOrEqual(290);
    expect(election.started).toBe(true);
    expect((await cluster.node('a').store(LOG)).segmentRecord(1)).toBeUndefined();
    // The catch-up it did not wait for completes once the member answers.
    release();
    await until(async () => (await cluster.node('a').store(LOG)).segmentRecord(1)?.state === 'sealed');
  });
});

/** An old writer's open segment 1 (epoch 1) with b and c held: a is elected (epoch 2) and its writer's recovery waits on them. */
async function electedOnAWhileOthersHold(): Promise<LogRuntime> {
  await cluster.directory.create({ log: LOG, segmentId: 1, ensemble: ['a', 'b', 'c'], ackQuorum: 2, state: 'OPEN', writerEpoch: 1, firstIndex: 1, lastIndex: 0, indexCount: 0, byteLength: 0, aggregate: '', createdMs: 1 });
  cluster.network.fail('b', { kind: 'hold' });
  cluster.network.fail('c', { kind: 'hold' });
  const { runtime, election } = await runtimeOnA();
  cluster.directory.leaderEpoch = 2;
  election.elect('a', 2);
  return runtime;
}

describe('a LogRuntime whose writer is still recovering', () => {
  it('answers an append at its deadline (UNAVAILABLE), not whenever the writer is ready, and queues nothing', async () => {
    // An old writer's open segment: the new writer must fence a quorum before it is ready, and
    // b and c do not answer (held).
    const runtime = await electedOnAWhileOthersHold();
    const error = await runtime.append([payloadOf(1)], false, 300).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(NotWriterError);
    expect(toStatus(error).code).toBe(14); // UNAVAILABLE: the client retries
    expect(runtime.committedIndex()).toBe(0);

    cluster.network.heal('b');
    cluster.network.heal('c');
    expect(await runtime.append([payloadOf(2)], false, 10_000)).toEqual({ firstIndex: 1, lastIndex: 1 });
  });

  it('answers a read to the committed end UNAVAILABLE while it recovers (issue 9 #6: an empty, successful stream), then the entries once ready', async () => {
    // Entries 1..3 on every member of an old writer's open segment; no member was told they
    // were committed (as after a restart: a node's committed index lives in memory).
    const start = { segmentId: 1, firstIndex: 1, createdMs: 1 };
    for (const node of ['a', 'b', 'c']) await cluster.node(node).handlers.replicate(LOG, 1, start, [frame(1), frame(2), frame(3)], 0);
    const runtime = await electedOnAWhileOthersHold();
    const readAll = async (): Promise<number[]> => {
      const indices: number[] = [];
      for await (const batch of runtime.read(1, 0, 16)) indices.push(...batch.map((e) => e.index));
      return indices;
    };
    await new Promise((resolve) => setTimeout(resolve, 100)); // its writer starts; its recovery waits on b and c
    const started = Date.now();
    const error = await readAll().then((indices) => indices, (e: unknown) => e);
    expect(error).toBeInstanceOf(NotWriterError);
    expect(toStatus(error).code).toBe(14); // UNAVAILABLE: the client retries
    expect(Date.now() - started).toBeGreaterThanOrEqual(READ_WAIT_MS - 5);

    cluster.network.heal('b');
    cluster.network.heal('c');
    await until(async () => (await readAll().catch(() => [])).length === 3, 10_000);
    expect(await readAll()).toEqual([1, 2, 3]);
  });
});

describe('exactly-once appends through a LogRuntime (issue 12)', () => {
  const session = { sessionId: '5e55'.repeat(8), sequence: 1 };

  it('a forwarded append answered DEADLINE_EXCEEDED is not retried without a session (the writer may have appended it), and is with one', async () => {
    const sessions: Array<unknown> = [];
    let calls = 0;
    const { runtime, election, forwarded } = await runtimeOnA(async (_address, _log, payloads, _deadlineMs, s) => {
      sessions.push(s);
      calls += 1;
      if (calls <= 2) throw Object.assign(new Error('deadline exceeded'), { code: 4 });
      return { firstIndex: 100, lastIndex: 99 + payloads.length };
    });
    election.elect('b', 1);
    await expect(runtime.append([payloadOf(1)], false, 5_000)).rejects.toMatchObject({ code: 4 });
    expect(forwarded).toHaveLength(1);
    expect(await runtime.append([payloadOf(1)], false, 5_000, session)).toEqual({ firstIndex: 100, lastIndex: 100 });
    expect(forwarded).toHaveLength(3);
    expect(sessions.slice(1)).toEqual([session, session]);
  });

  it('a session batch sent again is answered with its original indices, also by the next writer, which rebuilds the table from the log', async () => {
    const { runtime, election } = await runtimeOnA();
    cluster.directory.leaderEpoch = 1;
    election.elect('a', 1);
    expect(await runtime.append([payloadOf(1), payloadOf(2)], false, 5_000, session)).toEqual({ firstIndex: 1, lastIndex: 2 });
    expect(await runtime.append([payloadOf(1), payloadOf(2)], false, 5_000, session)).toEqual({ firstIndex: 1, lastIndex: 2 });
    expect(await runtime.append([payloadOf(3)], false, 5_000)).toEqual({ firstIndex: 3, lastIndex: 3 });
    // A new writer (a higher epoch): its table starts empty and is rebuilt from the session frames.
    cluster.directory.leaderEpoch = 2;
    election.elect('a', 2);
    expect(await runtime.append([payloadOf(1), payloadOf(2)], false, 10_000, session)).toEqual({ firstIndex: 1, lastIndex: 2 });
    expect(await runtime.append([payloadOf(4)], false, 5_000, { ...session, sequence: 2 })).toEqual({ firstIndex: 4, lastIndex: 4 });
    expect(runtime.committedIndex()).toBe(4);
    const read: string[] = [];
    for await (const batch of runtime.read(1, 0, 100)) for (const e of batch) read.push(e.payload.toString('hex'));
    expect(read).toEqual([payloadOf(1), payloadOf(2), payloadOf(3), payloadOf(4)].map((p) => Buffer.from(p).toString('hex')));
  });
});
