// Durable Streams subscriptions (§6–7) against the real Worker, beyond the conformance suite:
// webhook deliveries to a local receiver that verifies every signature against the published key
// set, redelivery with back-off while the receiver fails (the same wake, signed again), a wake whose
// lease runs out without a callback coming again as a new generation (by the alarm), a pull-wake
// claim whose lease runs out going to the next worker, a deleted stream unlinked, and the refusal of
// unsafe webhook URLs.

import { createPublicKey, verify } from 'node:crypto'
import { createServer } from 'node:http'
import { beforeAll, describe, expect, test } from 'vitest'
import { sharedDefaultWorker } from '../support/shared.mjs'

let worker
const runId = `${Date.now().toString(36)}-${process.pid}`
let counter = 0
const fresh = (what) => `${what}-${runId}-${counter++}`
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const json = { 'content-type': 'application/json' }

beforeAll(async () => {
  worker = await sharedDefaultWorker({ vars: { DS_WEBHOOK_ALLOW_LOOPBACK: 'true' } })
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
const sub = (id, rest = '') => `/v1/stream/__ds/subscriptions/${id}${rest}`
const put = (id, body) => call(sub(id), { method: 'PUT', headers: json, body: JSON.stringify(body) })
const createStream = (name, body) => call(`/v1/stream/${name}`, { method: 'PUT', headers: json, body: body === undefined ? undefined : JSON.stringify(body) })
const append = (name, body) => call(`/v1/stream/${name}`, { method: 'POST', headers: json, body: JSON.stringify(body) })

/** A webhook receiver answering with `answers` in turn (the last one repeats): [status, body]. */
const receiver = async (answers) => {
  const received = []
  let waiters = []
  const server = createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8')
      received.push({ raw, body: JSON.parse(raw), signature: req.headers['webhook-signature'], at: Date.now() })
      const [status, body] = answers[Math.min(received.length - 1, answers.length - 1)]
      res.writeHead(status, json)
      res.end(JSON.stringify(body))
      for (const w of waiters.splice(0)) w()
    })
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    received,
    waitFor: async (n, timeoutMs = 15_000) => {
      const deadline = Date.now() + timeoutMs
      while (received.length < n) {
        if (Date.now() > deadline) throw new Error(`only ${received.length} of ${n} deliveries`)
        await new Promise((r) => {
          waiters.push(r)
          setTimeout(r, 200)
        })
      }
      return received
    },
    close: () => new Promise((r) => server.close(r)),
  }
}

/** Whether `signature` (the Webhook-Signature header) signs `raw` with a key of `jwks`. */
const verified = (raw, signature, jwks) => {
  const match = /^t=(\d+),kid=([^,]+),ed25519=([A-Za-z0-9_-]+)$/.exec(signature ?? '')
  if (!match) return false
  const [, t, kid, sig] = match
  const key = jwks.keys.find((k) => k.kid === kid)
  if (!key || Math.abs(Date.now() / 1000 - Number(t)) > 300) return false
  return verify(null, Buffer.from(`${t}.${raw}`), createPublicKey({ key, format: 'jwk' }), Buffer.from(sig, 'base64url'))
}

