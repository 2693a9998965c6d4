// DO-RPC transport (docs §5): Durable Object → sync Durable Object over JS RPC, msgpackr-framed Effect RPC.
//
// Runs the test Worker of test/do-rpc/ (the project's real Rust Worker and sync DO, plus TestClientDO, a JS
// client Durable Object that syncs with the REAL `makeDoRpcSync` of @livestore/sync-cf 0.4.0 and records
// every `syncUpdateRpc` call in its own SQLite). Covers push / pull / ping through the real client, live
// updates through syncUpdateRpc for pushes from any transport, the persisted subscriptions (table
// do_rpc_subscriptions of the sync DO's SQLite) across restarts, unsubscribing clients that fail, and the
// exact msgpackr messages of `stub.rpc(bytes)`.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientDo, recordedEvents } from '../support/client-do.mjs'
import { eventsOf, clientPool, openClient } from '../support/livestore-client.mjs'
import { RawSocket, newRequestId, pushRequest, wsSyncUrl } from '../support/raw-ws.mjs'
import { isIsoTimestamp, makeEvents, normalizeEvent, sleep, storedRows, uniqueStoreId } from '../support/util.mjs'
import { sharedDoRpcWorker } from '../support/shared.mjs'
import { E2E_STORAGE } from '../support/worker.mjs'
import { expectWellFormedPages } from '../support/pages.mjs'

const BINDING = 'TEST_CLIENT_DO'
const SUBSCRIPTIONS = 'do_rpc_subscriptions'

let worker
let syncUrl
const clients = clientPool()

/** A real LiveStore WS client (makeWsSync) on the test worker. */
const openWs = (storeId, opts = {}) => clients.open({ url: syncUrl, storeId, ...opts })


let clientCounter = 0
/** A fresh TestClientDO (unique name, so a fresh object with empty storage). */
const newClientDo = (label) => clientDo(worker, `${label}-${process.pid}-${clientCounter++}`)

/** Rows of the store's do_rpc_subscriptions table ([] if the table does not exist yet). */
const subscriptions = async (storeId) =>
  (await worker.doSql(storeId, { sql: `SELECT * FROM ${SUBSCRIPTIONS} ORDER BY clientDoId`, ifTable: SUBSCRIPTIONS })).rows

/** Polls the subscription rows until `done(rows)`; returns them. */
const waitForSubscriptions = async (storeId, done, what, waitMs = 20_000) => {
  const deadline = Date.now() + waitMs
  while (true) {
    const rows = await subscriptions(storeId)
    if (done(rows)) return rows
    if (Date.now() > deadline) throw new Error(`${SUBSCRIPTIONS} of ${storeId}: timed out waiting for ${what}; rows ${JSON.stringify(rows)}`)
    await sleep(300)
  }
}

const metadataMatcher = () => ({ _tag: 'Some', value: { _tag: 'SyncMessage.SyncMetadata', createdAt: expect.any(String) } })

/** The PullResponse a live update for `events` must carry (events pushed with args, so echoed as they are). */
const livePullResponse = (events, backendId) => ({
  batch: events.map((e) => ({ eventEncoded: e, metadata: metadataMatcher() })),
  pageInfo: { _tag: 'NoMore' },
  backendId,
})


beforeAll(async () => {
  worker = await sharedDoRpcWorker()
  syncUrl = `${worker.url}/sync`
})

afterAll(async () => {
  await clients.closeAll()
})

// -------------------------------------------------------------------------------------------------

describe('DO-RPC with the real makeDoRpcSync', () => {
  // Push, pull, cursors, errors and ping are the sync contract's (contract.test.mjs); here what only
  // DO-RPC pages have.
  test('every page of a pull carries the request id as rpcRequestId and nothing but batch and pageInfo besides; a plain pull does not subscribe', async () => {
    const storeId = uniqueStoreId('dorpc-pages')
    const c = newClientDo('pages')
    expect((await c.pull(storeId)).pages).toEqual([{ batch: [], pageInfo: { _tag: 'NoMore' }, rpcRequestId: expect.stringMatching(/^\d+$/) }])
    const events = makeEvents(1, 130)
    await c.push(storeId, events)
    const { pages } = await c.pull(storeId)
    expectWellFormedPages(pages, events.length)
    // one request: every page carries its id (the Effect 3 request id, echoed)
    expect(new Set(pages.map((p) => p.rpcRequestId)).size).toBe(1)
    for (const p of pages) expect(Object.keys(p).sort()).toEqual(['batch', 'pageInfo', 'rpcRequestId'])
    expect(eventsOf(pages)).toEqual(events)
    expect(await subscriptions(storeId)).toEqual([])
  })
})

