// Durable Streams scenarios, against /v1/stream/<name> of our Worker and of the Node reference server
// (@durable-streams/server; the TypeScript LiveStore reference has no streams). Each uses fresh
// stream names.

import http from 'node:http'
import { percentiles, round, sequentialResult, sleep, waitFor } from './stats.mjs'

const PAYLOAD = 'x'.repeat(100)
let counter = 0
const freshStream = (ctx, what) => `${ctx.baseUrl}/v1/stream/bench-${what}-${Date.now()}-${counter++}`

const check = async (res, what) => {
  if (!res.ok) throw new Error(`${what}: HTTP ${res.status} ${(await res.text()).slice(0, 300)}`)
  await res.arrayBuffer()
  return res
}

const create = async (url, contentType) =>
  check(await fetch(url, { method: 'PUT', headers: { 'Content-Type': contentType } }), 'create')

const append = async (url, body, contentType = 'text/plain') => {
  const t0 = performance.now()
  await check(await fetch(url, { method: 'POST', headers: { 'Content-Type': contentType }, body }), 'append')
  return performance.now() - t0
}

/** Sequential single appends (100 B), each waiting for its acknowledgement. */
export const streamsSequential = async (ctx, { count = 500 } = {}) => {
  const url = freshStream(ctx, 'seq')
  await create(url, 'text/plain')
  await append(url, PAYLOAD) // warm-up: the object and its tables exist
  const latencies = []
  const deadline = performance.now() + ctx.capMs
  const end = ctx.meter.begin()
  const started = performance.now()
  while (latencies.length < count && performance.now() < deadline) latencies.push(await append(url, PAYLOAD))
  const seconds = (performance.now() - started) / 1000
  const cpu = end()
  return sequentialResult({ latencies, seconds, count, cpu, unit: 'appends/s', opUnit: 'append', countKey: 'appends' })
}

/** `writers` concurrent sequential writers on one stream (the object serializes them). */
export const streamsConcurrent = async (ctx, { writers = 16, each = 125 } = {}) => {
  const url = freshStream(ctx, 'conc')
  await create(url, 'text/plain')
  await append(url, PAYLOAD)
  const deadline = performance.now() + ctx.capMs
  let n = 0
  const end = ctx.meter.begin()
  const started = performance.now()
  await Promise.all(
    Array.from({ length: writers }, async () => {
      for (let i = 0; i < each && performance.now() < deadline; i++) {
        await append(url, PAYLOAD)
        n++
      }
    }),
  )
  const seconds = (performance.now() - started) / 1000
  const cpu = end()
  return {
    figure: `${round(n / seconds)} appends/s  (${writers} writers × ${each})`,
    primary: { value: n / seconds, unit: 'appends/s', better: 'higher' },
    ops: n,
    opUnit: 'append',
    cpu,
    complete: n === writers * each,
    details: { writers, appends: n, seconds: round(seconds, 3), perSecond: round(n / seconds) },
  }
}

/** Catch-up read of `total` JSON messages from the start, following Stream-Next-Offset. */
export const streamsCatchUp = async (ctx, { total = 20_000, batch = 500, seedCapMs = Infinity, cold = false } = {}) => {
  const url = freshStream(ctx, cold ? 'cold' : 'read')
  await create(url, 'application/json')
  const message = JSON.stringify({ text: PAYLOAD })
  const body = `[${Array(batch).fill(message).join(',')}]`
  const seedDeadline = performance.now() + seedCapMs
  let appended = 0
  while (appended < total && performance.now() < seedDeadline) {
    await append(url, body, 'application/json')
    appended += batch
  }
  total = appended
  // The cold tier: wait until the moves after the appends are done (our Worker tells through its
  // admin API); the read then comes mostly from R2.
  let coldShare
  if (cold && ctx.target.adminSecret) {
    const infoUrl = url.replace('/v1/stream/', '/admin/api/streams/')
    const deadline = performance.now() + 120_000
    for (;;) {
      const res = await fetch(infoUrl, { headers: { authorization: `Bearer ${ctx.target.adminSecret}` } })
      const info = await res.json()
      coldShare = info.coldMessages / total
      if (info.messages - info.coldMessages < 2 * 1_000 || performance.now() > deadline) break
      await sleep(500)
    }
  }
  let offset = '-1'
  let messages = 0
  let bytes = 0
  let requests = 0
  const deadline = performance.now() + ctx.capMs
  const end = ctx.meter.begin()
  const started = performance.now()
  for (;;) {
    const res = await fetch(`${url}?offset=${offset}`)
    if (!res.ok) throw new Error(`read: HTTP ${res.status}`)
    const body = await res.text()
    bytes += body.length
    messages += JSON.parse(body).length
    requests++
    offset = res.headers.get('Stream-Next-Offset')
    if (res.headers.get('Stream-Up-To-Date') === 'true' || performance.now() > deadline) break
  }
  const seconds = (performance.now() - started) / 1000
  const cpu = end()
  const complete = messages === total
  if (!complete && performance.now() <= deadline) throw new Error(`catch-up read ${messages} messages, expected ${total}`)
  const where = coldShare === undefined ? '' : `, ${round(coldShare * 100, 1)}% from R2`
  return {
    figure: `${round(messages / seconds)} msg/s  ${round(bytes / 1e6 / seconds, 1)} MB/s  (${messages} in ${requests} req${where})`,
    primary: { value: messages / seconds, unit: 'msg/s', better: 'higher' },
    ops: messages,
    opUnit: 'message',
    cpu,
    complete,
    details: { messages, requests, mb: round(bytes / 1e6, 1), seconds: round(seconds, 3), perSecond: round(messages / seconds), coldShare },
  }
}