describe('webhook subscriptions', () => {
  test('a failing receiver gets the same wake again, signed each time, until it answers', async () => {
    const hook = await receiver([[500, {}], [503, {}], [200, { done: true }]])
    const id = fresh('retry')
    const prefix = fresh('orders')
    try {
      const created = await put(id, { type: 'webhook', pattern: `${prefix}/*`, webhook: { url: hook.url }, lease_ttl_ms: 30_000 })
      expect(created.status, created.text).toBe(201)
      const jwks = (await call('/v1/stream/__ds/jwks.json')).json
      expect(jwks.keys.map((k) => k.kid)).toContain(created.json.webhook.signing.kid)

      expect((await createStream(`${prefix}/1`, { n: 1 })).status).toBe(201)
      const got = await hook.waitFor(3)
      for (const d of got) expect(verified(d.raw, d.signature, jwks), d.signature).toBe(true)
      // One wake, delivered three times: same id and generation, with a growing pause between.
      expect(new Set(got.map((d) => d.body.wake_id)).size).toBe(1)
      expect(got.map((d) => d.body.generation)).toEqual([1, 1, 1])
      expect(got[1].at - got[0].at).toBeGreaterThanOrEqual(800)
      expect(got[2].at - got[1].at).toBeGreaterThanOrEqual(1_600)
      const stream = got[2].body.streams.find((s) => s.path === `${prefix}/1`)
      expect(stream).toMatchObject({ has_pending: true, link_type: 'glob', tail_offset: '0000000000000000_0000000000000001' })

      // Answered {"done": true}: acknowledged, and nothing more is sent.
      await sleep(500)
      const after = await call(sub(id))
      expect(after.json.streams).toEqual([{ path: `${prefix}/1`, link_type: 'glob', acked_offset: stream.tail_offset }])
      expect(after.json.status).toBe('active')
      expect(hook.received).toHaveLength(3)
      // A tampered body does not verify.
      expect(verified(got[2].raw.replace('"generation":1', '"generation":2'), got[2].signature, jwks)).toBe(false)
    } finally {
      await call(sub(id), { method: 'DELETE' })
      await hook.close()
    }
  }, 60_000)

  test('a wake with no callback before its lease ends comes again as the next generation', async () => {
    const hook = await receiver([[200, {}]])
    const id = fresh('lease')
    const prefix = fresh('jobs')
    try {
      expect((await put(id, { type: 'webhook', pattern: `${prefix}/*`, webhook: { url: hook.url }, lease_ttl_ms: 1_000 })).status).toBe(201)
      await createStream(`${prefix}/a`, { job: 1 })
      const got = await hook.waitFor(2, 20_000)
      expect(got[1].body.generation).toBe(got[0].body.generation + 1)
      expect(got[1].body.wake_id).not.toBe(got[0].body.wake_id)
      expect(got[1].at - got[0].at).toBeGreaterThanOrEqual(900)
      // The first wake's callback is stale now.
      const stale = await fetch(got[0].body.callback_url, {
        method: 'POST',
        headers: { ...json, authorization: `Bearer ${got[0].body.callback_token}` },
        body: JSON.stringify({ wake_id: got[0].body.wake_id, generation: got[0].body.generation, done: true }),
      })
      expect(stale.status).toBe(409)
      expect((await stale.json()).error.code).toBe('FENCED')
      // The current one acknowledges part, then the rest.
      const last = got[got.length - 1].body
      const cb = (body) =>
        fetch(last.callback_url, { method: 'POST', headers: { ...json, authorization: `Bearer ${last.callback_token}` }, body: JSON.stringify(body) })
      const badOffset = await cb({ wake_id: last.wake_id, generation: last.generation, acks: [{ stream: `${prefix}/a`, offset: '0000000000000000_0000000000000009' }] })
      expect(badOffset.status).toBe(409)
      expect((await badOffset.json()).error.code).toBe('INVALID_OFFSET')
      const wrongToken = await fetch(last.callback_url, {
        method: 'POST',
        headers: { ...json, authorization: 'Bearer nope' },
        body: JSON.stringify({ wake_id: last.wake_id, generation: last.generation, done: true }),
      })
      expect(wrongToken.status).toBe(401)
      const done = await cb({ wake_id: last.wake_id, generation: last.generation, acks: [{ stream: `${prefix}/a`, offset: '0000000000000000_0000000000000001' }], done: true })
      expect(await done.json()).toEqual({ ok: true, next_wake: false })
    } finally {
      await call(sub(id), { method: 'DELETE' })
      await hook.close()
    }
  }, 60_000)

  test('a pattern takes the streams that exist at their tails: history is not replayed', async () => {
    const hook = await receiver([[200, { done: true }]])
    const id = fresh('backfill')
    const prefix = fresh('ledger')
    try {
      await createStream(`${prefix}/a`, { n: 1 })
      await append(`${prefix}/a`, { n: 2 })
      await createStream(`${prefix}/b`, { n: 1 })
      await createStream(`${prefix}/c`)
      const created = await put(id, { type: 'webhook', pattern: `${prefix}/*`, webhook: { url: hook.url } })
      expect(created.status, created.text).toBe(201)
      const offset = (n) => `0000000000000000_${String(n).padStart(16, '0')}`
      expect(created.json.streams).toEqual([
        { path: `${prefix}/a`, link_type: 'glob', acked_offset: offset(2) },
        { path: `${prefix}/b`, link_type: 'glob', acked_offset: offset(1) },
        { path: `${prefix}/c`, link_type: 'glob', acked_offset: offset(0) },
      ])
      await sleep(500)
      expect(hook.received, 'nothing pending, no wake').toHaveLength(0)
      await append(`${prefix}/b`, { n: 2 })
      const [wake] = await hook.waitFor(1)
      expect(wake.body.streams.filter((s) => s.has_pending).map((s) => [s.path, s.tail_offset])).toEqual([[`${prefix}/b`, offset(2)]])
    } finally {
      await call(sub(id), { method: 'DELETE' })
      await hook.close()
    }
  }, 60_000)

  test('unsafe webhook URLs are refused and nothing is kept', async () => {
    for (const url of ['http://10.0.0.1/h', 'https://169.254.169.254/latest', 'https://192.168.0.1/', 'https://[fd00::1]/', 'https://[::ffff:10.0.0.1]/', 'http://example.com/h', 'ftp://example.com/']) {
      const id = fresh('unsafe')
      const res = await put(id, { type: 'webhook', pattern: 'x/*', webhook: { url } })
      expect(res.status, url).toBe(400)
      expect(res.json.error.code, url).toBe('WEBHOOK_URL_REJECTED')
      expect((await call(sub(id))).status).toBe(404)
    }
    const invalid = await put(fresh('bad'), { type: 'webhook', webhook: { url: 'https://example.com/' } })
    expect(invalid.status).toBe(400)
    expect(invalid.json.error.code).toBe('INVALID_REQUEST')
  })
})

