// Server streams are bounded (issue 11): a Read answer never carries more than
// READ_RESPONSE_BYTES_MAX of payload, so entries of any allowed size can be read whatever the
// batch asked for (300 entries of 200 KB in one batch used to fail with RESOURCE_EXHAUSTED,
// "Sent message larger than max"); a recovery-event watcher that stops reading is dropped with
// RESOURCE_EXHAUSTED instead of being buffered for without end. Real gRPC over 127.0.0.1, with a
// stub node that serves what the test gives it.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminClient, type NodeApi, type RecoveryEventMessage, type RpcServer, WalClient, resolveRpcLimits, startRpcServer } from '../../src/rpc/index.js';
import { READ_RESPONSE_BYTES_MAX, WATCH_UNREAD_EVENTS_MAX } from '../../src/rpc/server.js';

const ENTRY_BYTES = 200 * 1024;
const ENTRIES = 300;
let server: RpcServer;
let listener: ((event: RecoveryEventMessage) => void) | undefined;
let unsubscribed = 0;

function stubApi(): NodeApi {
  return {
    handlers: {},
    logger: pino({ level: 'silent' }),
    read: async function* (_log: string, from: number) {
      // One batch of 300 entries of 200 KB: 60 MB, past the 32 MB message limit.
      yield Array.from({ length: ENTRIES }, (_, i) => ({ index: from + i, timestampMs: 1, payload: Buffer.alloc(ENTRY_BYTES, i & 0xff), checksum: '', lost: false, lostReason: '' }));
    },
    watchEvents: (_log: string, l: (event: RecoveryEventMessage) => void) => {
      listener = l;
      return () => {
        unsubscribed += 1;
        listener = undefined;
      };
    },
  } as unknown as NodeApi;
}

beforeAll(async () => {
  server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await server?.stop();
});

describe('bounded server streams', () => {
  it('a Read of entries whose batch exceeds the message limit arrives whole, in answers below the bound', async () => {
    const client = new WalClient(`127.0.0.1:${server.port}`);
    const indices: number[] = [];
    let answers = 0;
    for await (const response of client.read('l', 1, ENTRIES, { deadlineMs: 60_000, batchMax: ENTRIES })) {
      answers += 1;
      const bytes = response.entries.reduce((n, e) => n + e.payload.byteLength, 0);
      expect(bytes).toBeLessThanOrEqual(READ_RESPONSE_BYTES_MAX);
      for (const e of response.entries) {
        expect(e.payload.byteLength).toBe(ENTRY_BYTES);
        indices.push(e.index);
      }
    }
    expect(indices).toEqual(Array.from({ length: ENTRIES }, (_, i) => i + 1));
    expect(answers).toBeGreaterThan(1);
    client.close();
  }, 60_000);

  it('a watcher that stops reading is dropped with RESOURCE_EXHAUSTED and unsubscribed; a new watch works', async () => {
    const admin = new AdminClient(`127.0.0.1:${server.port}`);
    const stream = admin.watchEvents('');
    stream.pause(); // reads nothing
    const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    await expect.poll(() => listener !== undefined, { timeout: 5_000 }).toBe(true);
    const detail = 'x'.repeat(4096);
    for (let i = 0; i < 50 * WATCH_UNREAD_EVENTS_MAX && listener; i += 1) {
      listener({ timeMs: i, node: 'n1', log: 'l', segment: i, kind: 'detected', source: 'scrub', detail });
      if (i % 500 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    expect(listener, 'the slow watcher was unsubscribed').toBeUndefined();
    stream.resume();
    const error = await ended;
    expect(grpc.status[error.code]).toBe('RESOURCE_EXHAUSTED');
    expect(error.details).toMatch(/unread/);
    expect(unsubscribed).toBeGreaterThanOrEqual(1);

    const again = admin.watchEvents('');
    again.on('error', () => undefined); // CANCELLED by the cancel() below
    const got = new Promise<{ segment_id: number }>((resolve) => again.on('data', resolve));
    await expect.poll(() => listener !== undefined, { timeout: 5_000 }).toBe(true);
    listener?.({ timeMs: 1, node: 'n1', log: 'l', segment: 7, kind: 'detected', source: 'scrub', detail: '' });
    expect((await got).segment_id).toBe(7);
    again.cancel();
    admin.close();
  }, 60_000);

  it('a Read whose caller stops taking messages is ended with RESOURCE_EXHAUSTED after streamStallMsMax, and its source released', async () => {
    let released = 0;
    const api = {
      ...stubApi(),
      read: async function* (_log: string, from: number) {
        try {
          for (let i = 0; ; i += 1) yield [{ index: from + i, timestampMs: 1, payload: Buffer.alloc(ENTRY_BYTES, i & 0xff), checksum: '', lost: false, lostReason: '' }];
        } finally {
          released += 1;
        }
      },
    } as unknown as NodeApi;
    const stalling = await startRpcServer(api, { host: '127.0.0.1', port: 0 }, undefined, { limits: resolveRpcLimits({ streamStallMsMax: 300 }) });
    const client = new WalClient(`127.0.0.1:${stalling.port}`);
    try {
      const answers = client.read('l', 1, 0, { deadlineMs: 60_000 })[Symbol.asyncIterator]();
      expect((await answers.next()).done).toBe(false);
      // Take nothing more for a while: the server's writes back up, then its stall timer fires.
      await expect.poll(() => released, { timeout: 20_000 }).toBe(1);
      let failure: grpc.ServiceError | undefined;
      try {
        for (let r = await answers.next(); !r.done; r = await answers.next());
      } catch (error) {
        failure = error as grpc.ServiceError;
      }
      expect(failure && grpc.status[failure.code]).toBe('RESOURCE_EXHAUSTED');
      expect(failure?.details).toMatch(/took no message for 300 ms/);
    } finally {
      client.close();
      await stalling.stop();
    }
  }, 60_000);
});

