// What only the HTTP transport has (the sync contract itself is contract.test.mjs): live pulls by polling
// with the REAL @livestore/sync-cf 0.4.0 `makeHttpSync` client, and raw POSTs for the exact envelope and
// for bad input. Runs against whatever storage E2E_STORAGE selects (d1 | do-sqlite).

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { eventsOf, clientPool } from '../support/livestore-client.mjs'
import {
  httpPingRequest,
  httpPullRequest,
  httpPushRequest,
  httpRequest,
  httpSyncUrl,
  newRequestId,
  postRaw,
  rpc,
} from '../support/raw-http.mjs'
import {
  expectNoUncaughtErrors,
  isIsoTimestamp,
  makeEvents,
  normalizeEvent,
  storedRows,
  uniqueStoreId,
  rawEvent,
} from '../support/util.mjs'
import { sharedDefaultWorker } from '../support/shared.mjs'
import { E2E_STORAGE } from '../support/worker.mjs'
import { MAX_EVENTS_PER_MESSAGE, MAX_PAYLOAD_BYTES } from '../support/pages.mjs'

const POLL_MS = 300

let worker
let syncUrl
const clients = clientPool()

const open = (storeId, opts = {}) => clients.open({ url: syncUrl, storeId, ...opts })
/** A real makeHttpSync client polling every POLL_MS on live pulls. */
const openHttp = (storeId, opts = {}) => open(storeId, { transport: 'http', pollInterval: POLL_MS, ...opts })


/** Stored log rows as events (args parsed), for comparison with what was pushed. */
const rowsAsEvents = (rows) =>
  rows.map((r) => ({
    name: r.name,
    args: r.args === null ? null : JSON.parse(r.args),
    seqNum: r.seqNum,
    parentSeqNum: r.parentSeqNum,
    clientId: r.clientId,
    sessionId: r.sessionId,
  }))

beforeAll(async () => {
  worker = await sharedDefaultWorker()
  syncUrl = `${worker.url}/sync`
})

afterAll(async () => {
  await clients.closeAll()
})

describe(`http sync with the real LiveStore client (storage ${E2E_STORAGE})`, () => {
  test('live pull by polling: an HTTP client sees pushes of a WS client, and the WS client those of the HTTP client', async () => {
    const storeId = uniqueStoreId('http-live')
    const http = await openHttp(storeId, { clientId: 'http-client' })
    const ws = await open(storeId, { clientId: 'ws-client' })
    const liveHttp = await http.live()
    const liveWs = await ws.live()
    await liveHttp.waitForPages(1)
    await liveWs.waitForPages(1)
    expect(liveHttp.pages[0]).toEqual({ batch: [], pageInfo: { _tag: 'NoMore' } })

    const fromWs = makeEvents(1, 5, { clientId: 'ws-client' })
    await ws.push(fromWs)
    await liveHttp.waitForEvents(5, 15_000)
    await liveWs.waitForEvents(5)

    const fromHttp = makeEvents(6, 8, { clientId: 'http-client', sessionId: 'session-H' })
    await http.push(fromHttp)
    await liveWs.waitForEvents(8)
    await liveHttp.waitForEvents(8, 15_000)

    const expected = [...fromWs, ...fromHttp].map(normalizeEvent)
    expect(liveWs.events().map(normalizeEvent)).toEqual(expected)
    // the polling client advances its cursor: every event exactly once, in order
    expect(liveHttp.events().map(normalizeEvent)).toEqual(expected)
    for (const page of liveHttp.pages) {
      expect(page.pageInfo).toEqual({ _tag: 'NoMore' })
      for (const item of page.batch) expect(isIsoTimestamp(item.metadata.value.createdAt)).toBe(true)
    }
    // it really polled (one empty NoMore page per idle poll)
    const pagesSoFar = liveHttp.pages.length
    await liveHttp.waitForPages(pagesSoFar + 2, 10_000)
    expect(liveHttp.events()).toHaveLength(8)
  })

  test('raw SyncHttpRpc.Ping: a JSON array with one Exit whose value is the Pong', async () => {
    const storeId = uniqueStoreId('http-ping')
    const id = newRequestId()
    const res = await postRaw(httpSyncUrl(worker.url, storeId), httpPingRequest(id, storeId))
    expect(res.status).toBe(200)
    expect(res.contentType).toMatch(/^application\/json/)
    expect(res.json).toEqual([{ _tag: 'Exit', requestId: id, exit: { _tag: 'Success', value: { _tag: 'SyncMessage.Pong' } } }])
  })

  test('raw pull: one JSON array of Chunks and an Exit, pages within the limits, remaining counts down', async () => {
    const storeId = uniqueStoreId('http-raw-pull')
    const client = await openHttp(storeId)
    const TOTAL = 260
    // every 20th event carries ~250 kB (5 per 100 events) so pages must also be split by size (900 kB cap)
    const events = makeEvents(1, TOTAL, {
      argsFor: (n) => (n % 20 === 0 ? { id: `t${n}`, blob: `${n}:`.padEnd(250_000, 'y') } : { id: `t${n}` }),
    })
    await client.push(events)
    await client.pullAll()
    const backendId = await client.backendId()

    const url = httpSyncUrl(worker.url, storeId)
    const res = await rpc(url, httpPullRequest(newRequestId(), storeId))
    expect(res.contentType).toMatch(/^application\/json/)
    expect(res.exit).toEqual({ _tag: 'Success' })
    expect(res.chunks.length).toBeGreaterThan(0)
    let delivered = 0
    let maxBytes = 0
    res.values.forEach((value, i) => {
      expect(value.backendId).toBe(backendId)
      expect(value.batch.length).toBeLessThanOrEqual(MAX_EVENTS_PER_MESSAGE)
      const bytes = Buffer.byteLength(JSON.stringify(value))
      maxBytes = Math.max(maxBytes, bytes)
      expect(bytes).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES)
      delivered += value.batch.length
      if (i === res.values.length - 1) expect(value.pageInfo).toEqual({ _tag: 'NoMore' })
      else expect(value.pageInfo).toEqual({ _tag: 'MoreKnown', remaining: TOTAL - delivered })
    })
    expect(maxBytes).toBeGreaterThan(250_000)
    expect(res.values.length).toBeGreaterThan(Math.ceil(TOTAL / MAX_EVENTS_PER_MESSAGE)) // split by size too
    expect(res.values.flatMap((v) => v.batch).map((i) => normalizeEvent(i.eventEncoded))).toEqual(events.map(normalizeEvent))

    // from a cursor (cursor carries the backendId)
    const later = await rpc(url, httpPullRequest(newRequestId(), storeId, { cursor: { eventSequenceNumber: 255, backendId } }))
    expect(later.exit).toEqual({ _tag: 'Success' })
    expect(later.values.flatMap((v) => v.batch).map((i) => i.eventEncoded.seqNum)).toEqual([256, 257, 258, 259, 260])
  })
})

