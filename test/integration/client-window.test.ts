// WalClient keeps a session's unanswered batches within half of what the writer remembers per
// session (SESSION_DEFAULTS.batchesPerSessionMax): batches after a slow one wait for it instead of
// pushing its outcome out of the writer's memory (a retry of it would then be refused as too old,
// its outcome unknown). Real gRPC over 127.0.0.1 with a stub node that holds batch 1.
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WalClient } from '../../src/client/index.js';
import { SESSION_DEFAULTS } from '../../src/replication/index.js';
import { type NodeApi, type RpcServer, startRpcServer } from '../../src/rpc/index.js';

let server: RpcServer;
let releaseFirst = (): void => undefined;
const firstHeld = new Promise<void>((resolve) => (releaseFirst = resolve));
/** Sequences in the order they reached the node, and how many were unanswered at that moment. */
const arrivals: Array<{ sequence: number; oldestUnanswered: number }> = [];
const unanswered = new Set<number>();
let nextIndex = 1;

function stubApi(): NodeApi {
  return {
    handlers: {},
    logger: pino({ level: 'silent' }),
    clusterStatus: async () => ({ cluster: 'c', node: 'n1', coordinator: 'n1', members: [{ id: 'n1', address: `127.0.0.1:${server.port}`, startedMs: 1, version: 'test', metricsUrl: '' }], logs: [] }),
    append: async (_log: string, payloads: readonly Uint8Array[], options: { session?: { sequence: number } }) => {
      const sequence = options.session?.sequence ?? 0;
      unanswered.add(sequence);
      arrivals.push({ sequence, oldestUnanswered: Math.min(...unanswered) });
      if (sequence === 1) await firstHeld;
      unanswered.delete(sequence);
      const firstIndex = nextIndex;
      nextIndex += payloads.length;
      return { firstIndex, lastIndex: nextIndex - 1 };
    },
  } as unknown as NodeApi;
}

beforeAll(async () => {
  server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await server?.stop();
});

describe('WalClient session window', () => {
  it('never has a batch more than half the remembered outcomes ahead of the oldest unanswered one', async () => {
    const window = Math.floor(SESSION_DEFAULTS.batchesPerSessionMax / 2);
    const client = await WalClient.connect({ targets: [`127.0.0.1:${server.port}`], log: 'l', insecure: true, deadlineMs: 30_000 });
    try {
      const batches = Array.from({ length: 3 * window }, (_, i) => client.append([Buffer.from(`batch-${i}`)]));
      await expect.poll(() => arrivals.length, { timeout: 10_000 }).toBe(window);
      // Batch 1 is held: nothing past the window was sent meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(arrivals.length).toBe(window);
      releaseFirst();
      await Promise.all(batches);
      expect(arrivals.map((a) => a.sequence).sort((a, b) => a - b)).toEqual(Array.from({ length: 3 * window }, (_, i) => i + 1));
      for (const a of arrivals) expect(a.sequence - a.oldestUnanswered).toBeLessThan(window);
    } finally {
      client.close();
    }
  }, 60_000);
});
