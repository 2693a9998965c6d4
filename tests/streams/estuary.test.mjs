// Estuaries (pub/sub), against the real Worker: a session stream subscribed to source streams holds
// a copy of every message published to them after it subscribed, once and in order, read with the
// official client (catch-up and SSE). Retried publishes, late joiners, unsubscribe, delete, expiry
// by alarm, content-type conflicts, and a publish to 1,000 subscribers (through the FANOUT queue:
// the threshold is 100) are checked by reading back every session stream.

import { stream } from '@durable-streams/client'
import { beforeAll, describe, expect, test } from 'vitest'
import { sharedDefaultWorker } from '../support/shared.mjs'

const ADMIN = 'estuary-admin'
let worker
const runId = `${Date.now().toString(36)}-${process.pid}`
let counter = 0
const project = `est-${runId}`
const fresh = (what) => `${what}-${counter++}`
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const json = { 'content-type': 'application/json' }

beforeAll(async () => {
  worker = await sharedDefaultWorker({ vars: { ADMIN_SECRET: ADMIN } })
}, 120_000)

const call = async (path, { method = 'GET', body, headers = {} } = {}) => {
  const res = await fetch(`${worker.url}${path}`, { method, body, headers })
  const text = await res.text()
  let parsed
  try {
    parsed = JSON.parse(text)
  } catch {}
  return { status: res.status, text, json: parsed, headers: res.headers }
}

const createSource = async (name, contentType = 'application/json') => {
  const res = await call(`/v1/stream/${project}/${name}`, { method: 'PUT', headers: { 'content-type': contentType } })
  expect(res.status, res.text).toBe(201)
}
const publish = (name, message, headers = {}) =>
  call(`/v1/stream/${project}/${name}`, { method: 'POST', headers: { ...json, ...headers }, body: JSON.stringify(message) })
const subscribe = (source, estuaryId) =>
  call(`/v1/estuary/subscribe/${project}/${source}`, { method: 'POST', headers: json, body: JSON.stringify({ estuaryId }) })
const unsubscribe = (source, estuaryId) =>
  call(`/v1/estuary/subscribe/${project}/${source}`, { method: 'DELETE', headers: json, body: JSON.stringify({ estuaryId }) })
const session = async (estuaryId) => {
  const res = await call(`/v1/stream/${project}/${estuaryId}?offset=-1`)
  return res.status === 200 ? res.json : { status: res.status }
}
const streamInfo = async (name) => {
  const res = await call(`/admin/api/streams/${project}/${name}`, { headers: { authorization: `Bearer ${ADMIN}` } })
  return res.json
}

