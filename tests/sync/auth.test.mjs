// Auth (issue 6 §3): requests that fail `validate_payload` or carry no token never reach storage, and
// a client of one store can never read or write another store, over WebSocket, HTTP and DO-RPC.
//
// - Token: examples/token-auth (AUTH_TOKEN, validate_payload in the Worker, hooks writing an audit row
//   for every request the store's Durable Object serves, events in the DO's SQLite). A refused
//   request must leave the store's rows as they were, add no audit row (the object never ran a
//   hook) and, for a store nobody used yet, not even create its Durable Object.
// - Stores: the DO-RPC test Worker (test/do-rpc/: the project's own Worker and sync Durable Object
//   plus a JS client Durable Object that can call `stub.rpc(bytes)` itself), storage E2E_STORAGE.
//   The store a WebSocket or HTTP request is served for is the one in its URL (the Worker routes it
//   to idFromName(storeId); the socket keeps it in its attachment); a payload naming another store
//   is refused. DO-RPC has no URL: the object must refuse a payload for a store it is not named after.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientDo } from '../support/client-do.mjs'
import { clientPool, eventsOf } from '../support/livestore-client.mjs'
import { httpPingRequest, httpPullRequest, httpPushRequest, httpSyncUrl, newRequestId, postRaw, rpc } from '../support/raw-http.mjs'
import { RawSocket, pullRequest, pushRequest, upgradeResponse, wsSyncUrl } from '../support/raw-ws.mjs'
import { eventlogLocations, makeEvents, sleep, storedRows, uniqueStoreId } from '../support/util.mjs'
import { sharedDoRpcWorker, sharedTokenAuthWorker, TOKEN_AUTH_TOKEN } from '../support/shared.mjs'
import { E2E_STORAGE } from '../support/worker.mjs'

const TOKEN = TOKEN_AUTH_TOKEN
const GOOD = { authToken: TOKEN }

let tokenWorker
let storesWorker
const clients = clientPool()
const sockets = []

beforeAll(async () => {
  tokenWorker = await sharedTokenAuthWorker()
  storesWorker = await sharedDoRpcWorker()
})

afterAll(async () => {
  for (const s of sockets) s.close()
  await clients.closeAll()
})

const sqlString = (s) => `'${s.replaceAll("'", "''")}'`
const auditCount = async (storeId) =>
  (await tokenWorker.d1(`SELECT COUNT(*) AS n FROM sync_audit WHERE storeId = ${sqlString(storeId)}`))[0].n

/** Failure tag and message of an Exit (Fail cause), for refused requests. */
const failureOf = (exit) => {
  expect(exit._tag).toBe('Failure')
  expect(exit.cause._tag).toBe('Fail')
  return exit.cause.error
}

