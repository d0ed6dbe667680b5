// Limits on calls in flight (issue 11, src/rpc/limits.ts): a family of expensive calls at its
// limit answers one more with RESOURCE_EXHAUSTED at once, counts it, and takes calls again as soon
// as one ends (finished, or cancelled or past its deadline and its work in progress ended); one connection may not open more HTTP/2
// streams than the server allows (the further calls wait in the client). Real gRPC over
// 127.0.0.1, with a stub node whose Read and RepairSegment hang until the test lets them go.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminClient, type NodeApi, PeerClient, RPC_LIMITS_DEFAULT, type ReadEntryView, type RpcServer, type ValidateMessageView, WalClient, parseRpcLimits, resolveRpcLimits, startRpcServer } from '../../src/rpc/index.js';

let started = 0;
let releaseAll: () => void = () => undefined;
let held = new Promise<void>((resolve) => (releaseAll = resolve));

function hold(): void {
  held = new Promise<void>((resolve) => (releaseAll = resolve));
}

function stubApi(): NodeApi {
  return {
    logger: pino({ level: 'silent' }),
    read: async function* (): AsyncGenerator<ReadEntryView[]> {
      started += 1;
      await held;
      yield [{ index: 1, timestampMs: 1, payload: Buffer.from('x'), checksum: '', lost: false, lostReason: '' }] as unknown as ReadEntryView[];
    },
    append: async () => {
      started += 1;
      await held;
      return { firstIndex: 1, lastIndex: 1 };
    },
    handlers: {
      segmentInfo: async () => {
        started += 1;
        await held;
        return { present: false, sealed: false, firstIndex: 0, lastIndex: 0, indexCount: 0, byteLength: 0, aggregate: '', checksums: [], damaged: false, checksumsFromIndex: 0, nextIndex: 0 };
      },
    },
    repairSegment: async () => {
      started += 1;
      await held;
      return [];
    },
    repairCopy: async () => {
      started += 1;
      await held;
      return [];
    },
  } as unknown as NodeApi;
}

let server: RpcServer | undefined;
const clients: Array<{ close(): void }> = [];

afterEach(async () => {
  releaseAll();
  for (const c of clients.splice(0)) c.close();
  await server?.stop();
  server = undefined;
  started = 0;
  hold();
});

/** Opens a Read stream; resolves with its final status code once it ends. */
function openRead(client: WalClient, deadlineMs = 30_000): { done: Promise<string>; cancel(): void } {
  const stream = client.read('l', 1, 1, { deadlineMs }) as unknown as grpc.ClientReadableStream<unknown>;
  const done = new Promise<string>((resolve) => {
    stream.on('data', () => undefined);
    stream.on('error', (e: grpc.ServiceError) => resolve(grpc.status[e.code]));
    stream.on('end', () => resolve('OK'));
  });
  return { done, cancel: () => stream.cancel() };
}

