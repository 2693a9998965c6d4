// The Effect 4 flavor of the wire (docs §3.8, LiveStore main): a request whose `id` is a JSON number is
// answered with numeric `requestId`s, a stream ends with `"exit":{"_tag":"Success","value":null}`, a push
// is acked with `"value":{}`, and a failure's `cause` is an ARRAY `[{"_tag":"Fail","error":…}]`. String ids
// (Effect 3, npm 0.4.0) keep the Effect 3 shapes exactly, on the same store and even on the same socket.
// Spoken by hand over a raw WebSocket and raw HTTP POSTs.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { eventsOf, clientPool } from '../support/livestore-client.mjs'
import { httpPingRequest, httpPullRequest, httpPushRequest, httpRequest, httpSyncUrl, postRaw, rpc } from '../support/raw-http.mjs'
import { RawSocket, newRequestId, pullRequest, pushRequest, wsSyncUrl } from '../support/raw-ws.mjs'
import { makeEvents, normalizeEvent, sleep, storedRows, uniqueStoreId } from '../support/util.mjs'
import { sharedDefaultWorker } from '../support/shared.mjs'

let worker
const sockets = []
const clients = clientPool()

// Effect 4 ids are numbers from a counter starting at 0; 0 itself is used by the first test.
let numericId = 1
const nextNumericId = () => numericId++

const openRaw = async (storeId) => {
  const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId))
  sockets.push(raw)
  return raw
}

const openWs = (storeId, opts = {}) => clients.open({ url: `${worker.url}/sync`, storeId, ...opts })

/** The raw text of the first frame after `from` for which `match(json)` holds. */
const rawFrame = (raw, from, match) => raw.messages.slice(from).find((m) => m.json !== undefined && match(m.json))?.raw

const metadataMatcher = () => ({ _tag: 'Some', value: { _tag: 'SyncMessage.SyncMetadata', createdAt: expect.any(String) } })

beforeAll(async () => {
  worker = await sharedDefaultWorker()
})

afterAll(async () => {
  for (const s of sockets) s.terminate()
  await clients.closeAll()
})

// -------------------------------------------------------------------------------------------------

