// Bounded memory on every read path (a bound, not a timing): a store of about 53 MB of events near the
// client's 900 kB cap, whose args escape badly (a string of `"`, which doubles once escaped, and again
// inside SQL's JSON), pulled from 0 over WebSocket, HTTP and DO-RPC with the real 0.4.0 clients, and one
// socket with 200 live pulls getting an 880 kB push. The resident memory of the workerd that runs the
// shipped Worker (its sync objects) is sampled every few milliseconds; its peak growth during each read
// must stay within PEAK_GROWTH_MB. Runs on a Worker of its own, once per storage. The DO-RPC client object
// runs in a second `wrangler dev` bound to it by name, as an app's Worker binds a sync Worker deployed
// apart: the 0.4.0 client's own cost (it re-decodes a message from the start on every 4 kB RPC chunk) is
// then not counted as the server's.

import { WebSocket } from 'ws'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientDo } from '../support/client-do.mjs'
import { eventDigest } from '../support/digest.mjs'
import { eventsOf, openClient } from '../support/livestore-client.mjs'
import { pullRequest, wsSyncUrl } from '../support/raw-ws.mjs'
import { sampleRss } from '../support/rss.mjs'
import { makeEvents, uniqueStoreId } from '../support/util.mjs'
import { E2E_STORAGE, startDoRpcClientWorker, startWorker } from '../support/worker.mjs'

const PEAK_GROWTH_MB = 100
const EVENTS = 60
// JSON.stringify of this is 880,002 bytes: under the client's 900 kB per push and the server's cap.
const HEAVY_ARGS = '"'.repeat(440_000)
const TEST_TIMEOUT_MS = 240_000
const ADMIN_SECRET = 'memory-admin-secret'

let worker
let clientWorker
let storeId
let expected

beforeAll(async () => {
  worker = await startWorker({
    name: `memory-${E2E_STORAGE}`,
    storage: E2E_STORAGE,
    // unique per run: the dev registry binds the client Worker to this one by name
    scriptName: `livestore-sync-memory-${E2E_STORAGE}-${process.pid}`,
    vars: { ADMIN_SECRET: ADMIN_SECRET },
  })
  clientWorker = await startDoRpcClientWorker({ name: `memory-client-${E2E_STORAGE}`, syncWorker: worker })
  storeId = uniqueStoreId('heavy')
  const events = makeEvents(1, EVENTS, { argsFor: () => HEAVY_ARGS })
  expected = events.map(eventDigest)
  const pusher = await openClient({ url: `${worker.url}/sync`, storeId })
  try {
    await pusher.push(events) // the client sends one event per request (900 kB cap)
  } finally {
    await pusher.close()
  }
}, TEST_TIMEOUT_MS)

afterAll(async () => {
  await clientWorker?.stop()
  await worker?.stop()
})

/** Runs `read` while sampling the runtime workerd's RSS; returns what `read` returned and the growth. */
const measured = async (what, read) => {
  const sampler = await sampleRss(worker.processes().runtime)
  let result
  try {
    result = await read()
  } finally {
    const rss = await sampler.stop()
    console.log(
      `${what} (${E2E_STORAGE}): RSS ${Math.round(rss.firstKb / 1024)} MB → peak ${Math.round(rss.peakKb / 1024)} MB ` +
        `(+${rss.growthMb.toFixed(1)} MB, ${rss.samples} samples)`,
    )
    result = { value: result, growthMb: rss.growthMb }
  }
  return result
}

describe(`a ${Math.round((EVENTS * 880) / 1000)} MB store pulled from 0 (${E2E_STORAGE})`, () => {

  for (const transport of ['ws', 'http']) {
    test(`${transport}: every event intact, the Worker's memory grows by at most ${PEAK_GROWTH_MB} MB`, async () => {
      const { value, growthMb } = await measured(`${transport} pull`, async () => {
        const client = await openClient({ url: `${worker.url}/sync`, storeId, transport })
        try {
          return eventsOf(await client.pullAll()).map(eventDigest)
        } finally {
          await client.close()
        }
      })
      expect(value).toEqual(expected)
      expect(growthMb).toBeLessThanOrEqual(PEAK_GROWTH_MB)
    }, TEST_TIMEOUT_MS)
  }

  test(`do-rpc: every event intact, the sync Worker's memory grows by at most ${PEAK_GROWTH_MB} MB`, async () => {
    // The 0.4.0 DO-RPC client decodes every reply of a connection with one msgpack parser that
    // keeps an incomplete tail between reads; now and then (seen about once in eight DO SQLite
    // runs) a pull of these 880 kB events fails in that parser with a Schema ParseError on a
    // field read from inside an event's args. Not understood yet (see the session notes): such a
    // pull is tried once more from a fresh client object, whose parser starts clean.
    const pull = async () => {
      try {
        return await clientDo(clientWorker, `memory-${process.pid}`, { timeoutMs: TEST_TIMEOUT_MS }).pullDigest(storeId)
      } catch (e) {
        if (!/ParseError/.test(e.message)) throw e
        console.warn(`do-rpc pull (${E2E_STORAGE}): the client failed to decode a reply; once more. ${e.message.slice(-300)}`)
        return clientDo(clientWorker, `memory-${process.pid}-again`, { timeoutMs: TEST_TIMEOUT_MS }).pullDigest(storeId)
      }
    }
    const { value, growthMb } = await measured('do-rpc pull', pull)
    expect(value.events).toEqual(expected)
    expect(value.pages).toBe(EVENTS) // one event fills a page
    expect(growthMb).toBeLessThanOrEqual(PEAK_GROWTH_MB)
  }, TEST_TIMEOUT_MS)
})

