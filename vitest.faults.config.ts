// The fault matrix (npm run test:faults): a real 3-node cluster and etcd, every file kind times
// every fault on one node (test/faults/*.faults.ts). Not part of `npm test`: it takes minutes.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/faults/**/*.faults.ts'],
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 10 * 60_000,
    hookTimeout: 5 * 60_000,
  },
});
