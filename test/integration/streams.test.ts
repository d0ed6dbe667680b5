// Server streams whose call goes away mid-stream (issue 9, defect 8): a real gRPC server on
// 127.0.0.1 (startRpcServer) streams Read, Validate and FetchSegment to a client that stops
// reading, so the server waits for 'drain'; then the client cancels, or the call's deadline
// passes. A call that is gone never emits 'drain' again: the server must stop waiting and release
// its source (the generator's finally runs; the segment file's descriptor is closed).
import { readdir, readlink, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeDisk, systemClock } from '../../src/io/index.js';
import { RecoveryMetrics } from '../../src/recovery/index.js';
import { BadRequestError, LogStores, PeerHandlers } from '../../src/replication/index.js';
import { type NodeApi, type ReadEntryView, type RpcServer, type ValidateMessageView, loadProto, startRpcServer } from '../../src/rpc/index.js';
import { format } from '../../src/wal/index.js';
import { silent, until } from '../support/replication-fakes.js';

const LOG = 'events';
const PAYLOAD_BYTES = 256 * 1024;
/** The sealed segment FetchSegment serves: far more than the flow-control windows and buffers hold. */
const SEGMENT_ENTRIES = 96;

/** A source that never ends by itself; says how far it got and whether its finally ran. */
class EndlessSource {
  yielded = 0;
  released = false;

  async *read(): AsyncGenerator<ReadEntryView[]> {
    try {
      for (;;) {
        this.yielded += 1;
        if (this.failing && this.yielded > 1) throw new BadRequestError('from_index', 'out of range for this test');
        yield [{ index: this.yielded, timestampMs: 1, payload: Buffer.alloc(PAYLOAD_BYTES, 1), checksum: '00', lost: false, lostReason: '' }];
      }
    } finally {
      this.released = true;
    }
  }

  /** Fails after its first batch, as a read of a damaged log would. */
  failing = false;

  async *validate(): AsyncGenerator<ValidateMessageView> {
    try {
      for (;;) {
        this.yielded += 1;
        yield { node: 'n1', log: LOG, segment: this.yielded, kind: 'corrupt', entryIndex: 1, indexCount: 1, offsetBytes: 0, expectedChecksum: '', actualChecksum: '', detail: 'x'.repeat(PAYLOAD_BYTES), done: false, segmentsChecked: 0, bytesChecked: 0 };
      }
    } finally {
      this.released = true;
    }
  }
}

let root: string;
let logs: LogStores;
let server: RpcServer;
let source: EndlessSource;
let segmentPath: string;

function notUsed(): never {
  throw new Error('not used by this test');
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'wal-streams-'));
  logs = new LogStores({ dataDir: root, backupRetentionCount: 0, entryBytesMax: 1024 * 1024, logger: silent, metrics: new RecoveryMetrics(), disk: nodeDisk, clock: systemClock });
  const store = await logs.store(LOG);
  for (let i = 0; i < SEGMENT_ENTRIES; i += 1) await store.append(Buffer.alloc(PAYLOAD_BYTES, i));
  await store.sealSegment(1, SEGMENT_ENTRIES);
  segmentPath = join(logs.logDir(LOG), 'segments', format.segmentFileName(1));
  const api: NodeApi = {
    handlers: new PeerHandlers(logs, silent),
    logger: silent,
    append: notUsed,
    read: () => source.read(),
    clusterStatus: notUsed,
    repairSegment: notUsed,
    validate: () => source.validate(),
    repairCopy: notUsed,
    validateCopies: notUsed,
    recoveryMetrics: notUsed,
    watchEvents: notUsed,
  };
  server = await startRpcServer(api, { host: '127.0.0.1', port: 0 });
});

afterAll(async () => {
  await server?.stop();
  await logs?.closeAll();
  await rm(root, { recursive: true, force: true });
});

/** Descriptors of this process open on path (the server runs in it). */
async function openDescriptorsOf(path: string): Promise<number> {
  let count = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target === path) count += 1;
  }
  return count;
}

/** Resolves once value() has stopped changing for a while (the server is stalled on 'drain'). */
async function settled(value: () => number): Promise<void> {
  let last = -1;
  let sameFor = 0;
  await until(() => {
    const now = value();
    sameFor = now === last ? sameFor + 1 : 0;
    last = now;
    return sameFor >= 40; // 40 polls of 5 ms: 200 ms without a step
  }, 20_000);
}

/** A client stream that reads its first message, then stops reading (the server fills its buffers). */
async function stalled(call: grpc.ClientReadableStream<unknown>): Promise<void> {
  call.on('error', () => undefined); // CANCELLED / DEADLINE_EXCEEDED: expected
  await new Promise<void>((resolve) => call.once('data', () => resolve()));
  call.pause();
}

