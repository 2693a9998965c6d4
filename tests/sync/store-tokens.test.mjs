// Tokens of a project guarding LiveStore stores (the shipped Worker with SYNC_AUTH_PROJECT): real 0.4.0
// clients send their token as the sync payload's authToken; a write token that names the store (or a
// prefix of its id) syncs over WebSocket and HTTP, and reads the store's stream; anything else is
// refused before the store's object is reached, and stores nothing. Key rotation applies at once.

import crypto from 'node:crypto'
import { stream } from '@durable-streams/client'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientPool, eventsOf } from '../support/livestore-client.mjs'
import { httpPushRequest, httpSyncUrl, newRequestId, postRaw } from '../support/raw-http.mjs'
import { RawSocket, newRequestId as newWsId, pullRequest, upgradeResponse, wsSyncUrl } from '../support/raw-ws.mjs'
import { sharedDefaultWorker } from '../support/shared.mjs'
import { makeEvents, normalizeEvent, storedRows, uniqueStoreId } from '../support/util.mjs'

const ADMIN = 'store-tokens-admin'
const PROJECT = 'livestore-app'
const KEY = crypto.randomBytes(32).toString('base64url')
const NEW_KEY = crypto.randomBytes(32).toString('base64url')

let worker
const clients = clientPool()

beforeAll(async () => {
  worker = await sharedDefaultWorker({ vars: { ADMIN_SECRET: ADMIN, SYNC_AUTH_PROJECT: PROJECT } })
  await configure([KEY])
}, 120_000)

afterAll(async () => {
  await clients.closeAll()
})

