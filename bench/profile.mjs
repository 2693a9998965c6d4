// CPU profile of our Worker under one benchmark scenario (`make profile SCENARIO=streams-catch-up`).
//
// Starts the Worker under `wrangler dev` (storage from PROFILE_STORAGE, default d1), runs the
// scenario as `make bench` does, and records a V8 CPU profile of the Worker's isolate over the
// scenario's timed part through the inspector. Writes `.wrangler/bench/<scenario>-<storage>.cpuprofile`
// (open it in Chrome DevTools' Performance panel) and prints the functions with the most self
// time: Rust functions show under their (demangled) names, as the wasm keeps its name section.
//
// Environment: SCENARIO (a scenario name of bench/run.mjs, or several separated by commas: they run
// in that order on the same Worker, as in `make bench`, and the profile is the last one's), PROFILE_STORAGE (d1 | do-sqlite),
// PROFILE_TOP (rows printed, default 30), PROFILE_REPEAT (runs of the scenario, default 1; the
// profile covers the timed part of each).

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { startWorker } from '../tests/support/worker.mjs'
import { findServer, makeMeter } from '../tests/support/procs.mjs'
import { streamsCatchUp, streamsConcurrent, streamsLongPoll, streamsSequential, streamsSse } from './lib/streams-scenarios.mjs'
import { catchUpHttp, catchUpWs, fanOut, push1, push100 } from './lib/sync-scenarios.mjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const SCENARIOS = {
  'push-1': (ctx) => push1(ctx, { count: 400 }),
  'push-100': (ctx) => push100(ctx, { batches: 200 }),
  'catch-up-ws': catchUpWs,
  'catch-up-http': catchUpHttp,
  'fan-out-100': (ctx) => fanOut(ctx, { sockets: 100 }),
  'fan-out-500': (ctx) => fanOut(ctx, { sockets: 500 }),
  'streams-seq': (ctx) => streamsSequential(ctx, { count: 500 }),
  'streams-concurrent': (ctx) => streamsConcurrent(ctx, { writers: 16, each: 125 }),
  'streams-catch-up': (ctx) => streamsCatchUp(ctx, { total: 20_000 }),
  'streams-sse': (ctx) => streamsSse(ctx, { readers: 100, appends: 200 }),
  'streams-sse-300': (ctx) => streamsSse(ctx, { readers: 300, appends: 200 }),
  'streams-long-poll': (ctx) => streamsLongPoll(ctx, { readers: 100, appends: 200 }),
}
const sequence = (process.env.SCENARIO ?? '').split(',').map((s) => s.trim()).filter(Boolean)
if (sequence.length === 0 || sequence.some((name) => !SCENARIOS[name])) {
  console.error(`SCENARIO must be one or more (comma-separated) of ${Object.keys(SCENARIOS).join(', ')}`)
  process.exit(2)
}
const scenario = sequence.at(-1)
const storage = process.env.PROFILE_STORAGE ?? 'd1'
const top = Number(process.env.PROFILE_TOP ?? 30)
const repeat = Number(process.env.PROFILE_REPEAT ?? 1)

/** A DevTools-protocol session on the Worker's isolate. */
const inspect = async (port) => {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json()
  const target = targets.find((t) => t.webSocketDebuggerUrl)
  if (!target) throw new Error(`no inspector target on port ${port}: ${JSON.stringify(targets)}`)
  const ws = new WebSocket(target.webSocketDebuggerUrl)
  await new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  })
  let next = 1
  const pending = new Map()
  ws.on('message', (data) => {
    const message = JSON.parse(data.toString())
    const waiter = pending.get(message.id)
    if (!waiter) return
    pending.delete(message.id)
    if (message.error) waiter.reject(new Error(`${JSON.stringify(message.error)}`))
    else waiter.resolve(message.result)
  })
  const send = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = next++
      pending.set(id, { resolve, reject })
      ws.send(JSON.stringify({ id, method, params }))
    })
  return { send, close: () => ws.close() }
}

/** Self time per function (µs), summed over the profile's samples. */
const selfTimes = (profile) => {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const counts = new Map()
  for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1)
  const total = profile.samples.length
  const perSample = (profile.endTime - profile.startTime) / Math.max(1, total)
  const byName = new Map()
  for (const [id, count] of counts) {
    const frame = byId.get(id).callFrame
    const name = `${frame.functionName || '(anonymous)'} ${frame.url ? path.basename(frame.url) : ''}`.trim()
    byName.set(name, (byName.get(name) ?? 0) + count)
  }
  return { total, perSample, rows: [...byName].sort((a, b) => b[1] - a[1]) }
}

const worker = await startWorker({ name: `profile-${storage}`, storage })
try {
  const procs = findServer(worker.port)
  const meter = makeMeter(procs)
  const session = await inspect(worker.inspectorPort)
  await session.send('Profiler.enable')
  await session.send('Profiler.setSamplingInterval', { interval: 100 })
  const profiles = []
  // The profiler runs over the timed part only: `begin` starts it and its `end` stops it.
  let stopping = Promise.resolve()
  const profiled = {
    ...meter,
    begin: () => {
      const started = session.send('Profiler.start')
      const end = meter.begin()
      return () => {
        const cpu = end()
        stopping = started.then(() => session.send('Profiler.stop')).then((r) => profiles.push(r.profile))
        return cpu
      }
    },
  }
  const shared = {}
  for (let i = 0; i < repeat; i++) {
    for (const [n, name] of sequence.entries()) {
      // Only the last scenario of the sequence is profiled; the ones before it set the scene.
      const meterFor = n === sequence.length - 1 ? profiled : meter
      const ctx = { target: { name: `rust-${storage}` }, baseUrl: worker.url, meter: meterFor, shared, capMs: 60_000, seedCapMs: 60_000 }
      const result = await SCENARIOS[name](ctx)
      await stopping
      console.log(`${name} (${storage}): ${result.figure}  server ${((result.cpu.runtimeCpuS * 1e6) / result.ops).toFixed(1)} µs/${result.opUnit} (workerd)`)
    }
  }
  session.close()
  const out = path.join(ROOT, '.wrangler', 'bench', `${scenario}-${storage}.cpuprofile`)
  fs.mkdirSync(path.dirname(out), { recursive: true })
  fs.writeFileSync(out, JSON.stringify(profiles.at(-1)))
  const merged = new Map()
  let samples = 0
  let perSample = 0
  for (const profile of profiles) {
    const t = selfTimes(profile)
    samples += t.total
    perSample = t.perSample
    for (const [name, count] of t.rows) merged.set(name, (merged.get(name) ?? 0) + count)
  }
  console.log(`${samples} samples of ~${perSample.toFixed(0)} µs; self time by function (profile in ${path.relative(ROOT, out)}):`)
  for (const [name, count] of [...merged].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${((100 * count) / samples).toFixed(1).padStart(6)} %  ${name}`)
  }
} finally {
  await worker.stop()
}
