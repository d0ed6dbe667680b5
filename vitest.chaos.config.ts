// Container suites (npm run test:chaos): the chaos suite and the docker-compose test, one file at
// a time. They need a Docker daemon and the images of cluster/build-images.sh
// (cluster/ci-containers.sh does both). Not part of `npm test`: their files end in .chaos.ts.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/chaos/**/*.chaos.ts'],
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 15 * 60_000,
    hookTimeout: 5 * 60_000,
    env: {
      TESTCONTAINERS_RYUK_DISABLED: 'true',
      TESTCONTAINERS_HOST_OVERRIDE: '127.0.0.1',
    },
  },
});