describe('calls in flight per family', () => {
  it('one Read past the limit is RESOURCE_EXHAUSTED and counted; a cancelled Read gives its slot back once its read in progress ends', async () => {
    const limited: string[] = [];
    server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, undefined, { limits: resolveRpcLimits({ inFlightCallsMax: { read: 3 } }), onLimited: (m) => limited.push(m) });
    const client = new WalClient(`127.0.0.1:${server.port}`);
    clients.push(client);
    const open = [openRead(client), openRead(client), openRead(client)];
    await expect.poll(() => started, { timeout: 5_000 }).toBe(3);
    expect(await openRead(client).done).toBe('RESOURCE_EXHAUSTED');
    expect(limited).toEqual(['WalService.Read']);
    expect(started, 'the refused call never reached the node').toBe(3);

    open[0]?.cancel();
    expect(await open[0]?.done).toBe('CANCELLED');
    // Its read in progress (held here) runs on in the node, and keeps its slot.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await openRead(client).done).toBe('RESOURCE_EXHAUSTED');
    expect(started).toBe(3);
    releaseAll();
    expect(await Promise.all(open.slice(1).map((o) => o.done))).toEqual(['OK', 'OK']);
    hold();
    // All three slots are back, the cancelled one's too: three more are admitted, a fourth is not.
    // (The client sees an end at once, the server a moment later: retried until admitted.)
    const again: Array<{ done: Promise<string> }> = [];
    for (let attempt = 0; attempt < 50 && started < 6; attempt += 1) {
      const next = openRead(client);
      const outcome = await Promise.race([next.done, new Promise<string>((resolve) => setTimeout(() => resolve('pending'), 100))]);
      if (outcome === 'pending') again.push(next);
    }
    expect(started).toBe(6);
    expect(await openRead(client).done).toBe('RESOURCE_EXHAUSTED');
    releaseAll();
    expect(await Promise.all(again.map((o) => o.done))).toEqual(['OK', 'OK', 'OK']);
  });

  it('a call past its deadline gives its slot back once its read in progress ends', async () => {
    server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, undefined, { limits: resolveRpcLimits({ inFlightCallsMax: { read: 1 } }) });
    const client = new WalClient(`127.0.0.1:${server.port}`);
    clients.push(client);
    expect(await openRead(client, 300).done).toBe('DEADLINE_EXCEEDED');
    expect(await openRead(client).done, 'its read (held here) runs on, with its slot').toBe('RESOURCE_EXHAUSTED');
    releaseAll();
    hold();
    let next = openRead(client);
    for (let attempt = 0; attempt < 50 && started < 2; attempt += 1) {
      const outcome = await Promise.race([next.done, new Promise<string>((resolve) => setTimeout(() => resolve('pending'), 100))]);
      if (outcome === 'RESOURCE_EXHAUSTED') next = openRead(client);
    }
    await expect.poll(() => started, { timeout: 5_000 }).toBe(2);
    releaseAll();
    expect(await next.done).toBe('OK');
  });

  it('unary RepairSegment past its limit is RESOURCE_EXHAUSTED; the slot comes back with the answer', async () => {
    const limited: string[] = [];
    server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, undefined, { limits: resolveRpcLimits({ inFlightCallsMax: { repair: 1 } }), onLimited: (m) => limited.push(m) });
    const admin = new AdminClient(`127.0.0.1:${server.port}`);
    clients.push(admin);
    const first = admin.repairSegment({ log: 'l', segmentId: 1 });
    await expect.poll(() => started, { timeout: 5_000 }).toBe(1);
    const refused = await admin.repairSegment({ log: 'l', segmentId: 1 }).catch((e: grpc.ServiceError) => grpc.status[e.code]);
    expect(refused).toBe('RESOURCE_EXHAUSTED');
    expect(limited).toEqual(['AdminService.RepairSegment']);
    releaseAll();
    await first;
    hold();
    const second = admin.repairSegment({ log: 'l', segmentId: 1 });
    await expect.poll(() => started, { timeout: 5_000 }).toBe(2);
    releaseAll();
    await second;
  });
});

