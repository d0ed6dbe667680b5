// catchUpLog on real nodes (LogStores + PeerHandlers in temporary directories) with a fake etcd
// and transport: a member that missed the end of a segment fetches it and seals where etcd says;
// a member new to a sealed segment installs the whole file, refusing a copy that does not
// verify; a member dropped from an ensemble fetches the rest too; one holding unacknowledged entries cuts them.
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeDisk } from '../../src/io/index.js';
import { type CatchUpResult, catchUpLog } from '../../src/replication/index.js';
import { checksumHex } from '../../src/wal/index.js';
import { TestCluster, type WriterUnderTest, acknowledgedBy, payloadOf, startWriter } from '../support/replication-fakes.js';

const LOG = 'events';
const SEGMENT_BYTES = 1024 * 1024;

let cluster: TestCluster;
const writers: WriterUnderTest[] = [];

function payloads(from: number, count: number): Buffer[] {
  return Array.from({ length: count }, (_, i) => payloadOf(from + i));
}

async function catchUp(node: string, fetchFile?: (from: string, segmentId: number, path: string) => Promise<void>): Promise<CatchUpResult> {
  const self = cluster.node(node);
  const store = await self.store(LOG);
  return catchUpLog({
    log: LOG,
    self: node,
    store,
    directory: cluster.directory,
    peers: cluster.network.resolverFor(node),
    logger: store.logger,
    fetchFile: fetchFile ?? ((from, segmentId, path) => cluster.fetchFile(from, LOG, segmentId, path)),
    tempDir: store.dataDir,
    disk: nodeDisk,
  });
}

async function segmentFile(node: string, segmentId: number): Promise<Buffer> {
  return readFile(cluster.node(node).segmentPath(LOG, segmentId));
}

/**
 * Segment 1 (ensemble a, b, c) holds 1..6 and is SEALED in etcd; c got 1..3 only (its sends
 * failed from 4 on) and holds segment 1 open. Segment 2 (a, b) is open with 7..8.
 */
async function memberMissesTheEndOfASegment(): Promise<void> {
  const handle = startWriter(cluster, { log: LOG, self: 'a', epoch: 1, segmentBytesMax: SEGMENT_BYTES });
  writers.push(handle);
  await handle.writer.append(payloads(1, 3));
  await acknowledgedBy(handle, ['a', 'b', 'c'], 3);
  cluster.network.fail('c', { kind: 'unavailable' });
  await handle.writer.append(payloads(4, 3));
  await handle.writer.append(payloads(7, 2));
  cluster.network.heal('c');
  expect(cluster.directory.segment(LOG, 1)).toMatchObject({ state: 'SEALED', ensemble: ['a', 'b', 'c'], lastIndex: 6 });
  expect(cluster.directory.segment(LOG, 2)).toMatchObject({ state: 'OPEN', ensemble: ['a', 'b'] });
  expect((await cluster.node('c').store(LOG)).segmentRecord(1)).toMatchObject({ state: 'open', lastIndex: 3 });
}

beforeEach(async () => {
  cluster = await TestCluster.start(['a', 'b', 'c']);
});

afterEach(async () => {
  for (const { writer } of writers.splice(0)) writer.stop();
  await cluster.close();
});

