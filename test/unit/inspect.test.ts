// What validate reports for one damage: one finding, over the entries it takes, whatever the
// damage looks like to the frame scanner (a zeroed block reads as a frame failing its checksum,
// then bytes with no valid frame header).
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ENTRY_HEADER_BYTES } from '../../src/wal/format.js';
import { validateStore } from '../../src/wal/offline.js';
import { WalStore } from '../../src/wal/store.js';
import pino from 'pino';

const SEGMENT = 'segments/00000000000000000001.wal';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-inspect-'));
  const store = await WalStore.open(dir, { logger: pino({ level: 'silent' }), sealOnClose: true, recovery: { backupRetentionCount: 0 } });
  await store.append(Array.from({ length: 2000 }, (_, i) => Buffer.from(`entry-${i + 1}-${'x'.repeat(40)}`)));
  await store.close();
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function overwrite(offset: number, bytes: Buffer): Promise<void> {
  const file = await open(join(dir, SEGMENT), 'r+');
  try {
    await file.write(bytes, 0, bytes.length, offset);
  } finally {
    await file.close();
  }
}

describe('validate: one damage, one finding', () => {
  it('reports a zeroed 4 KiB block inside a sealed segment as one finding spanning the block', async () => {
    await overwrite(40 * 1024, Buffer.alloc(4096));
    const report = await validateStore(dir, { recovery: { backupRetentionCount: 0 } });
    expect(report.ok).toBe(false);
    expect(report.findings).toHaveLength(1);
    const [finding] = report.findings;
    expect(finding?.segment).toBe(1);
    // The finding covers the zeroed bytes whole, and names the entries they held.
    expect(finding?.offsetBytes).toBeLessThanOrEqual(40 * 1024);
    expect((finding?.offsetBytes ?? 0) + (finding?.byteLength ?? 0)).toBeGreaterThanOrEqual(44 * 1024);
    const frameBytesMax = ENTRY_HEADER_BYTES + 'entry-2000-'.length + 40;
    expect(finding?.indexCount).toBeGreaterThanOrEqual(Math.floor(4096 / frameBytesMax));
    expect(finding?.detail).toMatch(/no valid frame header/);
  });

  it('keeps two damages apart when an intact entry lies between them', async () => {
    await overwrite(20 * 1024, Buffer.from([0xff]));
    await overwrite(60 * 1024, Buffer.from([0xff]));
    const report = await validateStore(dir, { recovery: { backupRetentionCount: 0 } });
    expect(report.findings).toHaveLength(2);
    for (const finding of report.findings) expect(['checksum-mismatch', 'bad-entry-header']).toContain(finding.kind);
    expect(report.findings[0]?.entryIndex).toBeLessThan(report.findings[1]?.entryIndex ?? 0);
    expect(report.findings.map((f) => f.indexCount)).toEqual([1, 1]);
  });
});

describe('validate: bytes scanned', () => {
  it('counts the bytes read: a sealed segment and each backup of it, an open segment once (it has no backup)', async () => {
    const sealed = await stat(join(dir, SEGMENT));
    const other = await mkdtemp(join(tmpdir(), 'wal-inspect-open-'));
    try {
      const store = await WalStore.open(other, { logger: pino({ level: 'silent' }), recovery: { backupRetentionCount: 1 } });
      await store.append([Buffer.from('a'), Buffer.from('b'), Buffer.from('c')]);
      await store.close();
      const open = await stat(join(other, SEGMENT));
      const report = await validateStore(other, { recovery: { backupRetentionCount: 1 } });
      expect(report.ok).toBe(true);
      expect(report.bytesScanned).toBe(open.size);
      const sealing = await WalStore.open(other, { logger: pino({ level: 'silent' }), sealOnClose: true, recovery: { backupRetentionCount: 1 } });
      await sealing.close();
      const sealedCopy = await stat(join(other, SEGMENT));
      const afterSeal = await validateStore(other, { recovery: { backupRetentionCount: 1 } });
      expect(afterSeal.ok).toBe(true);
      expect(afterSeal.bytesScanned).toBe(2 * sealedCopy.size);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
    const withoutBackups = await validateStore(dir, { recovery: { backupRetentionCount: 0 } });
    expect(withoutBackups.bytesScanned).toBe(sealed.size);
  });
});
