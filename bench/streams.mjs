// Durable Streams benchmark (a program that prints figures, not a test): sequential and
// 16-way concurrent appends, and a catch-up read of 20,000 messages, against the Worker under
// `wrangler dev` on fresh state. Wall-clock figures on a shared machine are noisy: compare runs
// made one after the other. Writes .wrangler/bench/streams.json.
//
//   node bench/streams.mjs            (or: make bench-streams)
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startWorker } from '../client-ts/test/support/worker.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const out = path.join(here, '..', '.wrangler', 'bench', 'streams.json')

const SEQUENTIAL = 500
const CONCURRENCY = 16
const CONCURRENT_EACH = 125
const CATCH_UP = 20_000
const BATCH = 500
const payload = 'x'.repeat(100)

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]

async function check(res, what) {
  if (!res.ok) throw new Error(`${what}: ${res.status} ${await res.text()}`)
  await res.arrayBuffer()
  return res
}

async function create(url, contentType) {
  await check(await fetch(url, { method: 'PUT', headers: { 'Content-Type': contentType } }), 'create')
}

async function append(url, body, contentType = 'text/plain') {
  const started = performance.now()
  await check(await fetch(url, { method: 'POST', headers: { 'Content-Type': contentType }, body }), 'append')
  return performance.now() - started
}

const worker = await startWorker({ name: 'bench-streams' })
const base = `${worker.url}/v1/stream/bench-${Date.now()}`
const results = {}
try {
  // Sequential single appends, each waiting for its acknowledgement.
  const seqUrl = `${base}-sequential`
  await create(seqUrl, 'text/plain')
  await append(seqUrl, payload) // warm-up: the object and its tables exist
  const latencies = []
  let started = performance.now()
  for (let i = 0; i < SEQUENTIAL; i++) latencies.push(await append(seqUrl, payload))
  let seconds = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  results.sequentialAppends = {
    appends: SEQUENTIAL,
    perSecond: Math.round(SEQUENTIAL / seconds),
    p50Ms: +percentile(latencies, 50).toFixed(2),
    p99Ms: +percentile(latencies, 99).toFixed(2),
  }

  // Concurrent appends to one stream (the object serializes them).
  const concUrl = `${base}-concurrent`
  await create(concUrl, 'text/plain')
  started = performance.now()
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = 0; i < CONCURRENT_EACH; i++) await append(concUrl, payload)
    }),
  )
  seconds = (performance.now() - started) / 1000
  results.concurrentAppends = {
    writers: CONCURRENCY,
    appends: CONCURRENCY * CONCURRENT_EACH,
    perSecond: Math.round((CONCURRENCY * CONCURRENT_EACH) / seconds),
  }

  // Catch-up read of 20,000 JSON messages, following Stream-Next-Offset until up to date.
  const readUrl = `${base}-catch-up`
  await create(readUrl, 'application/json')
  const message = JSON.stringify({ text: payload })
  for (let i = 0; i < CATCH_UP / BATCH; i++) {
    await append(readUrl, `[${Array(BATCH).fill(message).join(',')}]`, 'application/json')
  }
  let offset = '-1'
  let messages = 0
  let bytes = 0
  let requests = 0
  started = performance.now()
  for (;;) {
    const res = await fetch(`${readUrl}?offset=${offset}`)
    if (!res.ok) throw new Error(`read: ${res.status}`)
    const body = await res.text()
    bytes += body.length
    messages += JSON.parse(body).length
    requests++
    offset = res.headers.get('Stream-Next-Offset')
    if (res.headers.get('Stream-Up-To-Date') === 'true') break
  }
  seconds = (performance.now() - started) / 1000
  if (messages !== CATCH_UP) throw new Error(`catch-up read ${messages} messages, expected ${CATCH_UP}`)
  results.catchUpRead = {
    messages,
    requests,
    messagesPerSecond: Math.round(messages / seconds),
    mbPerSecond: +(bytes / 1e6 / seconds).toFixed(1),
  }
} finally {
  await worker.stop()
}

const machine = `${process.platform} ${process.arch}, node ${process.version}`
console.log(`\nDurable Streams benchmark (wrangler dev, local state) — ${new Date().toISOString()} — ${machine}`)
console.log(`  sequential appends  ${results.sequentialAppends.perSecond}/s  p50 ${results.sequentialAppends.p50Ms} ms  p99 ${results.sequentialAppends.p99Ms} ms  (${SEQUENTIAL} × 100 B)`)
console.log(`  concurrent appends  ${results.concurrentAppends.perSecond}/s  (${CONCURRENCY} writers × ${CONCURRENT_EACH})`)
console.log(`  catch-up read       ${results.catchUpRead.messagesPerSecond} messages/s  ${results.catchUpRead.mbPerSecond} MB/s  (${CATCH_UP} messages in ${results.catchUpRead.requests} requests)`)
fs.mkdirSync(path.dirname(out), { recursive: true })
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), machine, results }, null, 2))
console.log(`  written to ${path.relative(process.cwd(), out)}`)
