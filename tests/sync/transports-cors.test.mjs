// SYNC_TRANSPORTS and SYNC_CORS of the default worker:
//   - `wsOnly`:   --var SYNC_TRANSPORTS:ws   --var SYNC_CORS:true
//   - `httpOnly`: --var SYNC_TRANSPORTS:http --var SYNC_CORS:true
//   - `plain`:    defaults (ws,http; no CORS)
// A disabled transport is refused with 400 "…disabled…"; with CORS on, preflights are answered and
// every response carries Access-Control-Allow-Origin: *; with CORS off there is no Access-Control-* at all.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { eventsOf, clientPool } from '../support/livestore-client.mjs'
import { httpPingRequest, httpPullRequest, httpPushRequest, httpSyncUrl, newRequestId, postRaw, rpc } from '../support/raw-http.mjs'
import { upgradeResponse, wsSyncUrl } from '../support/raw-ws.mjs'
import { expectNoUncaughtErrors, makeEvents, normalizeEvent, settleWithin, storedRows, uniqueStoreId } from '../support/util.mjs'
import { sharedDefaultWorker } from '../support/shared.mjs'
import { E2E_STORAGE } from '../support/worker.mjs'

let wsOnly
let httpOnly
let plain
const clients = clientPool()

const open = (worker, storeId, opts = {}) => clients.open({ url: `${worker.url}/sync`, storeId, ...opts })

// what the LiveStore HTTP client makes a browser ask for (docs §2: tracing headers trigger a preflight)
const REQUESTED_HEADERS = 'content-type,x-livestore-store-id,traceparent,b3'

const preflight = (url) =>
  fetch(url, {
    method: 'OPTIONS',
    headers: {
      Origin: 'https://app.example',
      'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': REQUESTED_HEADERS,
    },
    signal: AbortSignal.timeout(15_000),
  })

const headerList = (value) =>
  (value ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean)
    .sort()

/** Names of Access-Control-* headers of a fetch Response or of a node headers object. */
const corsHeaderNames = (headers) => {
  const names = typeof headers.keys === 'function' ? [...headers.keys()] : Object.keys(headers)
  return names.filter((n) => n.toLowerCase().startsWith('access-control-'))
}
const allowOrigin = (headers) => (typeof headers.get === 'function' ? headers.get('access-control-allow-origin') : headers['access-control-allow-origin'])

/** The answers of a few plain (non-preflight) requests to `worker`, each { what, status, headers }. */
const plainResponses = async (worker, storeId) => {
  const out = []
  const get = async (what, path, init = {}) => {
    const res = await fetch(`${worker.url}${path}`, { ...init, signal: AbortSignal.timeout(15_000) })
    await res.arrayBuffer()
    out.push({ what, status: res.status, headers: res.headers })
  }
  await get('info page', '/')
  await get('unknown path', '/whatever')
  await get('POST unknown path', '/whatever', { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })
  await get('ws transport without Upgrade', `/sync?storeId=${storeId}&transport=ws`)
  return out
}

beforeAll(async () => {
  ;[wsOnly, httpOnly, plain] = await Promise.all([
    sharedDefaultWorker({ vars: { SYNC_TRANSPORTS: 'ws', SYNC_CORS: 'true' } }),
    sharedDefaultWorker({ vars: { SYNC_TRANSPORTS: 'http', SYNC_CORS: 'true' } }),
    sharedDefaultWorker(),
  ])
})

afterAll(async () => {
  await clients.closeAll()
})

