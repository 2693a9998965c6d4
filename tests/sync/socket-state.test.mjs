// A WebSocket's state across hibernation, whatever its size. The runtime refuses socket attachments
// over 16 KiB, so the sync object keeps a socket's hook context (sync payload, forwarded headers) and its
// live pulls in its SQLite, under a connection id that is all the attachment holds.
//
// Local workerd evicts a Durable Object whose only activity is hibernatable sockets after about 10 s
// idle; the fault-injection Worker's /__faults/instance tells a test that the object was constructed
// again while the socket stayed open.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { newRequestId, pullRequest, pushRequest, RawSocket, wsSyncUrl } from '../support/raw-ws.mjs'
import { sharedTokenAuthWorker, TOKEN_AUTH_TOKEN } from '../support/shared.mjs'
import { makeEvents, sleep, uniqueStoreId } from '../support/util.mjs'
import { startFaultsWorker } from '../support/worker.mjs'

const TIMEOUT_MS = 240_000
/** Idle time after which local workerd has evicted an object with only hibernatable sockets. */
const IDLE_MS = 15_000

const sockets = []
const open = async (url, opts) => {
  const socket = await RawSocket.open(url, opts)
  sockets.push(socket)
  return socket
}

afterAll(() => {
  for (const socket of sockets) socket.terminate()
})

/** `payload` encoded into the sync URL as the real client does. */
const payloadParam = (payload) => ({ payload: encodeURIComponent(JSON.stringify(payload)) })

/** Acks every Chunk frame the socket gets from now on, as the real client does. */
const ackChunks = (socket) => {
  let seen = socket.messages.length
  socket.listeners.add(() => {
    for (; seen < socket.messages.length; seen++) {
      const frame = socket.messages[seen].json
      if (frame?._tag === 'Chunk') socket.send({ _tag: 'Ack', requestId: frame.requestId })
    }
  })
}

/** The chunks of `ids` that carry the event with `seqNum`, once every id has one. */
const chunksWithEvent = (socket, ids, seqNum, from) => {
  const wanted = new Set(ids)
  return socket.until(
    () => {
      const got = new Set()
      for (const { json } of socket.messages.slice(from)) {
        if (json?._tag !== 'Chunk' || !wanted.has(json.requestId)) continue
        if (json.values.some((page) => page.batch.some((item) => item.eventEncoded.seqNum === seqNum))) got.add(json.requestId)
      }
      return got.size === wanted.size ? got : undefined
    },
    { timeoutMs: 60_000, what: `event ${seqNum} on ${wanted.size} live pulls` },
  )
}