const configure = async (signingSecrets) => {
  const res = await fetch(`${worker.url}/v1/config/${PROJECT}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ signingSecrets }),
  })
  expect(res.status).toBe(200)
}

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url')
const mint = (claims, key = KEY) => {
  const signed = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: PROJECT, exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`
  return `${signed}.${crypto.createHmac('sha256', key).update(signed).digest('base64url')}`
}

const open = (storeId, authToken, transport = 'ws') =>
  clients.open({ url: `${worker.url}/sync`, storeId, transport, payload: authToken === undefined ? undefined : { authToken } })

describe('stores guarded by the tokens of a project (SYNC_AUTH_PROJECT)', () => {
  test('a write token naming the store syncs over WebSocket and HTTP; a prefix claim covers the ids under it', async () => {
    const storeId = uniqueStoreId('tok-a')
    const token = mint({ scope: 'write', store: storeId })
    const ws = await open(storeId, token)
    const http = await open(storeId, token, 'http')
    const events = makeEvents(1, 4)
    await ws.push(events.slice(0, 2))
    await http.push(events.slice(2))
    expect(eventsOf(await http.pullAll()).map(normalizeEvent)).toEqual(events.map(normalizeEvent))

    const team = `team-${Date.now()}-${process.pid}`
    const prefixed = await open(`${team}/notes`, mint({ scope: 'write', store: `${team}/*` }))
    await prefixed.push(makeEvents(1, 1))
    expect((await storedRows(worker, `${team}/notes`)).length).toBe(1)
  })

  test('missing, invalid, expired, read-only or other-store tokens are refused before the store; nothing is stored', async () => {
    const storeId = uniqueStoreId('tok-refused')
    const now = Math.floor(Date.now() / 1000)
    const cases = [
      [undefined, /MISSING_TOKEN/],
      ['not-a-token', /INVALID_TOKEN/],
      [mint({ scope: 'write', store: storeId, exp: now - 5 }), /TOKEN_EXPIRED/],
      [mint({ scope: 'write', store: storeId }, NEW_KEY), /BAD_SIGNATURE/],
      [mint({ scope: 'read', store: storeId }), /INSUFFICIENT_SCOPE/],
      [mint({ scope: 'write', store: 'another-store' }), /WRONG_STORE/],
      [mint({ scope: 'write' }), /WRONG_STORE/],
      [mint({ scope: 'write', store: storeId, sub: 'other-project' }), /WRONG_PROJECT/],
    ]
    for (const [authToken, reason] of cases) {
      const payload = authToken === undefined ? undefined : { authToken }
      const upgrade = await upgradeResponse(wsSyncUrl(worker.url, storeId, payload ? { payload: encodeURIComponent(JSON.stringify(payload)) } : {}))
      expect(upgrade.status, String(reason)).toBe(400)
      expect(upgrade.body).toMatch(reason)
      const post = await postRaw(httpSyncUrl(worker.url, storeId, { payload }), httpPushRequest(newRequestId(), storeId, makeEvents(1, 1)))
      expect(post.status, String(reason)).toBe(400)
      expect(post.text).toMatch(reason)
    }
    // the store's object was never reached: no table, no row
    await expect(storedRows(worker, storeId)).rejects.toThrow()
  })

  test("the store's stream needs a token too: any token of the project that names the store", async () => {
    const storeId = uniqueStoreId('tok-view')
    const writer = await open(storeId, mint({ scope: 'write', store: storeId }))
    await writer.push(makeEvents(1, 3))
    const url = (payload) =>
      `${worker.url}/v1/livestore/${encodeURIComponent(storeId)}${payload ? `?payload=${encodeURIComponent(JSON.stringify(payload))}` : ''}`
    const refused = await fetch(`${url()}${url().includes('?') ? '&' : '?'}offset=-1`)
    expect(refused.status).toBe(400)
    expect(await refused.text()).toMatch(/MISSING_TOKEN/)
    const res = await stream({ url: url({ authToken: mint({ scope: 'read', store: storeId }) }), offset: '-1', live: false, json: true, warnOnHttp: false })
    expect((await res.json()).map((e) => e.seqNum)).toEqual([1, 2, 3])
  })

  test('a socket is closed when the token it synced with expires, idle or not', async () => {
    const storeId = uniqueStoreId('tok-expiry')
    const exp = Math.floor(Date.now() / 1000) + 3
    const payload = { authToken: mint({ scope: 'write', store: storeId, exp }) }
    const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId, { payload: encodeURIComponent(JSON.stringify(payload)) }))
    try {
      const live = newWsId()
      raw.send(pullRequest(live, storeId, { live: true }))
      await raw.until(() => raw.messages.find((m) => m.json?._tag === 'Chunk' && m.json.requestId === live), { what: 'the catch-up' })
      // Nothing more is sent: the object's alarm closes the idle socket when the token expires.
      const closed = await raw.closed({ timeoutMs: 20_000 })
      expect(closed.code).toBe(1008)
      expect(closed.reason).toMatch(/token expired/)
      expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000 - 1_000)
    } finally {
      raw.terminate()
    }
    // The client reconnects with its expired token: refused at the gate.
    const again = await upgradeResponse(wsSyncUrl(worker.url, storeId, { payload: encodeURIComponent(JSON.stringify(payload)) }))
    expect(again.status).toBe(400)
    expect(again.body).toMatch(/TOKEN_EXPIRED/)
  }, 40_000)

  test('key rotation: tokens of the old key work until it is retired', async () => {
    const storeId = uniqueStoreId('tok-rotation')
    const old = mint({ scope: 'write', store: storeId })
    await configure([NEW_KEY, KEY])
    try {
      await (await open(storeId, old, 'http')).push(makeEvents(1, 1))
      await (await open(storeId, mint({ scope: 'write', store: storeId }, NEW_KEY), 'http')).push(makeEvents(2, 2))
      await configure([NEW_KEY])
      const post = await postRaw(httpSyncUrl(worker.url, storeId, { payload: { authToken: old } }), httpPushRequest(newRequestId(), storeId, makeEvents(3, 3)))
      expect(post.status).toBe(400)
      expect(post.text).toMatch(/BAD_SIGNATURE/)
      expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2])
    } finally {
      await configure([KEY])
    }
  })
})