const waitFor = async (what, check, timeoutMs = 20_000) => {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    last = await check()
    if (last === true) return
    await sleep(100)
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`)
}
const sessionHolds = (estuaryId, expected) =>
  waitFor(`${estuaryId} to hold ${JSON.stringify(expected)}`, async () => {
    const got = await session(estuaryId)
    return JSON.stringify(got) === JSON.stringify(expected) || got
  })

describe('estuaries', () => {
  test('a session holds what its sources publish after it subscribed, once and in order, live over SSE', async () => {
    const [roomA, roomB, alice] = [fresh('room'), fresh('room'), fresh('alice')]
    await createSource(roomA)
    await createSource(roomB)
    expect((await publish(roomA, { before: true })).status).toBe(204)

    const first = await subscribe(roomA, alice)
    expect(first.status, first.text).toBe(200)
    expect(first.json).toMatchObject({ estuaryId: alice, streamId: roomA, estuaryStreamPath: `/v1/stream/${project}/${alice}`, isNewEstuary: true })
    const second = await subscribe(roomB, alice)
    expect(second.json.isNewEstuary).toBe(false)
    expect(second.json.expiresAt).toBeGreaterThanOrEqual(first.json.expiresAt)

    // The official client reads the session live while both sources publish.
    const res = await stream({ url: `${worker.url}/v1/stream/${project}/${alice}`, offset: '-1', live: 'sse' })
    const seen = []
    const done = new Promise((resolve) => {
      res.subscribeJson(async (batch) => {
        seen.push(...batch.items)
        if (seen.length >= 4) resolve()
      })
    })
    await publish(roomA, { a: 1 })
    await publish(roomB, { b: 1 })
    await publish(roomA, { a: 2 })
    await publish(roomB, { b: 2 })
    await Promise.race([done, sleep(20_000)])
    res.cancel()
    expect(seen.filter((m) => 'a' in m)).toEqual([{ a: 1 }, { a: 2 }])
    expect(seen.filter((m) => 'b' in m)).toEqual([{ b: 1 }, { b: 2 }])
    expect(seen).toHaveLength(4)

    const info = await call(`/v1/estuary/${project}/${alice}`)
    expect(info.status).toBe(200)
    expect(info.json).toMatchObject({ estuaryId: alice, contentType: 'application/json' })
    expect(info.json.subscriptions.map((s) => s.streamId).sort()).toEqual([roomA, roomB].sort())
    expect((await streamInfo(roomA)).watchers).toBe(1)
  }, 60_000)

  test('a retried publish lands once in every session; a late subscriber gets only what follows its subscribe', async () => {
    const [room, early, late] = [fresh('room'), fresh('early'), fresh('late')]
    await createSource(room)
    expect((await subscribe(room, early)).status).toBe(200)
    const produce = (seq, body) => publish(room, body, { 'producer-id': 'pub', 'producer-epoch': '0', 'producer-seq': String(seq) })
    expect((await produce(0, { n: 0 })).status).toBe(200)
    expect((await produce(0, { n: 0 })).status, 'the retry is a duplicate').toBe(204)
    await sessionHolds(early, [{ n: 0 }])

    expect((await subscribe(room, late)).status).toBe(200)
    expect((await produce(0, { n: 0 })).status).toBe(204)
    expect((await produce(1, { n: 1 })).status).toBe(200)
    expect((await produce(1, { n: 1 })).status).toBe(204)
    await sessionHolds(early, [{ n: 0 }, { n: 1 }])
    await sessionHolds(late, [{ n: 1 }])
    // Subscribing again changes nothing: no copy twice, the late one still starts where it did.
    expect((await subscribe(room, late)).json.isNewEstuary).toBe(false)
    expect((await produce(2, { n: 2 })).status).toBe(200)
    await sessionHolds(late, [{ n: 1 }, { n: 2 }])
    await sessionHolds(early, [{ n: 0 }, { n: 1 }, { n: 2 }])
  }, 60_000)

  test('unsubscribe stops the copies; delete removes the session and its place in every source', async () => {
    const [room, other, carol] = [fresh('room'), fresh('room'), fresh('carol')]
    await createSource(room)
    await createSource(other)
    await subscribe(room, carol)
    await subscribe(other, carol)
    await publish(room, { m: 1 })
    await sessionHolds(carol, [{ m: 1 }])
    const left = await unsubscribe(room, carol)
    expect(left.status, left.text).toBe(200)
    expect(left.json.success).toBe(true)
    expect((await streamInfo(room)).watchers).toBe(0)
    await publish(room, { m: 2 })
    await publish(other, { o: 1 })
    await sessionHolds(carol, [{ m: 1 }, { o: 1 }])
    expect((await unsubscribe(room, carol)).status, 'not subscribed any more').toBe(404)

    const deleted = await call(`/v1/estuary/${project}/${carol}`, { method: 'DELETE' })
    expect(deleted.json).toEqual({ estuaryId: carol, deleted: true })
    expect((await call(`/v1/estuary/${project}/${carol}`)).status).toBe(404)
    expect((await session(carol)).status).toBe(404)
    expect((await streamInfo(other)).watchers).toBe(0)
    expect((await publish(other, { o: 2 })).status).toBe(204)
  }, 60_000)

  test('bad requests get clear errors and change nothing', async () => {
    const [room, text, dave] = [fresh('room'), fresh('text'), fresh('dave')]
    await createSource(room)
    await createSource(text, 'text/plain')
    expect((await subscribe(room, dave)).status).toBe(200)
    const mismatch = await subscribe(text, dave)
    expect(mismatch.status).toBe(409)
    expect(mismatch.json.error).toContain('text/plain')
    expect((await streamInfo(text)).watchers, 'the refused subscriber is not kept').toBe(0)
    expect((await subscribe(fresh('missing'), dave)).status).toBe(404)
    const badId = await subscribe(room, 'bad id!')
    expect(badId.status).toBe(400)
    expect(badId.json.code).toBe('BAD_REQUEST')
    const noBody = await call(`/v1/estuary/subscribe/${project}/${room}`, { method: 'POST', body: 'x' })
    expect(noBody.status).toBe(400)
    // A plain stream is not taken over as a session.
    const plain = fresh('plain')
    await createSource(plain)
    expect((await subscribe(room, plain)).status).toBe(409)
    expect((await call(`/v1/estuary/${project}/${plain}`)).status).toBe(404)
    expect((await call(`/v1/estuary/${project}/x`, { method: 'PUT' })).status).toBe(405)
    expect(await session(dave)).toEqual([])
  }, 60_000)

  test('a session expires by alarm after its TTL: its stream is deleted and its sources forget it', async () => {
    // A Worker of its own, whose sessions live 4 s.
    const main = worker
    worker = await sharedDefaultWorker({ vars: { ADMIN_SECRET: ADMIN, ESTUARY_TTL_SECONDS: '4' } })
    try {
      await expires()
    } finally {
      worker = main
    }
  }, 120_000)

  const expires = async () => {
    const [room, erin] = [fresh('room'), fresh('erin')]
    await createSource(room)
    const sub = await subscribe(room, erin)
    expect(sub.json.expiresAt - Date.now()).toBeLessThanOrEqual(4_500)
    expect((await streamInfo(room)).watchers).toBe(1)
    await sleep(4_500)
    // Nothing reads the session: the alarm alone ends it.
    await waitFor('the source to forget the expired session', async () => (await streamInfo(room)).watchers === 0)
    expect((await call(`/v1/estuary/${project}/${erin}`)).status).toBe(404)
    expect((await session(erin)).status).toBe(404)
  }

  test('a publish to 1,000 subscribers reaches every session once (through the queue)', async () => {
    const room = fresh('crowd')
    await createSource(room)
    const usage = async () => (await call('/admin/api/usage', { headers: { authorization: `Bearer ${ADMIN}` } })).json
    const before = await usage()
    const ids = Array.from({ length: 1_000 }, (_, i) => `crowd-${runId}-${i}`)
    for (let i = 0; i < ids.length; i += 25) {
      const answers = await Promise.all(ids.slice(i, i + 25).map((id) => subscribe(room, id)))
      for (const a of answers) expect(a.status, a.text).toBe(200)
    }
    expect((await streamInfo(room)).watchers).toBe(1_000)
    const produce = () => publish(room, { hello: 'crowd' }, { 'producer-id': 'crowd', 'producer-epoch': '0', 'producer-seq': '0' })
    expect((await produce()).status).toBe(200)
    expect((await produce()).status).toBe(204)
    const missing = async () => {
      const left = []
      for (let i = 0; i < ids.length; i += 50) {
        const got = await Promise.all(ids.slice(i, i + 50).map((id) => session(id)))
        got.forEach((g, j) => {
          if (JSON.stringify(g) !== JSON.stringify([{ hello: 'crowd' }])) left.push([ids[i + j], g])
        })
      }
      return left
    }
    let left = await missing()
    const deadline = Date.now() + 60_000
    while (left.length > 0 && Date.now() < deadline) {
      await sleep(1_000)
      left = await missing()
    }
    expect(left.slice(0, 3), `${left.length} sessions without exactly one copy`).toEqual([])
    const after = await usage()
    // 1,000 watchers, 50 per queue message.
    expect(after.fanoutQueued - before.fanoutQueued).toBe(20)
    expect(after.fanoutDeadLetters).toBe(0)
  }, 240_000)
})
