// Side-by-side benchmark of LiveStore sync servers (`make bench`; see README "Benchmarks").
//
// One after the other, each on fresh state under its own `wrangler dev` (startWorker), the same
// load generator drives:
//   rust-d1   our Worker, event logs in D1 (the default)
//   rust-do   our Worker, event logs in each store's Durable Object SQLite
//   ceiling   a bare JS Durable Object doing the same SQLite inserts and broadcasts (bench/ceiling)
//   ts-do     the TypeScript reference, @livestore/sync-cf 0.4.0 as published, DO SQLite (bench/ts-ref)
//   ts-d1     the same with D1 storage
// through the scenarios below, measuring the server's CPU (workerd, from /proc) and the load
// generator's own CPU over the timed part of each scenario. Prints a table and writes
// .wrangler/bench/bench.json.
//
// Environment:
//   BENCH_ONLY=push-1,rust-do   run a subset: comma list of scenario and/or target names, or
//                               prefixes of them (`fan-out`, `catch-up`, `streams`, `rust`, `ts`)
//   BENCH_BUDGET_S=720          overall time budget in seconds (scenarios are capped to fit it)
//   BENCH_CAP_SCALE=1           multiplies every per-scenario time cap
//   BENCH_OUT=path              where to write the JSON (default .wrangler/bench/bench.json, or
//                               bench-only.json with BENCH_ONLY: ratios for targets not run then
//                               use the last full run's bench.json, marked *)
//   BENCH_VIA_PROXY=1           send the load through wrangler's entry proxy (the --port) instead
//                               of straight to the workerd that runs the Worker (the default: the
//                               proxy hop is a dev-only cost, ~2–3 ms of CPU per HTTP request)

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startWorker } from '../tests/support/worker.mjs'
import { cpuDelta, cpuSnapshot, findServer, listeningPorts, makeMeter } from '../tests/support/procs.mjs'
import { streamsCost } from './lib/cost.mjs'
import { streamsEstuary } from './lib/estuary.mjs'
import { computeRatios, formatTable, perOp } from './lib/report.mjs'
import { round, sleep } from './lib/stats.mjs'
import { streamsCatchUp, streamsConcurrent, streamsLongPoll, streamsSequential, streamsSse } from './lib/streams-scenarios.mjs'
import { catchUpHttp, catchUpWs, fanOut, httpBaseline, memory, push1, push100 } from './lib/sync-scenarios.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(here, '..')
const FULL_OUT = path.resolve(ROOT, '.wrangler/bench/bench.json')
const BUDGET_MS = Number(process.env.BENCH_BUDGET_S ?? 720) * 1000
const VIA_PROXY = process.env.BENCH_VIA_PROXY === '1'
const T0 = performance.now()
const elapsedMs = () => performance.now() - T0

const TARGETS = [
  {
    name: 'rust-d1',
    kind: 'ours',
    ref: 'ts-d1',
    streamsRef: 'ds-node',
    streams: true,
    // The admin API tells the cold catch-up when the moves to R2 are done.
    adminSecret: 'bench-admin',
    start: () => startWorker({ name: 'bench-rust-d1', storage: 'd1', vars: { ADMIN_SECRET: 'bench-admin' } }),
  },
  { name: 'rust-do', kind: 'ours', ref: 'ts-do', start: () => startWorker({ name: 'bench-rust-do', storage: 'do-sqlite' }) },
  {
    name: 'ceiling',
    kind: 'ceiling',
    // bench/ceiling/streams.mjs serves the streams scenarios too.
    streams: true,
    start: () => startWorker({ name: 'bench-ceiling', config: 'bench/ceiling/wrangler.toml', storage: 'do-sqlite' }),
  },
  {
    name: 'ts-do',
    kind: 'ref',
    start: () =>
      startWorker({ name: 'bench-ts-do', config: 'bench/ts-ref/wrangler.toml', storage: 'do-sqlite', vars: { SYNC_STORAGE: 'do-sqlite' } }),
  },
  {
    name: 'ts-d1',
    kind: 'ref',
    start: () => startWorker({ name: 'bench-ts-d1', config: 'bench/ts-ref/wrangler.toml', storage: 'd1', vars: { SYNC_STORAGE: 'd1' } }),
  },
  // The Node reference Durable Streams server: the streams scenarios only.
  { name: 'ds-node', kind: 'ref', streams: true, streamsOnly: true, start: () => startDsNode() },
]

/**
 * The Node reference Durable Streams server (bench/ds-node/server.mjs) in its own process, in memory
 * (or file-backed on fresh state with BENCH_DS_NODE_FILES=1): `{ url, port, logFile, procs, stop }`,
 * its CPU measured as our workerd's is.
 */