describe('socket state across an eviction (shipped Worker, fault-injection build)', () => {
  let worker
  beforeAll(async () => {
    worker = await startFaultsWorker({ name: 'socket-state' })
  })
  afterAll(async () => {
    await worker?.stop()
  })

  const instance = async (storeId) => (await (await fetch(`${worker.url}/__faults/instance?store=${encodeURIComponent(storeId)}`)).json()).instance

  test(
    'a socket with a 12 KB payload and 1,000 live pulls keeps all of them through an eviction',
    async () => {
      const storeId = uniqueStoreId('socket-state')
      const payload = { token: 't'.repeat(12_000) }
      const url = wsSyncUrl(worker.url, storeId, payloadParam(payload))
      expect(url.length).toBeGreaterThan(12_000)
      expect(url.length).toBeLessThan(16_000)
      const socket = await open(url)
      ackChunks(socket)

      // 1,000 live pulls on the one socket: each gets its catch-up (an empty store: one empty page).
      const ids = Array.from({ length: 1_000 }, () => newRequestId())
      for (const id of ids) socket.send(pullRequest(id, storeId, { live: true }))
      await socket.until(
        () => {
          const caughtUp = new Set(socket.messages.filter((m) => m.json?._tag === 'Chunk').map((m) => m.json.requestId))
          return ids.every((id) => caughtUp.has(id)) ? true : undefined
        },
        { timeoutMs: 60_000, what: 'the catch-up of 1,000 live pulls' },
      )

      // What the object stored for the socket: the payload whole, every live pull.
      const { rows: connections } = await worker.doSql(storeId, { sql: 'SELECT context FROM ws_connections', ifTable: 'ws_connections' })
      expect(connections).toHaveLength(1)
      expect(JSON.parse(connections[0].context)).toEqual({ storeId, payload })
      const { rows: live } = await worker.doSql(storeId, { sql: 'SELECT requestId FROM ws_live_pulls ORDER BY rowid', ifTable: 'ws_live_pulls' })
      expect(live.map((r) => JSON.parse(r.requestId))).toEqual(ids)

      // Idle until the object is evicted; the socket stays open (hibernation).
      const before = await instance(storeId)
      let after = before
      for (let i = 0; i < 4 && after === before; i++) {
        await sleep(IDLE_MS)
        after = await instance(storeId)
      }
      expect(after, 'the object was evicted and constructed again').not.toBe(before)
      expect(socket.closeInfo).toBeUndefined()

      // A push from another socket reaches every one of the 1,000 live pulls.
      const from = socket.messages.length
      const pusher = await open(wsSyncUrl(worker.url, storeId))
      const pushed = await pusher.request(pushRequest(newRequestId(), storeId, makeEvents(1, 1)))
      expect(pushed.exit._tag).toBe('Success')
      const reached = await chunksWithEvent(socket, ids, 1, from)
      expect(reached.size).toBe(1_000)

      // And the socket still serves requests with its state: a pull from 0 gets the event.
      const pull = await socket.request(pullRequest(newRequestId(), storeId))
      expect(pull.exit._tag).toBe('Success')
      expect(pull.values.flatMap((page) => page.batch).map((item) => item.eventEncoded.seqNum)).toEqual([1])
      expect(socket.closeInfo).toBeUndefined()
    },
    TIMEOUT_MS,
  )

  test(
    'a closed socket leaves no state behind',
    async () => {
      const storeId = uniqueStoreId('socket-gone')
      const socket = await open(wsSyncUrl(worker.url, storeId, payloadParam({ token: 'x' })))
      ackChunks(socket)
      socket.send(pullRequest(newRequestId(), storeId, { live: true }))
      const rows = async (table) =>
        (await worker.doSql(storeId, { sql: `SELECT COUNT(*) AS n FROM ${table}`, ifTable: table })).rows[0]?.n ?? 0
      await socket.until(() => (socket.messages.some((m) => m.json?._tag === 'Chunk') ? true : undefined), { what: 'the catch-up' })
      expect(await rows('ws_connections')).toBe(1)
      expect(await rows('ws_live_pulls')).toBe(1)
      socket.close()
      await socket.closed()
      const deadline = Date.now() + 15_000
      while ((await rows('ws_connections')) + (await rows('ws_live_pulls')) > 0 && Date.now() < deadline) await sleep(200)
      expect(await rows('ws_connections')).toBe(0)
      expect(await rows('ws_live_pulls')).toBe(0)
    },
    TIMEOUT_MS,
  )
})

describe('hooks see the payload and forwarded headers after hibernation (examples/token-auth)', () => {
  let worker
  beforeAll(async () => {
    worker = await sharedTokenAuthWorker()
  })

  test(
    'a 12 KB payload and a 6 KB forwarded header, together over the 16 KiB attachment limit, reach onPush after the object idled',
    async () => {
      const storeId = uniqueStoreId('socket-hooks')
      const payload = { authToken: TOKEN_AUTH_TOKEN, padding: 'p'.repeat(12_000) }
      const userId = `user-${'u'.repeat(6_000)}`
      const socket = await open(wsSyncUrl(worker.url, storeId, payloadParam(payload)), { headers: { 'x-user-id': userId } })
      ackChunks(socket)
      const live = newRequestId()
      socket.send(pullRequest(live, storeId, { live: true }))
      await socket.until(() => (socket.messages.some((m) => m.json?._tag === 'Chunk' && m.json.requestId === live) ? true : undefined), {
        what: 'the catch-up of the live pull',
      })

      await sleep(IDLE_MS)

      const from = socket.messages.length
      const pushed = await socket.request(pushRequest(newRequestId(), storeId, makeEvents(1, 1)))
      expect(pushed.exit._tag).toBe('Success')
      await chunksWithEvent(socket, [live], 1, from)
      const rows = await worker.d1(
        `SELECT payload, headers FROM sync_audit WHERE storeId = '${storeId}' AND hook = 'onPush' ORDER BY id`,
      )
      expect(rows).toHaveLength(1)
      expect(JSON.parse(rows[0].payload)).toEqual(payload)
      expect(JSON.parse(rows[0].headers)).toEqual({ 'x-user-id': userId })
    },
    TIMEOUT_MS,
  )
})
