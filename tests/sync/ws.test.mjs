// What only the WebSocket transport has (the sync contract itself is contract.test.mjs): live pulls of
// several sockets at once, and the frames of a large catch-up, with the real @livestore/sync-cf 0.4.0 WS
// client and a raw socket where frames matter.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientPool } from '../support/livestore-client.mjs'
import { RawSocket, newRequestId, pullRequest, pushRequest, wsSyncUrl } from '../support/raw-ws.mjs'
import {
  chunksOf,
  isIsoTimestamp,
  makeEvents,
  normalizeEvent,
  storedRows,
  uniqueStoreId,
} from '../support/util.mjs'
import { sharedDefaultWorker } from '../support/shared.mjs'
import { E2E_STORAGE } from '../support/worker.mjs'
import { expectWellFormedPages, MAX_EVENTS_PER_MESSAGE, MAX_PAYLOAD_BYTES, MAX_FRAME_BYTES } from '../support/pages.mjs'


let worker
let syncUrl
const clients = clientPool()

const open = (storeId, opts = {}) => clients.open({ url: syncUrl, storeId, ...opts })


beforeAll(async () => {
  worker = await sharedDefaultWorker()
  syncUrl = `${worker.url}/sync`
})

afterAll(async () => {
  await clients.closeAll()
})

