// Projects and tokens on Durable Streams, against the real Worker: a project configured through
// /v1/config/<project> (admin secret or a manage token) guards its streams with HS256 tokens; reads
// need any valid token of the project (unless it is public), writes a write token, config a manage
// token; a token can be limited to one stream; refusals are 401/403 JSON that change nothing; key
// rotation; forks stay within their project; a project without configuration stays open. Read with
// the official client (@durable-streams/client) where it applies.

import crypto from 'node:crypto'
import { stream } from '@durable-streams/client'
import { beforeAll, describe, expect, test } from 'vitest'
import { sharedDefaultWorker } from '../support/shared.mjs'

const ADMIN = 'projects-admin-secret'
const KEY_1 = crypto.randomBytes(32).toString('base64url')
const KEY_2 = crypto.randomBytes(32).toString('base64url')

let worker
let runId = `${Date.now().toString(36)}-${process.pid}`

beforeAll(async () => {
  worker = await sharedDefaultWorker({ vars: { ADMIN_SECRET: ADMIN } })
}, 120_000)

const b64 = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')

/** An HS256 token, as any JWT library would make it. */
const mint = (claims, key = KEY_1, header = { alg: 'HS256', typ: 'JWT' }) => {
  const signed = `${b64(header)}.${b64({ exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`
  return `${signed}.${crypto.createHmac('sha256', key).update(signed).digest('base64url')}`
}

const call = async (path, { method = 'GET', token, body, headers = {} } = {}) => {
  const res = await fetch(`${worker.url}${path}`, {
    method,
    body,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
  })
  const text = await res.text()
  let json
  try {
    json = JSON.parse(text)
  } catch {}
  return { status: res.status, text, json, headers: res.headers }
}

const configure = (project, config, token = ADMIN) =>
  call(`/v1/config/${project}`, { method: 'PUT', token, body: JSON.stringify(config), headers: { 'content-type': 'application/json' } })

const create = (path, token, headers = {}) =>
  call(path, { method: 'PUT', token, headers: { 'content-type': 'application/json', ...headers } })

const append = (path, token, message) =>
  call(path, { method: 'POST', token, body: JSON.stringify(message), headers: { 'content-type': 'application/json' } })

/** The messages of a stream, read with the official client. */
const readAll = async (path, token) => {
  const res = await stream({
    url: `${worker.url}${path}`,
    offset: '-1',
    live: false,
    json: true,
    warnOnHttp: false,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  })
  return res.json()
}

const expectRefused = (res, status, code) => {
  expect(res.status, res.text).toBe(status)
  expect(res.json).toMatchObject({ code, error: expect.any(String) })
  expect(res.headers.get('cache-control')).toBe('no-store')
}

describe('project configuration (/v1/config/<project>)', () => {
  test('made with the admin secret, shown without secrets, managed with a manage token', async () => {
    const project = `cfg-${runId}`
    expectRefused(await configure(project, { signingSecrets: [KEY_1] }, null), 401, 'UNAUTHORIZED')
    expectRefused(await configure(project, { signingSecrets: [KEY_1] }, 'not-the-admin-secret'), 401, 'UNAUTHORIZED')
    expect((await call(`/v1/config/${project}`, { token: ADMIN })).status).toBe(404)

    const made = await configure(project, { signingSecrets: [KEY_1], public: false })
    expect(made.status).toBe(200)
    expect(made.json).toEqual({ project, signingKeys: 1, corsOrigins: [], public: false })
    expect(made.text).not.toContain(KEY_1)

    const manage = mint({ sub: project, scope: 'manage' })
    expect((await call(`/v1/config/${project}`, { token: manage })).json).toEqual(made.json)
    expectRefused(await call(`/v1/config/${project}`, { token: mint({ sub: project, scope: 'write' }) }), 403, 'INSUFFICIENT_SCOPE')
    expectRefused(await call(`/v1/config/${project}`, { token: mint({ sub: 'other', scope: 'manage' }) }), 403, 'WRONG_PROJECT')

    expectRefused(await configure(project, { signingSecrets: ['too-short'] }, manage), 400, 'BAD_REQUEST')
    expectRefused(await configure(project, { signingSecrets: [] }, manage), 400, 'BAD_REQUEST')
    expectRefused(await configure('bad name!', { signingSecrets: [KEY_1] }), 400, 'BAD_REQUEST')
    expect((await call(`/v1/config/${project}`, { token: ADMIN })).json.signingKeys).toBe(1)

    expect((await call(`/v1/config/${project}`, { method: 'DELETE', token: manage })).status).toBe(204)
    expect((await call(`/v1/config/${project}`, { token: ADMIN })).status).toBe(404)
  })
})