describe('Effect 4 flavor over a raw WebSocket (numeric ids)', () => {
  test('id 0: push ack {"value":{}}; pull Chunks and Exit with numeric requestId and "value":null', async () => {
    const storeId = uniqueStoreId('e4-ws-basic')
    const raw = await openRaw(storeId)
    const events = makeEvents(1, 3)

    let from = raw.messages.length
    const push = await raw.request(pushRequest(0, storeId, events))
    expect(push.exit).toEqual({ _tag: 'Success', value: {} })
    expect(push.chunks).toEqual([])
    expect(JSON.parse(rawFrame(raw, from, (f) => f._tag === 'Exit'))).toEqual({ _tag: 'Exit', requestId: 0, exit: { _tag: 'Success', value: {} } })

    const id = nextNumericId()
    from = raw.messages.length
    const pull = await raw.request(pullRequest(id, storeId)) // Acks go out with the numeric id too
    expect(pull.chunks.length).toBeGreaterThan(0)
    for (const c of pull.chunks) {
      expect(c.json).toEqual({ _tag: 'Chunk', requestId: id, values: expect.any(Array) })
      expect(typeof c.json.requestId).toBe('number')
    }
    expect(pull.values).toEqual([
      {
        batch: events.map((e) => ({ eventEncoded: e, metadata: metadataMatcher() })),
        pageInfo: { _tag: 'NoMore' },
        backendId: expect.any(String),
      },
    ])
    const exitText = rawFrame(raw, from, (f) => f._tag === 'Exit' && f.requestId === id)
    expect(JSON.parse(exitText)).toEqual({ _tag: 'Exit', requestId: id, exit: { _tag: 'Success', value: null } })
    expect(exitText).toContain(`"requestId":${id}`) // a JSON number, not "${id}"
  })

  test('live pull: catch-up Chunks with the numeric id, no Exit, and a Chunk with the numeric id for each push', async () => {
    const storeId = uniqueStoreId('e4-ws-live')
    const raw = await openRaw(storeId)
    const pusher = await openWs(storeId)
    await pusher.push(makeEvents(1, 2))

    const liveId = nextNumericId()
    const from = raw.messages.length
    raw.send(pullRequest(liveId, storeId, { live: true }))
    const chunkFor = (f) => f._tag === 'Chunk' && f.requestId === liveId
    await raw.until(() => (raw.messages.slice(from).some((m) => m.json && chunkFor(m.json)) ? true : undefined), {
      what: 'the catch-up chunk',
    })
    const catchUp = raw.messages.slice(from).filter((m) => m.json && chunkFor(m.json))
    expect(catchUp.flatMap((m) => m.json.values).flatMap((v) => v.batch).map((i) => i.eventEncoded.seqNum)).toEqual([1, 2])
    for (const m of catchUp) raw.send({ _tag: 'Ack', requestId: liveId })

    const afterCatchUp = raw.messages.length
    const pushed = makeEvents(3, 4, { clientId: 'pusher' })
    await pusher.push(pushed)
    const live = await raw.until(
      () => raw.messages.slice(afterCatchUp).find((m) => m.json && chunkFor(m.json)),
      { what: 'the live chunk for the push' },
    )
    expect(live.json).toEqual({
      _tag: 'Chunk',
      requestId: liveId,
      values: [{ batch: pushed.map((e) => ({ eventEncoded: e, metadata: metadataMatcher() })), pageInfo: { _tag: 'NoMore' }, backendId: expect.any(String) }],
    })
    expect(live.raw).toContain(`"requestId":${liveId},`)
    // a live pull never ends by itself
    expect(raw.messages.some((m) => m.json?._tag === 'Exit' && m.json.requestId === liveId)).toBe(false)

    // Interrupt with the numeric id: its Exit, with an array cause, then no more chunks for it
    raw.send({ _tag: 'Interrupt', requestId: liveId })
    const exit = await raw.until(() => raw.messages.find((m) => m.json?._tag === 'Exit' && m.json.requestId === liveId), {
      what: 'the Exit of the interrupted pull',
    })
    expect(exit.json.exit).toEqual({ _tag: 'Failure', cause: [{ _tag: 'Interrupt', fiberId: -1 }] })
    expect(exit.raw).toContain(`"requestId":${liveId},`)
    const afterInterrupt = raw.messages.length
    await pusher.push(makeEvents(5, 5))
    // a marker: a pull on the same socket, answered after the push was handled
    const marker = await raw.request(pullRequest(nextNumericId(), storeId))
    expect(eventsOf(marker.values).map((e) => e.seqNum)).toEqual([1, 2, 3, 4, 5])
    await sleep(500)
    expect(raw.messages.slice(afterInterrupt).filter((m) => m.json && chunkFor(m.json))).toEqual([])
  })

  test('ServerAheadError and BackendIdMismatchError: cause is an array [{"_tag":"Fail","error":…}]', async () => {
    const storeId = uniqueStoreId('e4-ws-errors')
    const raw = await openRaw(storeId)
    await raw.request(pushRequest(nextNumericId(), storeId, makeEvents(1, 3)))
    const backendId = (await raw.request(pullRequest(nextNumericId(), storeId))).values[0].backendId

    let id = nextNumericId()
    let res = await raw.request(pushRequest(id, storeId, makeEvents(2, 2, { clientId: 'late' })))
    expect(res.exit).toEqual({
      _tag: 'Failure',
      cause: [{ _tag: 'Fail', error: { _tag: 'ServerAheadError', minimumExpectedNum: 3, providedNum: 1 } }],
    })

    id = nextNumericId()
    res = await raw.request(pushRequest(id, storeId, makeEvents(4, 4), 'not-the-backend'))
    expect(res.exit).toEqual({
      _tag: 'Failure',
      cause: [{ _tag: 'Fail', error: { _tag: 'BackendIdMismatchError', expected: backendId, received: 'not-the-backend' } }],
    })

    id = nextNumericId()
    res = await raw.request(pullRequest(id, storeId, { cursor: { backendId: 'not-the-backend', eventSequenceNumber: 1 } }))
    expect(res.chunks).toEqual([])
    expect(res.exit).toEqual({
      _tag: 'Failure',
      cause: [{ _tag: 'Fail', error: { _tag: 'BackendIdMismatchError', expected: backendId, received: 'not-the-backend' } }],
    })
    expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3])
  })

  test('unknown rpc tag with a numeric id → Defect frame; the socket keeps working', async () => {
    const storeId = uniqueStoreId('e4-ws-bogus')
    const raw = await openRaw(storeId)
    const from = raw.messages.length
    raw.send({ _tag: 'Request', id: nextNumericId(), tag: 'SyncWsRpc.Bogus', payload: { storeId }, headers: [] })
    const defect = await raw.until(() => raw.messages.slice(from).find((m) => m.json?._tag === 'Defect'), { what: 'a Defect' })
    expect(Object.keys(defect.json).sort()).toEqual(['_tag', 'defect'])
    expect(JSON.stringify(defect.json.defect)).toContain('SyncWsRpc.Bogus')

    // the socket may be closed after a connection-level Defect; if not, it still serves requests
    let expected = []
    if (raw.closeInfo === undefined) {
      const id = nextNumericId()
      const push = await raw.request(pushRequest(id, storeId, makeEvents(1, 1)))
      expect(push.exit).toEqual({ _tag: 'Success', value: {} })
      expected = [1]
    }
    const client = await openWs(storeId)
    expect(eventsOf(await client.pullAll()).map((e) => e.seqNum)).toEqual(expected)
  })

  test('string ids on the same store and socket keep the Effect 3 shapes', async () => {
    const storeId = uniqueStoreId('e4-ws-mixed')
    const raw = await openRaw(storeId)

    // numeric and string live pulls on one socket: each broadcast echoes its own id type
    const numLive = nextNumericId()
    const strLive = newRequestId()
    raw.send(pullRequest(numLive, storeId, { live: true }))
    raw.send(pullRequest(strLive, storeId, { live: true }))
    await raw.until(() =>
      raw.messages.some((m) => m.json?._tag === 'Chunk' && m.json.requestId === numLive) &&
      raw.messages.some((m) => m.json?._tag === 'Chunk' && m.json.requestId === strLive)
        ? true
        : undefined,
    )
    const beforePush = raw.messages.length

    // string push: ack without array cause, `value: {}`
    const pushId = newRequestId()
    let from = raw.messages.length
    const push = await raw.request(pushRequest(pushId, storeId, makeEvents(1, 2)))
    expect(JSON.parse(rawFrame(raw, from, (f) => f._tag === 'Exit' && f.requestId === pushId))).toEqual({
      _tag: 'Exit',
      requestId: pushId,
      exit: { _tag: 'Success', value: {} },
    })
    expect(push.exit).toEqual({ _tag: 'Success', value: {} })

    const liveChunks = await raw.until(() => {
      const chunks = raw.messages.slice(beforePush).filter((m) => m.json?._tag === 'Chunk')
      const num = chunks.find((m) => m.json.requestId === numLive)
      const str = chunks.find((m) => m.json.requestId === strLive)
      return num && str ? { num, str } : undefined
    }, { what: 'the broadcast for both live pulls' })
    expect(liveChunks.num.raw).toContain(`"requestId":${numLive},`)
    expect(liveChunks.str.raw).toContain(`"requestId":"${strLive}"`)
    expect(liveChunks.num.json.values).toEqual(liveChunks.str.json.values)

    // string pull: Exit {"_tag":"Success"} without a value key
    const pullId = newRequestId()
    from = raw.messages.length
    const pull = await raw.request(pullRequest(pullId, storeId))
    expect(eventsOf(pull.values).map((e) => e.seqNum)).toEqual([1, 2])
    for (const c of pull.chunks) expect(c.json.requestId).toBe(pullId)
    const exitText = rawFrame(raw, from, (f) => f._tag === 'Exit' && f.requestId === pullId)
    expect(JSON.parse(exitText)).toEqual({ _tag: 'Exit', requestId: pullId, exit: { _tag: 'Success' } })
    expect(exitText).not.toContain('"value"')

    // string failure: the Effect 3 cause tree (an object)
    const staleId = newRequestId()
    const stale = await raw.request(pushRequest(staleId, storeId, makeEvents(2, 2, { clientId: 'late' })))
    expect(stale.exit).toEqual({
      _tag: 'Failure',
      cause: { _tag: 'Fail', error: { _tag: 'ServerAheadError', minimumExpectedNum: 2, providedNum: 1 } },
    })
    // …and the numeric one right after it on the same socket still gets the array
    const staleNum = await raw.request(pushRequest(nextNumericId(), storeId, makeEvents(2, 2, { clientId: 'late' })))
    expect(staleNum.exit).toEqual({
      _tag: 'Failure',
      cause: [{ _tag: 'Fail', error: { _tag: 'ServerAheadError', minimumExpectedNum: 2, providedNum: 1 } }],
    })

    // the real (Effect 3) client on the same store is unaffected
    const client = await openWs(storeId)
    await client.push(makeEvents(3, 3, { clientId: 'real-client' }))
    expect(eventsOf(await client.pullAll()).map(normalizeEvent)).toEqual(
      [...makeEvents(1, 2), ...makeEvents(3, 3, { clientId: 'real-client' })].map(normalizeEvent),
    )
  })
})