describe('peer fan-out calls have their own caps', () => {
  it('RepairCopy holding every one of its slots leaves admin RepairSegment its own, and is RESOURCE_EXHAUSTED past its cap', async () => {
    const limited: string[] = [];
    server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, undefined, { limits: resolveRpcLimits({ inFlightCallsMax: { repair: 2, 'repair-copy': 2 } }), onLimited: (m) => limited.push(m) });
    const peer = new PeerClient(`127.0.0.1:${server.port}`);
    const admin = new AdminClient(`127.0.0.1:${server.port}`);
    clients.push(peer, admin);
    // A peer fills the RepairCopy slots (a flood of the per-node part of a repair).
    const copies = [peer.repairCopy('l', 1, false), peer.repairCopy('l', 1, false)];
    await expect.poll(() => started, { timeout: 5_000 }).toBe(2);
    expect(await peer.repairCopy('l', 1, false).catch((e: grpc.ServiceError) => grpc.status[e.code])).toBe('RESOURCE_EXHAUSTED');
    expect(limited).toEqual(['PeerService.RepairCopy']);
    // The admin's repairs still start: they do not share the peer's slots.
    const repairs = [admin.repairSegment({ log: 'l', segmentId: 1 }), admin.repairSegment({ log: 'l', segmentId: 1 })];
    await expect.poll(() => started, { timeout: 5_000 }).toBe(4);
    expect(limited).toEqual(['PeerService.RepairCopy']);
    releaseAll();
    await Promise.all([...copies, ...repairs]);
  });

  it('a RepairCopy past its deadline keeps its slot while its repair still runs: short deadlines do not start more repairs than the cap (regression)', async () => {
    server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, undefined, { limits: resolveRpcLimits({ inFlightCallsMax: { 'repair-copy': 2 } }) });
    const peer = new PeerClient(`127.0.0.1:${server.port}`);
    clients.push(peer);
    // Each call gives up after 200 ms; its repair (held here) goes on in the node.
    const outcomes: string[] = [];
    for (let i = 0; i < 6; i += 1) outcomes.push(await peer.repairCopy('l', i + 1, false, 200).then(() => 'OK', (e: grpc.ServiceError) => grpc.status[e.code] ?? String(e.code)));
    expect(started).toBe(2);
    expect(outcomes.slice(2)).toEqual(['RESOURCE_EXHAUSTED', 'RESOURCE_EXHAUSTED', 'RESOURCE_EXHAUSTED', 'RESOURCE_EXHAUSTED']);
    // Once the repairs end, their slots are free again.
    releaseAll();
    hold();
    await expect.poll(async () => peer.repairCopy('l', 9, false, 200).then(() => 'OK', (e: grpc.ServiceError) => grpc.status[e.code]), { timeout: 5_000 }).toBe('DEADLINE_EXCEEDED');
    expect(started).toBe(3);
  });

  // A stub segment check: each step of the source takes 500 ms (a whole segment read and hashed).
  function slowValidateApi(): { api: NodeApi; counts: { running: number; runningMax: number; steps: number } } {
    const counts = { running: 0, runningMax: 0, steps: 0 };
    async function* check(): AsyncGenerator<ValidateMessageView> {
      for (let segment = 1; segment <= 3; segment += 1) {
        counts.steps += 1;
        counts.running += 1;
        counts.runningMax = Math.max(counts.runningMax, counts.running);
        try {
          await new Promise((resolve) => setTimeout(resolve, 500));
        } finally {
          counts.running -= 1;
        }
        yield { node: 'n1', log: 'l', segment, kind: 'checksum-mismatch', entryIndex: 0, indexCount: 0, offsetBytes: 0, expectedChecksum: '', actualChecksum: '', detail: '', done: false, segmentsChecked: 0, bytesChecked: 0 };
      }
    }
    return { api: { ...stubApi(), validate: check, validateCopies: check } as NodeApi, counts };
  }

  it.each(['ValidateCopies', 'Validate'] as const)('a %s stream past its deadline keeps its slot until its segment check in progress ends: short deadlines never run more checks than the cap (regression)', async (method) => {
    const { api, counts } = slowValidateApi();
    server = await startRpcServer(api, { host: '127.0.0.1', port: 0 }, undefined, { limits: resolveRpcLimits({ inFlightCallsMax: { 'validate-copies': 2, validate: 2 } }) });
    const peer = new PeerClient(`127.0.0.1:${server.port}`);
    const admin = new AdminClient(`127.0.0.1:${server.port}`);
    clients.push(peer, admin);
    const outcomes: string[] = [];
    const until = Date.now() + 2_000;
    for (let i = 0; Date.now() < until; i += 1) {
      const deadlineMs = 100 + (i % 2) * 100; // 100 or 200 ms, each well below a step
      const stream = method === 'ValidateCopies' ? peer.validateCopies('l', deadlineMs) : admin.validate('l', '', deadlineMs);
      outcomes.push(await (async () => {
        for await (const _ of stream) void _;
        return 'OK';
      })().catch((e: grpc.ServiceError) => grpc.status[e.code] ?? String(e.code)));
      if (outcomes.at(-1) === 'RESOURCE_EXHAUSTED') await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(counts.runningMax, `checks running at once (outcomes ${outcomes.join(' ')})`).toBeLessThanOrEqual(2);
    expect(outcomes).toContain('RESOURCE_EXHAUSTED');
    // A stream gone mid-check asks its source for nothing more: one step each admitted call.
    expect(counts.steps).toBe(outcomes.filter((o) => o === 'DEADLINE_EXCEEDED').length);
    // The slots come back once the checks in progress end: calls are admitted again.
    expect(counts.steps).toBeGreaterThan(2);
  });

  it('the peer fan-out caps are --rpc-limit names', () => {
    const limits = parseRpcLimits(['in-flight-repair-copy=3', 'in-flight-validate-copies=2']);
    expect([limits.inFlightCallsMax['repair-copy'], limits.inFlightCallsMax['validate-copies']]).toEqual([3, 2]);
    expect(limits.inFlightCallsMax.repair).toBe(RPC_LIMITS_DEFAULT.inFlightCallsMax.repair);
  });
});

describe('peer reads in flight', () => {
  it('SegmentInfo past the peer-read limit is RESOURCE_EXHAUSTED at once', async () => {
    const limited: string[] = [];
    server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, undefined, { limits: resolveRpcLimits({ inFlightCallsMax: { 'peer-read': 2 } }), onLimited: (m) => limited.push(m) });
    const peer = new PeerClient(`127.0.0.1:${server.port}`);
    clients.push(peer);
    const open = [peer.segmentInfo('l', 1, true), peer.segmentInfo('l', 1, true)];
    await expect.poll(() => started, { timeout: 5_000 }).toBe(2);
    expect(await peer.segmentInfo('l', 1, true).catch((e: grpc.ServiceError) => grpc.status[e.code])).toBe('RESOURCE_EXHAUSTED');
    expect(limited).toEqual(['PeerService.SegmentInfo']);
    releaseAll();
    await Promise.all(open);
  });
});

describe('streams per connection', () => {
  it('a connection gets no more concurrent streams than the server allows: the next call waits for one to end', async () => {
    server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, undefined, { limits: resolveRpcLimits({ concurrentStreamsPerConnectionMax: 2 }) });
    const client = new WalClient(`127.0.0.1:${server.port}`);
    clients.push(client);
    const open = [openRead(client), openRead(client), openRead(client)];
    await expect.poll(() => started, { timeout: 5_000 }).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(started, 'a third stream on the same connection reached the node').toBe(2);
    open[0]?.cancel();
    await expect.poll(() => started, { timeout: 5_000 }).toBe(3);
    releaseAll();
    expect(await Promise.all(open.map((o) => o.done))).toEqual(['CANCELLED', 'OK', 'OK']);
  });
});

