// The CLI's playground ports and store summary, without starting anything: --pin-ports refuses a
// taken port with a message naming it (before etcd or a node is started), and statusOf (the
// `status --json` of a local store) summarises a validation report.
import { createServer, type Server } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PINNED_PORTS, runPlayground } from '../../src/cli/playground.js';
import { statusOf } from '../../src/cli/render.js';
import { UsageError } from '../../src/cli/exit.js';
import type { ValidationReport } from '../../src/wal/index.js';

async function hold(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined)); // taken already (by someone else): as good
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

describe('playground --pin-ports', () => {
  it('refuses a taken pinned port with one clear message, starting nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wal-playground-ports-'));
    const held = await hold(PINNED_PORTS.etcdClient);
    try {
      const printed: string[] = [];
      const run = runPlayground({ nodes: 1, json: true, insecure: true, pinPorts: true, dir }, async (text) => void printed.push(text));
      await expect(run).rejects.toThrow(UsageError);
      await expect(run).rejects.toThrow(/port 2379 \(etcd clients\) is taken.*without --pin-ports/);
      expect(printed).toEqual([]);
    } finally {
      await new Promise<void>((resolve) => (held ? held.close(() => resolve()) : resolve()));
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('statusOf', () => {
  const base: ValidationReport = { log: 'orders', dataDir: '/d', ok: true, findings: [], holes: [], segments: [], bytesScanned: 0, durationMs: 1 };

  it('an empty store: no indices (null), no segments', () => {
    expect(statusOf(base)).toEqual({ log: 'orders', dataDir: '/d', ok: true, segmentCount: 0, firstIndex: null, lastIndex: null, holeCount: 0, findingCount: 0 });
  });

  it('first and last index from the first and last segment; holes counted by index', () => {
    const summary = (segment: number, first: number, last: number) => ({ segment, state: 'sealed' as const, firstIndex: first, lastIndex: last, indexCount: last - first + 1, byteLength: 1, aggregateChecksum: '0', holes: 0 });
    const report: ValidationReport = {
      ...base,
      ok: false,
      segments: [summary(1, 1, 10), summary(2, 11, 25)],
      holes: [{ segmentId: 2, firstIndex: 12, count: 3 }],
      findings: [{ kind: 'checksum-mismatch', log: 'orders', segment: 2, detail: 'x' }],
    };
    expect(statusOf(report)).toMatchObject({ ok: false, segmentCount: 2, firstIndex: 1, lastIndex: 25, holeCount: 3, findingCount: 1 });
  });
});