function clients(): { wal: grpc.Client & { Read: (req: object, options: grpc.CallOptions) => grpc.ClientReadableStream<unknown> }; admin: grpc.Client & { Validate: (req: object, options: grpc.CallOptions) => grpc.ClientReadableStream<unknown> }; peer: grpc.Client & { FetchSegment: (req: object, options: grpc.CallOptions) => grpc.ClientReadableStream<unknown> } } {
  const { proto } = loadProto();
  const address = `127.0.0.1:${server.port}`;
  const credentials = grpc.credentials.createInsecure();
  return {
    wal: new proto.walrecovery.v1.WalService(address, credentials),
    admin: new proto.walrecovery.v1.AdminService(address, credentials),
    peer: new proto.walrecovery.v1.PeerService(address, credentials),
  };
}

describe('server streams whose call goes away', () => {
  it('a Read cancelled by its client while the server waits for drain releases its source', async () => {
    source = new EndlessSource();
    const { wal } = clients();
    const call = wal.Read({ log: LOG, from_index: 1, to_index: 0, batch_max: 1 }, { deadline: Date.now() + 60_000 });
    await stalled(call);
    await settled(() => source.yielded);
    expect(source.released).toBe(false);
    call.cancel();
    await until(() => source.released, 5_000);
    wal.close();
  });

  it('a Read whose deadline passes while the server waits for drain releases its source', async () => {
    source = new EndlessSource();
    const { wal } = clients();
    const call = wal.Read({ log: LOG, from_index: 1, to_index: 0, batch_max: 1 }, { deadline: Date.now() + 1_500 });
    await stalled(call);
    await until(() => source.released, 10_000);
    wal.close();
  });

  it('a Validate cancelled by its client while the server waits for drain releases its source', async () => {
    source = new EndlessSource();
    const { admin } = clients();
    const call = admin.Validate({ log: LOG, node: '' }, { deadline: Date.now() + 60_000 });
    await stalled(call);
    await settled(() => source.yielded);
    call.cancel();
    await until(() => source.released, 5_000);
    admin.close();
  });

  it('a FetchSegment cancelled by its client mid-stream closes the segment file', async () => {
    const held = await openDescriptorsOf(segmentPath); // the store's own read handle, if open
    const { peer } = clients();
    const call = peer.FetchSegment({ segment: { log: LOG, segment_id: 1 }, chunk_bytes: 4096 }, { deadline: Date.now() + 60_000 });
    await stalled(call);
    expect(await openDescriptorsOf(segmentPath)).toBe(held + 1);
    await new Promise((resolve) => setTimeout(resolve, 300)); // the server fills the window and waits for drain
    call.cancel();
    await until(async () => (await openDescriptorsOf(segmentPath)) === held, 5_000);
    peer.close();
  });

  it('a FetchSegment whose deadline passes mid-stream closes the segment file', async () => {
    const held = await openDescriptorsOf(segmentPath);
    const { peer } = clients();
    const call = peer.FetchSegment({ segment: { log: LOG, segment_id: 1 }, chunk_bytes: 4096 }, { deadline: Date.now() + 1_500 });
    await stalled(call);
    expect(await openDescriptorsOf(segmentPath)).toBe(held + 1);
    await until(async () => (await openDescriptorsOf(segmentPath)) === held, 10_000);
    peer.close();
  });

  it('a stream read to its end still ends normally (every chunk, then OK)', async () => {
    const held = await openDescriptorsOf(segmentPath);
    const { peer } = clients();
    const call = peer.FetchSegment({ segment: { log: LOG, segment_id: 1 }, chunk_bytes: 1024 * 1024 }, { deadline: Date.now() + 60_000 });
    let bytes = 0;
    for await (const chunk of call as AsyncIterable<{ data: Buffer }>) bytes += chunk.data.byteLength;
    expect(bytes).toBeGreaterThan(SEGMENT_ENTRIES * PAYLOAD_BYTES);
    await until(async () => (await openDescriptorsOf(segmentPath)) === held, 5_000);
    peer.close();
  });

  it('a source that fails ends the stream with its status, and is not resumed', async () => {
    source = new EndlessSource();
    source.failing = true;
    const { wal } = clients();
    const call = wal.Read({ log: LOG, from_index: 1, to_index: 0, batch_max: 1 }, { deadline: Date.now() + 60_000 });
    const error = await new Promise<grpc.ServiceError>((resolve, reject) => {
      call.on('data', () => undefined);
      call.on('error', resolve);
      call.on('end', () => reject(new Error('the stream ended without an error')));
    });
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(source.released).toBe(true);
    expect(source.yielded).toBe(2);
    wal.close();
  });
});