// -------------------------------------------------------------------------------------------------

describe('live updates through syncUpdateRpc', () => {
  test('a subscribed client DO gets the pushes of a WS client and of another client DO, in push order', async () => {
    const storeId = uniqueStoreId('dorpc-live')
    const sub = newClientDo('live-sub')
    const pusherDo = newClientDo('live-pusher')
    const ws = await openWs(storeId, { clientId: 'ws-client' })
    const wsLive = await ws.live()

    const { pages: catchUp } = await sub.live(storeId)
    expect(catchUp).toEqual([{ batch: [], pageInfo: { _tag: 'NoMore' }, rpcRequestId: expect.stringMatching(/^\d+$/) }])
    const liveRequestId = catchUp[0].rpcRequestId

    // three pushes from the WS client, then two from another client DO
    const fromWs = [makeEvents(1, 2, { clientId: 'ws-client' }), makeEvents(3, 3, { clientId: 'ws-client' }), makeEvents(4, 6, { clientId: 'ws-client' })]
    for (const batch of fromWs) await ws.push(batch)
    const fromDo = [makeEvents(7, 8, { clientId: 'do-client' }), makeEvents(9, 9, { clientId: 'do-client' })]
    for (const batch of fromDo) await pusherDo.push(storeId, batch)
    const pushes = [...fromWs, ...fromDo]
    const all = pushes.flat()

    // the real client's live stream got them (handleSyncUpdateRpc → its mailbox)
    const livePages = await sub.waitForLiveEvents(storeId, all.length)
    expect(eventsOf(livePages)).toEqual(all)
    for (const page of livePages.slice(1)) expect(page.pageInfo).toEqual({ _tag: 'NoMore' })

    // one syncUpdateRpc call per push, in push order, with exactly the 0.4.0 Chunk payload
    const { backendId } = await pusherDo.pull(storeId)
    const records = await sub.waitForRecords((r) => r.length >= pushes.length, { what: `${pushes.length} calls` })
    await sleep(500)
    expect((await sub.records()).count).toBe(pushes.length)
    records.forEach((record, i) => {
      expect(record.payload).toEqual({ _tag: 'Chunk', requestId: liveRequestId, values: [livePullResponse(pushes[i], backendId)] })
      expect(record.shape).toMatchObject({ payloadIsPlainObject: true, valuesIsArray: true, valuesArePlainObjects: true })
      expect(record.outcome).toBe('handled')
      expect(isIsoTimestamp(record.payload.values[0].batch[0].metadata.value.createdAt)).toBe(true)
    })
    // the pusher DO is not subscribed: never called
    expect((await pusherDo.records()).count).toBe(0)
    // and the WS client saw the client DO's pushes too
    await wsLive.waitForEvents(all.length)
    expect(wsLive.events().map(normalizeEvent)).toEqual(all.map(normalizeEvent))
  })

  test('pipelined pushes (10 requests sent at once on one socket) reach subscribers in push order, every event once', async () => {
    const storeId = uniqueStoreId('dorpc-order')
    const subs = [newClientDo('order-a'), newClientDo('order-b')]
    for (const c of subs) await c.live(storeId)
    const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId))
    try {
      const events = makeEvents(1, 10, { clientId: 'pipelined' })
      const ids = events.map(() => newRequestId())
      const from = raw.messages.length
      events.forEach((e, i) => raw.send(pushRequest(ids[i], storeId, [e])))
      const exits = await raw.until(() => {
        const found = ids.map((id) => raw.messages.slice(from).find((m) => m.json?._tag === 'Exit' && m.json.requestId === id))
        return found.every(Boolean) ? found.map((m) => m.json.exit) : undefined
      }, { what: 'the 10 push acks' })
      expect(exits).toEqual(ids.map(() => ({ _tag: 'Success', value: {} })))

      // Updates are read from the log after each subscriber's cursor, so one call may carry the
      // events of several pushes; each event comes once, in order.
      for (const c of subs) {
        expect(eventsOf(await c.waitForLiveEvents(storeId, 10))).toEqual(events)
        const records = await c.waitForRecords((r) => recordedEvents(r).length >= 10, { what: 'the 10 events' })
        expect(recordedEvents(records).map((e) => e.seqNum)).toEqual(events.map((e) => e.seqNum))
        expect(records.every((r) => r.outcome === 'handled')).toBe(true)
      }
      await sleep(500)
      for (const c of subs) expect(recordedEvents((await c.records()).records).map((e) => e.seqNum)).toEqual(events.map((e) => e.seqNum))
    } finally {
      raw.terminate()
    }
  })

  test('a subscribed pusher gets its own pushes back, and an HTTP push reaches subscribers as well', async () => {
    const storeId = uniqueStoreId('dorpc-own')
    const a = newClientDo('own-a')
    const b = newClientDo('own-b')
    await a.live(storeId)
    await b.live(storeId)
    await a.push(storeId, makeEvents(1, 2, { clientId: 'A' }))
    await b.push(storeId, makeEvents(3, 3, { clientId: 'B' }))
    const http = await openWs(storeId, { transport: 'http', pingEnabled: false })
    await http.push(makeEvents(4, 5, { clientId: 'H' }))

    const expected = [1, 2, 3, 4, 5]
    for (const c of [a, b]) {
      const pages = await c.waitForLiveEvents(storeId, expected.length)
      expect(eventsOf(pages).map((e) => e.seqNum)).toEqual(expected)
      const records = await c.waitForRecords((r) => r.length >= 3, { what: '3 calls' })
      expect(recordedEvents(records).map((e) => e.seqNum)).toEqual(expected)
      expect(records.map((r) => r.outcome)).toEqual(['handled', 'handled', 'handled'])
    }
  })

  test('the subscription is a row of do_rpc_subscriptions in the sync DO; re-subscribing replaces it', async () => {
    const storeId = uniqueStoreId('dorpc-rows')
    const c = newClientDo('rows')
    const other = newClientDo('rows-other')
    const clientDoId = await c.id()
    const before = Date.now()
    const first = (await c.live(storeId)).pages[0].rpcRequestId

    let rows = await subscriptions(storeId)
    expect(rows).toEqual([
      // `delivered`: the subscriber's cursor, the last event it has (here the empty store's head)
      { clientDoId, bindingName: BINDING, storeId, requestId: first, payload: null, subscribedAt: expect.any(Number), delivered: 0, effect4: 0 },
    ])
    expect(rows[0].subscribedAt).toBeGreaterThanOrEqual(before - 60_000)
    expect(rows[0].subscribedAt).toBeLessThanOrEqual(Date.now() + 60_000)

    // the same client subscribes again (e.g. a new live pull): still one row, with the new request id
    await c.forget(storeId)
    const second = (await c.live(storeId)).pages[0].rpcRequestId
    expect(second).not.toBe(first)
    rows = await subscriptions(storeId)
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ clientDoId, bindingName: BINDING, storeId, requestId: second })

    // another client adds its own row
    const otherId = await other.id()
    await other.live(storeId)
    rows = await subscriptions(storeId)
    expect(rows.map((r) => r.clientDoId).sort()).toEqual([clientDoId, otherId].sort())

    // a push calls the re-subscribed client once, with its new request id
    await other.push(storeId, makeEvents(1, 1))
    const records = await c.waitForRecords((r) => r.length >= 1, { what: 'one call' })
    await sleep(500)
    expect((await c.records()).count).toBe(1)
    expect(records[0].payload.requestId).toBe(second)
    expect(records[0].outcome).toBe('handled')
    expect(eventsOf(await c.waitForLiveEvents(storeId, 1)).map((e) => e.seqNum)).toEqual([1])
  })

  test('a client that leaves (syncUpdateRpc throws a plain Error) is called once, then unsubscribed; others keep receiving', async () => {
    const storeId = uniqueStoreId('dorpc-leave')
    const leaver = newClientDo('leaver')
    const stayer = newClientDo('stayer')
    const pusher = await openWs(storeId)
    await leaver.live(storeId)
    await stayer.live(storeId)
    const leaverId = await leaver.id()
    expect((await subscriptions(storeId)).map((r) => r.clientDoId)).toContain(leaverId)

    await pusher.push(makeEvents(1, 1))
    await leaver.waitForRecords((r) => r.length === 1, { what: 'the call before leaving' })
    await leaver.setMode('leave')

    // the first push after leaving: one call, which throws; the push itself succeeds
    await pusher.push(makeEvents(2, 2))
    const records = await leaver.waitForRecords((r) => r.length >= 2, { what: 'the call after leaving' })
    expect(records[1]).toMatchObject({ mode: 'leave', outcome: 'threw' })
    expect(recordedEvents(records).map((e) => e.seqNum)).toEqual([1, 2])
    // then its row is gone
    await waitForSubscriptions(storeId, (rows) => !rows.some((r) => r.clientDoId === leaverId), 'the leaver to be unsubscribed')

    // later pushes never call it again; the other subscriber gets everything
    await pusher.push(makeEvents(3, 4))
    await pusher.push(makeEvents(5, 5))
    const stayerPages = await stayer.waitForLiveEvents(storeId, 5)
    expect(eventsOf(stayerPages).map((e) => e.seqNum)).toEqual([1, 2, 3, 4, 5])
    await stayer.waitForRecords((r) => r.length >= 4, { what: '4 calls' })
    await sleep(1_000)
    expect((await leaver.records()).count).toBe(2)
    expect((await stayer.records()).records.map((r) => r.outcome)).toEqual(['handled', 'handled', 'handled', 'handled'])
    expect((await subscriptions(storeId)).map((r) => r.clientDoId)).toEqual([await stayer.id()])

    // subscribing again brings it back
    await leaver.setMode('ok')
    await leaver.forget(storeId)
    await leaver.live(storeId)
    await pusher.push(makeEvents(6, 6))
    const again = await leaver.waitForRecords((r) => r.length >= 3, { what: 'a call after subscribing again' })
    expect(again[2]).toMatchObject({ mode: 'ok', outcome: 'handled' })
    expect(recordedEvents(again.slice(2)).map((e) => e.seqNum)).toEqual([6])
  })

  test('a client that fails with retryable errors gets every update once it recovers, in order and once', async () => {
    const storeId = uniqueStoreId('dorpc-retryable')
    const c = newClientDo('retryable')
    // what the sync DO will see: the error's `retryable` property survives JS RPC
    expect(await c.rpcErrorProbe('retryable')).toMatchObject({ isError: true, retryable: true })
    expect((await c.rpcErrorProbe('plain')).retryable).toBeUndefined()

    const pusher = newClientDo('retryable-pusher')
    const clientDoId = await c.id()
    await c.live(storeId)
    await c.setMode('retryable')
    await pusher.push(storeId, makeEvents(1, 1))
    await pusher.push(storeId, makeEvents(2, 2))
    // The sync DO calls again (backing off) while the client refuses.
    const refused = await c.waitForRecords((r) => r.length >= 2, { what: 'two retryable failures' })
    expect(refused.map((r) => r.outcome)).toEqual(['threw-retryable', 'threw-retryable'])
    // each call starts where the client's cursor is: at event 1
    expect(refused.map((r) => recordedEvents([r])[0].seqNum)).toEqual([1, 1])
    expect((await subscriptions(storeId)).map((r) => [r.clientDoId, r.delivered])).toEqual([[clientDoId, 0]])

    await c.setMode('ok')
    await pusher.push(storeId, makeEvents(3, 3))
    const records = await c.waitForRecords((r) => recordedEvents(r.filter((x) => x.outcome === 'handled')).length >= 3, {
      what: 'every update after recovering',
      waitMs: 30_000,
    })
    const handled = recordedEvents(records.filter((r) => r.outcome === 'handled')).map((e) => e.seqNum)
    expect(handled).toEqual([1, 2, 3])
    expect(eventsOf(await c.waitForLiveEvents(storeId, 3)).map((e) => e.seqNum)).toEqual([1, 2, 3])
    await sleep(500)
    const all = (await c.records()).records
    expect(recordedEvents(all.filter((r) => r.outcome === 'handled')).map((e) => e.seqNum)).toEqual([1, 2, 3])
    expect(all.filter((r) => r.outcome !== 'handled').every((r) => r.outcome === 'threw-retryable')).toBe(true)
    expect((await subscriptions(storeId)).map((r) => [r.clientDoId, r.delivered])).toEqual([[clientDoId, 3]])
  })

  test('a subscription whose binding does not exist is dropped; the push still succeeds and others still get it', async () => {
    const storeId = uniqueStoreId('dorpc-nobinding')
    const c = newClientDo('nobinding')
    const good = newClientDo('nobinding-good')
    await good.live(storeId)
    // a raw subscribing pull naming a binding the worker does not have
    const ghostId = await newClientDo('ghost').id()
    const reply = await c.rawRpc(storeId, rawPull('910001', storeId, { rpcContext: { callerContext: { bindingName: 'NO_SUCH_BINDING', durableObjectId: ghostId } } }))
    expect(reply.messages.at(-1)).toMatchObject({ _tag: 'Exit', requestId: '910001', exit: { _tag: 'Success' } })
    await waitForSubscriptions(storeId, (rows) => rows.some((r) => r.clientDoId === ghostId && r.bindingName === 'NO_SUCH_BINDING'), 'the ghost row')

    await c.push(storeId, makeEvents(1, 2))
    await waitForSubscriptions(storeId, (rows) => !rows.some((r) => r.clientDoId === ghostId), 'the ghost row to be dropped')
    expect(eventsOf(await good.waitForLiveEvents(storeId, 2)).map((e) => e.seqNum)).toEqual([1, 2])
    await c.push(storeId, makeEvents(3, 3))
    expect(eventsOf(await good.waitForLiveEvents(storeId, 3)).map((e) => e.seqNum)).toEqual([1, 2, 3])
    expect((await subscriptions(storeId)).map((r) => r.clientDoId)).toEqual([await good.id()])
  })
})

