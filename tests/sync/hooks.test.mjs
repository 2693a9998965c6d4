// The example custom Worker (examples/token-auth): payload validation (auth token), audit hooks writing
// to the D1 table sync_audit, a forwarded `x-user-id` header, an onPush hook that rejects `forbidden-v1`
// events, DO SQLite storage, CORS on, and the payload's JSON Schema at GET /sync/schema.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { eventsOf, clientPool } from '../support/livestore-client.mjs'
import { httpPingRequest, httpPullRequest, httpPushRequest, httpSyncUrl, newRequestId, postRaw, rpc } from '../support/raw-http.mjs'
import { RawSocket, newRequestId as newWsRequestId, pushRequest, upgradeResponse, wsSyncUrl } from '../support/raw-ws.mjs'
import { makeEvents, normalizeEvent, settleWithin, sleep, storedRows, uniqueStoreId } from '../support/util.mjs'
import { sharedTokenAuthWorker, TOKEN_AUTH_TOKEN } from '../support/shared.mjs'

const TOKEN = TOKEN_AUTH_TOKEN
const PAYLOAD = { authToken: TOKEN }

let worker
let syncUrl
const clients = clientPool()

const open = (storeId, opts = {}) => clients.open({ url: syncUrl, storeId, payload: PAYLOAD, ...opts })

/** ws:// URL with the sync payload (none if `undefined`) encoded as the real client does. */
const wsUrl = (storeId, payload) =>
  wsSyncUrl(worker.url, storeId, payload === undefined ? {} : { payload: encodeURIComponent(JSON.stringify(payload)) })
const httpUrl = (storeId, payload) => httpSyncUrl(worker.url, storeId, { payload })

const sqlString = (s) => `'${s.replaceAll("'", "''")}'`

/** Audit rows of a store, in insertion order, with payload/headers parsed. */
const auditRows = async (storeId) => {
  const rows = await worker.d1(
    `SELECT id, hook, storeId, payload, batchSize, headers, at FROM sync_audit WHERE storeId = ${sqlString(storeId)} ORDER BY id`,
  )
  return rows.map((r) => ({
    ...r,
    payload: r.payload === null ? null : JSON.parse(r.payload),
    headers: r.headers === null ? null : JSON.parse(r.headers),
  }))
}

/**
 * Waits until the store's audit rows satisfy `done(rows)` (hooks may finish after the response was
 * sent), then returns them. Fails after `timeoutMs` showing the rows seen.
 */
const waitForAudit = async (storeId, done, timeoutMs = 20_000) => {
  const deadline = Date.now() + timeoutMs
  let rows
  while (true) {
    rows = await auditRows(storeId)
    if (done(rows)) return rows
    if (Date.now() > deadline) {
      throw new Error(`audit rows of ${storeId} not complete after ${timeoutMs} ms: ${JSON.stringify(rows.map(({ at, ...r }) => r))}`)
    }
    await sleep(500)
  }
}

const byHook = (rows, hook) => rows.filter((r) => r.hook === hook)
const sizes = (rows, hook) => byHook(rows, hook).map((r) => r.batchSize)

/** Every audit row of `storeId` carries the store, the sync payload, these headers and a timestamp. */
const expectContext = (rows, storeId, headers) => {
  expect(rows.length).toBeGreaterThan(0)
  for (const row of rows) {
    expect(row.storeId).toBe(storeId)
    expect(row.payload).toEqual(PAYLOAD)
    expect(row.headers).toEqual(headers)
    // a date the hook wrote just now (any format Date.parse understands)
    const at = Date.parse(row.at)
    expect(Number.isNaN(at), `unparseable at: ${row.at}`).toBe(false)
    expect(Math.abs(at - Date.now())).toBeLessThan(10 * 60_000)
  }
}

beforeAll(async () => {
  worker = await sharedTokenAuthWorker()
  syncUrl = `${worker.url}/sync`
})

afterAll(async () => {
  await clients.closeAll()
})

