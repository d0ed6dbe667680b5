// Regression (adversarial review): a segment sealed empty by recovery (firstIndex F, lastIndex
// F-1) followed by one with the same firstIndex: every read of the second one failed for good.
// Run on the simulated cluster (real election, log runtimes, writer and readers).
import { expect, it } from 'vitest';
import { SeededRandom } from '../../src/io/index.js';
import { SimCluster, SIM_LOG, type SimNode } from '../../src/sim/cluster.js';
import { SimEtcd } from '../../src/sim/directory.js';
import { SimLoop } from '../../src/sim/loop.js';
import { SimNetwork } from '../../src/sim/network.js';

async function until(loop: SimLoop, cond: () => boolean, ms = 30_000): Promise<void> {
  await loop.run(loop.nowMs + ms, cond);
}

async function appendThrough(loop: SimLoop, node: SimNode, payloads: string[]): Promise<{ firstIndex: number; lastIndex: number }> {
  let result: { firstIndex: number; lastIndex: number } | undefined;
  void node.runtime!.log!.append(payloads.map((p) => Buffer.from(p)), false, 10_000).then((r) => (result = r));
  await until(loop, () => result !== undefined);
  expect(result).toBeDefined();
  return result!;
}

it('reads index F when an empty sealed segment precedes the one holding it', async () => {
  const random = new SeededRandom(1);
  const loop = new SimLoop();
  const network = new SimNetwork(loop, random.fork());
  const etcd = new SimEtcd(loop, random.fork());
  const cluster = new SimCluster(loop, network, etcd, random.fork(), 3, 8 * 1024, () => undefined);
  etcd.seed(etcd.keys.logMeta(SIM_LOG), cluster.logMeta);
  for (const node of cluster.nodes) node.start();
  await until(loop, () => cluster.writerNode() !== undefined && cluster.nodes.every((n) => n.runtime?.log !== undefined));
  const first = cluster.writerNode()!;
  await appendThrough(loop, first, ['a', 'b', 'c']);
  // The writer dies right after creating its next segment record (nothing replicated under it):
  // what a crash between createOrAdopt and the first Replicate leaves.
  const leadership = first.runtime!.election!.leadership()!;
  const segment1 = etcd.segmentRecords(SIM_LOG)[0]!.meta;
  first.crash('keep-all');
  const tool = { name: 'tool', incarnation: 1, alive: true };
  let created: number | undefined;
  void etcd
    .directoryFor(first.id, tool)
    .create({ ...segment1, segmentId: 2, firstIndex: 4, lastIndex: 3, indexCount: 0, state: 'OPEN', aggregate: '', byteLength: 0, writerEpoch: leadership.epoch }, { key: leadership.key, epoch: leadership.epoch })
    .then((revision) => (created = revision));
  await until(loop, () => created !== undefined);
  expect(created).toBeGreaterThan(0);
  // Once the dead writer's lease expires, another node recovers segment 1 (open) and 2 (empty),
  // then appends in segment 3.
  await until(loop, () => cluster.writerNode() !== undefined);
  const second = cluster.writerNode()!;
  expect(second).not.toBe(first);
  await appendThrough(loop, second, ['d', 'e']);
  // The case under test: segment 2 sealed empty, the next one starting at the same index.
  const records = etcd.segmentRecords(SIM_LOG).map((r) => r.meta);
  expect(records[1]).toMatchObject({ segmentId: 2, state: 'SEALED', firstIndex: 4, lastIndex: 3 });
  expect(records[2]).toMatchObject({ firstIndex: 4 });
  first.start();
  await until(loop, () => first.runtime?.log !== undefined);
  await loop.run(loop.nowMs + 3_000); // catch-up
  // Read the whole log through every node's LogReader (the Read RPC's path).
  const results: string[] = [];
  for (const node of cluster.nodes) {
    let out = '';
    let done = false;
    void (async () => {
      try {
        for await (const batch of node.runtime!.log!.read(1, 0, 16)) out += batch.map((e) => `${e.index}=${e.payload.toString()},`).join('');
      } catch (error) {
        out += ` FAILED: ${(error as Error).name}: ${(error as Error).message}`;
      }
    })().finally(() => (done = true));
    await until(loop, () => done);
    results.push(`${node.id}: ${out}`);
  }
  expect(results).toEqual(cluster.nodes.map((n) => `${n.id}: 1=a,2=b,3=c,4=d,5=e,`));
}, 120_000);
