// The edge cache, against the real Worker and its local Cache API: a catch-up that stops before the
// tail is kept and answered again without the stream's object (shown by an object evicted meanwhile
// that did not start again), with `X-Cache: HIT | MISS | BYPASS` and `304` for a matching
// `If-None-Match`, and dropped when the stream is deleted; at-tail reads, `offset=now`, SSE and HEAD are never kept; a long-poll `200` is kept
// under its cursor; reads a token opened are keyed by the token's reach, leave the Worker `private`,
// and a reader without a token is refused before any cache is consulted.

import crypto from 'node:crypto'
import { beforeAll, describe, expect, test } from 'vitest'
import { sharedDefaultWorker } from '../support/shared.mjs'

const ADMIN = 'edge-cache-admin'
const KEY = crypto.randomBytes(32).toString('base64url')
let worker
const runId = `${Date.now().toString(36)}-${process.pid}`
let counter = 0
const fresh = (what) => `/v1/stream/cache-${runId}-${what}-${counter++}`
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  worker = await sharedDefaultWorker({ vars: { ADMIN_SECRET: ADMIN } })
}, 120_000)

const call = async (path, { method = 'GET', body, headers = {} } = {}) => {
  const res = await fetch(`${worker.url}${path}`, { method, body, headers })
  const text = await res.text()
  return { status: res.status, text, headers: res.headers, cache: res.headers.get('x-cache') }
}
const json = { 'content-type': 'application/json' }

/** A stream holding more messages than one read returns, so its first page stops mid-stream. */
const longStream = async (what, headers = {}) => {
  const path = fresh(what)
  expect((await call(path, { method: 'PUT', headers: { ...json, ...headers } })).status).toBe(201)
  const messages = Array.from({ length: 9_000 }, (_, i) => ({ i }))
  const res = await call(path, { method: 'POST', body: JSON.stringify(messages), headers: { ...json, ...headers } })
  expect(res.status, res.text).toBeLessThan(300)
  return path
}

const info = async (path) => {
  const res = await call(`/admin/api/streams/${path.slice('/v1/stream/'.length)}`, { headers: { authorization: `Bearer ${ADMIN}` } })
  expect(res.status, res.text).toBe(200)
  return JSON.parse(res.text)
}

const usage = async () => {
  const res = await call('/admin/api/usage', { headers: { authorization: `Bearer ${ADMIN}` } })
  expect(res.status, res.text).toBe(200)
  return JSON.parse(res.text)
}