// ------------------------------------------------------------------------------------------------
// bad input over raw HTTP: a 400 with [Defect] (or 413 for a body over 1 MiB), or a 200 with a failed
// Exit for a known RPC with an invalid payload; nothing stored, the store keeps working.


const defectBody = (res) => {
  expect(Array.isArray(res.json), `body is not a JSON array: ${res.text.slice(0, 300)}`).toBe(true)
  expect(res.json).toHaveLength(1)
  expect(res.json[0]._tag).toBe('Defect')
  expect(typeof res.json[0].defect).toBe('string')
  expect(res.json[0].defect.length).toBeGreaterThan(0)
}

const failedExit = (res, id, errorTag) => {
  expect(Array.isArray(res.json), `body is not a JSON array: ${res.text.slice(0, 300)}`).toBe(true)
  const exit = res.json.at(-1)
  expect(exit).toMatchObject({ _tag: 'Exit', requestId: id, exit: { _tag: 'Failure' } })
  expect(res.json.filter((m) => m._tag !== 'Exit')).toEqual([]) // no Chunk before a failure
  if (errorTag) expect(exit.exit.cause).toMatchObject({ _tag: 'Fail', error: { _tag: errorTag } })
}

/** `build(storeId, id)` → body (object or string); `check(res, id)`; `statuses` allowed. */
const httpCases = [
  {
    name: 'malformed JSON body (a truncated push)',
    build: (storeId, id) => JSON.stringify(httpPushRequest(id, storeId, [rawEvent(3, 2)])).slice(0, -9),
    statuses: [400],
    check: defectBody,
  },
  {
    name: 'empty body',
    build: () => '',
    statuses: [400],
    check: defectBody,
  },
  {
    name: 'wrong content type (a valid push sent as text/plain)',
    contentType: 'text/plain',
    build: (storeId, id) => httpPushRequest(id, storeId, [rawEvent(3, 2)]),
    statuses: [400],
    check: defectBody,
  },
  {
    name: 'unknown message _tag',
    build: (storeId, id) => ({ ...httpPushRequest(id, storeId, [rawEvent(3, 2)]), _tag: 'Bogus' }),
    statuses: [400],
    check: defectBody,
  },
  {
    name: 'unknown rpc tag',
    build: (storeId, id) => ({ ...httpPushRequest(id, storeId, [rawEvent(3, 2)]), tag: 'SyncHttpRpc.Bogus' }),
    statuses: [400],
    check: defectBody,
  },
  {
    name: 'a WebSocket rpc tag over HTTP (SyncWsRpc.Push)',
    build: (storeId, id) => ({ ...httpPushRequest(id, storeId, [rawEvent(3, 2)]), tag: 'SyncWsRpc.Push' }),
    statuses: [400],
    check: defectBody,
  },
  {
    name: 'push with an invalid payload (event without name) → failed Exit',
    build: (storeId, id) => httpPushRequest(id, storeId, [rawEvent(3, 2, { name: undefined })]),
    statuses: [200],
    check: (res, id) => failedExit(res, id, 'UnknownError'),
  },
  {
    name: 'push whose batch is not an array → failed Exit',
    build: (storeId, id) => httpRequest(id, 'SyncHttpRpc.Push', { storeId, batch: 'nope', backendId: { _tag: 'None' } }),
    statuses: [200],
    check: (res, id) => failedExit(res, id, 'UnknownError'),
  },
  {
    name: 'pull with an invalid cursor → failed Exit',
    build: (storeId, id) =>
      httpRequest(id, 'SyncHttpRpc.Pull', { storeId, cursor: { _tag: 'Some', value: { eventSequenceNumber: 'x' } } }),
    statuses: [200],
    check: (res, id) => failedExit(res, id, 'UnknownError'),
  },
  {
    name: 'push batch with a seqNum gap after the head (3 then 5)',
    build: (storeId, id) => httpPushRequest(id, storeId, [rawEvent(3, 2), rawEvent(5, 4)]),
    statuses: [200, 400],
    check: (res, id) => (res.status === 200 ? failedExit(res, id) : defectBody(res)),
  },
  {
    name: 'push batch repeating an already stored seqNum',
    build: (storeId, id) => httpPushRequest(id, storeId, [rawEvent(2, 2)]),
    statuses: [200, 400],
    check: (res, id) => (res.status === 200 ? failedExit(res, id) : defectBody(res)),
  },
  {
    name: 'body over 1 MiB → 413',
    build: (storeId, id) => httpPushRequest(id, storeId, [rawEvent(3, 2, { args: { id: 'huge', blob: 'x'.repeat(1_200_000) } })]),
    statuses: [413],
    check: defectBody,
  },
]

