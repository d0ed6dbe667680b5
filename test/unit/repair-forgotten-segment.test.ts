// A full repair at open that cannot repair a segment must not forget it (sim seed 14014): with the
// catalog lost and a sealed segment's last entries and trailer destroyed, no record says where
// that segment ends, so repair escalates and open refuses. The catalog the failed repair rewrote
// from the files had no record of that segment, and the repair intent was removed: the next open
// read that catalog, found nothing to scan and opened as if the segment did not exist (its file
// orphaned, its entries gone from this store). It must refuse again until the segment is repaired.
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DamageFoundError } from '../../src/wal/errors.js';
import { WalStore } from '../../src/wal/store.js';
import { ENTRIES_PER_SEGMENT, catalogPath, corrupt, frameOffset, makeStore, segmentPath, storeOptions, tempRoot } from '../support/fault-driver.js';

const roots: string[] = [];
afterEach(async () => {
  for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
});

describe('a full repair at open that escalates on a segment with no record', () => {
  it('leaves the next open refusing too, instead of opening without that segment (regression)', async () => {
    const root = await tempRoot();
    roots.push(root);
    const dir = join(root, 'store');
    await makeStore(dir, { entries: 3 * ENTRIES_PER_SEGMENT + 2, backupRetentionCount: 0 });
    // The catalog is lost (a lost write of its last rewrite: an empty file after the rename) ...
    await writeFile(catalogPath(dir), Buffer.alloc(0));
    // ... and segment 2's last two entries and its trailer are overwritten (a misdirected write).
    const from = frameOffset(2 * ENTRIES_PER_SEGMENT - 1);
    await corrupt(segmentPath(dir, 2), from, (bytes) => bytes.fill(0xa5), 1 << 20);
    // Replica mode, as a cluster node opens its log: the gap its forgotten segment leaves is no damage.
    const options = { ...storeOptions({ backupRetentionCount: 0 }, { repairStrategy: 'partial' }), allowSegmentGaps: true };

    await expect(WalStore.open(dir, options)).rejects.toBeInstanceOf(DamageFoundError);
    // Nothing changed on disk since: the damage is still there, so open still refuses.
    let reopened: WalStore | undefined;
    try {
      reopened = await WalStore.open(dir, options);
    } catch (error) {
      expect(error).toBeInstanceOf(DamageFoundError);
    }
    const forgotten = reopened?.segmentRecord(2) === undefined ? 'segment 2 forgotten' : 'segment 2 recorded';
    await reopened?.close();
    expect(reopened === undefined ? 'refused' : `opened, ${forgotten}`).toBe('refused');
  });
});