describe('edge cache', () => {
  test("the admin API's usage counts what was served: Worker requests, object requests, cache hits", async () => {
    const path = await longStream('usage')
    const before = await usage()
    expect((await call(`${path}?offset=-1`)).cache).toBe('MISS')
    for (let i = 0; i < 5; i++) expect((await call(`${path}?offset=-1`)).cache).toBe('HIT')
    const after = await usage()
    const delta = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]]))
    // The read that missed went to the object; the five hits did not; the second usage call counts too.
    expect(delta).toMatchObject({ workerRequests: 7, objectRequests: 1, cacheHits: 5, objectWsMessages: 0 })
    expect(after.objectStarts).toBeGreaterThanOrEqual(1)
  }, 60_000)

  test('long-poll readers waiting at one position share one request to the object', async () => {
    const path = fresh('coalesced')
    expect((await call(path, { method: 'PUT', headers: json })).status).toBe(201)
    const tail = (await call(path, { method: 'HEAD' })).headers.get('stream-next-offset')
    const before = await usage()
    const waiting = Array.from({ length: 20 }, () => call(`${path}?offset=${tail}&live=long-poll`))
    await sleep(500)
    expect((await call(path, { method: 'POST', body: JSON.stringify([{ n: 1 }]), headers: json })).status).toBeLessThan(300)
    const answers = await Promise.all(waiting)
    for (const a of answers) {
      expect(a.status).toBe(200)
      expect(JSON.parse(a.text)).toEqual([{ n: 1 }])
      expect(a.headers.get('stream-next-offset')).toBe(answers[0].headers.get('stream-next-offset'))
      expect(a.headers.get('stream-cursor')).toBe(answers[0].headers.get('stream-cursor'))
    }
    const after = await usage()
    // One long-poll and the append reached the object, not twenty long-polls.
    expect(after.objectRequests - before.objectRequests).toBe(2)
    expect(after.workerRequests - before.workerRequests).toBe(22)
  }, 60_000)

  test('long-poll readers who come after the answer get it without the object; a stream deleted and created again is read afresh', async () => {
    const path = fresh('late')
    expect((await call(path, { method: 'PUT', headers: json })).status).toBe(201)
    const tail = (await call(path, { method: 'HEAD' })).headers.get('stream-next-offset')
    const at = `${path}?offset=${tail}&live=long-poll`
    const leader = call(at)
    await sleep(300)
    expect((await call(path, { method: 'POST', body: JSON.stringify([{ n: 1 }]), headers: json })).status).toBeLessThan(300)
    const first = await leader
    expect([first.status, JSON.parse(first.text)]).toEqual([200, [{ n: 1 }]])
    const before = await usage()
    const late = await Promise.all(Array.from({ length: 10 }, () => call(at)))
    for (const answer of late) {
      expect([answer.status, answer.cache, answer.text]).toEqual([200, 'HIT', first.text])
      expect(answer.headers.get('stream-cursor')).toBe(first.headers.get('stream-cursor'))
    }
    const after = await usage()
    expect(after.objectRequests - before.objectRequests, 'the late readers did not reach the object').toBe(0)

    // The same position of the stream created again is another stream's: nothing kept of the old one.
    expect((await call(path, { method: 'DELETE' })).status).toBe(204)
    expect((await call(path, { method: 'PUT', headers: json })).status).toBe(201)
    const fresh2 = call(at)
    await sleep(300)
    expect((await call(path, { method: 'POST', body: JSON.stringify([{ n: 2 }]), headers: json })).status).toBeLessThan(300)
    const second = await fresh2
    expect([second.status, JSON.parse(second.text), second.cache]).toEqual([200, [{ n: 2 }], 'MISS'])
  }, 60_000)

  test('a mid-stream catch-up is kept and answered again without the object', async () => {
    const path = await longStream('mid')
    const first = await call(`${path}?offset=-1`)
    expect(first.status).toBe(200)
    expect(first.cache).toBe('MISS')
    expect(first.headers.get('stream-up-to-date')).toBeNull()
    expect(first.headers.get('cache-control')).toContain('public')
    const etag = first.headers.get('etag')
    // The object is left alone until the runtime evicts it.
    await sleep(25_000)
    const second = await call(`${path}?offset=-1`)
    expect(second.cache).toBe('HIT')
    expect(second.text).toBe(first.text)
    expect(second.headers.get('etag')).toBe(etag)
    expect(second.headers.get('stream-next-offset')).toBe(first.headers.get('stream-next-offset'))
    const notModified = await call(`${path}?offset=-1`, { headers: { 'if-none-match': etag } })
    expect([notModified.status, notModified.cache, notModified.text]).toEqual([304, 'HIT', ''])
    const askedAt = Date.now()
    const after = await info(path)
    expect(after.awakeSinceMs, 'the object started again only for the admin call: the hits did not wake it').toBeGreaterThanOrEqual(askedAt - 1_000)
    // JSON.parse of what was served from the cache: the first page, in order.
    const page = JSON.parse(second.text)
    expect(page.length).toBe(8_192)
    expect(page.at(-1)).toEqual({ i: 8_191 })
    // Deleted: what the cache kept of it goes with it.
    expect((await call(path, { method: 'DELETE' })).status).toBe(204)
    const deleted = await call(`${path}?offset=-1`)
    expect([deleted.status, deleted.cache]).toEqual([404, 'MISS'])
  }, 60_000)

  test('at-tail reads, offset=now, SSE and HEAD are never kept', async () => {
    const path = await longStream('tail')
    const first = await call(`${path}?offset=-1`)
    const next = first.headers.get('stream-next-offset')
    for (let i = 0; i < 2; i++) {
      const tail = await call(`${path}?offset=${next}`)
      expect([tail.status, tail.cache, tail.headers.get('stream-up-to-date')]).toEqual([200, 'MISS', 'true'])
      expect(tail.headers.get('cache-control')).toBe('no-cache')
    }
    // What was at the tail a moment ago is not served again once more is appended.
    expect((await call(path, { method: 'POST', body: JSON.stringify([{ late: true }]), headers: json })).status).toBeLessThan(300)
    const later = await call(`${path}?offset=${next}`)
    expect(JSON.parse(later.text).at(-1)).toEqual({ late: true })
    expect((await call(`${path}?offset=now`)).cache).toBe('BYPASS')
    expect((await call(path, { method: 'HEAD' })).cache).toBe('BYPASS')
    const controller = new AbortController()
    const sse = await fetch(`${worker.url}${path}?offset=now&live=sse`, { signal: controller.signal })
    expect(sse.headers.get('content-type')).toBe('text/event-stream')
    expect(sse.headers.get('x-cache')).toBeNull()
    controller.abort()
    expect((await call(path, { method: 'POST', body: '[1]', headers: json })).cache).toBeNull()
  }, 30_000)

  test('a long-poll 200 is kept under its cursor', async () => {
    const path = fresh('long-poll')
    expect((await call(path, { method: 'PUT', headers: json })).status).toBe(201)
    const waiting = call(`${path}?offset=-1&live=long-poll&cursor=5`)
    await sleep(300)
    expect((await call(path, { method: 'POST', body: '[{"n":1}]', headers: json })).status).toBeLessThan(300)
    const first = await waiting
    expect([first.status, first.cache]).toEqual([200, 'MISS'])
    expect(first.headers.get('cache-control')).toBe('public, max-age=20')
    const again = await call(`${path}?offset=-1&live=long-poll&cursor=5`)
    expect([again.status, again.cache, again.text]).toEqual([200, 'HIT', first.text])
    // Another cursor is another key: the object answers it.
    expect((await call(`${path}?offset=-1&live=long-poll&cursor=6`)).cache).toBe('MISS')
  }, 30_000)

  test("a token's reads are keyed by its reach and leave the Worker private", async () => {
    const project = `cache-${runId}`
    const config = await call(`/v1/config/${project}`, {
      method: 'PUT',
      body: JSON.stringify({ signingSecrets: [KEY] }),
      headers: { ...json, authorization: `Bearer ${ADMIN}` },
    })
    expect(config.status, config.text).toBe(200)
    const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url')
    const mint = (claims) => {
      const signed = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: project, exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`
      return `${signed}.${crypto.createHmac('sha256', KEY).update(signed).digest('base64url')}`
    }
    const write = { authorization: `Bearer ${mint({ scope: 'write' })}` }
    const path = `/v1/stream/${project}/guarded`
    expect((await call(path, { method: 'PUT', headers: { ...json, ...write } })).status).toBe(201)
    const messages = Array.from({ length: 9_000 }, (_, i) => ({ i }))
    expect((await call(path, { method: 'POST', body: JSON.stringify(messages), headers: { ...json, ...write } })).status).toBeLessThan(300)
    const read = { authorization: `Bearer ${mint({ scope: 'read' })}` }
    const first = await call(`${path}?offset=-1`, { headers: read })
    expect([first.status, first.cache]).toEqual([200, 'MISS'])
    expect(first.headers.get('cache-control')).toMatch(/^private/)
    const again = await call(`${path}?offset=-1`, { headers: { authorization: `Bearer ${mint({ scope: 'read' })}` } })
    expect([again.status, again.cache]).toEqual([200, 'HIT'])
    expect(again.headers.get('cache-control')).toMatch(/^private/)
    // A token for this one stream reaches less: its reads have their own key.
    const narrow = await call(`${path}?offset=-1`, { headers: { authorization: `Bearer ${mint({ scope: 'read', stream_id: 'guarded' })}` } })
    expect([narrow.status, narrow.cache]).toEqual([200, 'MISS'])
    // No token: refused before the cache is asked.
    const refused = await call(`${path}?offset=-1`)
    expect(refused.status).toBe(401)
    expect(refused.cache).toBeNull()
  }, 30_000)
})