describe('pull-wake subscriptions', () => {
  test('a claim whose lease runs out goes to the next worker; the alarm announces the next wake', async () => {
    const id = fresh('pull')
    const prefix = fresh('tasks')
    const wake = fresh('wake')
    expect((await createStream(wake, [])).status).toBe(201)
    try {
      expect((await put(id, { type: 'pull-wake', pattern: `${prefix}/*`, wake_stream: wake, lease_ttl_ms: 1_000 })).status).toBe(201)
      await createStream(`${prefix}/t1`, { task: 1 })
      const events = async () => (await call(`/v1/stream/${wake}?offset=-1`)).json.filter((e) => e.subscription_id === id)
      const until = async (check, what) => {
        const deadline = Date.now() + 10_000
        while (!(await check())) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
          await sleep(100)
        }
      }
      await until(async () => (await events()).length === 1, 'the first wake event')
      const claim = (w) => call(sub(id, '/claim'), { method: 'POST', headers: json, body: JSON.stringify({ worker: w }) })
      const first = await claim('w1')
      expect(first.status, first.text).toBe(200)
      expect((await claim('w2')).json.error).toEqual({ code: 'ALREADY_CLAIMED', current_holder: 'w1', generation: first.json.generation })
      // w1 goes silent: its lease ends by the alarm, and the data still waiting is a new wake.
      await until(async () => (await events()).length === 2, 'a second wake event after the lease ran out')
      const second = await claim('w2')
      expect(second.status, second.text).toBe(200)
      expect(second.json.generation).toBe(first.json.generation + 1)
      const late = await call(sub(id, '/ack'), {
        method: 'POST',
        headers: { ...json, authorization: `Bearer ${first.json.token}` },
        body: JSON.stringify({ wake_id: first.json.wake_id, generation: first.json.generation, done: true }),
      })
      expect(late.status, 'the silent worker is fenced').toBe(409)
      const tail = second.json.streams.find((s) => s.path === `${prefix}/t1`).tail_offset
      const ack = await call(sub(id, '/ack'), {
        method: 'POST',
        headers: { ...json, authorization: `Bearer ${second.json.token}` },
        body: JSON.stringify({ wake_id: second.json.wake_id, generation: second.json.generation, acks: [{ stream: `${prefix}/t1`, offset: tail }], done: true }),
      })
      expect(ack.json).toEqual({ ok: true, next_wake: false })
      const none = await claim('w3')
      expect(none.status).toBe(409)
      expect(none.json.error.code).toBe('NO_PENDING_WORK')
      // A deleted stream leaves the subscription.
      expect((await call(`/v1/stream/${prefix}/t1`, { method: 'DELETE' })).status).toBe(204)
      await until(async () => (await call(sub(id))).json.streams.length === 0, 'the deleted stream to be unlinked')
    } finally {
      await call(sub(id), { method: 'DELETE' })
    }
  }, 60_000)
})
