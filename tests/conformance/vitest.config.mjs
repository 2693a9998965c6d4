import { defineConfig } from 'vitest/config'

// The conformance suite's own config, so vitest does not take the e2e suite's (tests/vitest.config.mjs).
export default defineConfig({ test: { include: ['conformance.test.mjs'] } })
