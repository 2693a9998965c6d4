// Crashes at random moments (RELIABILITY.md, "Crashes"): the shipped Worker under `wrangler dev`
// is SIGKILLed (wrangler and workerd, no grace period) while three real `makeWsSync` clients push
// continuously to one store and three Durable Streams producers append to one stream, then
// restarted on the same persisted state, several times. Afterwards:
// - every acknowledged push is stored exactly once, at the seqNum it was acknowledged with, and so
//   is every event a client generated (pushes that landed without an ack are found, not redone);
// - the seqNum chain has no gap or fork; the clients' live pulls, which reconnect on their own,
//   equal a fresh pull; context_7's head agrees with the stored log (D1 or DO SQLite);
// - every acknowledged stream append is in the stream exactly once; retries after a crash are
//   answered 204 (duplicate), never appended twice.
//
// `make test` runs the short form (CRASH_KILLS=2); `make soak` the long one (CRASH_KILLS=10 or as
// set). Results go to .wrangler/test-logs/crash-<storage>.json.

import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { clientPool } from '../support/livestore-client.mjs'
import { createJsonStream, startProducers, startWriter, verifyLiveStore, verifyStream } from '../support/crash-harness.mjs'
import { sleep, uniqueStoreId, waitFor } from '../support/util.mjs'
import { E2E_STORAGE, ROOT, startWorker } from '../support/worker.mjs'

const KILLS = Number(process.env.CRASH_KILLS ?? 2)
const WRITERS = 3
const PRODUCERS = 3
// Traffic time between a restart and the next kill, once every client is pushing again (ms).
const TRAFFIC_MS = process.env.CRASH_TRAFFIC_MS ? process.env.CRASH_TRAFFIC_MS.split(',').map(Number) : [200, 1_500]

let worker
const pool = clientPool()
const writers = []
let producers

beforeAll(async () => {
  worker = await startWorker({ name: `crash-${E2E_STORAGE}` })
})

afterAll(async () => {
  for (const w of writers) await w.close().catch(() => {})
  await producers?.stop().catch(() => {})
  await pool.closeAll()
  await worker?.stop()
})

const between = (min, max) => min + Math.random() * (max - min)

test(`${KILLS} SIGKILLs under load (${E2E_STORAGE}): nothing acknowledged is lost or doubled`, async () => {
  const started = Date.now()
  const url = `${worker.url}/sync`
  const storeId = uniqueStoreId('crash')
  const streamPath = `/v1/stream/${uniqueStoreId('crash')}`
  await createJsonStream(worker.url, streamPath)
  for (let i = 0; i < WRITERS; i++) writers.push(await startWriter({ pool, url, storeId, index: i }))
  producers = startProducers({ baseUrl: worker.url, path: streamPath, count: PRODUCERS })

  // every client (and the producers) got an acknowledgement after `mark`: traffic flows
  const flowing = (mark) => writers.every((w) => w.pushedSince(mark)) && producers.pushedSince(mark)
  const problems = () => [...writers.flatMap((w) => w.problems), ...producers.problems]

  const kills = []
  let mark = started
  for (let k = 1; k <= KILLS; k++) {
    // the clients reconnect on their own (exponential back-off up to 30 s)
    await waitFor(() => flowing(mark) || problems().length > 0, `traffic before kill ${k}`, 150_000)
    expect(problems()).toEqual([])
    await sleep(between(...TRAFFIC_MS))
    const ackedBefore = writers.reduce((s, w) => s + w.stats.ackedPushes, 0)
    await worker.kill()
    const down = Date.now()
    await sleep(between(0, 1_000))
    await worker.start()
    mark = Date.now()
    kills.push({ k, ackedBefore, downMs: mark - down })
  }
  await waitFor(() => flowing(mark) || problems().length > 0, 'traffic after the last restart', 150_000)
  await sleep(between(...TRAFFIC_MS))

  // stop generating, let every client push what it still holds, then check
  for (const w of writers) w.stopGenerating()
  await producers.stop()
  await Promise.race([
    Promise.all(writers.map((w) => w.drained)),
    sleep(120_000).then(() => {
      throw new Error('writers did not drain within 120 s')
    }),
  ])
  const fresh = await pool.open({ url, storeId, clientId: 'fresh-reader' })
  const sync = await verifyLiveStore({ worker, storeId, writers, freshClient: fresh })
  const stream = await verifyStream({ baseUrl: worker.url, path: streamPath, producers, worker })

  const result = {
    at: new Date().toISOString(),
    storage: E2E_STORAGE,
    kills: kills.length,
    seconds: Math.round((Date.now() - started) / 1000),
    sync: { clients: WRITERS, ...sync },
    streams: { producers: PRODUCERS, ...stream, transportFailures: producers.stats.transportFailures },
  }
  const out = path.join(ROOT, '.wrangler', 'test-logs', `crash-${E2E_STORAGE}.json`)
  fs.writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`)
  console.log(
    `crash (${E2E_STORAGE}): ${result.kills} SIGKILLs in ${result.seconds} s; sync: ${WRITERS} clients, ` +
      `${sync.ackedPushes} pushes acked (${sync.ackedEvents} events), ${sync.storedUnacked} events stored without ack, ` +
      `${sync.events} events verified, ${sync.serverAhead} rebases, ${sync.liveRestarts} live-pull restarts; ` +
      `streams: ${stream.acked} appends acked, ${stream.duplicates} answered as duplicates, ${stream.messages} messages verified`,
  )
}, 600_000 + KILLS * 120_000)
