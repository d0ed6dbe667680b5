// The deterministic simulation (src/sim): the same seed gives the same trace, and a time-boxed
// sweep of seeds finds no violation of the invariants. `npm run sim -- --seeds K` runs longer
// sweeps (docs/SIMULATION.md).
import { describe, expect, it } from 'vitest';
import { runSeed } from '../../src/sim/index.js';

const SWEEP_MS = Number(process.env['WAL_SIM_SWEEP_MS'] ?? 100_000);
const SWEEP_START = Number(process.env['WAL_SIM_SWEEP_START'] ?? Math.floor(Date.now() / 1000) % 1_000_000);

describe('deterministic simulation', () => {
  it('one seed gives one trace: two runs of a seed have the same trace hash and counts', async () => {
    const a = await runSeed({ seed: 424242, durationMs: 5_000 });
    const b = await runSeed({ seed: 424242, durationMs: 5_000 });
    expect(a.operations).toBeGreaterThan(50);
    expect(b.traceHash).toBe(a.traceHash);
    expect(b.operations).toBe(a.operations);
    expect(b.steps).toBe(a.steps);
  }, 120_000);

  it(`a sweep of seeds for ${SWEEP_MS / 1000} s finds no violation (starting at seed ${SWEEP_START})`, async () => {
    const began = Date.now();
    const failures: string[] = [];
    let seeds = 0;
    for (let seed = SWEEP_START; Date.now() - began < SWEEP_MS; seed += 1) {
      const result = await runSeed({ seed });
      seeds += 1;
      if (!result.ok) failures.push(`seed ${seed}: ${result.violations.map((v) => `${v.invariant}: ${v.detail}`).join('; ')}\n${result.trace.join('\n')}`);
      if (failures.length >= 3) break;
    }
    expect(seeds).toBeGreaterThan(0);
    expect(failures).toEqual([]);
  }, SWEEP_MS + 120_000);
});
