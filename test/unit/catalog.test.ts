// The catalog codec (src/wal/catalog.ts) on damaged inputs: every single flipped bit, every cut
// length and appended garbage is refused with a reason (never a throw, never a wrong catalog).
import { describe, expect, it } from 'vitest';
import { type Catalog, decodeCatalog, encodeCatalog } from '../../src/wal/catalog.js';
import { newAggregate } from '../../src/wal/aggregate.js';
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

describe('catalog version 2: the running aggregate of a format-3 open segment', () => {
  const running = newAggregate(3);
  for (let i = 1n; i <= 50n; i += 1n) running.add(i * 0x9e3779b97f4a7c15n & 0xffffffffffffffffn);
  const segments = CATALOG.segments.map((s) => (s.state === 'open' ? { ...s, aggregateChecksum: running.value(), aggregateState: running } : s));
  const withState: Catalog = { ...CATALOG, segments };

  it('round trips the state (version 2), and a catalog without one is written as version 1', () => {
    const bytes = encodeCatalog(withState);
    expect(bytes.readUInt16LE(4)).toBe(2);
    const decoded = decodeCatalog(bytes);
    const open = decoded.ok ? decoded.catalog.segments[1] : undefined;
    expect(open?.aggregateState?.count).toBe(50);
    expect(open?.aggregateState?.value()).toBe(running.value());
    expect(encodeCatalog(CATALOG).readUInt16LE(4)).toBe(1);
  });

  it('refuses every single flipped bit of the state block', () => {
    const bytes = encodeCatalog(withState);
    for (let offset = bytes.byteLength - 8 - 216; offset < bytes.byteLength; offset += 1) {
      const damaged = Buffer.from(bytes);
      damaged[offset] = (damaged[offset] as number) ^ 0x10;
      expect(decodeCatalog(damaged).ok, `byte ${offset}`).toBe(false);
    }
  });
});
