// What live readers, appends and cached reads cost on Cloudflare, computed from what one run of our
// Worker counts (its admin API's /admin/api/usage: Worker requests, Durable Object requests,
// incoming WebSocket messages, object starts, edge cache hits) and the CPU of the runtime the bench
// meters (workerd's, where the Worker and its objects run; not wrangler's local proxy), priced with Cloudflare's published rates (Workers Paid, December 2026). Nothing here is quoted:
// every count comes from the run.

import http from 'node:http'
import { round, sleep } from './stats.mjs'

/** Published prices, USD. */
export const PRICES = {
  workerRequest: 0.3 / 1e6,
  workerCpuMs: 0.02 / 1e6,
  objectRequest: 0.15 / 1e6,
  /** Incoming WebSocket messages are billed as requests at 20:1. */
  wsMessagesPerRequest: 20,
  objectGbSecond: 12.5 / 1e6,
}
/** An object's memory as billed (128 MB), and how long it stays awake after its last event before
 * it hibernates or is evicted (10 s, as `wrangler dev` shows it): the duration one wake-up costs at
 * most. */
const OBJECT_GB = 0.128
const AWAKE_S_PER_START = 10

let counter = 0

const usage = async (ctx) => {
  const res = await fetch(`${ctx.baseUrl}/admin/api/usage`, { headers: { authorization: `Bearer ${ctx.target.adminSecret}` } })
  if (!res.ok) throw new Error(`usage: HTTP ${res.status}`)
  return res.json()
}

/** `after - before` of every count, less the usage call that read `after` (one Worker request). */
const delta = (before, after) => {
  const d = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]]))
  d.workerRequests -= 1
  return d
}

/** The dollars of `counts` (a usage delta plus `cpuMs`), by part. */
const price = (counts, cpuMs) => {
  const worker = counts.workerRequests * PRICES.workerRequest + cpuMs * PRICES.workerCpuMs
  const objects =
    (counts.objectRequests + counts.objectWsMessages / PRICES.wsMessagesPerRequest) * PRICES.objectRequest +
    counts.objectStarts * AWAKE_S_PER_START * OBJECT_GB * PRICES.objectGbSecond
  return worker + objects
}

/**
 * An SSE reader that behaves as clients do: it reconnects from the offset it reached whenever the
 * server ends the response (recycling). Resolves once the first response is up to date.
 */
const reconnectingSse = (url) => {
  let offset = '-1'
  let req
  let stopped = false
  let ready
  const isReady = new Promise((resolve) => (ready = resolve))
  const connect = () => {
    if (stopped) return
    req = http.get(`${url}?offset=${encodeURIComponent(offset)}&live=sse`, { agent: false }, (res) => {
      res.setEncoding('utf8')
      let buffer = ''
      res.on('data', (text) => {
        buffer += text
        let cut
        while ((cut = buffer.indexOf('\n\n')) !== -1) {
          const event = buffer.slice(0, cut)
          buffer = buffer.slice(cut + 2)
          if (!event.includes('event: control')) continue
          const data = event.split('\n').find((l) => l.startsWith('data:'))
          const control = JSON.parse(data.slice(5))
          offset = control.streamNextOffset ?? offset
          if (control.upToDate) ready()
        }
      })
      res.on('end', connect)
      res.on('error', () => {})
    })
    req.on('error', () => setTimeout(connect, 100))
  }
  connect()
  return {
    ready: isReady,
    stop: () => {
      stopped = true
      req?.destroy()
    },
  }
}

const post = async (url, body, contentType = 'application/json') => {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': contentType }, body })
  if (!res.ok) throw new Error(`append: HTTP ${res.status}`)
  await res.arrayBuffer()
}

/**
 * Three phases, each counted on its own: `readers` SSE readers connected and idle for `idleS`
 * seconds (a minute holds one recycle per reader); `appends` appends with those readers following;
 * `reads` repeated catch-up reads of one mid-stream page (edge cache hits).
 */