describe('token (examples/token-auth): refused requests never reach storage', () => {
  // [label, payload]: no payload at all, a wrong token, a token of the wrong type
  const bad = [
    ['no token', undefined],
    ['wrong token', { authToken: 'not-the-token' }],
    ['token of the wrong type', { authToken: 1 }],
  ]

  test('an existing store: rows and audit trail unchanged after refused WS and HTTP pushes and pulls', async () => {
    const storeId = uniqueStoreId('auth-existing')
    const owner = await clients.open({ url: `${tokenWorker.url}/sync`, storeId, payload: GOOD, transport: 'http', pingEnabled: false, connect: false })
    await owner.push(makeEvents(1, 3, { clientId: 'owner' }))
    const before = await storedRows(tokenWorker, storeId)
    expect(before.map((r) => r.seqNum)).toEqual([1, 2, 3])
    // the owner's push left two audit rows (onPush, onPushRes; the latter may land after the answer)
    for (let i = 0; (await auditCount(storeId)) < 2; i++) {
      if (i > 20) throw new Error('the audit rows of the owner’s push did not appear')
      await sleep(500)
    }
    const audits = await auditCount(storeId)
    expect(audits).toBe(2)

    for (const [label, payload] of bad) {
      const wsUrl = wsSyncUrl(tokenWorker.url, storeId, payload === undefined ? {} : { payload: encodeURIComponent(JSON.stringify(payload)) })
      const upgrade = await upgradeResponse(wsUrl)
      expect(upgrade.status, label).toBe(400)

      const url = httpSyncUrl(tokenWorker.url, storeId, { payload })
      const push = await postRaw(url, httpPushRequest(newRequestId(), storeId, makeEvents(4, 4, { clientId: 'intruder' })))
      expect(push.status, label).toBe(400)
      const pull = await postRaw(url, httpPullRequest(newRequestId(), storeId))
      expect(pull.status, label).toBe(400)
      expect(pull.text, label).not.toMatch(/owner|todoCreated/) // nothing of the log leaks into the refusal
      const ping = await postRaw(url, httpPingRequest(newRequestId(), storeId))
      expect(ping.status, label).toBe(400)
    }

    expect(await storedRows(tokenWorker, storeId)).toEqual(before)
    await sleep(1_000) // a hook that did run would have written its row by now
    expect(await auditCount(storeId)).toBe(audits)
    // and the owner still works
    await owner.push(makeEvents(4, 4, { clientId: 'owner' }))
    expect((await storedRows(tokenWorker, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3, 4])
  })

  test('a new store: refused requests create no Durable Object, no table, no audit row', async () => {
    const storeId = uniqueStoreId('auth-new')
    for (const [label, payload] of bad) {
      const wsUrl = wsSyncUrl(tokenWorker.url, storeId, payload === undefined ? {} : { payload: encodeURIComponent(JSON.stringify(payload)) })
      expect((await upgradeResponse(wsUrl)).status, label).toBe(400)
      const url = httpSyncUrl(tokenWorker.url, storeId, { payload })
      expect((await postRaw(url, httpPushRequest(newRequestId(), storeId, makeEvents(1, 2)))).status, label).toBe(400)
      expect((await postRaw(url, httpPullRequest(newRequestId(), storeId))).status, label).toBe(400)
    }
    // the real HTTP client with a wrong token fails its push instead of writing
    const intruder = await clients.open({
      url: `${tokenWorker.url}/sync`,
      storeId,
      payload: { authToken: 'not-the-token' },
      transport: 'http',
      pingEnabled: false,
      connect: false,
    })
    await expect(intruder.push(makeEvents(1, 1))).rejects.toThrow()

    // a store that was used is found by the same lookup, so the lookup itself works
    const known = uniqueStoreId('auth-known')
    await (await clients.open({ url: `${tokenWorker.url}/sync`, storeId: known, payload: GOOD, transport: 'http', pingEnabled: false, connect: false })).push(makeEvents(1, 1))
    expect((await storedRows(tokenWorker, known)).map((r) => r.seqNum)).toEqual([1])
    await expect(tokenWorker.doSql(storeId)).rejects.toThrow(/none of the \d+ SQLite files belongs to store/)
    expect(await auditCount(storeId)).toBe(0)
  })
})

describe(`one store's client cannot read or write another store (${E2E_STORAGE})`, () => {
  /** Store B with three events of its own, store A with one. */
  const twoStores = async (label) => {
    const a = uniqueStoreId(`${label}-A`)
    const b = uniqueStoreId(`${label}-B`)
    const ownerB = await clients.open({ url: `${storesWorker.url}/sync`, storeId: b, clientId: 'owner-B' })
    await ownerB.push(makeEvents(1, 3, { clientId: 'owner-B', argsFor: (n) => ({ secret: `secret-of-B-${n}` }) }))
    const ownerA = await clients.open({ url: `${storesWorker.url}/sync`, storeId: a, clientId: 'owner-A' })
    await ownerA.push(makeEvents(1, 1, { clientId: 'owner-A' }))
    return { a, b, ownerA, ownerB, countB: 3 }
  }

  /** Read back: B holds only its owner's events (countB of them), A only its one event. */
  const expectUnchanged = async ({ a, b, countB }) => {
    const rowsB = await storedRows(storesWorker, b)
    expect(rowsB.map((r) => [r.seqNum, r.clientId, JSON.parse(r.args).secret])).toEqual(
      Array.from({ length: countB }, (_, i) => [i + 1, 'owner-B', `secret-of-B-${i + 1}`]),
    )
    expect((await storedRows(storesWorker, a)).map((r) => [r.seqNum, r.clientId])).toEqual([[1, 'owner-A']])
  }

  test('WebSocket: a socket of store A sending Push/Pull for store B gets InvalidStoreError, sees nothing of B, writes nothing', async () => {
    const stores = await twoStores('ws-cross')
    const { a, b, ownerB } = stores
    const raw = await RawSocket.open(wsSyncUrl(storesWorker.url, a))
    sockets.push(raw)
    await ownerB.pullAll()
    const backendIdB = await ownerB.backendId()

    // push for B on top of B's head (3), with B's backendId: refused
    const push = await raw.request(pushRequest(newRequestId(), b, makeEvents(4, 4, { clientId: 'intruder' }), backendIdB))
    expect(failureOf(push.exit)).toMatchObject({ _tag: 'UnknownError' })
    expect(JSON.stringify(push.exit)).toMatch(/InvalidStoreError/)
    // push for B on parent 0: refused as well (not a ServerAheadError that would reveal B's head)
    const push0 = await raw.request(pushRequest(newRequestId(), b, makeEvents(1, 1, { clientId: 'intruder' })))
    expect(JSON.stringify(push0.exit)).toMatch(/InvalidStoreError/)

    // non-live and live pulls for B: refused, no Chunk at all
    const pull = await raw.request(pullRequest(newRequestId(), b))
    expect(pull.chunks).toEqual([])
    expect(JSON.stringify(pull.exit)).toMatch(/InvalidStoreError/)
    const live = await raw.request(pullRequest(newRequestId(), b, { live: true }))
    expect(live.chunks).toEqual([])
    expect(JSON.stringify(live.exit)).toMatch(/InvalidStoreError/)

    // B's next push is not delivered to A's socket
    await ownerB.push(makeEvents(4, 4, { clientId: 'owner-B', argsFor: () => ({ secret: 'secret-of-B-4' }) }))
    await sleep(500)
    expect(raw.messages.map((m) => m.raw).join('\n')).not.toMatch(/secret-of-B/)
    await expectUnchanged({ ...stores, countB: 4 })
  })

  test('HTTP: a request routed to store A whose payload names store B is refused; nothing of B is read or written', async () => {
    const stores = await twoStores('http-cross')
    const { a, b } = stores
    const urlA = httpSyncUrl(storesWorker.url, a)
    const push = await rpc(urlA, httpPushRequest(newRequestId(), b, makeEvents(4, 4, { clientId: 'intruder' })))
    expect(JSON.stringify(push.exit)).toMatch(/InvalidStoreError/)
    const pull = await rpc(urlA, httpPullRequest(newRequestId(), b))
    expect(pull.chunks).toEqual([])
    expect(JSON.stringify(pull.exit)).toMatch(/InvalidStoreError/)
    // the x-livestore-store-id header the real client sends does not pick the store either
    const viaHeader = await postRaw(urlA, httpPullRequest(newRequestId(), a), { headers: { 'x-livestore-store-id': b } })
    expect(viaHeader.status).toBe(200)
    expect(viaHeader.text).not.toMatch(/secret-of-B/)
    expect(viaHeader.json.flatMap((m) => m.values ?? []).flatMap((v) => v.batch).map((i) => i.eventEncoded.clientId)).toEqual(['owner-A'])
    await expectUnchanged(stores)
  })

  test('DO-RPC: the object of store A refuses Push/Pull/Ping for store B, whether or not it has served A before', async () => {
    const stores = await twoStores('dorpc-cross')
    const { a, b } = stores
    const caller = clientDo(storesWorker, `auth-caller-${process.pid}`)
    // a fresh object that has served nobody yet (named after a store nobody used)
    const fresh = uniqueStoreId('dorpc-fresh')
    let id = 930_000
    const next = () => String(id++)
    const option = (value) => (value === undefined ? { _tag: 'None' } : { _tag: 'Some', value })
    const request = (tag, payload) => ({ _tag: 'Request', id: next(), tag, payload, headers: [] })

    for (const target of [a, fresh]) {
      for (const req of [
        request('SyncDoRpc.Push', { storeId: b, batch: makeEvents(4, 4, { clientId: 'intruder' }), backendId: option() }),
        request('SyncDoRpc.Push', { storeId: b, batch: makeEvents(1, 1, { clientId: 'intruder' }), backendId: option() }),
        request('SyncDoRpc.Pull', { storeId: b, cursor: option() }),
        request('SyncDoRpc.Ping', { storeId: b }),
      ]) {
        const reply = await caller.rawRpc(target, req)
        const exit = reply.messages.at(-1)
        expect(exit, `${req.tag} via ${target === a ? 'A' : 'a fresh object'}`).toMatchObject({ _tag: 'Exit', requestId: req.id })
        expect(JSON.stringify(exit.exit), `${req.tag} via ${target === a ? 'A' : 'a fresh object'}`).toMatch(/InvalidStoreError/)
        expect(reply.messages.filter((m) => m._tag === 'Chunk')).toEqual([])
      }
    }
    await expectUnchanged(stores)
    // B's log exists in exactly one place (B's own object, or D1): no other object took it on
    expect(await eventlogLocations(storesWorker, b)).toEqual({ d1: E2E_STORAGE === 'd1', doSqlite: E2E_STORAGE === 'do-sqlite' })
    // the fresh object still serves the store it is named after
    const own = request('SyncDoRpc.Push', { storeId: fresh, batch: makeEvents(1, 1, { clientId: 'fresh-owner' }), backendId: option() })
    expect((await caller.rawRpc(fresh, own)).messages.at(-1).exit).toEqual({ _tag: 'Success', value: {} })
    expect((await storedRows(storesWorker, fresh)).map((r) => r.clientId)).toEqual(['fresh-owner'])
    // and the owners of A and B see only their own events
    expect(eventsOf(await stores.ownerB.pullAll()).map((e) => e.clientId)).toEqual(['owner-B', 'owner-B', 'owner-B'])
    expect(eventsOf(await stores.ownerA.pullAll()).map((e) => e.clientId)).toEqual(['owner-A'])
  })
})
