// A capped server stream's slot (src/rpc/limits.ts) comes back in every way a stream can end,
// including those where grpc-js tells the server nothing more (the adversarial review of the
// stream slots): a source step that never settles after the caller went, a caller with no deadline
// that stops reading (its stream is failed after streamStallMsMax, but the status waits behind the
// unread messages and grpc-js never emits 'close'), a handler that throws before it returns its
// work, and a message that fails to convert (the source must still be released: for FetchSegment,
// the segment file's descriptor). Real gRPC over 127.0.0.1, a stub node serving what each test gives.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { BadRequestError } from '../../src/replication/index.js';
import { type NodeApi, type ReadEntryView, type RpcServer, type ValidateMessageView, loadProto, resolveRpcLimits, startRpcServer } from '../../src/rpc/index.js';
import { InFlightCalls, limitService } from '../../src/rpc/limits.js';

const STALL_MS = 300;
const PAYLOAD_BYTES = 256 * 1024;

let server: RpcServer | undefined;
const clients: grpc.Client[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await server?.stop();
  server = undefined;
});

function message(segment: number): ValidateMessageView {
  return { node: 'n1', log: 'l', segment, kind: 'corrupt', entryIndex: 1, indexCount: 1, offsetBytes: 0, expectedChecksum: '', actualChecksum: '', detail: '', done: false, segmentsChecked: 0, bytesChecked: 0 };
}

function entry(index: number): ReadEntryView {
  return { index, timestampMs: 1, payload: Buffer.alloc(PAYLOAD_BYTES, index & 0xff), checksum: '', lost: false, lostReason: '' };
}

async function serve(api: Partial<NodeApi>, inFlightCallsMax: { read?: number; validate?: number }): Promise<{ wal: grpc.Client; admin: grpc.Client }> {
  server = await startRpcServer({ handlers: {}, logger: pino({ level: 'silent' }), ...api } as unknown as NodeApi, { host: '127.0.0.1', port: 0 }, undefined, {
    limits: resolveRpcLimits({ inFlightCallsMax, streamStallMsMax: STALL_MS }),
  });
  const { proto } = loadProto();
  const address = `127.0.0.1:${server.port}`;
  const wal = new proto.walrecovery.v1.WalService(address, grpc.credentials.createInsecure());
  const admin = new proto.walrecovery.v1.AdminService(address, grpc.credentials.createInsecure());
  clients.push(wal, admin);
  return { wal, admin };
}

type Open = (options: grpc.CallOptions) => grpc.ClientReadableStream<unknown>;

/** How a stream ends: its first message ('data'), or its status name. */
function firstOutcome(call: grpc.ClientReadableStream<unknown>): Promise<string> {
  return new Promise((resolve) => {
    call.once('data', () => resolve('data'));
    call.on('error', (e: grpc.ServiceError) => resolve(grpc.status[e.code] ?? String(e.code)));
    call.on('end', () => resolve('OK'));
  });
}