const startDsNode = async () => {
  const dataDir = process.env.BENCH_DS_NODE_FILES === '1' ? fs.mkdtempSync(path.join(os.tmpdir(), 'bench-ds-node-')) : ''
  const logFile = path.resolve(ROOT, '.wrangler/bench/ds-node.log')
  fs.mkdirSync(path.dirname(logFile), { recursive: true })
  const log = fs.openSync(logFile, 'w')
  const child = spawn(process.execPath, [path.join(here, 'ds-node/server.mjs')], {
    cwd: here,
    env: { ...process.env, PORT: '0', DATA_DIR: dataDir },
    stdio: ['ignore', 'pipe', log],
  })
  const url = await new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (chunk) => {
      out += chunk
      const m = /ready (\S+)/.exec(out)
      if (m) resolve(m[1])
    })
    child.on('exit', (code) => reject(new Error(`the Node reference server exited (${code}); see ${logFile}`)))
  })
  return {
    url,
    port: Number(new URL(url).port),
    logFile,
    procs: { runtime: child.pid, aux: [], node: [], all: [child.pid] },
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM')
        await Promise.race([once(child, 'exit'), sleep(5_000)])
        if (child.exitCode === null) child.kill('SIGKILL')
      }
      if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true })
    },
  }
}

// Table order. capS: the timed part of a scenario stops there and its rate is reported over what
// completed (the TypeScript reference needs the caps; ours and the ceiling finish well within).
const SCENARIOS = [
  { name: 'http-baseline', capS: 5, run: (ctx) => httpBaseline(ctx, { count: 300 }) },
  { name: 'push-1', capS: 8, run: (ctx) => push1(ctx, { count: 400 }) },
  { name: 'push-100', capS: 15, run: (ctx) => push100(ctx, { batches: 200 }) },
  { name: 'catch-up-ws', capS: 10, run: catchUpWs },
  { name: 'catch-up-http', capS: 15, run: catchUpHttp },
  { name: 'fan-out-100', capS: 12, run: (ctx) => fanOut(ctx, { sockets: 100 }) },
  { name: 'fan-out-500', capS: 12, order: 0, run: (ctx) => fanOut(ctx, { sockets: 500, measureMemory: true }) },
  { name: 'memory', capS: 30, order: 1, run: (ctx) => memory(ctx, { sockets: 500 }) },
  { name: 'streams-seq', capS: 8, streams: true, run: (ctx) => streamsSequential(ctx, { count: 500 }) },
  { name: 'streams-concurrent', capS: 8, streams: true, run: (ctx) => streamsConcurrent(ctx, { writers: 16, each: 125 }) },
  { name: 'streams-catch-up', capS: 8, streams: true, run: (ctx) => streamsCatchUp(ctx, { total: 20_000 }) },
  // What Cloudflare would bill, from our Worker's own usage counts (the reference has none). Before
  // the live-reader scenarios: their readers' bridge sockets are closed up to a keep-alive interval
  // after they end, which wakes their objects and would be counted here.
  { name: 'streams-cost', capS: 90, streams: true, needsAdmin: true, run: (ctx) => streamsCost(ctx) },
  {
    name: 'streams-cold-catch-up',
    capS: 15,
    streams: true,
    run: (ctx) => streamsCatchUp(ctx, { total: 1_000_000, batch: 10_000, seedCapMs: 90_000 * CAP_SCALE, cold: true }),
  },
  { name: 'streams-sse', capS: 12, streams: true, run: (ctx) => streamsSse(ctx, { readers: 100, appends: 200 }) },
  { name: 'streams-sse-300', capS: 12, streams: true, run: (ctx) => streamsSse(ctx, { readers: 300, appends: 200 }) },
  { name: 'streams-sse-1000', capS: 12, streams: true, run: (ctx) => streamsSse(ctx, { readers: 1_000, appends: 200, drainMs: 30_000 }) },
  { name: 'streams-long-poll', capS: 12, streams: true, run: (ctx) => streamsLongPoll(ctx, { readers: 100, appends: 200 }) },
  // Pub/sub: a publish to 1,000 estuaries (ours only: neither reference has them).
  { name: 'streams-estuary', capS: 30, streams: true, oursOnly: true, run: (ctx) => streamsEstuary(ctx, { subscribers: 1_000, publishes: 5 }) },
]
// Run order: fan-out-500 first, on a freshly started worker, because it also takes the memory
// figure (workerd RSS with its 500 sockets open and idle, before its pushes), whose baseline
// garbage left by earlier scenarios would move; `memory` then only reports it.
const RUN_ORDER = [...SCENARIOS.filter((s) => s.order !== undefined).sort((a, b) => a.order - b.order), ...SCENARIOS.filter((s) => s.order === undefined)]
/** BENCH_CAP_SCALE multiplies every cap (and the seeding cap). */
const CAP_SCALE = Number(process.env.BENCH_CAP_SCALE ?? 1)
/** Seeding the 20,000-event catch-up store when push-100 did not store them all (not timed). */
const SEED_CAP_S = 12
/** A scenario that takes this much longer than its cap is abandoned as hung. */
const HANG_GRACE_S = 90

