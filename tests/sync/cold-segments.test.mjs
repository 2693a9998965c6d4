// Cold segments for LiveStore stores kept in DO SQLite (SYNC_COLD_SEGMENTS, off by default), against
// the real Worker with its local R2 bucket: a store's oldest events move out of its table a full
// segment at a time (here 10 events), and the real 0.4.0 client pulls the whole log unchanged, as does
// the store's stream view; the object started afresh takes the next push on the head the cold tier
// holds; a reset with clear deletes the segments. What is stored is read back through the admin API
// (events in each tier, segments in the index, objects under the store's prefix in the bucket).

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientPool, eventsOf } from '../support/livestore-client.mjs'
import { sharedDefaultWorker } from '../support/shared.mjs'
import { makeEvents, normalizeEvent, uniqueStoreId } from '../support/util.mjs'

const ADMIN = 'store-cold-admin'
let worker
const clients = clientPool()
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  worker = await sharedDefaultWorker({
    storage: 'do-sqlite',
    vars: { ADMIN_SECRET: ADMIN, SYNC_COLD_SEGMENTS: 'true', DS_SEGMENT_MESSAGES: '10' },
  })
}, 120_000)

afterAll(async () => {
  await clients.closeAll()
})

const admin = async (path, method = 'GET') => {
  const res = await fetch(`${worker.url}/admin/api/${path}`, { method, headers: { authorization: `Bearer ${ADMIN}` } })
  const text = await res.text()
  expect(res.status, text).toBe(200)
  return JSON.parse(text)
}
const info = (storeId) => admin(`stores/${encodeURIComponent(storeId)}`)

const waitForInfo = async (storeId, what, check, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    last = await info(storeId)
    if (check(last)) return last
    await sleep(200)
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`)
}

const open = (storeId) => clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })

describe('cold segments of a store kept in DO SQLite', () => {
  test('the oldest events move to R2; pulls and the stream view read the whole log; the head survives a restart; a reset deletes them', async () => {
    const storeId = uniqueStoreId('store-cold')
    const events = makeEvents(1, 101, { argsFor: (n) => ({ id: `t${n}`, text: `todo ${n} "quoted" ✓`, n }) })
    const writer = await open(storeId)
    for (let i = 0; i < 100; i += 20) await writer.push(events.slice(i, i + 20))
    // 100 events make 10 full segments: every one of them moves, and the table is left empty.
    const moved = await waitForInfo(storeId, 'ten segments', (i) => i.coldSegments === 10)
    expect(moved).toMatchObject({ head: 100, events: 100, coldEvents: 100, coldObjects: 10 })
    expect(moved.coldBytes).toBeGreaterThan(0)
    expect(moved.bytes).toBe(moved.coldBytes)

    const reader = await open(storeId)
    const pulled = eventsOf(await reader.pullAll())
    expect(pulled.map(normalizeEvent)).toEqual(events.slice(0, 100).map(normalizeEvent))
    const from = eventsOf(await reader.pullAll(37))
    expect(from.map((e) => e.seqNum)).toEqual(events.slice(37, 100).map((e) => e.seqNum))

    const view = await fetch(`${worker.url}/v1/livestore/${encodeURIComponent(storeId)}?offset=-1`)
    expect(view.status).toBe(200)
    const messages = await view.json()
    expect(messages.length).toBeGreaterThan(0)
    expect(messages.map((m) => m.seqNum)).toEqual(events.slice(0, messages.length).map((e) => e.seqNum))
    expect(messages[4].args).toEqual(events[4].args)

    // No client now: the object is evicted, and the one that starts takes its head from R2.
    await writer.close()
    await reader.close()
    const before = moved.awakeSinceMs
    await sleep(15_000)
    const late = await open(storeId)
    await late.push(events.slice(100))
    const after = await waitForInfo(storeId, 'the push after the restart', (i) => i.head === 101)
    expect(after.awakeSinceMs, 'the object started again').toBeGreaterThan(before)
    expect(after).toMatchObject({ events: 101, coldEvents: 100 })
    expect(eventsOf(await late.pullAll()).map(normalizeEvent)).toEqual(events.map(normalizeEvent))

    // A reset that clears the log discards its segments, and their objects are deleted.
    const reset = await admin(`stores/${encodeURIComponent(storeId)}/reset?clear=true`, 'POST')
    expect(reset.events).toBe(0)
    const cleared = await waitForInfo(storeId, 'the objects deleted', (i) => i.coldObjects === 0)
    expect(cleared).toMatchObject({ events: 0, coldSegments: 0, coldEvents: 0 })
  }, 120_000)
})