describe('streams of a configured project', () => {
  let project
  beforeAll(async () => {
    project = `app-${runId}`
    expect((await configure(project, { signingSecrets: [KEY_1] })).status).toBe(200)
  })

  test('writes need a write token, reads any token of the project; refusals change nothing', async () => {
    const path = `/v1/stream/${project}/orders`
    const read = mint({ sub: project, scope: 'read' })
    const write = mint({ sub: project, scope: 'write' })
    expectRefused(await create(path), 401, 'MISSING_TOKEN')
    expectRefused(await create(path, read), 403, 'INSUFFICIENT_SCOPE')
    expect((await call(path, { method: 'HEAD', token: read })).status, 'not created').toBe(404)
    expect((await create(path, write)).status).toBe(201)
    expect((await append(path, write, { id: 1 })).status).toBeLessThan(300)

    const now = Math.floor(Date.now() / 1000)
    const refusals = [
      [undefined, 401, 'MISSING_TOKEN'],
      ['garbage', 401, 'INVALID_TOKEN'],
      [mint({ sub: project, scope: 'write', exp: now - 1 }), 401, 'TOKEN_EXPIRED'],
      [mint({ sub: project, scope: 'write', nbf: now + 600 }), 401, 'TOKEN_NOT_YET_VALID'],
      [mint({ sub: project, scope: 'write' }, KEY_2), 401, 'BAD_SIGNATURE'],
      [mint({ sub: project, scope: 'write' }, KEY_1, { alg: 'none' }).replace(/[^.]+$/, ''), 401, 'UNSUPPORTED_ALGORITHM'],
      [mint({ sub: project, scope: 'write' }, KEY_1, { alg: 'HS512' }), 401, 'UNSUPPORTED_ALGORITHM'],
      [`${mint({ sub: project, scope: 'write' })}${'x'.repeat(5_000)}`, 401, 'INVALID_TOKEN'],
      [read, 403, 'INSUFFICIENT_SCOPE'],
      [mint({ sub: 'someone-else', scope: 'write' }), 403, 'WRONG_PROJECT'],
      [mint({ sub: project, scope: 'write', stream_id: 'other' }), 403, 'WRONG_STREAM'],
    ]
    for (const [token, status, code] of refusals) {
      expectRefused(await append(path, token, { id: 'refused' }), status, code)
    }
    expectRefused(await call(`${path}?offset=-1`), 401, 'MISSING_TOKEN')
    expectRefused(await call(`${path}?offset=-1&live=sse`), 401, 'MISSING_TOKEN')
    expectRefused(await call(`${path}?offset=-1`, { token: mint({ sub: project, scope: 'read', stream_id: 'other' }) }), 403, 'WRONG_STREAM')
    expectRefused(await call(path, { method: 'DELETE', token: read }), 403, 'INSUFFICIENT_SCOPE')

    expect(await readAll(path, read)).toEqual([{ id: 1 }])
    expect(await readAll(path, mint({ sub: project, scope: 'read', stream_id: 'orders' }))).toEqual([{ id: 1 }])
  })

  test('live readers with a token: SSE and long-poll through the official client', async () => {
    const path = `/v1/stream/${project}/live`
    const write = mint({ sub: project, scope: 'write' })
    const read = mint({ sub: project, scope: 'read', stream_id: 'live' })
    expect((await create(path, write)).status).toBe(201)
    const got = { sse: [], 'long-poll': [] }
    const sessions = await Promise.all(
      ['sse', 'long-poll'].map(async (live) => {
        const res = await stream({ url: `${worker.url}${path}`, offset: '-1', live, json: true, warnOnHttp: false, headers: { Authorization: `Bearer ${read}` } })
        res.subscribeJson((batch) => got[live].push(...batch.items))
        return res
      }),
    )
    try {
      for (let i = 1; i <= 3; i++) expect((await append(path, write, { i })).status).toBeLessThan(300)
      const deadline = Date.now() + 15_000
      while ((got.sse.length < 3 || got['long-poll'].length < 3) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
      expect(got.sse).toEqual([{ i: 1 }, { i: 2 }, { i: 3 }])
      expect(got['long-poll']).toEqual([{ i: 1 }, { i: 2 }, { i: 3 }])
    } finally {
      for (const s of sessions) s.cancel()
    }
  })

  test('an event stream ends when the token that opened it expires; the same token then gets 401', async () => {
    const path = `/v1/stream/${project}/expiring`
    const write = mint({ sub: project, scope: 'write' })
    expect((await create(path, write)).status).toBe(201)
    expect((await append(path, write, { before: true })).status).toBeLessThan(300)
    const exp = Math.floor(Date.now() / 1000) + 3
    const read = mint({ sub: project, scope: 'read', exp })
    const res = await fetch(`${worker.url}${path}?offset=-1&live=sse`, { headers: { authorization: `Bearer ${read}` } })
    expect(res.status).toBe(200)
    let text = ''
    const reading = (async () => {
      const decoder = new TextDecoder()
      for await (const chunk of res.body) text += decoder.decode(chunk, { stream: true })
      return Date.now()
    })()
    await new Promise((r) => setTimeout(r, 500))
    expect((await append(path, write, { during: true })).status).toBeLessThan(300)
    const ended = await Promise.race([reading, new Promise((r) => setTimeout(() => r('still open'), 20_000))])
    expect(ended, 'the event stream ended').not.toBe('still open')
    expect(ended).toBeGreaterThanOrEqual(exp * 1000 - 1_000)
    expect(text).toContain('"before":true')
    expect(text).toContain('"during":true')
    expectRefused(await call(`${path}?offset=-1&live=sse`, { token: read }), 401, 'TOKEN_EXPIRED')
  }, 60_000)

  test('key rotation: a new key signs, the old one verifies until it is removed', async () => {
    const path = `/v1/stream/${project}/rotation`
    const old = mint({ sub: project, scope: 'write' }, KEY_1)
    expect((await create(path, old)).status).toBe(201)
    expect((await configure(project, { signingSecrets: [KEY_2, KEY_1] })).status).toBe(200)
    const fresh = mint({ sub: project, scope: 'write' }, KEY_2)
    expect((await append(path, old, { by: 'old' })).status).toBeLessThan(300)
    expect((await append(path, fresh, { by: 'new' })).status).toBeLessThan(300)
    expect((await configure(project, { signingSecrets: [KEY_2] })).status).toBe(200)
    expectRefused(await append(path, old, { by: 'old again' }), 401, 'BAD_SIGNATURE')
    expect(await readAll(path, fresh)).toEqual([{ by: 'old' }, { by: 'new' }])
    expect((await configure(project, { signingSecrets: [KEY_1] })).status).toBe(200)
  })

  test('forks stay within their project and need read on their source', async () => {
    const source = `/v1/stream/${project}/source`
    const write = mint({ sub: project, scope: 'write' })
    expect((await create(source, write)).status).toBe(201)
    expect((await append(source, write, { n: 1 })).status).toBeLessThan(300)

    const fork = `/v1/stream/${project}/fork`
    expect((await create(fork, write, { 'stream-forked-from': source })).status).toBe(201)
    expect(await readAll(fork, write)).toEqual([{ n: 1 }])
    const limited = mint({ sub: project, scope: 'write', stream_id: 'fork-2' })
    expectRefused(await create(`/v1/stream/${project}/fork-2`, limited, { 'stream-forked-from': source }), 403, 'WRONG_STREAM')

    // into a project without configuration, or from one project into another: refused
    const open = `/v1/stream/open-${runId}/copy`
    expectRefused(await create(open, undefined, { 'stream-forked-from': source }), 403, 'FORK_ACROSS_PROJECTS')
    expect((await call(open, { method: 'HEAD' })).status).toBe(404)
    const other = `other-${runId}`
    expect((await configure(other, { signingSecrets: [KEY_2] })).status).toBe(200)
    expectRefused(
      await create(`/v1/stream/${other}/copy`, mint({ sub: other, scope: 'write' }, KEY_2), { 'stream-forked-from': source }),
      403,
      'FORK_ACROSS_PROJECTS',
    )
  })

  test("corsOrigins: browsers of the listed origins only; other projects keep '*'", async () => {
    const cors = `cors-${runId}`
    expect((await configure(cors, { signingSecrets: [KEY_1], corsOrigins: ['https://app.example'], public: true })).status).toBe(200)
    const path = `/v1/stream/${cors}/feed`
    expect((await create(path, mint({ sub: cors, scope: 'write' }))).status).toBe(201)
    const allowOrigin = async (origin, method = 'GET') =>
      (await fetch(`${worker.url}${path}${method === 'GET' ? '?offset=-1' : ''}`, {
        method,
        headers: { origin, ...(method === 'OPTIONS' ? { 'access-control-request-method': 'POST' } : {}) },
      })).headers.get('access-control-allow-origin')
    expect(await allowOrigin('https://app.example')).toBe('https://app.example')
    expect(await allowOrigin('https://evil.example')).toBeNull()
    expect(await allowOrigin('https://app.example', 'OPTIONS')).toBe('https://app.example')
    expect(await allowOrigin('https://evil.example', 'OPTIONS')).toBeNull()
    const open = `/v1/stream/free-cors-${runId}/s`
    expect((await create(open)).status).toBe(201)
    const res = await fetch(`${worker.url}${open}?offset=-1`, { headers: { origin: 'https://evil.example' } })
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
  })

  test('a public project reads without a token and writes with one', async () => {
    const open = `pub-${runId}`
    expect((await configure(open, { signingSecrets: [KEY_1], public: true })).status).toBe(200)
    const path = `/v1/stream/${open}/feed`
    expectRefused(await create(path), 401, 'MISSING_TOKEN')
    expect((await create(path, mint({ sub: open, scope: 'write' }))).status).toBe(201)
    expect((await append(path, mint({ sub: open, scope: 'write' }), { hello: 'all' })).status).toBeLessThan(300)
    expect(await readAll(path)).toEqual([{ hello: 'all' }])
  })
})

test('a project without configuration stays open, as does a path without a project', async () => {
  for (const path of [`/v1/stream/free-${runId}/s`, `/v1/stream/free-${runId}`]) {
    expect((await create(path)).status).toBe(201)
    expect((await append(path, undefined, { ok: true })).status).toBeLessThan(300)
    expect(await readAll(path)).toEqual([{ ok: true }])
  }
})

describe('subscriptions and estuaries in a project with tokens', () => {
  test('need its tokens, and a wildcard pattern does not reach its streams', async () => {
    const project = `subs-${runId}`
    expect((await configure(project, { signingSecrets: [KEY_1] })).status).toBe(200)
    const write = mint({ sub: project, scope: 'write' })
    const read = mint({ sub: project, scope: 'read' })
    const wake = `/v1/stream/open-${runId}/wake`
    expect((await create(wake)).status).toBe(201)
    const sub = (id) => `/v1/stream/__ds/subscriptions/${id}`
    const spec = (pattern) => JSON.stringify({ type: 'pull-wake', pattern, wake_stream: wake.slice('/v1/stream/'.length) })
    const put = (id, pattern, token) => call(sub(id), { method: 'PUT', token, body: spec(pattern), headers: { 'content-type': 'application/json' } })

    const literal = `lit-${runId}`
    expect((await put(literal, `${project}/*`)).status, 'no token').toBe(401)
    expect((await put(literal, `${project}/*`, read)).status, 'a read token does not create').toBe(403)
    expect((await put(literal, `${project}/*`, write)).status).toBe(201)
    expect((await call(sub(literal))).status, 'reading it needs a token too').toBe(401)
    const wildcard = `wild-${runId}`
    expect((await put(wildcard, '*/orders')).status, 'a wildcard names no project').toBe(201)

    expect((await create(`/v1/stream/${project}/orders`, write)).status).toBe(201)
    expect((await append(`/v1/stream/${project}/orders`, write, { n: 1 })).status).toBe(204)
    let linked
    const deadline = Date.now() + 10_000
    do {
      await new Promise((r) => setTimeout(r, 100))
      linked = (await call(sub(literal), { token: read })).json.streams
    } while (linked.length === 0 && Date.now() < deadline)
    expect(linked.map((s) => s.path)).toEqual([`${project}/orders`])
    expect((await call(sub(wildcard))).json.streams, 'the wildcard does not reach a guarded project').toEqual([])
    expect((await call(sub(literal), { method: 'DELETE', token: write })).status).toBe(204)
    expect((await call(sub(wildcard), { method: 'DELETE' })).status).toBe(204)

    // Estuaries: subscribing to the project's stream needs a write token of it.
    const est = (token) =>
      call(`/v1/estuary/subscribe/${project}/orders`, { method: 'POST', token, body: JSON.stringify({ estuaryId: 'alice' }), headers: { 'content-type': 'application/json' } })
    expect((await est()).status).toBe(401)
    expect((await est(read)).status).toBe(403)
    expect((await est(write)).status).toBe(200)
    expect((await call(`/v1/estuary/${project}/alice`)).status).toBe(401)
    expect((await call(`/v1/estuary/${project}/alice`, { token: read })).json.subscriptions).toEqual([{ streamId: 'orders' }])
  })
})