/** Opens calls until one is admitted (not RESOURCE_EXHAUSTED) or timeoutMs passes; its outcome. */
async function admitted(open: Open, timeoutMs: number): Promise<string> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const call = open({ deadline: Date.now() + 5_000 });
    const outcome = await firstOutcome(call);
    call.cancel();
    if (outcome !== 'RESOURCE_EXHAUSTED' || Date.now() > until) return outcome;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('a capped stream gives its slot back', () => {
  it('a Validate cancelled while its source step never settles: the slot comes back streamStallMsMax after the caller went, and the source is released once the step settles', async () => {
    let finish = (): void => undefined;
    const step = new Promise<void>((resolve) => (finish = resolve));
    let released = 0;
    const { admin } = await serve(
      {
        validate: async function* () {
          try {
            yield message(1);
            await step; // a check that hangs (a disk that never answers)
            yield message(2);
          } finally {
            released += 1;
          }
        },
      },
      { validate: 1 },
    );
    const open: Open = (options) => (admin as unknown as { Validate: (r: object, o: grpc.CallOptions) => grpc.ClientReadableStream<unknown> }).Validate({ log: 'l', node: '' }, options);
    const first = open({ deadline: Date.now() + 60_000 });
    expect(await firstOutcome(first)).toBe('data');
    first.cancel();
    expect(await admitted(open, 5_000)).toBe('data');
    expect(released, 'the steps never settled: no source can be released yet').toBe(0);
    finish();
    await expect.poll(() => released, { timeout: 5_000 }).toBe(2);
  });

  it('a Read whose caller has no deadline and stops reading: the slot comes back after the stream is failed for its stall', async () => {
    let released = 0;
    const { wal } = await serve(
      {
        read: async function* () {
          try {
            for (let i = 1; ; i += 1) yield [entry(i)];
          } finally {
            released += 1;
          }
        },
      },
      { read: 1 },
    );
    const open: Open = (options) => (wal as unknown as { Read: (r: object, o: grpc.CallOptions) => grpc.ClientReadableStream<unknown> }).Read({ log: 'l', from_index: 1, to_index: 0, batch_max: 1 }, options);
    const stalled = open({}); // no deadline
    stalled.on('error', () => undefined);
    expect(await firstOutcome(stalled)).toBe('data');
    stalled.pause();
    await expect.poll(() => released, { timeout: 10_000 }).toBe(1); // failed for its stall: source released
    expect(await admitted(open, 5_000)).toBe('data');
    stalled.cancel();
  });

  it('a Read whose caller has no deadline and stops reading: when its slot comes back, its HTTP/2 stream is reset (the unread messages it buffers go with it)', async () => {
    const { wal } = await serve({ read: async function* () { for (let i = 1; ; i += 1) yield [entry(i)]; } }, { read: 1 });
    const open: Open = (options) => (wal as unknown as { Read: (r: object, o: grpc.CallOptions) => grpc.ClientReadableStream<unknown> }).Read({ log: 'l', from_index: 1, to_index: 0, batch_max: 1 }, options);
    // Without the reset, each such caller kept ~17 messages of the server's memory for as long as
    // it kept its connection, while its slot let the next one in: the cap bounded nothing.
    const stalled = open({}); // no deadline
    stalled.on('error', () => undefined);
    const status = new Promise<number>((resolve) => stalled.on('status', (s: grpc.StatusObject) => resolve(s.code)));
    expect(await firstOutcome(stalled)).toBe('data');
    stalled.pause();
    const code = await Promise.race([status, new Promise<string>((resolve) => setTimeout(() => resolve('still open'), 8 * STALL_MS + 2_000))]);
    expect(code, 'the server still holds the stream, and its unread messages').not.toBe('still open');
  });

  it('a handler that throws before it returns its work: the call fails with its status and the slot comes back', async () => {
    const { admin } = await serve(
      {
        validate: () => {
          throw new BadRequestError('log', 'no such log here');
        },
      },
      { validate: 1 },
    );
    const open: Open = (options) => (admin as unknown as { Validate: (r: object, o: grpc.CallOptions) => grpc.ClientReadableStream<unknown> }).Validate({ log: 'l', node: '' }, options);
    for (let i = 0; i < 3; i += 1) expect(await firstOutcome(open({ deadline: Date.now() + 5_000 }))).toBe('INVALID_ARGUMENT');
  });

  it('a message that fails to convert: the call fails, the source is released and the slot comes back', async () => {
    let released = 0;
    let yielded = 0;
    const { wal } = await serve(
      {
        read: async function* () {
          try {
            for (;;) {
              yielded += 1;
              const bad = Object.defineProperty({ ...entry(yielded) }, 'index', {
                get() {
                  throw new Error('an entry that cannot be put on the wire');
                },
              });
              yield [yielded === 2 ? bad : entry(yielded)];
            }
          } finally {
            released += 1;
          }
        },
      },
      { read: 1 },
    );
    const open: Open = (options) => (wal as unknown as { Read: (r: object, o: grpc.CallOptions) => grpc.ClientReadableStream<unknown> }).Read({ log: 'l', from_index: 1, to_index: 0, batch_max: 1 }, options);
    const call = open({ deadline: Date.now() + 5_000 });
    const ended = new Promise<string>((resolve) => {
      call.on('data', () => undefined);
      call.on('error', (e: grpc.ServiceError) => resolve(grpc.status[e.code] ?? String(e.code)));
      call.on('end', () => resolve('OK'));
    });
    expect(await ended).not.toBe('OK');
    await expect.poll(() => released, { timeout: 5_000 }).toBe(1);
    expect(yielded).toBe(2); // not resumed after the failure
    yielded = 0;
    expect(await admitted(open, 5_000)).toBe('data');
  });

  it('the limit wrapper itself: a stream handler that throws at once gives its slot back (grpc-js answers UNKNOWN)', async () => {
    const { proto } = loadProto();
    const definition = proto.walrecovery.v1.AdminService.service;
    const inFlight = new InFlightCalls({ limits: resolveRpcLimits({ inFlightCallsMax: { validate: 1 } }) });
    const raw = new grpc.Server();
    const throwing = (): never => {
      throw new Error('a handler bug');
    };
    raw.addService(definition, limitService('AdminService', definition, { Validate: throwing }, inFlight));
    const port = await new Promise<number>((resolve, reject) => raw.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    try {
      const admin = new proto.walrecovery.v1.AdminService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      clients.push(admin);
      const open: Open = (options) => (admin as unknown as { Validate: (r: object, o: grpc.CallOptions) => grpc.ClientReadableStream<unknown> }).Validate({ log: 'l', node: '' }, options);
      for (let i = 0; i < 3; i += 1) expect(await firstOutcome(open({ deadline: Date.now() + 5_000 }))).toBe('UNKNOWN');
      expect(inFlight.inFlight('validate')).toBe(0);
    } finally {
      raw.forceShutdown();
    }
  });
  it('the limit wrapper itself: a unary handler that throws at once gives its slot back (its callback never comes)', async () => {
    const { proto } = loadProto();
    const definition = proto.walrecovery.v1.AdminService.service;
    const inFlight = new InFlightCalls({ limits: resolveRpcLimits({ inFlightCallsMax: { status: 1 } }) });
    const raw = new grpc.Server();
    const throwing = (): never => {
      throw new Error('a handler bug');
    };
    raw.addService(definition, limitService('AdminService', definition, { GetRecoveryMetrics: throwing }, inFlight));
    const port = await new Promise<number>((resolve, reject) => raw.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    try {
      const admin = new proto.walrecovery.v1.AdminService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      clients.push(admin);
      const call = (): Promise<string> =>
        new Promise((resolve) => (admin as unknown as { GetRecoveryMetrics: (r: object, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void }).GetRecoveryMetrics({}, { deadline: Date.now() + 5_000 }, (e) => resolve(e ? (grpc.status[e.code] ?? String(e.code)) : 'OK')));
      for (let i = 0; i < 3; i += 1) expect(await call()).toBe('UNKNOWN');
      expect(inFlight.inFlight('status')).toBe(0);
    } finally {
      raw.forceShutdown();
    }
  });
});