describe('limits are validated once', () => {
  it('a limit that is not a positive integer is refused', () => {
    expect(() => resolveRpcLimits({ inFlightCallsMax: { read: 0 } })).toThrow(RangeError);
    expect(() => resolveRpcLimits({ concurrentStreamsPerConnectionMax: 1.5 })).toThrow(RangeError);
  });
});

describe('health watches', () => {
  it('health Watch streams past the cap are RESOURCE_EXHAUSTED and counted; one cancelled frees its place; Check is not capped', async () => {
    const limited: string[] = [];
    server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, undefined, { limits: resolveRpcLimits({ healthWatchesMax: 2 }), onLimited: (m) => limited.push(m) });
    // The health service by raw bytes: an empty HealthCheckRequest is an empty message.
    const raw = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
    const Health = grpc.makeGenericClientConstructor({
      Watch: { path: '/grpc.health.v1.Health/Watch', requestStream: false, responseStream: true, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize },
      Check: { path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize },
    }, 'Health');
    const client = new Health(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      Watch(request: Buffer): grpc.ClientReadableStream<Buffer>;
      Check(request: Buffer, callback: (error: grpc.ServiceError | null) => void): void;
    };
    clients.push(client);
    const watch = (): { first: Promise<string>; stream: grpc.ClientReadableStream<Buffer> } => {
      const stream = client.Watch(Buffer.alloc(0));
      const first = new Promise<string>((resolve) => {
        stream.once('data', () => resolve('SERVING-STATUS'));
        stream.on('error', (e: grpc.ServiceError) => resolve(grpc.status[e.code] ?? String(e.code)));
      });
      return { first, stream };
    };
    const open = [watch(), watch()];
    expect(await Promise.all(open.map((w) => w.first))).toEqual(['SERVING-STATUS', 'SERVING-STATUS']);
    expect(await watch().first).toBe('RESOURCE_EXHAUSTED');
    expect(limited).toEqual(['Health.Watch']);
    expect(await new Promise<string>((resolve) => client.Check(Buffer.alloc(0), (e) => resolve(e ? String(e.code) : 'OK')))).toBe('OK');
    open[0]?.stream.cancel();
    let again = 'RESOURCE_EXHAUSTED';
    for (let attempt = 0; attempt < 50 && again === 'RESOURCE_EXHAUSTED'; attempt += 1) {
      const w = watch();
      again = await w.first;
      if (again === 'RESOURCE_EXHAUSTED') await new Promise((r) => setTimeout(r, 100));
      else w.stream.cancel();
    }
    expect(again).toBe('SERVING-STATUS');
    open[1]?.stream.cancel();
  });
});

describe('limits set by --rpc-limit NAME=N', () => {
  it('parses every name, keeps the defaults for the others, and refuses unknown names and bad numbers', () => {
    const limits = parseRpcLimits(['in-flight-append=1', 'streams-per-connection=8', 'health-watches=3', 'stream-stall-ms=500']);
    expect(limits.inFlightCallsMax.append).toBe(1);
    expect(limits.inFlightCallsMax.read).toBe(RPC_LIMITS_DEFAULT.inFlightCallsMax.read);
    expect([limits.concurrentStreamsPerConnectionMax, limits.healthWatchesMax, limits.streamStallMsMax]).toEqual([8, 3, 500]);
    expect(() => parseRpcLimits(['in-flight-nope=3'])).toThrow(/unknown/);
    expect(() => parseRpcLimits(['in-flight-read=0'])).toThrow(/positive/);
    expect(() => parseRpcLimits(['read'])).toThrow(/NAME=N/);
  });

  it('Append past its in-flight limit is RESOURCE_EXHAUSTED and counted', async () => {
    const limited: string[] = [];
    hold();
    server = await startRpcServer(stubApi(), { host: '127.0.0.1', port: 0 }, undefined, { limits: parseRpcLimits(['in-flight-append=1']), onLimited: (m) => limited.push(m) });
    const client = new WalClient(`127.0.0.1:${server.port}`);
    clients.push(client);
    const first = client.append('l', [Buffer.from('a')]);
    await expect.poll(() => started, { timeout: 5_000 }).toBe(1);
    expect(await client.append('l', [Buffer.from('b')]).catch((e: grpc.ServiceError) => grpc.status[e.code])).toBe('RESOURCE_EXHAUSTED');
    expect(limited).toEqual(['WalService.Append']);
    releaseAll();
    expect((await first).lastIndex).toBe(1);
  });
});
