// A FIFO where a sealed segment belongs (a hostile or broken file, issue 11): NodeDisk refuses it
// ('EFTYPE', "is not a regular file") on every path that opens a file, without blocking. Opening a
// FIFO for reading blocks until a writer comes: readChunks (FetchSegment's stream) and copyFile
// (online repair's copy of a segment) opened paths that way, so the call hung for good and pinned
// a libuv thread. Real FIFOs (mkfifo), real files, and a real gRPC server on 127.0.0.1.
import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { nodeDisk, systemClock } from '../../src/io/index.js';
import { RecoveryMetrics } from '../../src/recovery/index.js';
import { LogStores, PeerHandlers } from '../../src/replication/index.js';
import { type NodeApi, type RpcServer, loadProto, startRpcServer } from '../../src/rpc/index.js';
import { format } from '../../src/wal/index.js';
import { silent } from '../support/replication-fakes.js';

const LOG = 'events';
const TIMED_OUT = 'timed out';

let root: string;
const fifos: string[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'wal-fifo-'));
});

afterEach(async () => {
  // A reader blocked on a FIFO (the defect) is let go by a writer that opens and closes it.
  for (const fifo of fifos.splice(0)) {
    const writer = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK).catch(() => undefined);
    await writer?.close();
  }
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function mkfifo(path: string): string {
  execFileSync('mkfifo', [path]);
  fifos.push(path);
  return path;
}

/** The promise's outcome ('ok' or the error's code), or TIMED_OUT if it has not settled within ms. */
async function within(promise: Promise<unknown>, ms: number): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => (timer = setTimeout(() => resolve(TIMED_OUT), ms)));
  const outcome = promise.then(
    () => 'ok',
    (error: unknown) => String((error as { code?: unknown }).code ?? error),
  );
  try {
    return await Promise.race([outcome, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function drain(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

describe('NodeDisk refuses a FIFO without blocking', () => {
  it('readChunks of a FIFO fails with EFTYPE; of a regular file it yields the file', async () => {
    const fifo = mkfifo(join(root, 'chunks.fifo'));
    expect(await within(drain(nodeDisk.readChunks(fifo, 4096)), 2_000)).toBe('EFTYPE');
    const file = join(root, 'chunks.bin');
    const bytes = Buffer.from(Array.from({ length: 10_000 }, (_, i) => i & 0xff));
    await writeFile(file, bytes);
    expect((await drain(nodeDisk.readChunks(file, 4096))).equals(bytes)).toBe(true);
  });

  it('copyFile from a FIFO, or onto one, fails with EFTYPE; a regular file is copied whole', async () => {
    const fifo = mkfifo(join(root, 'copy-from.fifo'));
    expect(await within(nodeDisk.copyFile(fifo, join(root, 'copy-to.bin')), 2_000)).toBe('EFTYPE');
    const file = join(root, 'copy.bin');
    const bytes = Buffer.from(Array.from({ length: 3 * 1024 * 1024 + 7 }, (_, i) => (i * 7) & 0xff));
    await writeFile(file, bytes);
    const target = mkfifo(join(root, 'copy-onto.fifo'));
    expect(await within(nodeDisk.copyFile(file, target), 2_000)).toBe('EFTYPE');
    await nodeDisk.copyFile(file, join(root, 'copy-out.bin'));
    expect((await readFile(join(root, 'copy-out.bin'))).equals(bytes)).toBe(true);
    await writeFile(join(root, 'copy-out.bin'), 'longer than the source, before: '.repeat(200_000));
    await nodeDisk.copyFile(file, join(root, 'copy-out.bin')); // replaces what was there
    expect((await readFile(join(root, 'copy-out.bin'))).equals(bytes)).toBe(true);
  });
});

describe('FetchSegment of a segment replaced by a FIFO', () => {
  let logs: LogStores;
  let server: RpcServer;

  beforeAll(async () => {
    logs = new LogStores({ dataDir: join(root, 'node'), backupRetentionCount: 0, entryBytesMax: 1024 * 1024, logger: silent, metrics: new RecoveryMetrics(), disk: nodeDisk, clock: systemClock });
    const store = await logs.store(LOG);
    for (let i = 0; i < 8; i += 1) await store.append(Buffer.alloc(1024, i));
    await store.sealSegment(1, 8);
    const handlers = new PeerHandlers(logs, silent);
    server = await startRpcServer({ handlers, logger: silent } as unknown as NodeApi, { host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    await server?.stop();
    await logs?.closeAll();
  });

  it('fails the call at once instead of hanging', async () => {
    const path = join(logs.logDir(LOG), 'segments', format.segmentFileName(1));
    await rm(path);
    mkfifo(path);
    const { proto } = loadProto();
    const peer = new proto.walrecovery.v1.PeerService(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure()) as grpc.Client & { FetchSegment: (r: object, o: grpc.CallOptions) => grpc.ClientReadableStream<unknown> };
    try {
      const call = peer.FetchSegment({ segment: { log: LOG, segment_id: 1 }, chunk_bytes: 4096 }, { deadline: Date.now() + 60_000 });
      const ended = new Promise<void>((resolve, reject) => {
        call.on('data', () => reject(new Error('a FIFO was served as a segment')));
        call.on('error', (e: grpc.ServiceError) => (e.details.includes('is not a regular file') ? resolve() : reject(e)));
        call.on('end', () => reject(new Error('the stream ended without an error')));
      });
      expect(await within(ended, 5_000)).toBe('ok');
    } finally {
      peer.close();
    }
  });
});