// -------------------------------------------------------------------------------------------------
// msgpackr by hand: TestClientDO packs [request] with `new Packr({ useRecords: true })`, calls
// `stub.rpc(bytes)` itself and decodes the reply with `new Unpackr({ useRecords: true }).unpackMultiple`.

const option = (value) => (value === undefined ? { _tag: 'None' } : { _tag: 'Some', value })
const rawRequest = (id, tag, payload) => ({ _tag: 'Request', id, tag, payload, headers: [] })
const rawPing = (id, storeId) => rawRequest(id, 'SyncDoRpc.Ping', { storeId })
const rawPush = (id, storeId, batch, backendId) => rawRequest(id, 'SyncDoRpc.Push', { storeId, batch, backendId: option(backendId) })
const rawPull = (id, storeId, { cursor, rpcContext } = {}) =>
  rawRequest(id, 'SyncDoRpc.Pull', { storeId, cursor: option(cursor), ...(rpcContext ? { rpcContext } : {}) })

let rawId = 920_000
const nextRawId = () => String(rawId++)

/** A non-stream reply: one Uint8Array that unpacks to exactly [[Exit]] (pack([ExitMessage])). */
const expectSingleExit = (reply, id) => {
  expect(reply.kind).toBe('bytes')
  expect(reply.isUint8Array).toBe(true)
  expect(reply.chunks).toHaveLength(1)
  expect(reply.chunks[0].values).toHaveLength(1)
  expect(reply.chunks[0].values[0]).toHaveLength(1)
  const [exit] = reply.messages
  expect(exit).toMatchObject({ _tag: 'Exit', requestId: id })
  return exit.exit
}