// ------------------------------------------------------------------------------------------------
// BENCH_ONLY

const matches = (name, token) => name === token || name.startsWith(`${token}-`)
const only = (process.env.BENCH_ONLY ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean)
const known = [...TARGETS, ...SCENARIOS].map((x) => x.name)
for (const token of only) {
  if (!known.some((name) => matches(name, token))) {
    console.error(`BENCH_ONLY: ${token} matches no scenario or target (${known.join(', ')})`)
    process.exit(2)
  }
}
const targetTokens = only.filter((t) => TARGETS.some((x) => matches(x.name, t)))
const scenarioTokens = only.filter((t) => SCENARIOS.some((x) => matches(x.name, t)))
const targets = TARGETS.filter((t) => targetTokens.length === 0 || targetTokens.some((tok) => matches(t.name, tok)))
const scenarios = RUN_ORDER.filter((s) => scenarioTokens.length === 0 || scenarioTokens.some((tok) => matches(s.name, tok)))
const applies = (scenario, target) =>
  (target.streamsOnly ? scenario.streams : !scenario.streams || target.streams) &&
  (!scenario.needsAdmin || target.adminSecret !== undefined) &&
  (!scenario.oursOnly || target.kind === 'ours')

// A subset run writes its own file and keeps the last full run's bench.json, whose figures give
// the ratios for targets it did not run (marked * in the table).
const OUT = path.resolve(ROOT, process.env.BENCH_OUT ?? (only.length > 0 ? '.wrangler/bench/bench-only.json' : FULL_OUT))
let earlier = []
let earlierDate
if (only.length > 0 && fs.existsSync(FULL_OUT)) {
  try {
    const full = JSON.parse(fs.readFileSync(FULL_OUT, 'utf8'))
    if (Array.isArray(full.only) && full.only.length === 0) {
      earlierDate = full.date
      earlier = (full.results ?? []).map((r) => ({ ...r, earlier: full.date }))
    }
  } catch {}
}

// ------------------------------------------------------------------------------------------------

const log = (...args) => console.error(`[bench ${round(elapsedMs() / 1000, 1)}s]`, ...args)

/** The runtime workerd's own listening port that serves the Worker (GET / answers `Info: …`). */
const directUrl = async (procs) => {
  for (const port of listeningPorts(procs.runtime)) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(5_000) })
      if (res.status === 200 && (await res.text()).startsWith('Info:')) return `http://127.0.0.1:${port}`
    } catch {}
  }
  throw new Error(`the Worker's workerd (pid ${procs.runtime}) serves on none of its ports`)
}

/** Waits (at most `maxMs`) until the worker's workerd processes use under 5 % of a core. */
const quiesce = async (procs, maxMs = 15_000) => {
  const deadline = performance.now() + maxMs
  while (performance.now() < deadline) {
    const before = cpuSnapshot(procs.all)
    await sleep(250)
    const delta = cpuDelta(before, cpuSnapshot(procs.all))
    const used = [procs.runtime, ...procs.aux].reduce((sum, pid) => sum + (delta[pid] ?? 0), 0)
    if (used < 0.25 * 0.05) return
  }
}