/**
 * Opens an SSE reader (`live=sse`) and calls `onMessages(array, receivedAt)` for every data event
 * (JSON mode: one array per event). Resolves once the first control event arrived.
 */
const openSse = (url, onMessages) =>
  new Promise((resolve, reject) => {
    const req = http.get(`${url}?offset=-1&live=sse`, { agent: false, headers: { accept: 'text/event-stream' } }, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`SSE: HTTP ${res.statusCode}`))
        res.resume()
        return
      }
      res.setEncoding('utf8')
      let buffer = ''
      let ready = false
      res.on('data', (text) => {
        const receivedAt = performance.now()
        buffer += text
        let cut
        while ((cut = buffer.indexOf('\n\n')) !== -1) {
          const event = buffer.slice(0, cut)
          buffer = buffer.slice(cut + 2)
          const lines = event.split('\n')
          const type = lines.find((l) => l.startsWith('event:'))?.slice(6).trim()
          const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5)).join('\n')
          if (type === 'data') onMessages(JSON.parse(data), receivedAt)
          else if (type === 'control' && !ready) {
            ready = true
            resolve(req)
          }
        }
      })
      res.on('error', () => {})
    })
    req.on('error', reject)
  })

/** The median of three RSS readings of the server (kB). */
const medianRss = async (ctx) => {
  const samples = []
  for (let i = 0; i < 3; i++) {
    if (i > 0) await sleep(250)
    samples.push(ctx.meter.rss().total)
  }
  return samples.sort((a, b) => a - b)[1]
}

/**
 * `readers` SSE readers of one JSON stream; one writer appends `appends` messages 20 ms apart.
 * Also reports the server's RSS per connected reader (after they connect, minus before).
 */
export const streamsSse = async (ctx, { readers = 100, appends = 200, intervalMs = 20, drainMs = 15_000 } = {}) => {
  const url = freshStream(ctx, 'sse')
  await create(url, 'application/json')
  const rssBefore = await medianRss(ctx)
  const sentAt = new Float64Array(appends)
  const latencies = new Float64Array(readers * appends)
  let delivered = 0
  let outOfOrder = 0
  const requests = []
  try {
    for (let i = 0; i < readers; i += 25) {
      requests.push(
        ...(await Promise.all(
          Array.from({ length: Math.min(25, readers - i) }, () => {
            let expectNext = 0
            return openSse(url, (messages, receivedAt) => {
              for (const { i: k } of messages) {
                if (k !== expectNext) outOfOrder++
                expectNext = k + 1
                if (delivered < latencies.length) latencies[delivered] = receivedAt - sentAt[k]
                delivered++
              }
            })
          }),
        )),
      )
    }
    await sleep(500)
    const perReaderKb = (await medianRss(ctx)) - rssBefore
    const end = ctx.meter.begin()
    const started = performance.now()
    const deadline = started + ctx.capMs
    let sent = 0
    let lastAck = started
    for (let k = 0; k < appends; k++) {
      const due = started + k * intervalMs
      const now = performance.now()
      if (due > now) await sleep(due - now)
      if (performance.now() > deadline) break
      sentAt[k] = performance.now()
      await append(url, JSON.stringify({ i: k }), 'application/json')
      lastAck = performance.now()
      sent++
    }
    const expected = readers * sent
    await waitFor(() => delivered >= expected, drainMs)
    const cpu = end()
    const lat = percentiles(latencies.subarray(0, Math.min(delivered, latencies.length)), [50, 99, 100])
    const share = delivered / expected
    const result = {
      figure: `p50 ${lat.p50} / p99 ${lat.p99} / max ${lat.max} ms  ${round(share * 100, 2)}% (${delivered}/${expected})  ${round(sent / ((lastAck - started) / 1000), 1)} appends/s  ${round(perReaderKb / readers)} KB RSS/reader`,
      primary: { value: lat.p99, unit: 'ms p99', better: 'lower' },
      ops: delivered,
      opUnit: 'delivery',
      cpu,
      complete: sent === appends,
      details: { readers, appends: sent, expected, delivered, outOfOrder, latencyMs: lat, rssPerReaderKb: round(perReaderKb / readers) },
    }
    if (delivered !== expected || outOfOrder > 0) result.error = `delivered ${delivered} of ${expected}, ${outOfOrder} out of order`
    return result
  } finally {
    for (const req of requests) req.destroy()
  }
}