/**
 * A stream reply: a ReadableStream of Uint8Array chunks holding pack([message]) after pack([message])
 * (JS RPC streams bytes, so reads may cut or merge them; the client's decoder copes with both): every
 * decoded value is an array of messages, nothing is left over, Chunks then one final Exit, all for `id`.
 * Returns { values, exit }.
 */
const expectStream = (reply, id) => {
  expect(reply.kind).toBe('stream')
  expect(reply.chunks.length).toBeGreaterThan(0)
  for (const chunk of reply.chunks) {
    expect(chunk.isUint8Array).toBe(true)
    for (const v of chunk.values) expect(Array.isArray(v), `stream value is not pack([message]): ${JSON.stringify(v).slice(0, 200)}`).toBe(true)
  }
  expect(reply.leftoverBytes).toBe(0)
  const messages = reply.messages
  const exit = messages.at(-1)
  expect(exit).toMatchObject({ _tag: 'Exit', requestId: id })
  const chunkMessages = messages.slice(0, -1)
  for (const m of chunkMessages) {
    expect(Object.keys(m).sort()).toEqual(['_tag', 'requestId', 'values'])
    expect(m).toMatchObject({ _tag: 'Chunk', requestId: id })
    expect(m.values.length).toBeGreaterThan(0)
  }
  return { values: chunkMessages.flatMap((m) => m.values), exit: exit.exit }
}