describe('ws sync with the real LiveStore client', () => {
  test('two clients with live pulls both receive every push, including the pusher', async () => {
    const storeId = uniqueStoreId('live')
    const a = await open(storeId, { clientId: 'client-A' })
    const b = await open(storeId, { clientId: 'client-B' })
    const liveA = await a.live()
    const liveB = await b.live()
    // catch-up phase of an empty store: one empty NoMore page each
    await liveA.waitForPages(1)
    await liveB.waitForPages(1)
    expect(liveA.pages[0]).toEqual({ batch: [], pageInfo: { _tag: 'NoMore' } })

    const fromA = makeEvents(1, 5, { clientId: 'client-A' })
    await a.push(fromA)
    await liveA.waitForEvents(5)
    await liveB.waitForEvents(5)

    const fromB = makeEvents(6, 8, { clientId: 'client-B', sessionId: 'session-B' })
    await b.push(fromB)
    await liveA.waitForEvents(8)
    await liveB.waitForEvents(8)

    const expected = [...fromA, ...fromB].map(normalizeEvent)
    for (const live of [liveA, liveB]) {
      expect(live.events().map(normalizeEvent)).toEqual(expected)
      for (const page of live.pages.slice(1)) {
        expect(page.pageInfo).toEqual({ _tag: 'NoMore' })
        for (const item of page.batch) {
          expect(item.metadata._tag).toBe('Some')
          expect(isIsoTimestamp(item.metadata.value.createdAt)).toBe(true)
        }
      }
    }
    // a live pull that starts later first catches up with everything stored
    const c = await open(storeId, { clientId: 'client-C' })
    const liveC = await c.live()
    await liveC.waitForEvents(8)
    expect(liveC.events().map(normalizeEvent)).toEqual(expected)
    expect(liveC.pages.at(-1).pageInfo).toEqual({ _tag: 'NoMore' })
  })

  test(`1,200 events incl. large ones: complete, in order, paged within limits, identical in storage (${E2E_STORAGE})`, async () => {
    const storeId = uniqueStoreId('big')
    const client = await open(storeId)
    const TOTAL = 1_200
    // every 97th event carries ~250 kB so 100-event pages must be split by size (900 kB cap)
    const bigText = (n) => `${n}:`.padEnd(250_000 + (n % 7) * 10_000, 'x')
    const events = makeEvents(1, TOTAL, {
      argsFor: (n) => (n % 97 === 0 ? { id: `t${n}`, blob: bigText(n) } : n % 50 === 0 ? undefined : { id: `t${n}`, n }),
    })
    const startedAt = Date.now()
    // push in batches of ≤100 like the client does (it splits oversize batches further by bytes)
    for (const batch of chunksOf(events, 100)) await client.push(batch)

    // --- real client pull
    const pages = await client.pullAll()
    expectWellFormedPages(pages, TOTAL)
    const pulled = pages.flatMap((p) => p.batch)
    expect(pulled.map((i) => i.eventEncoded.seqNum)).toEqual(events.map((e) => e.seqNum))
    expect(pulled.map((i) => normalizeEvent(i.eventEncoded))).toEqual(events.map(normalizeEvent))

    // --- raw frames: each Chunk ≤100 events, each PullResponse JSON ≤ 900,000 bytes, remaining counts down
    const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId))
    let rawResult
    try {
      rawResult = await raw.request(pullRequest(newRequestId(), storeId), { timeoutMs: 90_000 })
    } finally {
      raw.close()
    }
    expect(rawResult.exit._tag).toBe('Success')
    expect(rawResult.chunks.length).toBeGreaterThan(1)
    let maxValueBytes = 0
    for (const chunk of rawResult.chunks) {
      expect(chunk.bytes).toBeLessThanOrEqual(MAX_FRAME_BYTES)
      expect(chunk.json.values.length).toBeGreaterThan(0)
      const eventsInFrame = chunk.json.values.reduce((n, v) => n + v.batch.length, 0)
      expect(eventsInFrame).toBeLessThanOrEqual(MAX_EVENTS_PER_MESSAGE)
      for (const value of chunk.json.values) {
        const bytes = Buffer.byteLength(JSON.stringify(value))
        maxValueBytes = Math.max(maxValueBytes, bytes)
        expect(bytes).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES)
      }
    }
    expect(maxValueBytes).toBeGreaterThan(250_000) // the large events really went through
    const values = rawResult.values
    const backendId = await client.backendId()
    let delivered = 0
    let lastRemaining = Infinity
    values.forEach((value, i) => {
      expect(value.backendId).toBe(backendId)
      delivered += value.batch.length
      if (i === values.length - 1) {
        expect(value.pageInfo).toEqual({ _tag: 'NoMore' })
      } else {
        expect(value.pageInfo._tag).toBe('MoreKnown')
        expect(value.pageInfo.remaining).toBeLessThan(lastRemaining)
        expect(value.pageInfo.remaining).toBe(TOTAL - delivered)
        lastRemaining = value.pageInfo.remaining
      }
    })
    const rawEvents = values.flatMap((v) => v.batch)
    expect(rawEvents.map((item) => normalizeEvent(item.eventEncoded))).toEqual(events.map(normalizeEvent))

    // --- stored log (D1 or DO SQLite) row by row
    const rows = await storedRows(worker, storeId)
    expect(rows.length).toBe(TOTAL)
    rows.forEach((row, i) => {
      const e = events[i]
      expect(row.seqNum).toBe(e.seqNum)
      expect(row.parentSeqNum).toBe(e.parentSeqNum)
      expect(row.name).toBe(e.name)
      expect(row.clientId).toBe(e.clientId)
      expect(row.sessionId).toBe(e.sessionId)
      if (e.args === undefined) expect(row.args).toBeNull()
      else expect(JSON.parse(row.args)).toEqual(e.args)
      expect(isIsoTimestamp(row.createdAt)).toBe(true)
      expect(Date.parse(row.createdAt)).toBeGreaterThan(startedAt - 5 * 60_000)
      // the stored createdAt is what pulls report as metadata
      expect(pulled[i].metadata.value.createdAt).toBe(row.createdAt)
    })
  })
})

