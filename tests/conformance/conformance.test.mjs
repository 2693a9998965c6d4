// The official Durable Streams server conformance suite (pinned in package.json), pointed at
// the Worker that run.mjs starts, subscriptions (the reserved __ds APIs, webhooks and pull-wake)
// included.
import { runConformanceTests } from '@durable-streams/server-conformance-tests'

runConformanceTests({
  baseUrl: process.env.CONFORMANCE_TEST_URL ?? 'http://127.0.0.1:8787',
  longPollTimeoutMs: Number(process.env.LONG_POLL_TIMEOUT_MS ?? 20000),
  subscriptions: true,
})