describe('raw msgpackr round trips over stub.rpc', () => {
  test('Ping → pack([Exit Success])', async () => {
    const storeId = uniqueStoreId('raw-ping')
    const c = newClientDo('raw-ping')
    const id = nextRawId()
    const exit = expectSingleExit(await c.rawRpc(storeId, rawPing(id, storeId)), id)
    expect(exit._tag).toBe('Success')
  })

  test('an Effect 4 subscriber (numeric request id) gets syncUpdateRpc(msgpack bytes, storeId), a 0.4.0 one the plain object (LiveStore #1545)', async () => {
    const storeId = uniqueStoreId('raw-effect4')
    const e4 = newClientDo('raw-effect4')
    const durableObjectId = await e4.id()
    const reply = await e4.rawRpc(storeId, rawPull(41, storeId, { rpcContext: { callerContext: { bindingName: BINDING, durableObjectId } } }))
    expect(reply.messages.at(-1)).toEqual({ _tag: 'Exit', requestId: 41, exit: { _tag: 'Success', value: null } })
    const backendId = reply.messages[0].values[0].backendId
    await waitForSubscriptions(storeId, (rows) => rows.some((r) => r.clientDoId === durableObjectId && r.effect4 === 1), 'the Effect 4 row')
    const e3 = newClientDo('raw-effect3')
    await e3.live(storeId)

    const events = makeEvents(1, 3, { argsFor: (n) => ({ n }) })
    await e3.push(storeId, events.slice(0, 2))
    await e3.push(storeId, events.slice(2))
    const records = await e4.waitForRecords((r) => r.length >= 2, { what: '2 calls' })
    expect(records.map((r) => [r.shape.argumentCount, r.shape.packed, r.shape.storeId, r.outcome])).toEqual([
      [2, true, storeId, 'recorded'],
      [2, true, storeId, 'recorded'],
    ])
    // What LiveStore main's handleSyncUpdateRpc unpacks: one Chunk with the id as a string and a PullResponse.
    expect(records.map((r) => r.payload)).toEqual([
      [{ _tag: 'Chunk', requestId: '41', values: [expect.objectContaining(livePullResponse(events.slice(0, 2), backendId))] }],
      [{ _tag: 'Chunk', requestId: '41', values: [expect.objectContaining(livePullResponse(events.slice(2), backendId))] }],
    ])
    const old = await e3.waitForRecords((r) => r.length >= 2, { what: '2 calls' })
    expect(old.map((r) => [r.shape.argumentCount, r.shape.packed, r.outcome])).toEqual([
      [1, false, 'handled'],
      [1, false, 'handled'],
    ])
  })

  test('Push → Exit Success {}; stale parent → ServerAheadError; wrong backendId → BackendIdMismatchError', async () => {
    const storeId = uniqueStoreId('raw-push')
    const c = newClientDo('raw-push')
    let id = nextRawId()
    expect(expectSingleExit(await c.rawRpc(storeId, rawPush(id, storeId, makeEvents(1, 3))), id)).toEqual({ _tag: 'Success', value: {} })

    const { backendId } = await c.pull(storeId)
    id = nextRawId()
    expect(expectSingleExit(await c.rawRpc(storeId, rawPush(id, storeId, makeEvents(4, 5), backendId)), id)).toEqual({ _tag: 'Success', value: {} })

    id = nextRawId()
    expect(expectSingleExit(await c.rawRpc(storeId, rawPush(id, storeId, makeEvents(3, 3, { clientId: 'late' }))), id)).toEqual({
      _tag: 'Failure',
      cause: { _tag: 'Fail', error: { _tag: 'ServerAheadError', minimumExpectedNum: 5, providedNum: 2 } },
    })

    id = nextRawId()
    expect(expectSingleExit(await c.rawRpc(storeId, rawPush(id, storeId, makeEvents(6, 6), 'not-the-backend')), id)).toEqual({
      _tag: 'Failure',
      cause: { _tag: 'Fail', error: { _tag: 'BackendIdMismatchError', expected: backendId, received: 'not-the-backend' } },
    })
    expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3, 4, 5])
  })

  test('Pull → stream of pack([Chunk]) with rpcRequestId on every value, then pack([Exit Success]); pages and cursor', async () => {
    const storeId = uniqueStoreId('raw-pull')
    const c = newClientDo('raw-pull')

    // empty store
    let id = nextRawId()
    let { values, exit } = expectStream(await c.rawRpc(storeId, rawPull(id, storeId)), id)
    expect(values).toEqual([{ rpcRequestId: id, batch: [], pageInfo: { _tag: 'NoMore' }, backendId: expect.any(String) }])
    expect(exit._tag).toBe('Success')
    expect(exit.value ?? null).toBeNull()
    const backendId = values[0].backendId

    // 130 events: two pages
    const events = makeEvents(1, 130)
    await c.push(storeId, events)
    id = nextRawId()
    ;({ values, exit } = expectStream(await c.rawRpc(storeId, rawPull(id, storeId)), id))
    expect(exit._tag).toBe('Success')
    expect(exit.value ?? null).toBeNull()
    for (const v of values) {
      expect(Object.keys(v).sort()).toEqual(['backendId', 'batch', 'pageInfo', 'rpcRequestId'])
      expect(v.rpcRequestId).toBe(id)
      expect(v.backendId).toBe(backendId)
      for (const item of v.batch) expect(item.metadata).toEqual(metadataMatcher())
    }
    expectWellFormedPages(values, events.length)
    expect(values.flatMap((v) => v.batch).map((i) => i.eventEncoded)).toEqual(events)

    // from a cursor
    id = nextRawId()
    ;({ values, exit } = expectStream(await c.rawRpc(storeId, rawPull(id, storeId, { cursor: { backendId, eventSequenceNumber: 120 } })), id))
    expect(values.flatMap((v) => v.batch).map((i) => i.eventEncoded.seqNum)).toEqual(events.slice(120).map((e) => e.seqNum))
    expect(values.at(-1).pageInfo).toEqual({ _tag: 'NoMore' })
    expect(exit._tag).toBe('Success')

    // a plain pull does not subscribe
    expect(await subscriptions(storeId)).toEqual([])
  })

  test('Pull with a wrong cursor backendId → Exit Failure BackendIdMismatchError, no Chunk', async () => {
    const storeId = uniqueStoreId('raw-pull-mismatch')
    const c = newClientDo('raw-pull-mismatch')
    await c.push(storeId, makeEvents(1, 2))
    const { backendId } = await c.pull(storeId)
    const id = nextRawId()
    const reply = await c.rawRpc(storeId, rawPull(id, storeId, { cursor: { backendId: 'not-the-backend', eventSequenceNumber: 1 } }))
    expect(reply.messages).toEqual([
      {
        _tag: 'Exit',
        requestId: id,
        exit: { _tag: 'Failure', cause: { _tag: 'Fail', error: { _tag: 'BackendIdMismatchError', expected: backendId, received: 'not-the-backend' } } },
      },
    ])
    for (const chunk of reply.chunks) expect(chunk.isUint8Array).toBe(true)
  })

  test('Pull with rpcContext subscribes the caller under that request id; pushes then call it with it', async () => {
    const storeId = uniqueStoreId('raw-subscribe')
    const c = newClientDo('raw-subscribe')
    const clientDoId = await c.id()
    await c.push(storeId, makeEvents(1, 1))
    const id = nextRawId()
    const { values } = expectStream(
      await c.rawRpc(storeId, rawPull(id, storeId, { rpcContext: { callerContext: { bindingName: BINDING, durableObjectId: clientDoId } } })),
      id,
    )
    // the catch-up ends (no live tail on the stream itself)
    expect(values.flatMap((v) => v.batch).map((i) => i.eventEncoded.seqNum)).toEqual([1])
    expect(values.at(-1).pageInfo).toEqual({ _tag: 'NoMore' })
    expect(await subscriptions(storeId)).toEqual([
      { clientDoId, bindingName: BINDING, storeId, requestId: id, payload: null, subscribedAt: expect.any(Number), delivered: 1, effect4: 0 },
    ])

    const pusher = await openWs(storeId)
    await pusher.push(makeEvents(2, 3))
    const records = await c.waitForRecords((r) => r.length >= 1, { what: 'one call' })
    expect(records[0].payload).toEqual({
      _tag: 'Chunk',
      requestId: id,
      values: [livePullResponse(makeEvents(2, 3), values[0].backendId)],
    })
    // no live pull of the real client is waiting for this id: handleSyncUpdateRpc just logs it
    expect(records[0].outcome).toBe('handled')
  })

  test('an unknown rpc tag neither hangs nor breaks the object', async () => {
    const storeId = uniqueStoreId('raw-bogus')
    const c = newClientDo('raw-bogus')
    const id = nextRawId()
    const res = await c.rawRpcResult(storeId, rawRequest(id, 'SyncDoRpc.Bogus', { storeId }))
    if (res.ok) {
      // answered with a protocol error: a Defect, or a failed Exit for that request (what 0.4.0's handler sends)
      expect(res.messages).toHaveLength(1)
      const [m] = res.messages
      if (m._tag === 'Defect') expect(m.defect).toBeTruthy()
      else expect(m).toMatchObject({ _tag: 'Exit', requestId: id, exit: { _tag: 'Failure' } })
    } else {
      // or the call rejected
      expect(res.error._tag).toBe('RpcThrew')
    }
    const pingId = nextRawId()
    expect(expectSingleExit(await c.rawRpc(storeId, rawPing(pingId, storeId)), pingId)._tag).toBe('Success')
    await c.push(storeId, makeEvents(1, 1))
    expect(eventsOf((await c.pull(storeId)).pages).map((e) => e.seqNum)).toEqual([1])
  })
})