const withTimeout = (promise, ms, what) => {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms / 1000} s`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

// A stray failure (a socket of an abandoned scenario) must not end the run and leave the table unprinted.
process.on('unhandledRejection', (e) => log(`unhandled rejection: ${e?.message ?? e}`))

const results = []
const targetInfo = {}

for (const target of targets) {
  const planned = scenarios.filter((s) => applies(s, target))
  if (planned.length === 0) continue
  if (elapsedMs() > BUDGET_MS - 20_000) {
    for (const s of planned) results.push({ scenario: s.name, target: target.name, ok: false, skipped: true, error: 'time budget' })
    continue
  }
  log(`starting ${target.name}`)
  const startedAt = performance.now()
  let worker
  try {
    worker = await target.start()
  } catch (e) {
    const error = `start failed: ${e.message.split('\n')[0]}`
    log(`${target.name}: ${error}`)
    targetInfo[target.name] = { error: e.message.slice(0, 4_000) }
    for (const s of planned) results.push({ scenario: s.name, target: target.name, ok: false, error })
    continue
  }
  try {
    const procs = worker.procs ?? findServer(worker.port)
    const baseUrl = worker.procs || VIA_PROXY ? worker.url : await directUrl(procs)
    targetInfo[target.name] = {
      url: baseUrl,
      wranglerUrl: worker.url,
      startSeconds: round((performance.now() - startedAt) / 1000, 1),
      processes: procs,
      log: path.relative(ROOT, worker.logFile),
    }
    const meter = makeMeter(procs)
    const shared = {}
    for (const scenario of planned) {
      const remainingMs = BUDGET_MS - elapsedMs()
      if (remainingMs < 15_000) {
        results.push({ scenario: scenario.name, target: target.name, ok: false, skipped: true, error: 'time budget' })
        continue
      }
      await quiesce(procs)
      const capMs = Math.max(5_000, Math.min(scenario.capS * CAP_SCALE * 1000, remainingMs - 10_000))
      const ctx = { target, baseUrl, meter, shared, capMs, seedCapMs: SEED_CAP_S * CAP_SCALE * 1000 }
      const t0 = performance.now()
      try {
        const running = scenario.run(ctx)
        running.catch(() => {}) // if it is abandoned as hung, a later failure is not news
        const r = await withTimeout(running, capMs + HANG_GRACE_S * 1000, scenario.name)
        const entry = { scenario: scenario.name, target: target.name, ok: true, ...r, cpuPerOp: perOp(r.cpu, r.ops), wallSeconds: round((performance.now() - t0) / 1000, 1) }
        results.push(entry)
        log(`${target.name} ${scenario.name}: ${r.figure}  server ${entry.cpuPerOp?.server} µs/${r.opUnit}${r.error ? `  ERROR: ${r.error}` : ''}`)
      } catch (e) {
        results.push({ scenario: scenario.name, target: target.name, ok: false, error: e.message.split('\n')[0].slice(0, 300) })
        log(`${target.name} ${scenario.name}: ERROR ${e.message.split('\n')[0]}`)
      }
    }
  } catch (e) {
    log(`${target.name}: ${e.message}`)
    for (const s of planned) {
      if (!results.some((r) => r.scenario === s.name && r.target === target.name)) {
        results.push({ scenario: s.name, target: target.name, ok: false, error: e.message.split('\n')[0] })
      }
    }
  } finally {
    await worker.stop()
  }
}

computeRatios(results, TARGETS, earlier)
const order = (list, name) => list.findIndex((x) => x.name === name)
results.sort((a, b) => order(SCENARIOS, a.scenario) - order(SCENARIOS, b.scenario) || order(TARGETS, a.target) - order(TARGETS, b.target))

const totalSeconds = round(elapsedMs() / 1000, 1)
const machine = {
  platform: `${process.platform} ${process.arch}`,
  cpus: os.cpus().length,
  cpuModel: os.cpus()[0]?.model,
  memGb: round(os.totalmem() / 2 ** 30, 1),
  loadAvg: os.loadavg().map((x) => round(x, 2)),
  node: process.version,
}
const table = formatTable(results)
console.log(`\nLiveStore sync benchmark — ${new Date().toISOString()} — ${machine.cpus} cores (${machine.cpuModel}), load ${machine.loadAvg.join(' ')}, node ${machine.node} — ${totalSeconds} s`)
console.log(
  `load sent ${VIA_PROXY ? "through wrangler's entry proxy" : "straight to the Worker's workerd"}; srv µs/op = CPU of the whole wrangler dev instance per op ` +
    '(run = workerd running the Worker, aux = entry workerd, node = wrangler); lg = load generator; ÷ref / ÷ceil = ours ÷ other, for the figure and for srv µs/op\n',
)
console.log(table)
if (results.some((r) => r.ratios?.ref?.earlier || r.ratios?.ceiling?.earlier)) {
  console.log(`\n* against the figures of the last full run (${earlierDate}, ${path.relative(process.cwd(), FULL_OUT)}), not run now`)
}

fs.mkdirSync(path.dirname(OUT), { recursive: true })
fs.writeFileSync(
  OUT,
  JSON.stringify({ date: new Date().toISOString(), machine, totalSeconds, budgetSeconds: BUDGET_MS / 1000, only, viaProxy: VIA_PROXY, targets: targetInfo, results, table }, null, 2),
)
console.log(`\nwritten to ${path.relative(process.cwd(), OUT)}`)
// Exit status: 1 if one of our targets failed a scenario or a check (the reference's and the
// ceiling's failures are only reported).
const oursFailed = results.some((r) => TARGETS.find((t) => t.name === r.target)?.kind === 'ours' && ((!r.ok && !r.skipped) || r.error))
process.exit(oursFailed ? 1 : 0)
