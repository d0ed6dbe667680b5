// Halt leaves everything as it found it (docs/RECOVERY.md): a sealed segment whose intact file
// disagrees with its catalog record (bad-catalog: say, a shorter sealed copy put in its place) is
// reported as rebuild-catalog, but under Halt the catalog, which still records what was
// acknowledged, is not rewritten from the file unless another action changed a file.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeCatalog, encodeCatalog } from '../../src/wal/catalog.js';
import { repairDataDir } from '../../src/wal/offline.js';
import { ENTRIES_PER_SEGMENT, fileBytes, makeOpenStore, makeStore, segmentPath, tempRoot, truncate } from '../support/fault-driver.js';

const roots: string[] = [];
afterEach(async () => {
  for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
});

describe('Halt and a catalog record that disagrees with an intact sealed segment', () => {
  it('the catalog is left as it was (regression)', async () => {
    const root = await tempRoot();
    roots.push(root);
    const dir = join(root, 'store');
    await makeStore(dir, { entries: 3 * ENTRIES_PER_SEGMENT, backupRetentionCount: 0 });
    const path = join(dir, 'CATALOG');
    const decoded = decodeCatalog(await readFile(path));
    if (!decoded.ok) throw new Error(decoded.reason);
    const segments = decoded.catalog.segments.map((s) => (s.segmentId === 2 ? { ...s, aggregateChecksum: s.aggregateChecksum ^ 1n } : s));
    const recorded = encodeCatalog({ ...decoded.catalog, segments });
    await writeFile(path, recorded);

    const report = await repairDataDir(dir, { strategy: 'halt', dryRun: false });
    expect(report.findings.map((f) => [f.segment, f.kind])).toEqual([[2, 'bad-catalog']]);
    expect((await readFile(path)).equals(recorded)).toBe(true);
    expect(report.remaining.map((f) => f.kind)).toEqual(['bad-catalog']);

    // Any other strategy takes the file's record (the documented rebuild-catalog).
    const partial = await repairDataDir(dir, { strategy: 'partial', dryRun: false });
    expect(partial.actions.map((a) => a.decision)).toEqual(['rebuild-catalog']);
    expect(partial.remaining).toEqual([]);
  });

  it('when a torn tail is cut (the catalog must be rewritten), the record that disagrees stays (regression)', async () => {
    const root = await tempRoot();
    roots.push(root);
    const dir = join(root, 'store');
    await makeOpenStore(dir, { entries: 2 * ENTRIES_PER_SEGMENT + 3, backupRetentionCount: 0 });
    const path = join(dir, 'CATALOG');
    const decoded = decodeCatalog(await readFile(path));
    if (!decoded.ok) throw new Error(decoded.reason);
    const changed = (decoded.catalog.segments.find((s) => s.segmentId === 1)?.aggregateChecksum ?? 0n) ^ 1n;
    const segments = decoded.catalog.segments.map((s) => (s.segmentId === 1 ? { ...s, aggregateChecksum: changed } : s));
    await writeFile(path, encodeCatalog({ ...decoded.catalog, segments }));
    // The open segment ends inside its last frame: a torn write, cut under every strategy.
    const open = segmentPath(dir, 3);
    await truncate(open, (await fileBytes(open)).byteLength - 5);

    const report = await repairDataDir(dir, { strategy: 'halt', dryRun: false });
    expect(report.actions.map((a) => [a.segment, a.decision, a.outcome])).toEqual(expect.arrayContaining([[3, 'truncate-torn-tail', 'done']]));
    const after = decodeCatalog(await readFile(path));
    if (!after.ok) throw new Error(after.reason);
    expect(after.catalog.segments.find((s) => s.segmentId === 1)?.aggregateChecksum).toBe(changed);
  });
});