// -------------------------------------------------------------------------------------------------

// -------------------------------------------------------------------------------------------------

// The switch is read before any storage is: checked once, in the d1 project.
const describeOnce = E2E_STORAGE === 'd1' ? describe : () => {}

describeOnce('DO-RPC switched off', () => {
  test(
    'with SYNC_TRANSPORTS=ws,http the sync DO answers DO-RPC with a Defect and stores nothing; WS still works',
    async () => {
      const off = await sharedDoRpcWorker({ vars: { SYNC_TRANSPORTS: 'ws,http' } })
      const storeId = uniqueStoreId('dorpc-off')
      const c = clientDo(off, `off-${process.pid}`)
      const id = nextRawId()
      const reply = await c.rawRpc(storeId, rawPing(id, storeId))
      expect(reply.kind).toBe('bytes')
      expect(reply.messages).toEqual([{ _tag: 'Defect', defect: expect.stringContaining('do-rpc') }])

      const push = await c.pushResult(storeId, makeEvents(1, 1))
      expect(push.ok).toBe(false)
      const sub = await c.rawRpc(
        storeId,
        rawPull(nextRawId(), storeId, { rpcContext: { callerContext: { bindingName: BINDING, durableObjectId: await c.id() } } }),
      )
      expect(sub.messages.map((m) => m._tag)).toEqual(['Defect'])

      const ws = await openClient({ url: `${off.url}/sync`, storeId })
      try {
        await ws.push(makeEvents(1, 2))
        expect(eventsOf(await ws.pullAll()).map((e) => e.seqNum)).toEqual([1, 2])
      } finally {
        await ws.close()
      }
      expect((await storedRows(off, storeId)).map((r) => r.seqNum)).toEqual([1, 2])
      // the refused subscription was not recorded, so the WS pushes called nobody
      expect(await off.doSql(storeId, { sql: `SELECT * FROM ${SUBSCRIPTIONS}`, ifTable: SUBSCRIPTIONS }).then((r) => r.rows)).toEqual([])
      await sleep(500)
      expect((await c.records()).count).toBe(0)
    },
  )
})
