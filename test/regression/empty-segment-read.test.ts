// Regression (adversarial review): a segment sealed empty by recovery (firstIndex F, lastIndex
// F-1) followed by one with the same firstIndex: every read of the second one failed for good.
import { expect, it } from 'vitest';
import { SeededRandom } from '../../src/io/index.js';
import { SimCluster, SIM_LOG } from '../../src/sim/cluster.js';
import { SimEtcd } from '../../src/sim/directory.js';
import { SimLoop } from '../../src/sim/loop.js';
import { SimNetwork } from '../../src/sim/network.js';

async function until(loop: SimLoop, cond: () => boolean, ms = 30_000): Promise<void> {
  await loop.run(loop.nowMs + ms, cond);
}

it('reads index F when an empty sealed segment precedes the one holding it', async () => {
  const random = new SeededRandom(1);
  const loop = new SimLoop();
  const network = new SimNetwork(loop, random.fork());
  const etcd = new SimEtcd(loop, random.fork());
  const trace: string[] = [];
  const cluster = new SimCluster(loop, network, etcd, random.fork(), 3, 8 * 1024, (l) => trace.push(l));
  for (const node of cluster.nodes) node.start();
  const [n1, n2] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0]];
  cluster.elect(n1, 0);
  let acked: { firstIndex: number; lastIndex: number } | undefined;
  await until(loop, () => n1.runtime?.writer?.isReady === true);
  void n1.runtime!.writer!.append([Buffer.from('a'), Buffer.from('b'), Buffer.from('c')]).then((r) => (acked = r));
  await until(loop, () => acked !== undefined);
  // The writer dies right after creating its next segment record (nothing replicated under it):
  // what a crash between createOrAdopt and the first Replicate leaves.
  const records = etcd.snapshotOf(SIM_LOG);
  const first = records[0]!.meta;
  // seal segment 1 as its writer would, then an OPEN segment 2 with no frames anywhere
  let created = false;
  void (async () => {
    const dir = etcd.directoryFor(n1.runtime!.process);
    n1.runtime!.writer!.stop();
    await dir.create({ ...first, segmentId: 2, firstIndex: 4, lastIndex: 3, indexCount: 0, state: 'OPEN', aggregate: '', byteLength: 0, writerEpoch: cluster.writerEpoch }, { key: 'x', epoch: cluster.writerEpoch });
    created = true;
  })();
  await until(loop, () => created);
  cluster.elect(n2, 0); // recovers segment 1 (open) and 2 (empty), then appends in segment 3
  await until(loop, () => n2.runtime?.writer?.isReady === true);
  let second: { firstIndex: number; lastIndex: number } | undefined;
  void n2.runtime!.writer!.append([Buffer.from('d'), Buffer.from('e')]).then((r) => (second = r));
  await until(loop, () => second !== undefined);
  // Read the whole log through every node's LogReader (the Read RPC's path).
  const results: string[] = [];
  for (const node of cluster.nodes) {
    const runtime = node.runtime!;
    let out = '';
    let done = false;
    void (async () => {
      const reader = await node.readerOf(runtime);
      try {
        for await (const batch of reader.read(1, 0, 16)) out += batch.map((e) => `${e.index}=${e.payload.toString()}`).join(',') + ';';
      } catch (error) {
        out += ` FAILED: ${(error as Error).name}: ${(error as Error).message}`;
      }
    })().finally(() => (done = true));
    await until(loop, () => done);
    results.push(`${node.id}: ${out}`);
  }
  expect(results.every((r) => !r.includes('FAILED'))).toBe(true);
}, 120_000);
