// The catalog codec (src/wal/catalog.ts) on damaged inputs: every single flipped bit, every cut
// length and appended garbage is refused with a reason (never a throw, never a wrong catalog).
import { describe, expect, it } from 'vitest';
import { type Catalog, decodeCatalog, encodeCatalog } from '../../src/wal/catalog.js';
import { logIdOf } from '../../src/wal/format.js';

const CATALOG: Catalog = {
  generation: 7,
  logName: 'orders',
  logId: logIdOf('orders'),
  segmentBytesMax: 64 * 1024 * 1024,
  entryBytesMax: 1024 * 1024,
  backupRetentionCount: 2,
  createdMs: 1_700_000_000_000,
  segments: [
    { segmentId: 1, firstIndex: 1, lastIndex: 100, indexCount: 100, byteLength: 9000, aggregateChecksum: 0x0123456789abcdefn, state: 'sealed', createdMs: 1_700_000_000_001 },
    { segmentId: 2, firstIndex: 101, lastIndex: 150, indexCount: 50, byteLength: 4000, aggregateChecksum: 0xfedcba9876543210n, state: 'open', createdMs: 1_700_000_000_002 },
  ],
  holes: [{ segmentId: 1, firstIndex: 40, count: 3 }],
};

describe('catalog codec', () => {
  it('decodes what it encoded', () => {
    const decoded = decodeCatalog(encodeCatalog(CATALOG));
    expect(decoded).toEqual({ ok: true, catalog: CATALOG });
  });

  it('refuses every single flipped bit', () => {
    const bytes = encodeCatalog(CATALOG);
    for (let offset = 0; offset < bytes.byteLength; offset += 1) {
      for (let bit = 0; bit < 8; bit += 1) {
        const damaged = Buffer.from(bytes);
        damaged[offset] = (damaged[offset] as number) ^ (1 << bit);
        const decoded = decodeCatalog(damaged);
        expect(decoded.ok, `bit ${bit} of byte ${offset}`).toBe(false);
      }
    }
  });

  it('refuses every cut length and appended garbage, with a reason', () => {
    const bytes = encodeCatalog(CATALOG);
    for (let length = 0; length < bytes.byteLength; length += 1) {
      const decoded = decodeCatalog(bytes.subarray(0, length));
      expect(decoded.ok, `cut at ${length}`).toBe(false);
      if (!decoded.ok) expect(decoded.reason).not.toBe('');
    }
    expect(decodeCatalog(Buffer.concat([bytes, Buffer.alloc(16, 0xaa)])).ok).toBe(false);
  });
});
