// Copies fetched from replicas go to temporary directories in the log's directory
// (logs/<log>/fetch-XXXXXX, catch-up's install-XXXXXX; src/cluster/replica-sources.ts). A crash
// leaves them behind, each up to a whole segment: a node removes them when it starts, before it
// serves or opens any log, and leaves every other name alone (a real node, real etcd, real files).
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClusterNode } from '../../src/cluster/index.js';
import { EtcdServer } from '../support/etcd.js';
import { silent } from '../support/replication-fakes.js';

let etcd: EtcdServer | undefined;
let root = '';
let node: ClusterNode | undefined;

afterAll(async () => {
  await node?.stop().catch(() => undefined);
  await etcd?.dispose();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('fetched copies left by a crash', () => {
  it('are removed when the node starts; other names in the log directory stay (regression)', async () => {
    etcd = await EtcdServer.start();
    root = await mkdtemp(join(tmpdir(), 'wal-leftover-'));
    const dataDir = join(root, 'n1');
    const logDir = join(dataDir, 'logs', 'orders');
    for (const dir of ['fetch-Ab12Cd', 'install-xY9z0Q', 'segments', 'fetcher']) await mkdir(join(logDir, dir), { recursive: true });
    await writeFile(join(logDir, 'fetch-Ab12Cd', '00000000000000000001.wal'), Buffer.alloc(4096, 7));
    await writeFile(join(logDir, 'install-xY9z0Q', '00000000000000000002.wal'), Buffer.alloc(4096, 7));
    node = await ClusterNode.start({ id: 'n1', dataDir, listen: '127.0.0.1:0', etcd: [etcd.endpoint], logger: silent, scrubBytesPerSecondMax: 0 });
    const names = await readdir(logDir);
    expect(names.filter((n) => n.startsWith('fetch-') || n.startsWith('install-'))).toEqual([]);
    expect(names).toEqual(expect.arrayContaining(['fetcher', 'segments']));
  }, 60_000);
});
