// Every LiveStore store is also a read-only Durable Stream at /v1/livestore/<storeId>, read here with the
// official client (@durable-streams/client 0.2.7) while the real 0.4.0 clients push over WebSocket, HTTP
// and DO-RPC: live readers (SSE and long-poll) get every acknowledged event, in order, one message per
// event; a saved offset resumes exactly after the event it was read at; HEAD, ETag/304, 405 for writes
// (which change nothing), the sync gate (validate_payload with the `payload` parameter) and CORS as the
// Worker configures it. Runs once per storage (D1, DO SQLite); the gate and CORS once.

import { stream } from '@durable-streams/client'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientDo } from '../support/client-do.mjs'
import { clientPool } from '../support/livestore-client.mjs'
import { sharedDefaultWorker, sharedDoRpcWorker, sharedTokenAuthWorker, TOKEN_AUTH_TOKEN } from '../support/shared.mjs'
import { makeEvents, normalizeEvent, uniqueStoreId, waitFor } from '../support/util.mjs'
import { E2E_STORAGE } from '../support/worker.mjs'

const TEST_TIMEOUT_MS = 60_000

let worker
const clients = clientPool()

beforeAll(async () => {
  worker = await sharedDoRpcWorker()
}, TEST_TIMEOUT_MS)

afterAll(async () => {
  await clients.closeAll()
})

const storeUrl = (w, storeId) => `${w.url}/v1/livestore/${encodeURIComponent(storeId)}`

/** What the store's stream says of an event as pushed (createdAt checked apart: the server sets it). */
const asMessage = (event) => ({ ...normalizeEvent(event), createdAt: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/) })

/** A live reader of the store with the official client: every item it got so far, and its session. */
const liveReader = async (w, storeId, live, opts = {}) => {
  const items = []
  const res = await stream({ url: storeUrl(w, storeId), offset: '-1', live, json: true, warnOnHttp: false, ...opts })
  res.subscribeJson((batch) => {
    items.push(...batch.items)
  })
  return { items, res }
}

describe(`a store read as a Durable Stream while LiveStore clients push (${E2E_STORAGE})`, () => {
  test('live readers (SSE and long-poll) get every event pushed over WebSocket, HTTP and DO-RPC as it is acknowledged, in order', async () => {
    const storeId = uniqueStoreId('as-stream')
    const ws = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    const events = makeEvents(1, 9, { argsFor: (n) => ({ id: `t${n}`, text: `todo ${n} "quoted" ✓` }) })
    await ws.push(events.slice(0, 3))

    const readers = await Promise.all([liveReader(worker, storeId, 'sse'), liveReader(worker, storeId, 'long-poll')])
    try {
      const reachAll = (n, what) =>
        Promise.all(readers.map((r) => waitFor(() => r.items.length >= n, `${r.res.live} reader: ${what}`, 20_000)))
      await reachAll(3, 'the catch-up')

      const http = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'http' })
      await http.push(events.slice(3, 6))
      await reachAll(6, 'the HTTP push')

      const rpc = clientDo(worker, `as-stream-${process.pid}`)
      await rpc.open(storeId)
      await rpc.push(storeId, events.slice(6, 8))
      await reachAll(8, 'the DO-RPC push')

      await ws.push(events.slice(8))
      await reachAll(9, 'the WebSocket push')

      for (const r of readers) {
        expect(r.items, `${r.res.live} reader`).toEqual(events.map(asMessage))
      }
    } finally {
      for (const r of readers) r.res.cancel()
    }
  }, TEST_TIMEOUT_MS)

  test('a saved offset resumes exactly after the event it was read at; HEAD gives the tail; ETag and 304', async () => {
    const storeId = uniqueStoreId('as-stream-resume')
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    const events = makeEvents(1, 7)
    await client.push(events.slice(0, 4))

    const first = await stream({ url: storeUrl(worker, storeId), offset: '-1', live: false, json: true, warnOnHttp: false })
    expect(await first.json()).toEqual(events.slice(0, 4).map(asMessage))
    const saved = first.offset
    expect(first.contentType).toBe('application/json')

    const head = await fetch(storeUrl(worker, storeId), { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(head.headers.get('stream-next-offset')).toBe(saved)

    await client.push(events.slice(4))
    const resumed = await stream({ url: storeUrl(worker, storeId), offset: saved, live: false, json: true, warnOnHttp: false })
    expect(await resumed.json()).toEqual(events.slice(4).map(asMessage))
    expect((await fetch(storeUrl(worker, storeId), { method: 'HEAD' })).headers.get('stream-next-offset')).toBe(resumed.offset)

    // A catch-up read is cacheable by its ETag while the data it names cannot change.
    const page = await fetch(`${storeUrl(worker, storeId)}?offset=${saved}`)
    expect(page.status).toBe(200)
    expect(await page.json()).toEqual(events.slice(4).map(asMessage))
    const etag = page.headers.get('etag')
    expect(etag).toBeTruthy()
    const again = await fetch(`${storeUrl(worker, storeId)}?offset=${saved}`, { headers: { 'if-none-match': etag } })
    expect(again.status).toBe(304)
    expect(await again.text()).toBe('')
  }, TEST_TIMEOUT_MS)

  test('writes answer 405 (LiveStore clients write through /sync) and change nothing; a malformed offset is a 400', async () => {
    const storeId = uniqueStoreId('as-stream-write')
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    await client.push(makeEvents(1, 2))
    const tail = (await fetch(storeUrl(worker, storeId), { method: 'HEAD' })).headers.get('stream-next-offset')

    for (const method of ['PUT', 'POST', 'DELETE']) {
      const res = await fetch(storeUrl(worker, storeId), {
        method,
        headers: { 'content-type': 'application/json' },
        body: method === 'DELETE' ? undefined : JSON.stringify([makeEvents(3, 3)[0]]),
      })
      expect(res.status, method).toBe(405)
      expect(await res.text(), method).toContain('/sync')
    }
    // a large upload too: refused once it has been read, never cut off
    const large = await fetch(storeUrl(worker, storeId), { method: 'POST', body: Buffer.alloc(3_000_000, 120) })
    expect(large.status).toBe(405)
    expect(large.headers.get('allow')).toBe('GET, HEAD, OPTIONS')
    expect((await fetch(storeUrl(worker, storeId), { method: 'HEAD' })).headers.get('stream-next-offset')).toBe(tail)
    const read = await stream({ url: storeUrl(worker, storeId), live: false, json: true, warnOnHttp: false })
    expect(await read.json()).toEqual(makeEvents(1, 2).map(asMessage))
    expect((await client.pullAll()).flatMap((p) => p.batch)).toHaveLength(2)

    const bad = await fetch(`${storeUrl(worker, storeId)}?offset=not-an-offset`)
    expect(bad.status).toBe(400)
  }, TEST_TIMEOUT_MS)

  test('the shipped Worker (CORS off by default) adds no CORS headers', async () => {
    const plain = await sharedDefaultWorker()
    const storeId = uniqueStoreId('as-stream-nocors')
    const res = await fetch(`${storeUrl(plain, storeId)}?offset=-1`, { headers: { origin: 'https://app.example' } })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual([])
    expect(res.headers.get('access-control-allow-origin')).toBeNull()
  }, TEST_TIMEOUT_MS)
})

