// The admin API (/admin/api/…, behind ADMIN_SECRET) against the real Worker, with real 0.4.0 clients
// pushing: lists and info read back against what the clients did and what storage holds, the NDJSON
// export streamed in order, reset (clients meet the new backendId as LiveStore expects: a
// BackendIdMismatchError, then a fresh pull of the log), reset that clears, delete, streams; refusals
// in the API's own JSON form that change nothing. Runs once per storage (D1, DO SQLite).

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientDo } from '../support/client-do.mjs'
import { clientPool } from '../support/livestore-client.mjs'
import { sharedDefaultWorker, sharedDoRpcWorker } from '../support/shared.mjs'
import { eventlogTable, makeEvents, normalizeEvent, storedRows, uniqueStoreId, waitFor } from '../support/util.mjs'
import { E2E_STORAGE } from '../support/worker.mjs'

const TEST_TIMEOUT_MS = 90_000
const SECRET = 'admin-test-secret'

let worker
const clients = clientPool()

beforeAll(async () => {
  worker = await sharedDoRpcWorker({ vars: { ADMIN_SECRET: SECRET } })
}, TEST_TIMEOUT_MS)

afterAll(async () => {
  await clients.closeAll()
})

/** An admin API call: `{status, json, text, headers}`. */
const admin = async (path, { method = 'GET', secret = SECRET, w = worker } = {}) => {
  const headers = secret === null ? {} : { authorization: `Bearer ${secret}` }
  const res = await fetch(`${w.url}/admin/api/${path}`, { method, headers })
  const text = await res.text()
  let json
  try {
    json = JSON.parse(text)
  } catch {}
  return { status: res.status, json, text, headers: res.headers }
}

const storePath = (storeId) => `stores/${encodeURIComponent(storeId)}`

/** Every store entry of the list, page by page (`limit` per page). */
const allStores = async (limit = 50) => {
  const items = []
  let after = ''
  for (;;) {
    const { status, json } = await admin(`stores?limit=${limit}&after=${encodeURIComponent(after)}`)
    expect(status).toBe(200)
    items.push(...json.items)
    if (!json.next) return items
    after = json.next
  }
}

const ndjson = (text) => text.split('\n').filter(Boolean).map((line) => JSON.parse(line))