// -------------------------------------------------------------------------------------------------

describe('Effect 4 flavor over raw HTTP (numeric ids)', () => {
  test('push, pull and ping with numeric ids', async () => {
    const storeId = uniqueStoreId('e4-http')
    const url = httpSyncUrl(worker.url, storeId)
    const events = makeEvents(1, 130)

    let id = nextNumericId()
    let res = await rpc(url, httpPushRequest(id, storeId, events.slice(0, 100)))
    expect(res.json).toEqual([{ _tag: 'Exit', requestId: id, exit: { _tag: 'Success', value: {} } }])
    expect(res.text).toContain(`"requestId":${id},`)
    await rpc(url, httpPushRequest(nextNumericId(), storeId, events.slice(100)))

    id = nextNumericId()
    res = await rpc(url, httpPullRequest(id, storeId))
    expect(res.exit).toEqual({ _tag: 'Success', value: null })
    for (const m of res.messages) expect(typeof m.requestId).toBe('number')
    expect(res.values.map((v) => v.pageInfo)).toEqual([{ _tag: 'MoreKnown', remaining: 30 }, { _tag: 'NoMore' }])
    expect(res.values.flatMap((v) => v.batch).map((i) => i.eventEncoded)).toEqual(events)
    const backendId = res.values[0].backendId

    id = nextNumericId()
    res = await rpc(url, httpPullRequest(id, storeId, { cursor: { backendId, eventSequenceNumber: 125 } }))
    expect(res.values.flatMap((v) => v.batch).map((i) => i.eventEncoded.seqNum)).toEqual([126, 127, 128, 129, 130])
    expect(res.exit).toEqual({ _tag: 'Success', value: null })

    id = nextNumericId()
    res = await rpc(url, httpPingRequest(id, storeId))
    expect(res.json).toEqual([{ _tag: 'Exit', requestId: id, exit: { _tag: 'Success', value: { _tag: 'SyncMessage.Pong' } } }])
  })

  test('failures: ServerAheadError, BackendIdMismatchError and UnknownError with an array cause', async () => {
    const storeId = uniqueStoreId('e4-http-errors')
    const url = httpSyncUrl(worker.url, storeId)
    await rpc(url, httpPushRequest(nextNumericId(), storeId, makeEvents(1, 4)))
    const backendId = (await rpc(url, httpPullRequest(nextNumericId(), storeId))).values[0].backendId

    let id = nextNumericId()
    let res = await rpc(url, httpPushRequest(id, storeId, makeEvents(2, 3, { clientId: 'late' })))
    expect(res.json).toEqual([
      {
        _tag: 'Exit',
        requestId: id,
        exit: { _tag: 'Failure', cause: [{ _tag: 'Fail', error: { _tag: 'ServerAheadError', minimumExpectedNum: 4, providedNum: 1 } }] },
      },
    ])

    id = nextNumericId()
    res = await rpc(url, httpPushRequest(id, storeId, makeEvents(5, 5), { backendId: 'not-the-backend' }))
    expect(res.exit).toEqual({
      _tag: 'Failure',
      cause: [{ _tag: 'Fail', error: { _tag: 'BackendIdMismatchError', expected: backendId, received: 'not-the-backend' } }],
    })

    id = nextNumericId()
    res = await rpc(url, httpRequest(id, 'SyncHttpRpc.Push', { storeId, batch: 'nope', backendId: { _tag: 'None' } }))
    expect(res.exit._tag).toBe('Failure')
    expect(Array.isArray(res.exit.cause)).toBe(true)
    expect(res.exit.cause).toHaveLength(1)
    expect(res.exit.cause[0]).toMatchObject({ _tag: 'Fail', error: { _tag: 'UnknownError' } })
    expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3, 4])
  })

  test('unknown rpc tag with a numeric id → 400 [Defect]', async () => {
    const storeId = uniqueStoreId('e4-http-bogus')
    const res = await postRaw(httpSyncUrl(worker.url, storeId), httpRequest(nextNumericId(), 'SyncHttpRpc.Bogus', { storeId }))
    expect(res.status).toBe(400)
    expect(res.json).toHaveLength(1)
    expect(Object.keys(res.json[0]).sort()).toEqual(['_tag', 'defect'])
    expect(res.json[0]._tag).toBe('Defect')
    expect(JSON.stringify(res.json[0].defect)).toContain('SyncHttpRpc.Bogus')
  })

  test('string ids on the same store keep the Effect 3 shapes', async () => {
    const storeId = uniqueStoreId('e4-http-mixed')
    const url = httpSyncUrl(worker.url, storeId)
    await rpc(url, httpPushRequest(nextNumericId(), storeId, makeEvents(1, 2)))

    let id = newRequestId()
    let res = await rpc(url, httpPushRequest(id, storeId, makeEvents(3, 3)))
    expect(res.json).toEqual([{ _tag: 'Exit', requestId: id, exit: { _tag: 'Success', value: {} } }])

    id = newRequestId()
    res = await rpc(url, httpPullRequest(id, storeId))
    expect(res.exit).toEqual({ _tag: 'Success' })
    expect(res.text).not.toContain('"value":null')
    for (const m of res.messages) expect(m.requestId).toBe(id)
    expect(eventsOf(res.values).map((e) => e.seqNum)).toEqual([1, 2, 3])

    id = newRequestId()
    res = await rpc(url, httpPushRequest(id, storeId, makeEvents(2, 2, { clientId: 'late' })))
    expect(res.exit).toEqual({
      _tag: 'Failure',
      cause: { _tag: 'Fail', error: { _tag: 'ServerAheadError', minimumExpectedNum: 3, providedNum: 1 } },
    })

    id = newRequestId()
    res = await rpc(url, httpPingRequest(id, storeId))
    expect(res.json).toEqual([{ _tag: 'Exit', requestId: id, exit: { _tag: 'Success', value: { _tag: 'SyncMessage.Pong' } } }])
  })
})