describe('Interrupt of a live pull (raw socket, Effect 3 ids)', () => {
  test('ends it with an interrupted Exit, stops its deliveries, forgets it in storage; other pulls go on', async () => {
    const storeId = uniqueStoreId('interrupt')
    const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId))
    try {
      // Acks every chunk, as the real client does.
      let seen = 0
      raw.listeners.add(() => {
        for (; seen < raw.messages.length; seen++) {
          const frame = raw.messages[seen].json
          if (frame?._tag === 'Chunk') raw.send({ _tag: 'Ack', requestId: frame.requestId })
        }
      })
      const [stopped, kept] = [newRequestId(), newRequestId()]
      raw.send(pullRequest(stopped, storeId, { live: true }))
      raw.send(pullRequest(kept, storeId, { live: true }))
      const chunksFor = (id, from = 0) => raw.messages.slice(from).filter((m) => m.json?._tag === 'Chunk' && m.json.requestId === id)
      await raw.until(() => (chunksFor(stopped).length > 0 && chunksFor(kept).length > 0 ? true : undefined), { what: 'both catch-ups' })
      const live = async () =>
        (await worker.doSql(storeId, { sql: 'SELECT requestId FROM ws_live_pulls ORDER BY rowid', ifTable: 'ws_live_pulls' })).rows.map((r) => JSON.parse(r.requestId))
      expect(await live()).toEqual([stopped, kept])

      raw.send({ _tag: 'Interrupt', requestId: stopped })
      const exit = await raw.until(() => raw.messages.find((m) => m.json?._tag === 'Exit' && m.json.requestId === stopped), {
        what: 'the Exit of the interrupted pull',
      })
      expect(exit.json.exit).toEqual({ _tag: 'Failure', cause: { _tag: 'Interrupt', fiberId: { _tag: 'None' } } })
      expect(await live()).toEqual([kept])
      // An Interrupt for a request that is not running gets no answer.
      raw.send({ _tag: 'Interrupt', requestId: stopped })
      raw.send({ _tag: 'Interrupt', requestId: '999999999' })

      const from = raw.messages.length
      const pushed = await raw.request(pushRequest(newRequestId(), storeId, makeEvents(1, 1)))
      expect(pushed.exit._tag).toBe('Success')
      await raw.until(() => (chunksFor(kept, from).length > 0 ? true : undefined), { what: 'the live chunk of the kept pull' })
      // A marker answered after the broadcast: nothing more came for the interrupted pull.
      await raw.request(pullRequest(newRequestId(), storeId))
      expect(chunksFor(stopped, from)).toEqual([])
      expect(raw.messages.filter((m) => m.json?._tag === 'Exit' && m.json.requestId === stopped)).toHaveLength(1)
      expect(raw.messages.some((m) => m.json?._tag === 'Exit' && m.json.requestId === '999999999')).toBe(false)
    } finally {
      raw.terminate()
    }
  })
})

describe('a push is acknowledged only once it is published (LiveStore #1537)', () => {
  test('on one socket, the live chunk of every pushed batch comes before the push Exit', async () => {
    const storeId = uniqueStoreId('publish-then-ack')
    const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId))
    try {
      const live = newRequestId()
      raw.send(pullRequest(live, storeId, { live: true }))
      await raw.until(() => raw.messages.find((m) => m.json?._tag === 'Chunk' && m.json.requestId === live), { what: 'the catch-up' })
      for (let seq = 1; seq <= 20; seq += 4) {
        const id = newRequestId()
        const exit = await raw.request(pushRequest(id, storeId, makeEvents(seq, seq + 3)))
        expect(exit.exit._tag).toBe('Success')
        const at = (predicate) => raw.messages.findIndex((m) => predicate(m.json))
        const chunk = at((f) => f?._tag === 'Chunk' && f.requestId === live && f.values.some((v) => v.batch.some((b) => b.eventEncoded.seqNum === seq + 3)))
        const ack = at((f) => f?._tag === 'Exit' && f.requestId === id)
        expect(chunk, `the live chunk of events ${seq}–${seq + 3}`).toBeGreaterThanOrEqual(0)
        expect(chunk).toBeLessThan(ack)
      }
    } finally {
      raw.terminate()
    }
  })
})