describe(`SYNC_TRANSPORTS (storage ${E2E_STORAGE})`, () => {
  test('ws only: HTTP requests are refused with 400 "disabled", nothing stored; ws works', async () => {
    const storeId = uniqueStoreId('ws-only')
    const url = httpSyncUrl(wsOnly.url, storeId)
    const logMark = wsOnly.logOffset()

    const ping = await postRaw(url, httpPingRequest(newRequestId(), storeId))
    expect(ping.status).toBe(400)
    expect(ping.text).toMatch(/disabled/i)
    const push = await postRaw(url, httpPushRequest(newRequestId(), storeId, makeEvents(1, 2)))
    expect(push.status).toBe(400)
    expect(push.text).toMatch(/disabled/i)

    // the real HTTP client fails cleanly (no hang)
    const httpClient = await open(wsOnly, storeId, { transport: 'http', connect: false, pingEnabled: false })
    const pushed = await settleWithin(httpClient.push(makeEvents(1, 1)), 15_000, 'http push')
    expect(pushed.status).toBe('rejected')
    const pulled = await settleWithin(httpClient.pullAll(), 15_000, 'http pull')
    expect(pulled.status).toBe('rejected')
    // refusing must not throw inside the worker (e.g. by leaving the forwarded request body unread)
    await expectNoUncaughtErrors(wsOnly, logMark)

    // ws works, and the refused pushes left nothing behind
    const ws = await open(wsOnly, storeId)
    expect(await ws.pullAll()).toEqual([{ batch: [], pageInfo: { _tag: 'NoMore' } }])
    const events = makeEvents(1, 3)
    await ws.push(events)
    expect(eventsOf(await ws.pullAll()).map(normalizeEvent)).toEqual(events.map(normalizeEvent))
    expect((await storedRows(wsOnly, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3])
  })

  test('http only: WebSocket upgrades are refused with 400 "disabled"; http works', async () => {
    const storeId = uniqueStoreId('http-only')
    const refused = await upgradeResponse(wsSyncUrl(httpOnly.url, storeId))
    expect(refused.status).toBe(400)
    expect(refused.body).toMatch(/disabled/i)

    const http = await open(httpOnly, storeId, { transport: 'http' })
    const events = makeEvents(1, 4)
    await http.push(events)
    expect(eventsOf(await http.pullAll()).map(normalizeEvent)).toEqual(events.map(normalizeEvent))
    expect((await storedRows(httpOnly, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3, 4])
  })

  test('defaults: both transports are enabled', async () => {
    const storeId = uniqueStoreId('both')
    const accepted = await upgradeResponse(wsSyncUrl(plain.url, storeId))
    expect(accepted.status).toBe(101)
    const ws = await open(plain, storeId)
    await ws.push(makeEvents(1, 2))
    const http = await open(plain, storeId, { transport: 'http' })
    await http.push(makeEvents(3, 3))
    expect(eventsOf(await ws.pullAll()).map((e) => e.seqNum)).toEqual([1, 2, 3])
  })
})

describe('SYNC_CORS=true', () => {
  for (const [label, path] of [
    ['the sync endpoint', (storeId) => `/sync?storeId=${storeId}&transport=http`],
    ['any other path', () => '/'],
  ]) {
    test(`preflight of ${label} → 204 with Allow-Origin *, Allow-Methods, echoed Allow-Headers`, async () => {
      for (const worker of [wsOnly, httpOnly]) {
        const res = await preflight(`${worker.url}${path(uniqueStoreId('preflight'))}`)
        await res.arrayBuffer()
        expect(res.status).toBe(204)
        expect(res.headers.get('access-control-allow-origin')).toBe('*')
        const methods = headerList(res.headers.get('access-control-allow-methods'))
        expect(methods).toEqual(expect.arrayContaining(['get', 'post', 'options']))
        expect(headerList(res.headers.get('access-control-allow-headers'))).toEqual(headerList(REQUESTED_HEADERS))
      }
    })
  }

  test('actual responses carry Access-Control-Allow-Origin: * (sync POSTs 200/400, info page, 400, 426, refused upgrade)', async () => {
    const storeId = uniqueStoreId('cors')
    const seen = []
    for (const worker of [wsOnly, httpOnly]) {
      for (const r of await plainResponses(worker, storeId)) seen.push({ worker: worker.name, what: r.what, status: r.status, acao: allowOrigin(r.headers) })
    }
    // HTTP transport: a successful RPC POST (http enabled) …
    const ok = await rpc(httpSyncUrl(httpOnly.url, storeId), httpPullRequest(newRequestId(), storeId))
    seen.push({ worker: httpOnly.name, what: 'http pull', status: ok.status, acao: allowOrigin(ok.headers) })
    // … a rejected one ([Defect], 400) …
    const bad = await postRaw(httpSyncUrl(httpOnly.url, storeId), '{not json')
    seen.push({ worker: httpOnly.name, what: 'http bad body', status: bad.status, acao: allowOrigin(bad.headers) })
    // … and one of the disabled transport
    const disabled = await postRaw(httpSyncUrl(wsOnly.url, storeId), httpPingRequest(newRequestId(), storeId))
    seen.push({ worker: wsOnly.name, what: 'http disabled', status: disabled.status, acao: allowOrigin(disabled.headers) })
    // a refused upgrade (ws disabled)
    const refused = await upgradeResponse(wsSyncUrl(httpOnly.url, storeId))
    seen.push({ worker: httpOnly.name, what: 'ws disabled', status: refused.status, acao: allowOrigin(refused.headers) })

    const expected = [
      ...[wsOnly, httpOnly].flatMap((w) => [
        { worker: w.name, what: 'info page', status: 200, acao: '*' },
        { worker: w.name, what: 'unknown path', status: 400, acao: '*' },
        { worker: w.name, what: 'POST unknown path', status: 400, acao: '*' },
        // http-only: the missing Upgrade may be noticed before the disabled transport (as in @livestore/sync-cf)
        { worker: w.name, what: 'ws transport without Upgrade', status: w === wsOnly ? 426 : expect.toBeOneOf([400, 426]), acao: '*' },
      ]),
      { worker: httpOnly.name, what: 'http pull', status: 200, acao: '*' },
      { worker: httpOnly.name, what: 'http bad body', status: 400, acao: '*' },
      { worker: wsOnly.name, what: 'http disabled', status: 400, acao: '*' },
      { worker: httpOnly.name, what: 'ws disabled', status: 400, acao: '*' },
    ]
    expect(seen).toEqual(expected)
  })
})

describe('SYNC_CORS unset (default false)', () => {
  test('no Access-Control-* header on any response', async () => {
    const storeId = uniqueStoreId('no-cors')
    const seen = []
    for (const r of await plainResponses(plain, storeId)) seen.push({ what: r.what, status: r.status, cors: corsHeaderNames(r.headers) })
    const ok = await rpc(httpSyncUrl(plain.url, storeId), httpPingRequest(newRequestId(), storeId))
    seen.push({ what: 'http ping', status: ok.status, cors: corsHeaderNames(ok.headers) })
    const bad = await postRaw(httpSyncUrl(plain.url, storeId), '{not json')
    seen.push({ what: 'http bad body', status: bad.status, cors: corsHeaderNames(bad.headers) })
    const upgraded = await upgradeResponse(wsSyncUrl(plain.url, storeId))
    seen.push({ what: 'ws upgrade', status: upgraded.status, cors: corsHeaderNames(upgraded.headers) })
    expect(seen).toEqual([
      { what: 'info page', status: 200, cors: [] },
      { what: 'unknown path', status: 400, cors: [] },
      { what: 'POST unknown path', status: 400, cors: [] },
      { what: 'ws transport without Upgrade', status: 426, cors: [] },
      { what: 'http ping', status: 200, cors: [] },
      { what: 'http bad body', status: 400, cors: [] },
      { what: 'ws upgrade', status: 101, cors: [] },
    ])
  })

  test('OPTIONS is a 400 like any non-sync request, without Access-Control-* headers', async () => {
    for (const path of ['/', '/whatever']) {
      const res = await preflight(`${plain.url}${path}`)
      const body = await res.text()
      expect({ path, status: res.status, cors: corsHeaderNames(res.headers) }).toEqual({ path, status: 400, cors: [] })
      expect(body.trim().length).toBeGreaterThan(0)
    }
    // on the sync URL it is a sync request with the wrong method: refused too, and no preflight answer
    const path = `/sync?storeId=${uniqueStoreId('opt')}&transport=http`
    const res = await preflight(`${plain.url}${path}`)
    await res.arrayBuffer()
    expect({ path, status: res.status, cors: corsHeaderNames(res.headers) }).toEqual({ path, status: expect.toBeOneOf([400, 405]), cors: [] })
  })
})
