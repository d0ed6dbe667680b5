// The scrub throttle (src/cluster/scrub-throttle.ts) on a fake clock: it pauses to measure a
// baseline once appends run, halves the scrub rate when the append path's fdatasync quantile
// rises more than riseAllowed above it, grows it back when it does not, never goes below
// shareMin under load, and gives the full rate whenever appends are idle (the coverage bound).
// pacedDisk (src/cluster/scrub-pace.ts): reads go in chunks at the rate asked for, and wait while
// it is 0.
import { describe, expect, it } from 'vitest';
import type { Disk, DiskFile } from '../../src/io/index.js';
import { ScrubThrottle, quantileOf } from '../../src/cluster/scrub-throttle.js';
import { newRateCell, pacedDisk, readRateCell, writeRateCell } from '../../src/cluster/scrub-pace.js';

const P = { probeMs: 500, windowMs: 500, reprobeEveryMs: 10_000, samplesMin: 20, quantile: 0.99, riseAllowed: 0.05, decreaseFactor: 0.5, increaseShare: 0.1, shareMin: 1 / 64 };

/** Feeds `count` latencies of `ms` spread over [from, from + spanMs), then reads the share at the end. */
function load(t: ScrubThrottle, fromMs: number, spanMs: number, ms: number, count = 50): number {
  for (let i = 0; i < count; i += 1) t.sample(ms, fromMs + (i * spanMs) / count);
  return t.shareNow(fromMs + spanMs);
}

describe('ScrubThrottle', () => {
  it('appends idle: the full rate, and no pause for a baseline', () => {
    const t = new ScrubThrottle(0, P);
    for (let now = 0; now <= 60_000; now += 100) expect(t.shareNow(now)).toBe(1);
    expect(t.probes).toBe(0);
    // A few stray fdatasyncs (fewer than samplesMin a window) are no load either.
    for (let i = 0; i < 5; i += 1) t.sample(50, 60_000 + i);
    expect(t.shareNow(61_000)).toBe(1);
  });

  it('load appears: it pauses (share 0) for one probe, then scrubs at a lowered share', () => {
    const t = new ScrubThrottle(0, P);
    expect(load(t, 0, 500, 2)).toBe(0); // the first loaded window ends: probe
    expect(t.view(500).phase).toBe('probe');
    expect(load(t, 500, 500, 2)).toBe(0.5); // probe over: baseline 2 ms, share halved meanwhile
    expect(t.view(1_000).baselineMs).toBe(2);
  });

  it('append latency above baseline * 1.05: the share halves each window down to shareMin', () => {
    const t = new ScrubThrottle(0, P);
    load(t, 0, 500, 2);
    load(t, 500, 500, 2); // baseline 2
    const shares: number[] = [];
    for (let w = 0; w < 10; w += 1) shares.push(load(t, 1_000 + w * 500, 500, 2.2)); // +10 %
    expect(shares.slice(0, 6)).toEqual([0.25, 0.125, 0.0625, 0.03125, 1 / 64, 1 / 64]);
    expect(Math.min(...shares)).toBe(1 / 64);
    expect(t.decreases).toBeGreaterThanOrEqual(6);
  });

  it('append latency within 5 % of baseline: the share grows back additively to 1', () => {
    const t = new ScrubThrottle(0, P);
    load(t, 0, 500, 2);
    load(t, 500, 500, 2);
    load(t, 1_000, 500, 4); // one slow window: 0.5 -> 0.25
    expect(t.shareNow(1_500)).toBe(0.25);
    const shares: number[] = [];
    for (let w = 0; w < 8; w += 1) shares.push(load(t, 1_500 + w * 500, 500, 2.09));
    expect(shares[0]).toBeCloseTo(0.35, 10);
    expect(shares[7]).toBe(1);
  });

  it('the baseline is measured again every reprobeEveryMs while appends run (load changes)', () => {
    const t = new ScrubThrottle(0, P);
    load(t, 0, 500, 2);
    load(t, 500, 500, 2);
    let now = 1_000;
    let sawProbe = false;
    // The append load itself gets heavier (8 ms with scrubbing paused too): the next probe learns it.
    while (now < 12_500) {
      const share = load(t, now, 500, 8);
      if (share === 0) sawProbe = true;
      now += 500;
    }
    expect(sawProbe).toBe(true);
    expect(t.view(now).baselineMs).toBe(8);
    expect(t.probes).toBe(2);
    // At the new baseline the share recovers.
    for (let w = 0; w < 12; w += 1) load(t, now + w * 500, 500, 8);
    expect(t.shareNow(now + 6_000)).toBe(1);
  });

  it('appends stop: the next window gives the full rate at once (coverage when idle)', () => {
    const t = new ScrubThrottle(0, P);
    load(t, 0, 500, 2);
    load(t, 500, 500, 2);
    for (let w = 0; w < 6; w += 1) load(t, 1_000 + w * 500, 500, 10);
    expect(t.shareNow(4_000)).toBe(1 / 64);
    expect(t.shareNow(4_500)).toBe(1); // an idle window
    expect(t.shareNow(100_000)).toBe(1); // a long silence
  });

  it('appends resume after an idle window: the baseline is measured again (the new load may differ)', () => {
    const t = new ScrubThrottle(0, P);
    load(t, 0, 500, 2);
    load(t, 500, 500, 2); // baseline 2
    expect(t.shareNow(1_500)).toBe(1); // idle window
    expect(load(t, 1_500, 500, 5)).toBe(0); // load resumes: pause for a new baseline
    expect(load(t, 2_000, 500, 5)).toBe(0.25);
    expect(t.view(2_500).baselineMs).toBe(5);
  });

  it('a window with scrubbing on faster than 0.8 x baseline: the baseline is stale, measured again', () => {
    // The bench's case: the baseline was taken during bulk writes (60 KiB entries), then small
    // appends run far faster; against the old baseline the scrubber would run at full rate.
    const t = new ScrubThrottle(0, P);
    load(t, 0, 500, 20);
    load(t, 500, 500, 20); // baseline 20
    expect(load(t, 1_000, 500, 3)).toBe(0); // 3 < 16: probe
    expect(load(t, 1_500, 500, 2)).toBe(0.3); // 0.5 + 0.1 = 0.6 before the probe, halved
    expect(t.view(2_000).baselineMs).toBe(2);
    expect(load(t, 2_000, 500, 3)).toBe(0.15); // now 3 ms is a rise: halved
  });

  it('rejects parameters that could stop scrubbing for good', () => {
    expect(() => new ScrubThrottle(0, { shareMin: 0 })).toThrow(RangeError);
    expect(() => new ScrubThrottle(0, { decreaseFactor: 1 })).toThrow(RangeError);
  });

  it('quantileOf: nearest rank', () => {
    expect(quantileOf([5, 1, 3, 2, 4], 0.99)).toBe(5);
    expect(quantileOf([5, 1, 3, 2, 4], 0.5)).toBe(3);
    expect(quantileOf([...Array(100).keys()], 0.99)).toBe(98);
  });
});

