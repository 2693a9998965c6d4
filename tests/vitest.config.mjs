import { defineConfig } from 'vitest/config'

// Files whose tests depend on where event logs are kept: they run once per storage. The rest run once,
// in the d1 project.
const STORAGE_DEPENDENT = [
  'sync/contract.test.mjs',
  'sync/ws.test.mjs',
  'sync/http.test.mjs',
  'sync/do-rpc.test.mjs',
  'sync/restart.test.mjs',
  'sync/bad-input.test.mjs',
  'sync/auth.test.mjs',
  'crash/*.test.mjs',
  'load/*.test.mjs',
]

const project = (storage, include) => ({
  extends: true,
  test: { name: storage, include, env: { E2E_STORAGE: storage } },
})

export default defineConfig({
  test: {
    environment: 'node',
    // Workers shared per configuration, started once for the run (support/shared.mjs).
    globalSetup: ['./global-setup.mjs'],
    // A test Worker's start may run the Rust build (up to a few minutes).
    testTimeout: 120_000,
    hookTimeout: 300_000,
    teardownTimeout: 60_000,
    // Separate processes so that the exit hooks in support/worker.mjs always run.
    pool: 'forks',
    // Files wait on Workers far more than they compute: three at a time keep both cores busy.
    fileParallelism: true,
    maxWorkers: 3,
    minWorkers: 1,
    exclude: ['**/node_modules/**', 'conformance/**'],
    projects: [project('d1', ['**/*.test.mjs']), project('do-sqlite', STORAGE_DEPENDENT)],
  },
})