describe('audit hooks (examples/token-auth)', () => {
  test('HTTP push/pull: onPush/onPushRes/onPull/onPullRes rows with storeId, payload, batch sizes and x-user-id', async () => {
    const storeId = uniqueStoreId('audit-http')
    const client = await open(storeId, { transport: 'http', headers: { 'x-user-id': 'u1' } })
    const events = makeEvents(1, 123)
    await client.push(events.slice(0, 3))
    await client.push(events.slice(3)) // the client sends 100 + 20
    const pages = await client.pullAll() // 100 + 23
    expect(eventsOf(pages).map(normalizeEvent)).toEqual(events.map(normalizeEvent))
    expect(pages.map((p) => p.batch.length)).toEqual([100, 23])

    const rows = await waitForAudit(storeId, (r) => byHook(r, 'onPushRes').length >= 3 && byHook(r, 'onPullRes').length >= 2)
    expectContext(rows, storeId, { 'x-user-id': 'u1' })
    expect(sizes(rows, 'onPush')).toEqual([3, 100, 20])
    expect(sizes(rows, 'onPushRes')).toEqual([3, 100, 20])
    expect(byHook(rows, 'onPull')).toHaveLength(1)
    expect(sizes(rows, 'onPullRes')).toEqual([100, 23])
    // every hook pair in order: onPush before its onPushRes, onPull before its responses
    const pushIds = byHook(rows, 'onPush').map((r) => r.id)
    byHook(rows, 'onPushRes').forEach((r, i) => expect(r.id).toBeGreaterThan(pushIds[i]))
    for (const r of byHook(rows, 'onPullRes')) expect(r.id).toBeGreaterThan(byHook(rows, 'onPull')[0].id)
    expect(rows.map((r) => r.hook).sort()).toEqual(
      ['onPush', 'onPush', 'onPush', 'onPushRes', 'onPushRes', 'onPushRes', 'onPull', 'onPullRes', 'onPullRes'].sort(),
    )

    // events live in the store's DO SQLite
    expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual(events.map((e) => e.seqNum))
  })

  test('only the configured header is forwarded over HTTP; {} when it is absent', async () => {
    const storeId = uniqueStoreId('audit-headers')
    const withHeader = await postRaw(httpUrl(storeId, PAYLOAD), httpPushRequest(newRequestId(), storeId, makeEvents(1, 2)), {
      headers: { 'x-user-id': 'u3', 'x-other': 'not forwarded' },
    })
    expect(withHeader.status).toBe(200)
    expect(withHeader.json.at(-1).exit._tag).toBe('Success')
    const without = await rpc(httpUrl(storeId, PAYLOAD), httpPushRequest(newRequestId(), storeId, makeEvents(3, 3)))
    expect(without.exit._tag).toBe('Success')

    const rows = await waitForAudit(storeId, (r) => byHook(r, 'onPushRes').length >= 2)
    expect(byHook(rows, 'onPush').map((r) => [r.batchSize, r.headers])).toEqual([
      [2, { 'x-user-id': 'u3' }],
      [1, {}],
    ])
    expect(byHook(rows, 'onPushRes').map((r) => [r.batchSize, r.headers])).toEqual([
      [2, { 'x-user-id': 'u3' }],
      [1, {}],
    ])
  })

  test('WS: the real client (no headers) gives {}; a socket opened with x-user-id forwards it', async () => {
    const storeId = uniqueStoreId('audit-ws')
    const client = await open(storeId)
    await client.push(makeEvents(1, 4))
    expect(eventsOf(await client.pullAll()).map((e) => e.seqNum)).toEqual([1, 2, 3, 4])

    let rows = await waitForAudit(storeId, (r) => byHook(r, 'onPushRes').length >= 1 && byHook(r, 'onPullRes').length >= 1)
    expectContext(rows, storeId, {})
    expect(sizes(rows, 'onPush')).toEqual([4])
    expect(sizes(rows, 'onPushRes')).toEqual([4])
    expect(byHook(rows, 'onPull')).toHaveLength(1)
    expect(sizes(rows, 'onPullRes')).toEqual([4])
    const seen = rows.length

    const raw = await RawSocket.open(wsUrl(storeId, PAYLOAD), { headers: { 'x-user-id': 'u2' } })
    try {
      const res = await raw.request(pushRequest(newWsRequestId(), storeId, makeEvents(5, 6, { clientId: 'raw' })))
      expect(res.exit._tag).toBe('Success')
    } finally {
      raw.close()
    }
    rows = await waitForAudit(storeId, (r) => byHook(r.slice(seen), 'onPushRes').length >= 1)
    const later = rows.slice(seen)
    expectContext(later, storeId, { 'x-user-id': 'u2' })
    expect(later.map((r) => [r.hook, r.batchSize])).toEqual([
      ['onPush', 2],
      ['onPushRes', 2],
    ])
  })
})

describe('onPush rejects forbidden-v1 (examples/token-auth)', () => {
  for (const transport of ['http', 'ws']) {
    test(`${transport}: UnknownError mentioning "forbidden", nothing stored, onPushRes without a batch size`, async () => {
      const storeId = uniqueStoreId(`forbidden-${transport}`)
      const client = await open(storeId, { transport, ...(transport === 'http' ? { headers: { 'x-user-id': 'u1' } } : {}) })
      await client.push(makeEvents(1, 2))

      const bad = [...makeEvents(3, 3), ...makeEvents(4, 4, { name: 'forbidden-v1' })]
      const outcome = await settleWithin(client.push(bad), 20_000, 'forbidden push')
      expect(outcome.status).toBe('rejected')
      expect(outcome.error).toMatchObject({ _tag: 'UnknownError' })
      expect(JSON.stringify(outcome.error)).toMatch(/forbidden/i)

      // unchanged: pull, and the DO SQLite file
      expect(eventsOf(await client.pullAll()).map(normalizeEvent)).toEqual(makeEvents(1, 2).map(normalizeEvent))
      expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2])

      // the store keeps working (same seqNums, allowed name)
      await client.push(makeEvents(3, 4))
      expect(eventsOf(await client.pullAll()).map((e) => e.seqNum)).toEqual([1, 2, 3, 4])
      expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3, 4])

      const rows = await waitForAudit(storeId, (r) => byHook(r, 'onPushRes').length >= 3)
      expect(sizes(rows, 'onPush')).toEqual([2, 2, 2])
      expect(sizes(rows, 'onPushRes')).toEqual([2, null, 2])
    })
  }
})

