// The sync contract, once per transport (support/transports.mjs): the real WebSocket, HTTP and DO-RPC
// clients of @livestore/sync-cf 0.4.0 and the Effect 4 flavor of the wire run the same scenarios, against
// the DO-RPC test Worker (the shipped Worker plus a client Durable Object), with event logs in
// E2E_STORAGE. What only one transport has (frames, envelopes, subscriptions) is in that transport's file.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { eventsOf, openClient } from '../support/livestore-client.mjs'
import { expectWellFormedPages } from '../support/pages.mjs'
import { sharedDoRpcWorker } from '../support/shared.mjs'
import { TRANSPORTS } from '../support/transports.mjs'
import {
  eventlogLocations,
  isIsoTimestamp,
  makeEvents,
  normalizeEvent,
  storedRows,
  uniqueStoreId,
} from '../support/util.mjs'
import { E2E_STORAGE } from '../support/worker.mjs'

let worker
const opened = []

beforeAll(async () => {
  worker = await sharedDoRpcWorker()
})

afterAll(async () => {
  for (const client of opened.splice(0)) await client.close().catch(() => {})
})

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

/** A WebSocket client of the real LiveStore client, as the reference another transport is compared with. */
const referenceClient = async (storeId) => {
  const client = await openClient({ url: `${worker.url}/sync`, storeId })
  opened.push(client)
  return client
}

