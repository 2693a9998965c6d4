import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    environment: 'node',
    include: ['test/**/*.test.mjs'],
    // Every test file starts its own `wrangler dev`; run them one after another.
    fileParallelism: false,
    // The first `wrangler dev` start may run the Rust build (up to a few minutes).
    testTimeout: 120_000,
    hookTimeout: 300_000,
    teardownTimeout: 60_000,
    // Separate processes so that the exit hooks in test/support/worker.mjs always run.
    pool: 'forks',
  },
})
