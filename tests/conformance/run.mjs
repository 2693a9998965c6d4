// Starts the Worker with `wrangler dev` on fresh state and a short long-poll timeout, runs
// the conformance suite against it, prints the suite's pass/fail counts per group, and stops
// the server. Exit code: 0 only when every test passed (a skipped one counts as failed), the
// subscription tests (`subscriptions: true`) included. Webhook receivers listen on 127.0.0.1, so the
// Worker runs with DS_WEBHOOK_ALLOW_LOOPBACK=true (local development).
// Writes the totals to .wrangler/test-logs/part-conformance.json for `make test`'s summary.
//
//   node run.mjs [vitest args…]      (e.g. -t "Fork" to run some tests)
import { spawn } from 'node:child_process'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..', '..')
const wrangler = join(root, 'client-ts/node_modules/.bin/wrangler')
const longPollMs = Number(process.env.LONG_POLL_TIMEOUT_MS ?? 1000)
const logDir = join(root, '.wrangler/test-logs')
const report = join(logDir, 'conformance.json')

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

async function waitReady(url, child, ms = 180_000) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited with ${child.exitCode}`)
    try {
      const res = await fetch(`${url}/v1/stream/__ready__`, { method: 'HEAD' })
      if (res.status === 404 || res.status === 200) return
    } catch {}
    await new Promise((r) => setTimeout(r, 500))
  }
  throw new Error('wrangler dev did not become ready')
}

function summarize(file) {
  const json = JSON.parse(readFileSync(file, 'utf8'))
  const groups = new Map()
  let passed = 0
  let failed = 0
  let skipped = 0
  for (const suite of json.testResults ?? []) {
    for (const test of suite.assertionResults ?? []) {
      const group = (test.ancestorTitles ?? []).join(' > ') || '(top)'
      const counts = groups.get(group) ?? { passed: 0, failed: 0, skipped: 0 }
      if (test.status === 'passed') {
        counts.passed++
        passed++
      } else if (test.status === 'failed') {
        counts.failed++
        failed++
      } else {
        counts.skipped++
        skipped++
      }
      groups.set(group, counts)
    }
  }
  console.log('\nConformance by group (passed/failed/skipped):')
  for (const [group, c] of groups) {
    const mark = c.failed || c.skipped ? '  <-' : ''
    console.log(`  ${c.passed}/${c.failed}/${c.skipped}  ${group}${mark}`)
  }
  writeFileSync(join(logDir, 'part-conformance.json'), JSON.stringify({ passed, failed: failed + skipped + (passed === 0 ? 1 : 0) }))
  console.log(
    `\nConformance total: ${passed} passed, ${failed} failed, ${skipped} skipped`,
  )
  return failed === 0 && skipped === 0 && passed > 0
}

const port = await freePort()
const inspector = await freePort()
const state = mkdtempSync(join(tmpdir(), 'ds-conformance-'))
mkdirSync(logDir, { recursive: true })
const url = `http://127.0.0.1:${port}`
const server = spawn(
  wrangler,
  [
    'dev', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspector),
    '--persist-to', state, '--var', `DS_LONG_POLL_TIMEOUT_MS:${longPollMs}`,
    '--var', 'DS_WEBHOOK_ALLOW_LOOPBACK:true',
  ],
  {
    cwd: root,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false' },
  },
)
let serverLog = ''
server.stdout.on('data', (d) => (serverLog += d))
server.stderr.on('data', (d) => (serverLog += d))
const stop = () => {
  try {
    process.kill(-server.pid, 'SIGTERM')
  } catch {}
}
process.on('exit', stop)
process.on('SIGINT', () => process.exit(130))

let ok = false
try {
  await waitReady(url, server)
  const vitest = join(here, 'node_modules/.bin/vitest')
  const run = spawn(
    vitest,
    ['run', 'conformance.test.mjs', '--reporter=default', '--reporter=json', `--outputFile=${report}`,
      ...process.argv.slice(2)],
    {
      cwd: here,
      stdio: 'inherit',
      env: { ...process.env, CONFORMANCE_TEST_URL: url, LONG_POLL_TIMEOUT_MS: String(longPollMs) },
    },
  )
  await new Promise((resolve) => run.on('exit', resolve))
  ok = summarize(report)
} catch (e) {
  console.error(String(e))
  console.error(serverLog.slice(-4000))
} finally {
  stop()
  rmSync(state, { recursive: true, force: true })
}
process.exit(ok ? 0 : 1)
