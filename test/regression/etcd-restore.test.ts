// Regression (issue 8 #9): etcd restored from an older snapshot, or wiped. Its revisions count
// again from below the epochs the members persisted as fences, so every new writer was fenced
// for good (sim seed 1 with --etcd-restore: log-accepts-appends). Run on the simulated cluster:
// real election, sessions, log runtimes, writer and readers over the simulated etcd.
import { expect, it } from 'vitest';
import { SeededRandom } from '../../src/io/index.js';
import { SimCluster, SIM_LOG, type SimNode } from '../../src/sim/cluster.js';
import { SimEtcd } from '../../src/sim/directory.js';
import { SimLoop } from '../../src/sim/loop.js';
import { SimNetwork } from '../../src/sim/network.js';

async function until(loop: SimLoop, cond: () => boolean, ms = 30_000): Promise<void> {
  await loop.run(loop.nowMs + ms, cond);
}

function setUp(seed: number): { loop: SimLoop; etcd: SimEtcd; cluster: SimCluster } {
  const random = new SeededRandom(seed);
  const loop = new SimLoop();
  const network = new SimNetwork(loop, random.fork());
  const etcd = new SimEtcd(loop, random.fork());
  const cluster = new SimCluster(loop, network, etcd, random.fork(), 3, 1024, () => undefined);
  etcd.seed(etcd.keys.logMeta(SIM_LOG), cluster.logMeta);
  for (const node of cluster.nodes) node.start();
  return { loop, etcd, cluster };
}

async function append(loop: SimLoop, cluster: SimCluster, payloads: string[]): Promise<{ firstIndex: number; lastIndex: number } | undefined> {
  let result: { firstIndex: number; lastIndex: number } | undefined;
  const deadline = loop.nowMs + 30_000;
  while (!result && loop.nowMs < deadline) {
    const node = cluster.writerNode() ?? (cluster.nodes[0] as SimNode);
    let settled = false;
    void node.runtime?.log?.append(payloads.map((p) => Buffer.from(p)), false, 2_000).then((r) => (result = r), () => undefined).finally(() => (settled = true));
    await until(loop, () => settled, 3_000);
    if (!result) await loop.run(loop.nowMs + 500);
  }
  return result;
}

async function readAll(loop: SimLoop, node: SimNode): Promise<string> {
  let out = '';
  let done = false;
  void (async () => {
    try {
      for await (const batch of node.runtime!.log!.read(1, 0, 64)) out += batch.map((e) => `${e.payload.toString()},`).join('');
    } catch (error) {
      out += ` FAILED: ${(error as Error).name}: ${(error as Error).message}`;
    }
  })().finally(() => (done = true));
  await until(loop, () => done);
  return out;
}

for (const kind of ['wiped', 'restored'] as const) {
  it(`a log keeps taking appends, and keeps every acknowledged entry, after etcd is ${kind}`, async () => {
    const { loop, etcd, cluster } = setUp(kind === 'wiped' ? 7 : 8);
    await until(loop, () => cluster.writerNode() !== undefined);
    const snapshot = etcd.takeSnapshot();
    const written: string[] = [];
    // Several writer changes, so the members' fences climb well above the snapshot's revision.
    for (let round = 0; round < 4; round += 1) {
      const payloads = Array.from({ length: 12 }, (_, i) => `r${round}-${i}-${'x'.repeat(60)}`);
      expect(await append(loop, cluster, payloads)).toBeDefined();
      written.push(...payloads);
      void cluster.writerNode()?.runtime?.election?.resign();
      await loop.run(loop.nowMs + 200);
      for (const node of cluster.nodes) node.runtime?.election?.rejoin();
      await until(loop, () => cluster.writerNode() !== undefined);
    }
    const fencedEpoch = cluster.writerNode()!.runtime!.election!.leadership()!.epoch;
    etcd.restore(kind === 'wiped' ? { revision: 0, kv: new Map(), leases: new Map() } : snapshot);
    if (etcd.peek(etcd.keys.logMeta(SIM_LOG)) === undefined) etcd.seed(etcd.keys.logMeta(SIM_LOG), cluster.logMeta);
    expect(etcd.revision).toBeLessThan(fencedEpoch);
    // A writer above every fence takes over (the one from before may append until it is fenced).
    const epochNow = (): number => cluster.writerNode()?.runtime?.election?.leadership()?.epoch ?? 0;
    await until(loop, () => epochNow() > fencedEpoch);
    expect(epochNow()).toBeGreaterThan(fencedEpoch);
    const after = ['after-1', 'after-2'];
    expect(await append(loop, cluster, after)).toBeDefined();
    written.push(...after);
    await loop.run(loop.nowMs + 5_000); // catch-up
    for (const node of cluster.nodes) expect(await readAll(loop, node)).toBe(written.map((p) => `${p},`).join(''));
  }, 60_000);
}