describe('payload validation (examples/token-auth)', () => {
  // [label, payload, what the 400 body must say]: the typed payload is checked first, then the token
  const badPayloads = [
    ['missing payload', undefined, /invalid payload/i],
    ['wrong token', { authToken: 'wrong-token' }, /invalid auth token/i],
    ['token of the wrong type', { authToken: 42 }, /invalid payload/i],
    ['payload without authToken', { user: 'u1' }, /authToken/],
  ]

  for (const [label, payload, reason] of badPayloads) {
    test(`${label}: raw WS upgrade and raw HTTP POST get 400 with the reason; the DO is never reached`, async () => {
      const storeId = uniqueStoreId('auth-raw')
      const upgrade = await upgradeResponse(wsUrl(storeId, payload))
      expect(upgrade.status).toBe(400)
      expect(upgrade.body).toMatch(reason)

      const post = await postRaw(httpUrl(storeId, payload), httpPushRequest(newRequestId(), storeId, makeEvents(1, 1)))
      expect(post.status).toBe(400)
      expect(post.text).toMatch(reason)
      const ping = await postRaw(httpUrl(storeId, payload), httpPingRequest(newRequestId(), storeId))
      expect(ping.status).toBe(400)
      expect(ping.text).toMatch(reason)

      await expectNeverReached(storeId)
    })
  }

  test('the real HTTP client with a wrong token fails cleanly (connect, push and pull reject, no hang)', async () => {
    const storeId = uniqueStoreId('auth-client')
    const client = await open(storeId, {
      transport: 'http',
      payload: { authToken: 'wrong-token' },
      connect: false,
      pingEnabled: false,
    })
    for (const [what, op] of [
      ['ping', () => client.ping()],
      ['push', () => client.push(makeEvents(1, 2))],
      ['pull', () => client.pullAll()],
    ]) {
      const outcome = await settleWithin(op(), 20_000, what)
      expect({ what, status: outcome.status }).toEqual({ what, status: 'rejected' })
      expect(outcome.error).toBeInstanceOf(Error)
    }
    // a client without any payload fails the same way
    const noPayload = await open(uniqueStoreId('auth-client-none'), { transport: 'http', payload: undefined, connect: false, pingEnabled: false })
    const outcome = await settleWithin(noPayload.push(makeEvents(1, 1)), 20_000, 'push without payload')
    expect(outcome.status).toBe('rejected')

    await expectNeverReached(storeId)
  })

  test('the right token is accepted on both transports', async () => {
    const storeId = uniqueStoreId('auth-ok')
    expect((await upgradeResponse(wsUrl(storeId, PAYLOAD))).status).toBe(101)
    const ping = await rpc(httpUrl(storeId, PAYLOAD), httpPingRequest(newRequestId(), storeId))
    expect(ping.exit).toEqual({ _tag: 'Success', value: { _tag: 'SyncMessage.Pong' } })
    // CORS is on in this worker: the sync POST carries Allow-Origin
    expect(ping.headers.get('access-control-allow-origin')).toBe('*')
    const pull = await rpc(httpUrl(storeId, PAYLOAD), httpPullRequest(newRequestId(), storeId))
    expect(pull.values).toEqual([{ batch: [], pageInfo: { _tag: 'NoMore' }, backendId: expect.any(String) }])
  })
})

/** The store's Durable Object was never created and no hook ran for it. */
const expectNeverReached = async (storeId) => {
  // make sure the lookup itself works: a store that was used is found
  const known = uniqueStoreId('auth-known')
  const client = await open(known, { transport: 'http' })
  await client.push(makeEvents(1, 1))
  expect((await storedRows(worker, known)).map((r) => r.seqNum)).toEqual([1])

  await expect(worker.doSql(storeId)).rejects.toThrow(/none of the \d+ SQLite files belongs to store/)
  expect(await auditRows(storeId)).toEqual([])
}

describe('GET /sync/schema (examples/token-auth)', () => {
  test('returns the JSON Schema of the sync payload', async () => {
    const res = await fetch(`${worker.url}/sync/schema`, { signal: AbortSignal.timeout(15_000) })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/json/)
    const schema = await res.json()
    expect(schema.type).toBe('object')
    expect(schema.required).toContain('authToken')
    expect(schema.properties.authToken).toMatchObject({ type: 'string' })
  })
})