test(`one socket with 200 live pulls gets an 880 kB push in each of them; the Worker's memory grows by at most ${PEAK_GROWTH_MB} MB (${E2E_STORAGE})`, async () => {
  const liveStore = uniqueStoreId('fan-in')
  const ws = new WebSocket(wsSyncUrl(worker.url, liveStore))
  await new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  })
  const ids = Array.from({ length: 200 }, (_, i) => String(5_000_000 + i))
  /** id → digests of the events it got, and whether its catch-up ended */
  const got = new Map(ids.map((id) => [id, { caughtUp: false, events: [] }]))
  let waiters = []
  ws.on('message', (data) => {
    const frame = JSON.parse(data.toString('utf8'))
    if (frame._tag !== 'Chunk' || !got.has(frame.requestId)) return
    // Ack every chunk, as the real client does: the server keeps a bounded window in flight.
    ws.send(JSON.stringify({ _tag: 'Ack', requestId: frame.requestId }))
    const entry = got.get(frame.requestId)
    for (const value of frame.values) {
      if (value.pageInfo._tag === 'NoMore') entry.caughtUp = true
      for (const item of value.batch) entry.events.push(eventDigest(item.eventEncoded))
    }
    for (const w of waiters) w()
  })
  const until = (done, what) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 120_000)
      const check = () => {
        if (done()) {
          clearTimeout(timer)
          waiters = waiters.filter((w) => w !== check)
          resolve()
        }
      }
      waiters.push(check)
      check()
    })
  try {
    for (const id of ids) ws.send(JSON.stringify(pullRequest(id, liveStore, { live: true })))
    await until(() => [...got.values()].every((e) => e.caughtUp), 'every live pull to catch up')
    const event = makeEvents(1, 1, { argsFor: () => HEAVY_ARGS })
    const { growthMb } = await measured('broadcast to 200 live pulls', async () => {
      const pusher = await openClient({ url: `${worker.url}/sync`, storeId: liveStore })
      try {
        await pusher.push(event)
      } finally {
        await pusher.close()
      }
      await until(() => [...got.values()].every((e) => e.events.length === 1), 'the push in every live pull')
    })
    for (const entry of got.values()) expect(entry.events).toEqual(event.map(eventDigest))
    expect(growthMb).toBeLessThanOrEqual(PEAK_GROWTH_MB)
  } finally {
    ws.terminate()
  }
}, TEST_TIMEOUT_MS)

// Last: its reads must not move the heap's working size under the pulls above.
test(`admin NDJSON export of the same store: every event intact, the Worker's memory grows by at most ${PEAK_GROWTH_MB} MB (${E2E_STORAGE})`, async () => {
  const { value, growthMb } = await measured('admin export', async () => {
    const res = await fetch(`${worker.url}/admin/api/stores/${encodeURIComponent(storeId)}/events`, {
      headers: { authorization: `Bearer ${ADMIN_SECRET}` },
    })
    expect(res.status).toBe(200)
    // Read as it streams, a line at a time, keeping only digests.
    const digests = []
    let pending = ''
    const decoder = new TextDecoder()
    for await (const chunk of res.body) {
      pending += decoder.decode(chunk, { stream: true })
      let end
      while ((end = pending.indexOf('\n')) >= 0) {
        digests.push(eventDigest(JSON.parse(pending.slice(0, end))))
        pending = pending.slice(end + 1)
      }
    }
    expect(pending).toBe('')
    return digests
  })
  expect(value).toEqual(expected)
  expect(growthMb).toBeLessThanOrEqual(PEAK_GROWTH_MB)
}, TEST_TIMEOUT_MS)