/** A file of `byteLength` bytes whose reads are recorded (size and fake time). */
function fakeDisk(byteLength: number, clock: { now: number }, reads: { bytes: number; atMs: number }[]): Disk {
  const file: DiskFile = {
    read: async (buf: Uint8Array, offset: number, n: number, position: number) => {
      const bytesRead = Math.max(0, Math.min(n, byteLength - position));
      buf.fill(7, offset, offset + bytesRead);
      reads.push({ bytes: bytesRead, atMs: clock.now });
      return { bytesRead };
    },
    write: async () => ({ bytesWritten: 0 }),
    truncate: async () => undefined,
    datasync: async () => undefined,
    sync: async () => undefined,
    byteLength: async () => byteLength,
    close: async () => undefined,
  } as unknown as DiskFile;
  return { open: async () => file } as unknown as Disk;
}

describe('pacedDisk', () => {
  it('splits a read into chunks at the rate asked for, and waits while the rate is 0', async () => {
    const clock = { now: 0 };
    const reads: { bytes: number; atMs: number }[] = [];
    let rate = 0;
    const sleeps: number[] = [];
    const paced = pacedDisk(fakeDisk(1_000_000, clock, reads), {
      bytesPerSecond: () => rate,
      monotonicMs: () => clock.now,
      sleep: async (ms) => {
        sleeps.push(ms);
        clock.now += ms;
        if (clock.now >= 100) rate = 64 * 1024; // the probe ends after 100 ms
      },
    });
    const file = await paced.open('/seg', 'r');
    const buf = new Uint8Array(256 * 1024);
    const { bytesRead } = await file.read(buf, 0, buf.length, 0);
    expect(bytesRead).toBe(256 * 1024);
    expect(reads.map((r) => r.bytes)).toEqual([65_536, 65_536, 65_536, 65_536]);
    expect(reads[0]?.atMs).toBe(100); // paused until the rate rose
    // 64 KiB at 64 KiB/s: one second between chunks.
    expect(reads.map((r) => r.atMs)).toEqual([100, 1_100, 2_100, 3_100]);
    // A short read at the end of the file ends the loop.
    const tail = await file.read(buf, 0, buf.length, 1_000_000 - 1_000);
    expect(tail.bytesRead).toBe(1_000);
  });

  it('the rate cell carries KiB/s between threads', () => {
    const cell = newRateCell();
    expect(readRateCell(cell)).toBe(0);
    writeRateCell(cell, 16 * 1024 * 1024);
    expect(readRateCell(cell)).toBe(16 * 1024 * 1024);
    writeRateCell(cell, -5);
    expect(readRateCell(cell)).toBe(0);
  });
});
