// Coalescing of concurrent single appends: linger, byte and entry caps, the in-flight window,
// indices handed back in order, and a failed batch failing every entry in it (and no other).
import { describe, expect, it } from 'vitest';
import { Coalescer, type CoalescerOptions } from '../../src/client/index.js';

function harness(overrides: Partial<CoalescerOptions> = {}) {
  let now = 0;
  const deferred: Array<() => void> = [];
  const sent: Array<{ payloads: readonly Uint8Array[]; resolve: (first: number) => void; reject: (e: unknown) => void }> = [];
  const coalescer = new Coalescer({
    lingerUs: 200,
    batchBytesMax: 1_000,
    batchEntriesMax: 4,
    inFlightBatchesMax: 1,
    send: (payloads) => new Promise((resolve, reject) => sent.push({ payloads, resolve: (firstIndex) => resolve({ firstIndex }), reject })),
    nowUs: () => now,
    defer: (fn) => deferred.push(fn),
    ...overrides,
  });
  const turn = (advanceUs: number): void => {
    now += advanceUs;
    for (const fn of deferred.splice(0)) fn();
  };
  const settle = () => new Promise((r) => setImmediate(r));
  return { coalescer, sent, turn, settle };
}

const p = (n: number, bytes = 10): Uint8Array => Buffer.alloc(bytes, n);

describe('Coalescer', () => {
  it('with a batch in flight, lingers up to lingerUs, then sends everything that arrived as one batch with consecutive indices', async () => {
    const { coalescer, sent, turn } = harness({ inFlightBatchesMax: 2 });
    const lone = coalescer.add(p(0));
    turn(0);
    expect(sent).toHaveLength(1); // nothing was in flight: no linger
    const results = [coalescer.add(p(1)), coalescer.add(p(2)), coalescer.add(p(3))];
    turn(100);
    expect(sent).toHaveLength(1); // still lingering
    turn(100);
    expect(sent).toHaveLength(2);
    expect(sent[1]?.payloads).toHaveLength(3);
    sent[0]?.resolve(40);
    sent[1]?.resolve(41);
    expect(await lone).toBe(40);
    expect(await Promise.all(results)).toEqual([41, 42, 43]);
  });

  it('with nothing in flight, sends at the next turn without lingering, the entries of that turn as one batch', () => {
    const { coalescer, sent, turn } = harness();
    void coalescer.add(p(1));
    void coalescer.add(p(2));
    expect(sent).toHaveLength(0); // entries of the same turn may still join
    turn(0);
    expect(sent.map((s) => s.payloads.length)).toEqual([2]);
  });

  it('closes a batch at the entry cap at once, without lingering', () => {
    const { coalescer, sent } = harness({ inFlightBatchesMax: 4 });
    for (let i = 0; i < 5; i++) void coalescer.add(p(i));
    expect(sent.map((s) => s.payloads.length)).toEqual([4]);
  });

  it('closes a batch at the byte cap', () => {
    const { coalescer, sent, turn } = harness({ inFlightBatchesMax: 4, batchEntriesMax: 100 });
    for (let i = 0; i < 3; i++) void coalescer.add(p(i, 400));
    // 1,200 bytes waiting >= 1,000: a batch goes at once, of the entries that fit the cap.
    expect(sent.map((s) => s.payloads.length)).toEqual([2]);
    void coalescer.add(p(9, 400));
    turn(200);
    expect(sent.map((s) => s.payloads.length)).toEqual([2, 2]);
  });

  it('lets entries wait behind a full window and sends them as the next batch, capped', async () => {
    const { coalescer, sent, turn, settle } = harness();
    const first = coalescer.add(p(0));
    turn(200);
    expect(sent).toHaveLength(1);
    const later = [1, 2, 3, 4, 5, 6].map((i) => coalescer.add(p(i)));
    turn(1_000);
    expect(sent).toHaveLength(1); // the window (1 batch) is full
    sent[0]?.resolve(1);
    expect(await first).toBe(1);
    await settle();
    expect(sent.map((s) => s.payloads.length)).toEqual([1, 4]);
    sent[1]?.resolve(2);
    await settle();
    turn(200);
    expect(sent.map((s) => s.payloads.length)).toEqual([1, 4, 2]);
    sent[2]?.resolve(6);
    expect(await Promise.all(later)).toEqual([2, 3, 4, 5, 6, 7]);
  });

  it('a failed batch fails each of its entries and no other', async () => {
    const { coalescer, sent, turn, settle } = harness({ inFlightBatchesMax: 2 });
    const a = [coalescer.add(p(1)), coalescer.add(p(2))];
    turn(200);
    const b = coalescer.add(p(3));
    turn(200);
    sent[0]?.reject(new Error('outcome unknown'));
    sent[1]?.resolve(10);
    await expect(a[0]).rejects.toThrow('outcome unknown');
    await expect(a[1]).rejects.toThrow('outcome unknown');
    expect(await b).toBe(10);
    await settle();
    await coalescer.drained();
  });

  it('with lingerUs 0 sends each entry at once', () => {
    const { coalescer, sent } = harness({ lingerUs: 0, inFlightBatchesMax: 8 });
    void coalescer.add(p(1));
    void coalescer.add(p(2));
    expect(sent.map((s) => s.payloads.length)).toEqual([1, 1]);
  });
});
