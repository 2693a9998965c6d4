// LiveStore sync scenarios. Each runs on a fresh storeId against one target and returns
// { figure, primary, ops, opUnit, cpu, details, complete }, where `cpu` is what the meter measured
// over the timed part only. They check what they receive (seqNum chains, counts, 100 % delivery)
// and throw when the server got something wrong.

import { Conn, httpPull, httpRpc, httpUrl, makeEvents, openMany, wsUrl } from './wire.mjs'
import { percentiles, round, sequentialResult, sleep, waitFor } from './stats.mjs'

let storeCounter = 0
const freshStore = (ctx, what) => `bench-${what}-${ctx.target.name}-${Date.now()}-${storeCounter++}`

/** Opens a socket and a live pull on a fresh store, as a real client does before pushing. */
const openClient = async (ctx, storeId) => {
  const conn = await Conn.open(wsUrl(ctx.baseUrl, storeId))
  let echoed = 0
  const live = await conn.livePull(storeId, {
    timeoutMs: 30_000,
    onPage: (page) => {
      echoed += page.batch.length
    },
  })
  return { conn, live, backendId: live.backendId, echoed: () => echoed }
}

const closeAll = (conns) => {
  for (const c of conns) c.close()
}

/** Sequential single-event pushes, each waiting for its ack; the pusher holds a live pull. */
export const push1 = async (ctx, { count = 400, warmUp = 5 } = {}) => {
  const storeId = freshStore(ctx, 'push1')
  const client = await openClient(ctx, storeId)
  try {
    let seq = 0
    for (let i = 0; i < warmUp; i++) {
      seq++
      await client.conn.push(storeId, makeEvents(seq, seq), client.backendId)
    }
    const latencies = []
    const deadline = performance.now() + ctx.capMs
    const end = ctx.meter.begin()
    const started = performance.now()
    while (latencies.length < count && performance.now() < deadline) {
      seq++
      const t0 = performance.now()
      await client.conn.push(storeId, makeEvents(seq, seq), client.backendId)
      latencies.push(performance.now() - t0)
    }
    const seconds = (performance.now() - started) / 1000
    // every push comes back on the pusher's own live pull (the 0.4.0 client relies on it)
    const echoedAll = await waitFor(() => client.echoed() === seq, 5_000)
    const cpu = end()
    if (client.live.error) throw client.live.error
    if (!echoedAll) throw new Error(`live pull echoed ${client.echoed()} of ${seq} pushed events`)
    return sequentialResult({ latencies, seconds, count, cpu, unit: 'ev/s', opUnit: 'push', countKey: 'pushes' })
  } finally {
    client.conn.close()
  }
}

/** Batches of 100 events (~100-byte args); the store is kept as the catch-up store. */
export const push100 = async (ctx, { batches = 200, batchSize = 100 } = {}) => {
  const storeId = freshStore(ctx, 'push100')
  const client = await openClient(ctx, storeId)
  try {
    let seq = 0
    // warm-up: one batch (creates the table, first D1 statements), not measured
    await client.conn.push(storeId, makeEvents(1, batchSize), client.backendId)
    seq = batchSize
    const deadline = performance.now() + ctx.capMs
    const end = ctx.meter.begin()
    const started = performance.now()
    let pushed = 0
    while (pushed < batches - 1 && performance.now() < deadline) {
      const batch = makeEvents(seq + 1, seq + batchSize)
      await client.conn.push(storeId, batch, client.backendId)
      seq += batchSize
      pushed++
    }
    const seconds = (performance.now() - started) / 1000
    const echoedAll = await waitFor(() => client.echoed() === seq, 10_000)
    const cpu = end()
    if (client.live.error) throw client.live.error
    if (!echoedAll) throw new Error(`live pull echoed ${client.echoed()} of ${seq} pushed events`)
    const events = pushed * batchSize
    ctx.shared.catchUpStore = { storeId, events: seq, backendId: client.backendId }
    return {
      figure: `${round(events / seconds)} ev/s  (${pushed} × ${batchSize})`,
      primary: { value: events / seconds, unit: 'ev/s', better: 'higher' },
      ops: events,
      opUnit: 'event',
      cpu,
      complete: pushed === batches - 1,
      details: { batches: pushed, events, seconds: round(seconds, 3), perSecond: round(events / seconds), batchesPerSecond: round(pushed / seconds, 1) },
    }
  } finally {
    client.conn.close()
  }
}