describe(`admin API (${E2E_STORAGE})`, () => {
  test('refused without the right secret, in JSON, and off on a Worker without one; the page is served', async () => {
    const storeId = uniqueStoreId('admin-refused')
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    await client.push(makeEvents(1, 2))
    await client.pullAll()
    for (const secret of [null, 'wrong', `${SECRET}x`]) {
      for (const [path, method] of [
        ['stores', 'GET'],
        [storePath(storeId), 'GET'],
        [`${storePath(storeId)}/reset?clear=true`, 'POST'],
        [storePath(storeId), 'DELETE'],
      ]) {
        const res = await admin(path, { method, secret })
        expect(res.status, `${method} ${path} with ${secret}`).toBe(401)
        expect(res.json).toMatchObject({ code: 'UNAUTHORIZED', error: expect.any(String) })
        expect(res.headers.get('cache-control')).toBe('no-store')
      }
    }
    expect((await storedRows(worker, storeId)).length, 'nothing changed').toBe(2)
    expect((await admin(storePath(storeId))).json.backendId).toBe(await client.backendId())

    const open = await sharedDefaultWorker()
    const off = await admin('stores', { w: open, secret: 'anything' })
    expect(off.status).toBe(404)
    expect(off.json).toMatchObject({ code: 'ADMIN_DISABLED', error: expect.stringContaining('ADMIN_SECRET') })
    const page = await fetch(`${open.url}/admin/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/^text\/html/)
    expect(await page.text()).toContain('<title>')
    const redirect = await fetch(`${open.url}/admin`, { redirect: 'manual' })
    expect([redirect.status, redirect.headers.get('location')]).toEqual([308, '/admin/'])
  }, TEST_TIMEOUT_MS)

  test('bad requests answer 400/404/405 in JSON', async () => {
    const cases = [
      ['stores?limit=0', 'GET', 400],
      ['stores/a%01b', 'GET', 400],
      ['stores/%ff', 'GET', 400],
      ['stores/x/events?after=-1', 'GET', 400],
      ['stores/x/reset?clear=maybe', 'POST', 400],
      ['stores/x/reset', 'GET', 405],
      ['stores/x/whatever', 'GET', 404],
      ['nothing-here', 'GET', 404],
      [storePath(uniqueStoreId('admin-never')), 'GET', 404],
      [`${storePath(uniqueStoreId('admin-never'))}/reset`, 'POST', 404],
      ['streams/no/such/stream', 'GET', 404],
    ]
    for (const [path, method, status] of cases) {
      const res = await admin(path, { method })
      expect(res.status, `${method} ${path}: ${res.text}`).toBe(status)
      expect(res.json, `${method} ${path}`).toMatchObject({ code: expect.any(String), error: expect.any(String) })
    }
  }, TEST_TIMEOUT_MS)

  test('a store pushed to by real clients is listed, and its info says what it holds and who is connected', async () => {
    const storeId = uniqueStoreId('admin-info é/ü')
    const ws = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    const live = await ws.live()
    const events = makeEvents(1, 12, { argsFor: (n) => ({ text: `todo ${n} "quoted"` }) })
    await ws.push(events.slice(0, 8))
    const http = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'http' })
    await http.push(events.slice(8))
    const rpc = clientDo(worker, `admin-info-${process.pid}`)
    await rpc.open(storeId)
    await rpc.live(storeId)
    await live.waitForEvents(12)

    // Pages of 7 (the list is shared with every other test's stores); with DO SQLite the store enters
    // the registry just after its first request.
    const entry = { storeId, table: eventlogTable(storeId) }
    await waitFor(async () => (await allStores(7)).some((s) => s.storeId === storeId), 'the store listed', 10_000)
    expect(await allStores(7)).toContainEqual(entry)

    const { status, json: info } = await admin(storePath(storeId))
    expect(status).toBe(200)
    const rows = await storedRows(worker, storeId)
    expect(info).toMatchObject({
      storeId,
      storage: E2E_STORAGE,
      table: eventlogTable(storeId),
      backendId: await ws.backendId(),
      head: 12,
      events: 12,
      sockets: 1,
      livePulls: 1,
      doRpcSubscribers: 1,
    })
    expect(info.lastEventAt).toBe(rows.at(-1).createdAt)
    const textBytes = rows.reduce(
      (n, r) => n + [r.name, r.args ?? '', r.clientId, r.sessionId, r.createdAt].reduce((m, s) => m + s.length, 0),
      0,
    )
    expect(info.bytes).toBe(textBytes)
    expect(info.objectBytes).toBeGreaterThan(0)
  }, TEST_TIMEOUT_MS)

  test('the NDJSON export streams every event in order, and pages with after/limit', async () => {
    const storeId = uniqueStoreId('admin-export')
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    // Over a page of reads (256 rows), with args that escape.
    const events = makeEvents(1, 600, { argsFor: (n) => ({ text: `"${'\\'.repeat(n % 7)}" ${n}` }) })
    for (let i = 0; i < events.length; i += 100) await client.push(events.slice(i, i + 100))

    const res = await fetch(`${worker.url}/admin/api/${storePath(storeId)}/events`, {
      headers: { authorization: `Bearer ${SECRET}` },
    })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^application\/x-ndjson/)
    expect(res.headers.get('x-store-head')).toBe('600')
    const lines = ndjson(await res.text())
    const rows = await storedRows(worker, storeId)
    expect(lines.map(({ createdAt, ...e }) => e)).toEqual(events.map(normalizeEvent))
    expect(lines.map((e) => e.createdAt)).toEqual(rows.map((r) => r.createdAt))

    const page = await admin(`${storePath(storeId)}/events?after=250&limit=20`)
    expect(ndjson(page.text).map((e) => e.seqNum)).toEqual(Array.from({ length: 20 }, (_, i) => 251 + i))
    const tail = await admin(`${storePath(storeId)}/events?after=590&limit=100`)
    expect(ndjson(tail.text).map((e) => e.seqNum)).toEqual(Array.from({ length: 10 }, (_, i) => 591 + i))
    expect(ndjson((await admin(`${storePath(storeId)}/events?after=600`)).text)).toEqual([])
  }, TEST_TIMEOUT_MS)

  test('reset: a new backendId; connected clients meet BackendIdMismatchError and a fresh pull gets the log again', async () => {
    const storeId = uniqueStoreId('admin-reset')
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    const events = makeEvents(1, 5)
    await client.push(events)
    const live = await client.live()
    await live.waitForEvents(5)
    const before = await client.backendId()

    const { status, json: reset } = await admin(`${storePath(storeId)}/reset`, { method: 'POST' })
    expect(status).toBe(200)
    expect(reset).toMatchObject({ storeId, previousBackendId: before, events: 5, socketsClosed: 1 })
    expect(reset.backendId).not.toBe(before)
    expect((await admin(storePath(storeId))).json).toMatchObject({ backendId: reset.backendId, head: 5, events: 5 })

    // The client, still on the old backendId, is refused and nothing is stored.
    await expect(client.push(makeEvents(6, 6))).rejects.toMatchObject({
      _tag: 'BackendIdMismatchError',
      expected: reset.backendId,
      received: before,
    })
    expect((await storedRows(worker, storeId)).length).toBe(5)
    // What LiveStore does next (onBackendIdMismatch 'reset'): wipe, boot again, pull from scratch.
    const fresh = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    const pages = await fresh.pullAll()
    expect(pages.flatMap((p) => p.batch.map((i) => normalizeEvent(i.eventEncoded)))).toEqual(events.map(normalizeEvent))
    expect(await fresh.backendId()).toBe(reset.backendId)
    await fresh.push(makeEvents(6, 7))
    expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3, 4, 5, 6, 7])
  }, TEST_TIMEOUT_MS)

  test('reset with clear=true empties the log; the next client starts it from 1', async () => {
    const storeId = uniqueStoreId('admin-clear')
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'http' })
    await client.push(makeEvents(1, 9))
    await client.pullAll() // the client learns the backendId and sends it with its pushes
    const { status, json } = await admin(`${storePath(storeId)}/reset?clear=true`, { method: 'POST' })
    expect(status).toBe(200)
    expect(json.events).toBe(0)
    expect(await storedRows(worker, storeId)).toEqual([])
    expect((await admin(storePath(storeId))).json).toMatchObject({ head: 0, events: 0, bytes: 0, lastEventAt: null })
    await expect(client.push(makeEvents(10, 10))).rejects.toMatchObject({ _tag: 'BackendIdMismatchError' })
    const fresh = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'http' })
    await fresh.push(makeEvents(1, 2))
    expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2])
  }, TEST_TIMEOUT_MS)

  test('delete removes the store, its log and its entry; the id can start a new store', async () => {
    const storeId = uniqueStoreId('admin-delete')
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    await client.push(makeEvents(1, 4))
    await client.pullAll()
    const old = await client.backendId()
    expect((await allStores()).map((s) => s.storeId)).toContain(storeId)

    const { status, json } = await admin(storePath(storeId), { method: 'DELETE' })
    expect(status).toBe(200)
    expect(json).toMatchObject({ storeId, deleted: true, socketsClosed: 1 })
    expect((await admin(storePath(storeId))).status).toBe(404)
    expect((await allStores()).map((s) => s.storeId)).not.toContain(storeId)
    expect(await storedRows(worker, storeId)).toEqual([])

    const fresh = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    expect(await fresh.pullAll()).toMatchObject([{ batch: [] }])
    await fresh.push(makeEvents(1, 1))
    expect(await fresh.backendId()).toEqual(expect.any(String))
    expect(await fresh.backendId()).not.toBe(old)
    expect((await storedRows(worker, storeId)).length).toBe(1)
    await waitFor(async () => (await allStores()).some((s) => s.storeId === storeId), 'the new store listed', 10_000)
  }, TEST_TIMEOUT_MS)

  test('streams: listed when created, info with producers, deleted through the API', async () => {
    const path = `admin/${uniqueStoreId('s')}/events`
    const url = `${worker.url}/v1/stream/${path}`
    expect((await fetch(url, { method: 'PUT', headers: { 'content-type': 'application/json' } })).status).toBe(201)
    for (const [seq, body] of [[0, '{"a":1}'], [1, '{"b":"two"}']]) {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'producer-id': 'p1', 'producer-epoch': '0', 'producer-seq': String(seq) },
        body,
      })
      expect(res.status).toBeLessThan(300)
    }
    const listed = async () => {
      const items = []
      let after = ''
      for (;;) {
        const { json } = await admin(`streams?limit=20&after=${encodeURIComponent(after)}`)
        items.push(...json.items.map((s) => s.path))
        if (!json.next) return items
        after = json.next
      }
    }
    await waitFor(async () => (await listed()).includes(`/v1/stream/${path}`), 'the stream listed', 10_000)
    const { status, json: info } = await admin(`streams/${path}`)
    expect(status).toBe(200)
    expect(info).toMatchObject({
      path: `/v1/stream/${path}`,
      contentType: 'application/json',
      messages: 2,
      closed: false,
      forkedFrom: null,
      producers: [{ id: 'p1', epoch: 0, seq: 1 }],
    })
    const head = await fetch(url, { method: 'HEAD' })
    expect(info.nextOffset).toBe(head.headers.get('stream-next-offset'))

    expect((await admin(`streams/${path}`, { method: 'DELETE' })).status).toBe(200)
    expect((await fetch(url, { method: 'HEAD' })).status).toBe(404)
    expect((await admin(`streams/${path}`)).status).toBe(404)
    await waitFor(async () => !(await listed()).includes(`/v1/stream/${path}`), 'the stream unlisted', 10_000)
  }, TEST_TIMEOUT_MS)
})