describe('catchUpLog', () => {
  it('a member that missed the end of a segment fetches the missing frames and seals at the recorded index with the recorded aggregate', async () => {
    await memberMissesTheEndOfASegment();
    const result = await catchUp('c');
    expect(result).toEqual({ segmentsSealed: 1, entriesFetched: 3, mismatched: [], behind: [] });
    const meta = cluster.directory.segment(LOG, 1);
    const record = (await cluster.node('c').store(LOG)).segmentRecord(1);
    expect(record).toMatchObject({ state: 'sealed', lastIndex: meta.lastIndex, indexCount: 6, byteLength: meta.byteLength });
    expect(checksumHex(record?.aggregateChecksum ?? 0n)).toBe(meta.aggregate);
    expect((await segmentFile('c', 1)).equals(await segmentFile('a', 1))).toBe(true);
    // Segment 2 is not c's: nothing of it is fetched.
    expect((await cluster.node('c').store(LOG)).segmentRecord(2)).toBeUndefined();
    // A second pass has nothing left to do.
    expect(await catchUp('c')).toEqual({ segmentsSealed: 0, entriesFetched: 0, mismatched: [], behind: [] });
  });

  it('a member whose peers cannot serve the missing entries stays behind and keeps its copy open', async () => {
    await memberMissesTheEndOfASegment();
    cluster.network.fail('a', { kind: 'unavailable' });
    cluster.network.fail('b', { kind: 'unavailable' });
    expect(await catchUp('c')).toEqual({ segmentsSealed: 0, entriesFetched: 0, mismatched: [], behind: [1] });
    expect((await cluster.node('c').store(LOG)).segmentRecord(1)).toMatchObject({ state: 'open', lastIndex: 3 });
    cluster.network.heal('b'); // one member suffices
    expect(await catchUp('c')).toMatchObject({ segmentsSealed: 1, entriesFetched: 3, behind: [] });
  });

  it('a member newly put in the ensemble of a sealed segment it does not hold installs the whole file', async () => {
    await memberMissesTheEndOfASegment();
    const d = await cluster.addNode('d');
    cluster.directory.edit(LOG, 1, (meta) => ({ ...meta, ensemble: ['a', 'b', 'd'] })); // the coordinator replaced c
    const result = await catchUp('d');
    expect(result).toEqual({ segmentsSealed: 1, entriesFetched: 6, mismatched: [], behind: [] });
    expect((await segmentFile('d', 1)).equals(await segmentFile('a', 1))).toBe(true);
    const store = await d.store(LOG);
    expect(store.segmentRecord(1)).toMatchObject({ state: 'sealed', firstIndex: 1, lastIndex: 6 });
    for (let index = 1; index <= 6; index += 1) expect(Buffer.from((await store.read(index)).payload).equals(payloadOf(index))).toBe(true);
    expect((await readdir(store.dataDir)).filter((name) => name.startsWith('install-'))).toEqual([]);
  });

  it('a copy that does not verify is refused, and the next member\'s copy is installed', async () => {
    await memberMissesTheEndOfASegment();
    const d = await cluster.addNode('d');
    cluster.directory.edit(LOG, 1, (meta) => ({ ...meta, ensemble: ['a', 'b', 'd'] }));
    const asked: string[] = [];
    const flipped = async (from: string, segmentId: number, path: string): Promise<void> => {
      asked.push(from);
      await cluster.fetchFile(from, LOG, segmentId, path);
      if (from !== 'a') return;
      const bytes = await readFile(path);
      bytes[bytes.byteLength - 200] = (bytes[bytes.byteLength - 200] ?? 0) ^ 0x01; // one bit, inside an entry near the end
      await writeFile(path, bytes);
    };
    expect(await catchUp('d', flipped)).toMatchObject({ segmentsSealed: 1, behind: [] });
    expect(asked).toEqual(['a', 'b']);
    expect((await segmentFile('d', 1)).equals(await segmentFile('b', 1))).toBe(true);
    expect((await d.store(LOG)).segmentRecord(1)).toMatchObject({ state: 'sealed', lastIndex: 6 });
  });

  it('a copy that does not verify from every member is refused: the segment stays behind and nothing is installed', async () => {
    await memberMissesTheEndOfASegment();
    const d = await cluster.addNode('d');
    cluster.directory.edit(LOG, 1, (meta) => ({ ...meta, ensemble: ['a', 'b', 'd'] }));
    const corrupt = async (from: string, segmentId: number, path: string): Promise<void> => {
      await cluster.fetchFile(from, LOG, segmentId, path);
      const bytes = await readFile(path);
      bytes.fill(0, 300, 340); // zeroed bytes across the second and third entries
      await writeFile(path, bytes);
    };
    expect(await catchUp('d', corrupt)).toEqual({ segmentsSealed: 0, entriesFetched: 0, mismatched: [], behind: [1] });
    const store = await d.store(LOG);
    expect(store.segmentRecord(1)).toBeUndefined();
    expect(await readdir(join(store.dataDir, 'segments'))).toEqual([]);
    expect((await readdir(store.dataDir)).filter((name) => name.startsWith('install-'))).toEqual([]);
  });

  it('a copy that verifies but is not the one etcd recorded is refused', async () => {
    await memberMissesTheEndOfASegment();
    const d = await cluster.addNode('d');
    // etcd says segment 1 ends with another aggregate (as if another writer sealed other entries).
    cluster.directory.edit(LOG, 1, (meta) => ({ ...meta, ensemble: ['a', 'b', 'd'], aggregate: '0123456789abcdef' }));
    expect(await catchUp('d')).toMatchObject({ segmentsSealed: 0, behind: [1] });
    expect((await d.store(LOG)).segmentRecord(1)).toBeUndefined();
  });

  it('a member dropped from an ensemble while it held the segment open fetches the rest and seals where the record does', async () => {
    // Sealing its prefix instead (1..3, short of the record's 6) left a copy that a recovery after
    // an etcd restore took for a seal point (test/unit/etcd-restore-recovery.test.ts).
    await memberMissesTheEndOfASegment();
    cluster.directory.edit(LOG, 1, (meta) => ({ ...meta, ensemble: ['a', 'b', 'd'], formerMembers: ['c'] }));
    const result = await catchUp('c');
    expect(result).toEqual({ segmentsSealed: 1, entriesFetched: 3, mismatched: [], behind: [] });
    const record = (await cluster.node('c').store(LOG)).segmentRecord(1);
    const meta = cluster.directory.segment(LOG, 1);
    expect(record).toMatchObject({ state: 'sealed', firstIndex: 1, lastIndex: 6, indexCount: 6 });
    expect(checksumHex(record?.aggregateChecksum ?? 0n)).toBe(meta.aggregate);
    expect((await segmentFile('c', 1)).equals(await segmentFile('a', 1))).toBe(true);
  });

  it('a member holding unacknowledged entries past the recorded end cuts them when it seals', async () => {
    // Writer A leaves 1..2 on every member and 3..4 on a only, then dies; b (epoch 9) recovers
    // the segment while a is unreachable and seals it at 2.
    const a = startWriter(cluster, { log: LOG, self: 'a', epoch: 5, segmentBytesMax: SEGMENT_BYTES, caller: 'A' });
    writers.push(a);
    await a.writer.append(payloads(1, 2));
    await acknowledgedBy(a, ['a', 'b', 'c'], 2);
    cluster.network.fail('b', { kind: 'hold' }, ['replicate']);
    cluster.network.fail('c', { kind: 'hold' }, ['replicate']);
    void a.writer.append(payloads(3, 2)).catch(() => undefined);
    await acknowledgedBy(a, ['a'], 4);
    cluster.network.kill('A');
    cluster.network.heal('b');
    cluster.network.heal('c');
    cluster.network.fail('a', { kind: 'unavailable' });
    const b = startWriter(cluster, { log: LOG, self: 'b', epoch: 9, segmentBytesMax: SEGMENT_BYTES });
    writers.push(b);
    await b.writer.whenReady();
    const meta = cluster.directory.segment(LOG, 1);
    expect(meta).toMatchObject({ state: 'SEALED', lastIndex: 2 });
    cluster.network.heal('a');

    expect(await catchUp('a')).toEqual({ segmentsSealed: 1, entriesFetched: 0, mismatched: [], behind: [] });
    const record = (await cluster.node('a').store(LOG)).segmentRecord(1);
    expect(record).toMatchObject({ state: 'sealed', lastIndex: 2 });
    expect(checksumHex(record?.aggregateChecksum ?? 0n)).toBe(meta.aggregate);
    expect((await segmentFile('a', 1)).equals(await segmentFile('b', 1))).toBe(true);
    // Then a takes part in the new writer's segments again.
    expect(await b.writer.append(payloads(3, 1))).toEqual({ firstIndex: 3, lastIndex: 3 });
    await acknowledgedBy(b, ['a'], 3);
  });

  it('a member whose sealed copy disagrees with etcd reports it as mismatched and leaves it', async () => {
    await memberMissesTheEndOfASegment();
    await catchUp('c');
    const before = await segmentFile('c', 1);
    cluster.directory.edit(LOG, 1, (meta) => ({ ...meta, aggregate: '0123456789abcdef' }));
    expect(await catchUp('c')).toEqual({ segmentsSealed: 0, entriesFetched: 0, mismatched: [1], behind: [] });
    expect((await segmentFile('c', 1)).equals(before)).toBe(true);
  });
});