/**
 * The store for the catch-up scenarios: push-100's (topped up to `total` if push-100 hit its cap),
 * or one seeded here with push-100 batches. Seeding is not timed, but capped (ctx.seedCapMs).
 */
const catchUpStore = async (ctx, total = 20_000) => {
  const kept = ctx.shared.catchUpStore
  if (kept?.events >= total) return kept
  const storeId = kept?.storeId ?? freshStore(ctx, 'catchup')
  const conn = await Conn.open(wsUrl(ctx.baseUrl, storeId))
  let seq = kept?.events ?? 0
  try {
    const backendId = kept?.backendId ?? (await conn.pull(storeId)).backendId
    const deadline = performance.now() + ctx.seedCapMs
    while (seq < total && performance.now() < deadline) {
      await conn.push(storeId, makeEvents(seq + 1, Math.min(total, seq + 100)), backendId)
      seq = Math.min(total, seq + 100)
    }
    ctx.shared.catchUpStore = { storeId, events: seq, backendId }
  } finally {
    conn.close()
  }
  return ctx.shared.catchUpStore
}

/** A non-live pull of every stored event from the start over WebSocket, acking every chunk. */
export const catchUpWs = async (ctx) => {
  const { storeId, events: stored } = await catchUpStore(ctx)
  const conn = await Conn.open(wsUrl(ctx.baseUrl, storeId))
  let events = 0
  let pages = 0
  let capped = false
  const end = ctx.meter.begin()
  const started = performance.now()
  try {
    await conn.pull(storeId, {
      timeoutMs: ctx.capMs,
      onPage: (page) => {
        events += page.batch.length
        pages++
      },
    })
  } catch (e) {
    if (!/timed out/.test(e.message)) throw e
    capped = true
  } finally {
    conn.terminate()
  }
  const seconds = (performance.now() - started) / 1000
  const cpu = end()
  if (!capped && events !== stored) throw new Error(`catch-up received ${events} events, ${stored} are stored`)
  ctx.shared.catchUpWsCapped = capped
  ctx.shared.catchUpWsRate = events / seconds
  return {
    figure: `${round(events / seconds)} ev/s  (${events}/${stored}${capped ? `, capped at ${ctx.capMs / 1000} s` : ''})`,
    primary: { value: events / seconds, unit: 'ev/s', better: 'higher' },
    ops: events,
    opUnit: 'event',
    cpu,
    complete: !capped,
    details: { stored, events, pages, seconds: round(seconds, 3), perSecond: round(events / seconds) },
  }
}

/**
 * Catch-up over HTTP as the real client does it: POST a Pull with the cursor, read its pages, and
 * if the answer stops before a NoMore page, ask again from the last seqNum received.
 */
