import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    // Tests spawn real processes (etcd, node clusters) and fsync real files: one file at a time
    // on 2 cores, so that timing-sensitive multi-process suites never share the machine with
    // another one (slower overall, but not flaky).
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