describe.each(TRANSPORTS)(`sync contract over $name (storage ${E2E_STORAGE})`, (transport) => {
  const open = async (storeId, opts = {}) => {
    const client = await transport.open(worker, { storeId, ...opts })
    opened.push(client)
    return client
  }
  const label = (prefix) => uniqueStoreId(`${transport.name}-${prefix}`)

  test('pull on an empty store: one empty NoMore page; the backendId is the store’s, whatever the transport', async () => {
    const storeId = label('empty')
    const client = await open(storeId)
    expect(await client.pullAll()).toEqual([{ batch: [], pageInfo: { _tag: 'NoMore' } }])
    const backendId = await client.backendId()
    expect(backendId).toMatch(/^[A-Za-z0-9_-]{21}$/)

    const reference = await referenceClient(storeId)
    await reference.pullAll()
    expect(await reference.backendId()).toBe(backendId)
  })

  test('push 130 events in two pushes, pull them back with every field; one createdAt per push; stored as pushed', async () => {
    const storeId = label('push-pull')
    const client = await open(storeId)
    // event 7 has no args: stored as NULL, pulled back as null
    const events = makeEvents(1, 130, { argsFor: (n) => (n === 7 ? undefined : { id: `t${n}`, n, nested: { even: n % 2 === 0 } }) })
    const before = Date.now()
    await client.push(events.slice(0, 10))
    await client.push(events.slice(10))

    const pages = await client.pullAll()
    expectWellFormedPages(pages, events.length)
    const items = pages.flatMap((p) => p.batch)
    expect(items.map((i) => normalizeEvent(i.eventEncoded))).toEqual(events.map(normalizeEvent))
    for (const item of items) {
      expect(item.metadata).toEqual({ _tag: 'Some', value: { _tag: 'SyncMessage.SyncMetadata', createdAt: expect.any(String) } })
      expect(isIsoTimestamp(item.metadata.value.createdAt)).toBe(true)
      const at = Date.parse(item.metadata.value.createdAt)
      expect(at).toBeGreaterThan(before - 5 * 60_000)
      expect(at).toBeLessThan(Date.now() + 5 * 60_000)
    }
    // one push, one server time
    expect(new Set(items.slice(0, 10).map((i) => i.metadata.value.createdAt)).size).toBe(1)

    const rows = await storedRows(worker, storeId)
    expect(rowsAsEvents(rows)).toEqual(events.map(normalizeEvent))
    expect(rows.map((r) => r.createdAt)).toEqual(items.map((i) => i.metadata.value.createdAt))

    const reference = await referenceClient(storeId)
    expect(eventsOf(await reference.pullAll()).map(normalizeEvent)).toEqual(events.map(normalizeEvent))
  })

  test('pull from a cursor returns only later events; at the head, one empty NoMore page', async () => {
    const storeId = label('cursor')
    const client = await open(storeId)
    const events = makeEvents(1, 120)
    await client.push(events)
    await client.pullAll() // learn the backendId, which a cursor carries

    const after5 = await client.pullAll(5)
    expectWellFormedPages(after5, 115)
    expect(eventsOf(after5).map(normalizeEvent)).toEqual(events.slice(5).map(normalizeEvent))
    expect(eventsOf(await client.pullAll(119)).map((e) => e.seqNum)).toEqual([120])
    expect(await client.pullAll(120)).toEqual([{ batch: [], pageInfo: { _tag: 'NoMore' } }])
  })

  test('a stale or a future parent fails with ServerAheadError and stores nothing; the right parent is accepted', async () => {
    const storeId = label('stale')
    const client = await open(storeId)
    await client.push(makeEvents(1, 4))

    await expect(client.push(makeEvents(2, 3, { clientId: 'client-B' }))).rejects.toMatchObject({
      _tag: 'ServerAheadError',
      minimumExpectedNum: 4,
      providedNum: 1,
    })
    await expect(client.push(makeEvents(9, 9))).rejects.toMatchObject({
      _tag: 'ServerAheadError',
      minimumExpectedNum: 4,
      providedNum: 8,
    })
    expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3, 4])
    expect(eventsOf(await client.pullAll()).map(normalizeEvent)).toEqual(makeEvents(1, 4).map(normalizeEvent))

    await client.push(makeEvents(5, 6))
    expect(eventsOf(await client.pullAll()).map((e) => e.seqNum)).toEqual([1, 2, 3, 4, 5, 6])
  })

  test('a client that believes in another backendId gets BackendIdMismatchError on push and cursor pull; nothing is stored', async () => {
    const storeId = label('backend-id')
    const good = await open(storeId)
    await good.push(makeEvents(1, 2))
    await good.pullAll()
    const backendId = await good.backendId()

    const stale = await open(storeId, { backendId: 'not-the-backend-id' })
    await expect(stale.push(makeEvents(3, 3))).rejects.toMatchObject({
      _tag: 'BackendIdMismatchError',
      expected: backendId,
      received: 'not-the-backend-id',
    })
    await expect(stale.pullAll(1)).rejects.toMatchObject({ _tag: 'BackendIdMismatchError', expected: backendId })
    expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2])
  })

  test('a sync payload with special characters is accepted', async () => {
    const storeId = label('payload')
    const client = await open(storeId, { payload: { authToken: 'secret & ü/?=+%' } })
    await client.push(makeEvents(1, 3))
    expect(eventsOf(await client.pullAll()).map((e) => e.seqNum)).toEqual([1, 2, 3])
  })

  test('ping', async () => {
    const client = await open(label('ping'))
    for (let i = 0; i < 3; i++) await client.ping()
  })

  test('a live pull gets the catch-up, then every push of the store, its own and another transport’s, once and in order', async () => {
    const storeId = label('live')
    const client = await open(storeId, { clientId: 'live-client' })
    const early = makeEvents(1, 2, { clientId: 'live-client' })
    await client.push(early)
    const live = await client.live()
    await live.waitForEvents(2)

    const reference = await referenceClient(storeId)
    const fromOther = makeEvents(3, 5, { clientId: 'reference' })
    await reference.push(fromOther)
    await live.waitForEvents(5)
    const own = makeEvents(6, 8, { clientId: 'live-client', sessionId: 'session-2' })
    await client.push(own)
    const pages = await live.waitForEvents(8)

    expect(eventsOf(pages).map(normalizeEvent)).toEqual([...early, ...fromOther, ...own].map(normalizeEvent))
    expect(pages.at(-1).pageInfo).toEqual({ _tag: 'NoMore' })
    for (const page of pages.slice(1)) {
      expect(page.pageInfo).toEqual({ _tag: 'NoMore' })
      for (const item of page.batch) expect(isIsoTimestamp(item.metadata.value.createdAt)).toBe(true)
    }
  })
})

test(`event logs are kept in the configured storage only (SYNC_STORAGE=${E2E_STORAGE})`, async () => {
  const storeId = uniqueStoreId('storage')
  const client = await referenceClient(storeId)
  const events = makeEvents(1, 3)
  await client.push(events)
  expect(worker.storage).toBe(E2E_STORAGE)
  expect(await eventlogLocations(worker, storeId)).toEqual({ d1: E2E_STORAGE === 'd1', doSqlite: E2E_STORAGE === 'do-sqlite' })
  const rows = await storedRows(worker, storeId)
  expect(rows.map((r) => ({ ...r, args: JSON.parse(r.args) }))).toEqual(
    events.map((e) => ({ ...normalizeEvent(e), createdAt: rows[0].createdAt })),
  )
  expect(isIsoTimestamp(rows[0].createdAt)).toBe(true)
})