export const catchUpHttp = async (ctx) => {
  const { storeId, events: stored, backendId: storeBackendId } = await catchUpStore(ctx)
  const url = httpUrl(ctx.baseUrl, storeId)
  // One answer carries the whole catch-up, so it cannot be cut at the cap. For a target whose
  // WebSocket catch-up hit the cap, pull only the last events that its WebSocket rate delivers
  // in half the cap (from a cursor), so the answer comes in time and the server is not left busy.
  const wsRate = ctx.shared.catchUpWsCapped ? ctx.shared.catchUpWsRate : undefined
  const wanted = wsRate ? Math.max(100, Math.min(stored, Math.round((wsRate * ctx.capMs) / 2000))) : stored
  const from = stored - wanted
  let events = 0
  let pages = 0
  let requests = 0
  let bytes = 0
  let lastSeq = from
  let backendId = storeBackendId
  let noMore = false
  let capped = false
  const signal = AbortSignal.timeout(ctx.capMs)
  const end = ctx.meter.begin()
  const started = performance.now()
  try {
    while (!noMore) {
      const id = String(requests)
      const cursor = lastSeq === 0 ? undefined : { backendId, eventSequenceNumber: lastSeq }
      if (cursor && !backendId) throw new Error('no backendId for the cursor')
      const reply = await httpRpc(url, httpPull(id, storeId, cursor), { signal })
      requests++
      bytes += reply.bytes
      const exit = reply.messages.at(-1)
      if (exit?._tag !== 'Exit' || exit.exit._tag !== 'Success') throw new Error(`HTTP pull failed: ${JSON.stringify(exit).slice(0, 300)}`)
      let got = 0
      for (const msg of reply.messages.slice(0, -1)) {
        for (const page of msg.values) {
          pages++
          backendId = page.backendId
          for (const { eventEncoded } of page.batch) {
            if (eventEncoded.seqNum !== lastSeq + 1) throw new Error(`HTTP pull: seqNum ${eventEncoded.seqNum} after ${lastSeq}`)
            lastSeq = eventEncoded.seqNum
            got++
          }
          noMore = page.pageInfo._tag === 'NoMore'
        }
      }
      events += got
      if (!noMore && got === 0) throw new Error('HTTP pull: an answer without events and without NoMore')
    }
  } catch (e) {
    if (e.name !== 'TimeoutError' && e.name !== 'AbortError') throw e
    capped = true
  }
  const seconds = (performance.now() - started) / 1000
  const cpu = end()
  if (!capped && events !== wanted) throw new Error(`HTTP catch-up received ${events} events, expected ${wanted}`)
  if (capped && events === 0) throw new Error(`no complete HTTP answer within the ${ctx.capMs / 1000} s cap`)
  const part = from > 0 ? `last ${wanted} of ${stored}` : `${events}/${stored}`
  return {
    figure: `${round(events / seconds)} ev/s  (${part} in ${requests} req${capped ? `, capped at ${ctx.capMs / 1000} s` : ''})`,
    primary: { value: events / seconds, unit: 'ev/s', better: 'higher' },
    ops: events,
    opUnit: 'event',
    cpu,
    complete: !capped,
    details: { stored, from, events, pages, requests, mb: round(bytes / 1e6, 1), seconds: round(seconds, 3), perSecond: round(events / seconds) },
  }
}

/**
 * `sockets` live pulls on one store, every one acking every chunk; one pusher sends `pushes`
 * single-event batches on a 20 ms schedule, never more than one unacknowledged (the real client
 * serializes pushes). Delivery latency = arrival on a socket − the push's send time.
 */
export const fanOut = async (ctx, { sockets, pushes = 200, intervalMs = 20, drainMs = 15_000, measureMemory = false } = {}) => {
  const storeId = freshStore(ctx, `fanout${sockets}`)
  const url = wsUrl(ctx.baseUrl, storeId)
  const pusher = await Conn.open(url)
  let conns = []
  try {
    const { backendId } = await pusher.pull(storeId) // the store's object exists before the baseline
    const sentAt = new Float64Array(pushes + 1)
    const latencies = new Float64Array(sockets * pushes)
    let delivered = 0
    const rssBefore = measureMemory ? await medianRss(ctx) : undefined
    const endOpen = ctx.meter.begin()
    conns = await openMany(url, sockets)
    const lives = await Promise.all(
      conns.map((conn) =>
        conn.livePull(storeId, {
          timeoutMs: 60_000,
          onPage: (page, receivedAt) => {
            for (const { eventEncoded } of page.batch) {
              if (delivered < latencies.length) latencies[delivered] = receivedAt - sentAt[eventEncoded.seqNum]
              delivered++
            }
          },
        }),
      ),
    )
    const openCpu = endOpen()
    if (measureMemory) {
      await sleep(500)
      ctx.shared.memory = memoryResult(sockets, rssBefore, await medianRss(ctx), openCpu)
    }
    if (pushes === 0) return undefined
    await sleep(200)
    const end = ctx.meter.begin()
    const started = performance.now()
    const deadline = started + ctx.capMs
    let pushed = 0
    let lastAck = started
    for (let seq = 1; seq <= pushes; seq++) {
      const due = started + (seq - 1) * intervalMs
      const now = performance.now()
      if (due > now) await sleep(due - now)
      if (performance.now() > deadline) break
      sentAt[seq] = performance.now()
      lastAck = await pusher.push(storeId, makeEvents(seq, seq), backendId)
      pushed++
    }
    const pushSeconds = (lastAck - started) / 1000
    const expected = sockets * pushed
    await waitFor(() => delivered >= expected, drainMs)
    const cpu = end()
    const broken = lives.find((l) => l.error)
    if (broken) throw broken.error
    const lat = percentiles(latencies.subarray(0, Math.min(delivered, latencies.length)), [50, 99, 100])
    const share = delivered / expected
    const result = {
      figure: `p50 ${lat.p50} / p99 ${lat.p99} / max ${lat.max} ms  ${round(share * 100, 2)}% (${delivered}/${expected})  ${round(pushed / pushSeconds, 1)} push/s`,
      primary: { value: lat.p50, unit: 'ms p50', better: 'lower' },
      ops: delivered,
      opUnit: 'delivery',
      cpu,
      complete: pushed === pushes,
      details: { sockets, pushes: pushed, expected, delivered, latencyMs: lat, pushesPerSecond: round(pushed / pushSeconds, 1) },
    }
    if (delivered !== expected) {
      result.error = `delivered ${delivered} of ${expected} (${round(share * 100, 2)}%)`
    }
    return result
  } finally {
    closeAll(conns)
    pusher.close()
  }
}