describe(`bad input over raw HTTP (storage ${E2E_STORAGE})`, () => {
  for (const c of httpCases) {
    test(c.name, async () => {
      const storeId = uniqueStoreId('http-bad')
      const seeder = await openHttp(storeId, { pingEnabled: false })
      const seeded = makeEvents(1, 2)
      await seeder.push(seeded)

      const id = newRequestId()
      const url = httpSyncUrl(worker.url, storeId)
      const logMark = worker.logOffset()
      const res = await postRaw(url, c.build(storeId, id), { contentType: c.contentType ?? 'application/json', timeoutMs: 20_000 })
      expect(c.statuses, `unexpected answer ${res.status}: ${res.text.slice(0, 300)}`).toContain(res.status)
      c.check(res, id)

      // the refused request does not disturb the next ones (keep-alive: same connection, right after it)
      for (let i = 0; i < 5; i++) {
        const pingId = newRequestId()
        const pong = await rpc(url, httpPingRequest(pingId, storeId))
        expect(pong.exit).toEqual({ _tag: 'Success', value: { _tag: 'SyncMessage.Pong' } })
      }
      // and the server handled it without an uncaught exception (workerd logs e.g. "Can't read from
      // request stream after response has been sent" when a forwarded body is left unread)
      await expectNoUncaughtErrors(worker, logMark)

      // nothing stored: raw pull, stored log, then the real client still works
      const pulled = await rpc(url, httpPullRequest(newRequestId(), storeId))
      expect(pulled.exit).toEqual({ _tag: 'Success' })
      expect(pulled.values.flatMap((v) => v.batch).map((i) => normalizeEvent(i.eventEncoded))).toEqual(seeded.map(normalizeEvent))
      expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2])

      const client = await openHttp(storeId)
      const next = makeEvents(3, 4, { clientId: 'after-bad-input' })
      await client.push(next)
      expect(eventsOf(await client.pullAll()).map(normalizeEvent)).toEqual([...seeded, ...next].map(normalizeEvent))
    })
  }
})
