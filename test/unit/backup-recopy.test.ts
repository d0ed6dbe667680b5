// Damaged backup copies found by a check of a verified segment (the scrubber, issue 11's matrix):
// WalStore.recopyBackups moves each damaged copy into quarantine and writes it again from the
// segment. Named by the fault injected; shares test/support/fault-driver.ts.
import { readdir, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WalStore } from '../../src/index.js';
import { backupPath, fileBytes, flipBit, payloadOf, segmentPath, storeOptions, tempRoot, truncate } from '../support/fault-driver.js';

let dir: string;
let store: WalStore;

beforeEach(async () => {
  dir = await tempRoot();
  store = await WalStore.open(dir, storeOptions({ backupRetentionCount: 1 }));
  for (let i = 1; i <= 40; i += 1) await store.append(payloadOf(i)); // segments 1 and 2 sealed
  await store.close();
  store = await WalStore.open(dir, storeOptions({ backupRetentionCount: 1 }));
});
afterEach(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

describe('recopyBackups', () => {
  it('flipped bit in a backup copy: the copy is quarantined and written again from the segment', async () => {
    await flipBit(backupPath(dir, 1), 300);
    const damaged = await fileBytes(backupPath(dir, 1));
    expect(store.backupPaths(1)).toEqual([backupPath(dir, 1)]);
    await store.recopyBackups(1, [1]);
    expect((await fileBytes(backupPath(dir, 1))).equals(await fileBytes(segmentPath(dir, 1)))).toBe(true);
    const quarantined = (await readdir(join(dir, 'quarantine'))).filter((n) => n.endsWith('.backup-1'));
    expect(quarantined).toHaveLength(1);
    expect((await fileBytes(join(dir, 'quarantine', quarantined[0] ?? '?'))).equals(damaged)).toBe(true);
  });

  it('deleted or truncated backup copies are written again', async () => {
    await unlink(backupPath(dir, 1));
    await truncate(backupPath(dir, 2), 100);
    await store.recopyBackups(1, [1]);
    await store.recopyBackups(2, [1]);
    for (const id of [1, 2]) expect((await fileBytes(backupPath(dir, id))).equals(await fileBytes(segmentPath(dir, id)))).toBe(true);
  });
});
