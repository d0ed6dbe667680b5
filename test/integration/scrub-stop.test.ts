// A node stops promptly while a scrub check is paced (issue 14). The scrub reads are paced to the
// scrub rate (the configured one, times the throttle's share: as low as 1/64 of it under append
// load); a check run in the node's thread (from TypeScript sources, or the fallback after the
// scrub worker failed) used to finish its paced reads before stop() returned: a 2 MiB segment at
// 64 KiB/s held stop() for ~30 s. A real node, real etcd on 127.0.0.1, real files.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClusterNode } from '../../src/cluster/index.js';
import { EtcdServer } from '../support/etcd.js';
import { silent, until } from '../support/replication-fakes.js';

let etcd: EtcdServer | undefined;
let root = '';
let node: ClusterNode | undefined;

afterAll(async () => {
  await node?.stop().catch(() => undefined);
  await etcd?.dispose();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('node stop during a paced scrub check', () => {
  it('returns within seconds, not after the check has read its segment at the scrub rate (regression)', async () => {
    etcd = await EtcdServer.start();
    root = await mkdtemp(join(tmpdir(), 'wal-scrub-stop-'));
    const n = await ClusterNode.start({ id: 'n1', dataDir: join(root, 'n1'), listen: '127.0.0.1:0', etcd: [etcd.endpoint], logger: silent, replicationFactor: 1, segmentBytesMax: 2 * 1024 * 1024, scrubBytesPerSecondMax: 64 * 1024, scrubIntervalMs: 100 });
    node = n;
    // Past one 2 MiB segment: the first is sealed, and scrubbed from the next pass on.
    for (let i = 0; i < 40; i += 1) await n.append('paced', [Buffer.alloc(64 * 1024, i)], { createIfMissing: true, forwarded: false, deadlineMs: 10_000 });
    await until(() => (n.clusterStatus('paced').then((s) => (s.logs[0]?.segments ?? []).some((seg) => seg.state === 'SEALED'))), 20_000);
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // a check of it has begun
    const began = Date.now();
    await n.stop();
    node = undefined;
    expect(Date.now() - began).toBeLessThan(5_000);
  }, 90_000);
});