export const streamsCost = async (ctx, { readers = 100, idleS = 62, appends = 100, reads = 500 } = {}) => {
  if (!ctx.target.adminSecret) throw new Error('the cost scenario needs the admin API (usage counts)')
  const url = `${ctx.baseUrl}/v1/stream/bench-cost-${Date.now()}-${counter++}`
  const created = await fetch(url, { method: 'PUT', headers: { 'content-type': 'application/json' } })
  if (!created.ok) throw new Error(`create: HTTP ${created.status}`)
  await post(url, JSON.stringify([{ i: -1 }]))
  const clients = []
  try {
    for (let i = 0; i < readers; i += 25) {
      const batch = Array.from({ length: Math.min(25, readers - i) }, () => reconnectingSse(url))
      clients.push(...batch)
      await Promise.all(batch.map((c) => c.ready))
    }
    // Idle: nothing but keep-alives and one recycle per reader.
    await sleep(1_000)
    let before = await usage(ctx)
    let end = ctx.meter.begin()
    await sleep(idleS * 1_000)
    let cpu = end()
    const idle = delta(before, await usage(ctx))
    const idleCpuMs = cpu.runtimeCpuS * 1_000
    const perReaderHour = 3_600 / idleS / readers
    const idleReader = {
      workerRequests: round(idle.workerRequests * perReaderHour, 1),
      objectRequests: round(idle.objectRequests * perReaderHour, 1),
      objectStarts: round(idle.objectStarts * perReaderHour, 2),
      cpuMs: round(idleCpuMs * perReaderHour, 1),
      dollarsPerMillionReaderHours: round(price(idle, idleCpuMs) * perReaderHour * 1e6, 2),
    }

    // Appends, fanned out to every reader.
    before = await usage(ctx)
    end = ctx.meter.begin()
    for (let i = 0; i < appends; i++) {
      await post(url, JSON.stringify([{ i }]))
      await sleep(50)
    }
    await sleep(2_000)
    const appendCpu = end()
    const appended = delta(before, await usage(ctx))
    const appendCpuMs = appendCpu.runtimeCpuS * 1_000
    const append = {
      workerRequests: round(appended.workerRequests / appends, 2),
      objectRequests: round(appended.objectRequests / appends, 2),
      objectStarts: round(appended.objectStarts / appends, 3),
      cpuMs: round(appendCpuMs / appends, 2),
      readers,
      dollarsPerMillionAppends: round((price(appended, appendCpuMs) / appends) * 1e6, 2),
    }
    for (const c of clients) c.stop()
    clients.length = 0

    // Cached reads: one mid-stream page, read again and again.
    const page = `${url}-page`
    await fetch(page, { method: 'PUT', headers: { 'content-type': 'application/json' } })
    await post(page, JSON.stringify(Array.from({ length: 9_000 }, (_, i) => ({ i }))))
    await (await fetch(`${page}?offset=-1`)).arrayBuffer()
    before = await usage(ctx)
    end = ctx.meter.begin()
    let hits = 0
    for (let i = 0; i < reads; i++) {
      const res = await fetch(`${page}?offset=-1`)
      await res.arrayBuffer()
      if (res.headers.get('x-cache') === 'HIT') hits++
    }
    cpu = end()
    const readCounts = delta(before, await usage(ctx))
    const readCpuMs = cpu.runtimeCpuS * 1_000
    const cachedRead = {
      hits,
      workerRequests: round(readCounts.workerRequests / reads, 2),
      objectRequests: round(readCounts.objectRequests / reads, 3),
      cpuMs: round(readCpuMs / reads, 3),
      dollarsPerMillionReads: round((price(readCounts, readCpuMs) / reads) * 1e6, 2),
    }
    return {
      figure:
        `idle reader $${idleReader.dollarsPerMillionReaderHours}/M reader-hours (${idleReader.workerRequests} Worker + ${idleReader.objectRequests} DO req, ${idleReader.objectStarts} wakes, ${idleReader.cpuMs} CPU-ms per hour)  ` +
        `append to ${readers} readers $${append.dollarsPerMillionAppends}/M (${append.objectRequests} DO req, ${append.cpuMs} CPU-ms)  ` +
        `cached read $${cachedRead.dollarsPerMillionReads}/M (${cachedRead.hits}/${reads} hits, ${cachedRead.objectRequests} DO req)`,
      primary: { value: append.dollarsPerMillionAppends, unit: '$/M appends', better: 'lower' },
      ops: appends,
      opUnit: 'append',
      cpu: appendCpu,
      complete: hits === reads,
      details: { idleReader, append, cachedRead, prices: PRICES, awakeSecondsPerStart: AWAKE_S_PER_START, objectGb: OBJECT_GB },
      ...(hits === reads ? {} : { error: `${reads - hits} cached reads missed the cache` }),
    }
  } finally {
    for (const c of clients) c.stop()
  }
}