/** A long-poll reader of `url` from the start: calls `onMessages` with each answer's messages. */
const longPollReader = (url, onMessages, stopped) =>
  (async () => {
    let offset = '-1'
    let cursor
    while (!stopped()) {
      const query = `offset=${encodeURIComponent(offset)}&live=long-poll${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
      const res = await fetch(`${url}?${query}`)
      const text = await res.text()
      const receivedAt = performance.now()
      if (res.status !== 200 && res.status !== 204) throw new Error(`long-poll: HTTP ${res.status} ${text.slice(0, 200)}`)
      offset = res.headers.get('stream-next-offset') ?? offset
      cursor = res.headers.get('stream-cursor') ?? cursor
      if (res.status === 200) onMessages(JSON.parse(text), receivedAt)
    }
  })()

/** `readers` long-poll readers of one JSON stream; one writer appends `appends` messages 20 ms apart. */
export const streamsLongPoll = async (ctx, { readers = 100, appends = 200, intervalMs = 20, drainMs = 15_000 } = {}) => {
  const url = freshStream(ctx, 'long-poll')
  await create(url, 'application/json')
  const sentAt = new Float64Array(appends)
  const latencies = new Float64Array(readers * appends)
  let delivered = 0
  let outOfOrder = 0
  let stop = false
  const failures = []
  const loops = Array.from({ length: readers }, () => {
    let expectNext = 0
    return longPollReader(
      url,
      (messages, receivedAt) => {
        for (const { i: k } of messages) {
          if (k !== expectNext) outOfOrder++
          expectNext = k + 1
          if (delivered < latencies.length) latencies[delivered] = receivedAt - sentAt[k]
          delivered++
        }
      },
      () => stop,
    ).catch((e) => failures.push(e.message))
  })
  try {
    await sleep(1_000)
    const end = ctx.meter.begin()
    const started = performance.now()
    const deadline = started + ctx.capMs
    let sent = 0
    for (let k = 0; k < appends; k++) {
      const due = started + k * intervalMs
      const now = performance.now()
      if (due > now) await sleep(due - now)
      if (performance.now() > deadline) break
      sentAt[k] = performance.now()
      await append(url, JSON.stringify({ i: k }), 'application/json')
      sent++
    }
    const expected = readers * sent
    await waitFor(() => delivered >= expected || failures.length > 0, drainMs)
    const cpu = end()
    const lat = percentiles(latencies.subarray(0, Math.min(delivered, latencies.length)), [50, 99, 100])
    const result = {
      figure: `p50 ${lat.p50} / p99 ${lat.p99} / max ${lat.max} ms  ${round((delivered / expected) * 100, 2)}% (${delivered}/${expected})`,
      primary: { value: lat.p99, unit: 'ms p99', better: 'lower' },
      ops: delivered,
      opUnit: 'delivery',
      cpu,
      complete: sent === appends,
      details: { readers, appends: sent, expected, delivered, outOfOrder, latencyMs: lat },
    }
    if (delivered !== expected || outOfOrder > 0 || failures.length > 0) {
      result.error = `delivered ${delivered} of ${expected}, ${outOfOrder} out of order${failures.length ? `, ${failures[0]}` : ''}`
    }
    return result
  } finally {
    stop = true
    // Each reader ends after its current poll (the append below answers them all at once).
    await append(url, JSON.stringify({ i: -1 }), 'application/json').catch(() => {})
    await Promise.race([Promise.all(loops), sleep(5_000)])
  }
}