/** The sample with the median total of three RSS samples 250 ms apart. */
const medianRss = async (ctx) => {
  const samples = []
  for (let i = 0; i < 3; i++) {
    if (i > 0) await sleep(250)
    samples.push(ctx.meter.rss())
  }
  return samples.sort((a, b) => a.total - b.total)[1]
}

/** The memory figure: RSS of the workerd running the Worker with `sockets` idle live pulls on one store, minus before them. */
const memoryResult = (sockets, before, after, cpu) => {
  const perSocketKb = (after.total - before.total) / sockets
  return {
    figure: `${round(perSocketKb, 1)} KB/socket  (+${round((after.total - before.total) / 1024, 1)} MB for ${sockets})`,
    primary: { value: perSocketKb, unit: 'KB/socket', better: 'lower' },
    ops: sockets,
    opUnit: 'socket opened',
    cpu,
    complete: true,
    details: { sockets, rssBeforeKb: before.total, rssAfterKb: after.total, perSocketKb: round(perSocketKb, 2), auxGrowthKb: after.auxKb - before.auxKb },
  }
}

/**
 * The memory scenario: measured by fan-out-500 while its sockets are open and idle (before the
 * pushes) when that ran first on the same worker; otherwise on its own.
 */
export const memory = async (ctx, { sockets = 500 } = {}) => {
  if (ctx.shared.memory) return ctx.shared.memory
  await fanOut(ctx, { sockets, pushes: 0, measureMemory: true })
  return ctx.shared.memory
}

/**
 * The cost of an HTTP request that does nothing (GET /, the Worker's info text, no Durable
 * Object): the floor under every HTTP figure (catch-up-http, the streams scenarios).
 */
export const httpBaseline = async (ctx, { count = 300 } = {}) => {
  const get = async () => {
    const res = await fetch(`${ctx.baseUrl}/`)
    const text = await res.text()
    if (res.status !== 200 || !text.startsWith('Info:')) throw new Error(`GET /: HTTP ${res.status} ${text.slice(0, 200)}`)
  }
  await get()
  const latencies = []
  const deadline = performance.now() + ctx.capMs
  const end = ctx.meter.begin()
  const started = performance.now()
  while (latencies.length < count && performance.now() < deadline) {
    const t0 = performance.now()
    await get()
    latencies.push(performance.now() - t0)
  }
  const seconds = (performance.now() - started) / 1000
  const cpu = end()
  return sequentialResult({ latencies, seconds, count, cpu, unit: 'req/s', opUnit: 'request', countKey: 'requests' })
}