// The token-auth example keeps its logs in DO SQLite whatever the pass: its tests run in the D1 pass only
// (not registered at all in the other, where a skip would count as a failure).
const describeOnce = E2E_STORAGE === 'd1' ? describe : () => {}
describeOnce('the sync gate and CORS of a Worker that configures them (examples/token-auth)', () => {
  let tokenWorker
  const good = { authToken: TOKEN_AUTH_TOKEN }
  beforeAll(async () => {
    tokenWorker = await sharedTokenAuthWorker()
  }, TEST_TIMEOUT_MS)

  test('a store the Worker refuses for sync is refused as a stream: no payload or a wrong token is a 400', async () => {
    const storeId = uniqueStoreId('as-stream-gate')
    const client = await clients.open({ url: `${tokenWorker.url}/sync`, storeId, payload: good, transport: 'ws' })
    await client.push(makeEvents(1, 3))

    for (const [label, query] of [
      ['no payload', ''],
      ['a wrong token', `&payload=${encodeURIComponent(JSON.stringify({ authToken: 'wrong' }))}`],
      ['a payload that is not JSON', '&payload=%7Bnot-json'],
    ]) {
      const res = await fetch(`${storeUrl(tokenWorker, storeId)}?offset=-1${query}`)
      expect(res.status, label).toBe(400)
      const text = await res.text()
      expect(text, label).not.toContain('todoCreated')
    }

    const read = await stream({
      url: storeUrl(tokenWorker, storeId),
      live: false,
      json: true,
      warnOnHttp: false,
      params: { payload: JSON.stringify(good) },
    })
    expect(await read.json()).toEqual(makeEvents(1, 3).map(asMessage))
  }, TEST_TIMEOUT_MS)

  test('CORS as configured: preflight allows reads, responses carry the CORS headers', async () => {
    const storeId = uniqueStoreId('as-stream-cors')
    const preflight = await fetch(storeUrl(tokenWorker, storeId), {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'if-none-match' },
    })
    expect(preflight.status).toBe(204)
    expect(preflight.headers.get('access-control-allow-origin')).toBe('*')
    expect(preflight.headers.get('access-control-allow-methods')).toContain('GET')
    expect(preflight.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('if-none-match')

    const res = await fetch(`${storeUrl(tokenWorker, storeId)}?offset=-1&payload=${encodeURIComponent(JSON.stringify(good))}`, {
      headers: { origin: 'https://app.example' },
    })
    expect(res.status).toBe(200)
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
    expect(res.headers.get('access-control-expose-headers')?.toLowerCase()).toContain('stream-next-offset')
  }, TEST_TIMEOUT_MS)
})
