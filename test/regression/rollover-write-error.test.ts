// A group commit that rolls over to a new segment writes, syncs and seals the entries that fit
// the old segment first. If creating the next segment then fails (ENOSPC or EIO on its header),
// those entries are durable, sealed and served. Found by an adversarial review: the whole request
// was rejected with StoreWriteError ("nothing of the request is durable, retry"), so a client
// that retried wrote them twice. Now an append wholly among the durable entries succeeds, one cut
// there fails with StorePartialWriteError naming what was appended, and the rest fail whole.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/io/index.js';
import { isRetryable, toStatus } from '../../src/rpc/status.js';
import { SimFileSystem } from '../../src/sim/disk.js';
import { SimLoop } from '../../src/sim/loop.js';
import { StorePartialWriteError, StoreWriteError, WalStore, format } from '../../src/wal/index.js';

async function storeOnSimDisk(): Promise<{ store: WalStore; fs: SimFileSystem; drive: <T>(work: Promise<T>) => Promise<T> }> {
  const loop = new SimLoop();
  const fs = new SimFileSystem('n1', new SeededRandom(7));
  const proc = { name: 'p1', incarnation: 1, alive: true };
  const drive = async <T>(work: Promise<T>): Promise<T> => {
    let done = false;
    const result = work.finally(() => (done = true));
    result.catch(() => undefined);
    while (!done) await loop.run(loop.nowMs + 100, () => done);
    return result;
  };
  const store = await drive(WalStore.open('/store', { disk: fs.diskFor(loop, proc), clock: loop.clockFor(proc), logger: pino({ level: 'silent' }), segmentBytesMax: 4096, recovery: { backupRetentionCount: 0 } }));
  return { store, fs, drive };
}

const big = (c: string): Buffer => Buffer.alloc(1500, c);

describe('a group commit that rolls to a new segment whose creation fails', () => {
  it('an append cut at the roll fails with StorePartialWriteError naming the durable entries; a retry of the rest appends each once', async () => {
    const { store, fs, drive } = await storeOnSimDisk();
    expect(await drive(store.append(big('x')))).toEqual({ firstIndex: 1, lastIndex: 1 });
    fs.failNext('write', `${format.segmentFileName(2)}.tmp`, 'ENOSPC');
    const failed = await drive(store.append([big('a'), big('b')])).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(StorePartialWriteError);
    expect(failed).toMatchObject({ firstIndex: 2, lastIndex: 2 });
    expect(isRetryable(toStatus(failed).code)).toBe(false);
    expect(store.lastIndex).toBe(2);
    expect(await drive(store.append([big('b')]))).toEqual({ firstIndex: 3, lastIndex: 3 });
    const payloads: string[] = [];
    for (let i = 1; i <= 3; i += 1) payloads.push(Buffer.from((await drive(store.read(i))).payload).subarray(0, 1).toString());
    expect(payloads).toEqual(['x', 'a', 'b']);
    await drive(store.close());
  });

  it('with no entry sealed before the failure, the append fails whole with StoreWriteError (retryable) and nothing is in the log', async () => {
    const { store, fs, drive } = await storeOnSimDisk();
    fs.failNext('write', `${format.segmentFileName(1)}`, 'EIO');
    const failed = await drive(store.append([big('a')])).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(StoreWriteError);
    expect(store.lastIndex).toBe(0);
    expect(await drive(store.append([big('a')]))).toEqual({ firstIndex: 1, lastIndex: 1 });
    await drive(store.close());
  });
});
