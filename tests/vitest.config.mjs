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
  'sync/store-stream.test.mjs',
  'sync/admin.test.mjs',
  'crash/*.test.mjs',
  'load/*.test.mjs',
]

// Memory bounds (memory/): read from the RSS of a Worker's workerd, so each file runs alone, after the
// rest (one group each): no other test's load in the readings, and no other `wrangler dev` starting or
// stopping meanwhile (each one re-announces the dev registry, which drops the connections that bind
// the DO-RPC client Worker of memory/pull.test.mjs to its sync Worker).
const MEMORY = [
  ['memory-d1', 'd1', 'memory/pull.test.mjs'],
  ['memory-do-sqlite', 'do-sqlite', 'memory/pull.test.mjs'],
  ['memory-fork', 'd1', 'memory/fork.test.mjs'],
]

const EXCLUDE = ['**/node_modules/**', 'conformance/**']

const project = (name, storage, include, { groupOrder = 0, exclude = EXCLUDE } = {}) => ({
  extends: true,
  test: { name, include, exclude, env: { E2E_STORAGE: storage }, sequence: { groupOrder } },
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
    exclude: EXCLUDE,
    projects: [
      project('d1', 'd1', ['**/*.test.mjs'], { exclude: [...EXCLUDE, 'memory/**'] }),
      project('do-sqlite', 'do-sqlite', STORAGE_DEPENDENT),
      ...MEMORY.map(([name, storage, file], i) => project(name, storage, [file], { groupOrder: 1 + i })),
    ],
  },
})
