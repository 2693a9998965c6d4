// Cold segments, against the real Worker with its local R2 bucket (SEGMENTS): a stream's oldest
// messages move out of its object's SQLite a full segment at a time (here 100 messages or 20,000
// bytes), reads of every kind stitch R2 and SQLite with the offsets unchanged, forks read the cold
// messages they inherit, and deleting a stream deletes its segments. What is stored is read back
// through the admin API (segments in the index, objects under the stream's prefix in the bucket).

import { stream } from '@durable-streams/client'
import { beforeAll, describe, expect, test } from 'vitest'
import { sharedDefaultWorker } from '../support/shared.mjs'

const ADMIN = 'cold-segments-admin'
let worker
const runId = `${Date.now().toString(36)}-${process.pid}`
let counter = 0
const fresh = (what) => `/v1/stream/cold-${runId}-${what}-${counter++}`
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const json = { 'content-type': 'application/json' }
const offset = (n) => `0000000000000000_${String(n).padStart(16, '0')}`

beforeAll(async () => {
  worker = await sharedDefaultWorker({ vars: { ADMIN_SECRET: ADMIN, DS_SEGMENT_MESSAGES: '100', DS_SEGMENT_BYTES: '20000' } })
}, 120_000)

const call = async (path, { method = 'GET', body, headers = {} } = {}) => {
  const res = await fetch(`${worker.url}${path}`, { method, body, headers })
  const text = await res.text()
  return { status: res.status, text, headers: res.headers }
}

const info = async (path) => {
  const res = await call(`/admin/api/streams/${path.slice('/v1/stream/'.length)}`, { headers: { authorization: `Bearer ${ADMIN}` } })
  return res.status === 200 ? JSON.parse(res.text) : { status: res.status }
}

const waitForInfo = async (path, what, check, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    last = await info(path)
    if (check(last)) return last
    await sleep(200)
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`)
}

/** Every message from `from` on, by catch-up reads following Stream-Next-Offset; with each page's range. */
const readAll = async (path, from = '-1') => {
  const messages = []
  const pages = []
  let at = from
  for (;;) {
    const res = await call(`${path}?offset=${at}`)
    expect(res.status, res.text).toBe(200)
    const page = JSON.parse(res.text)
    messages.push(...page)
    const next = res.headers.get('stream-next-offset')
    pages.push([at, next, page.length])
    if (res.headers.get('stream-up-to-date') === 'true') return { messages, pages }
    at = next
  }
}

/** A JSON stream of `count` messages `{ n }` (n from 1), appended `batch` at a time. */
const filled = async (what, count, batch = 50) => {
  const path = fresh(what)
  expect((await call(path, { method: 'PUT', headers: json })).status).toBe(201)
  for (let n = 1; n <= count; n += batch) {
    const messages = Array.from({ length: Math.min(batch, count - n + 1) }, (_, i) => ({ n: n + i }))
    const res = await call(path, { method: 'POST', body: JSON.stringify(messages), headers: json })
    expect(res.status, res.text).toBeLessThan(300)
  }
  return path
}

const numbers = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => ({ n: from + i }))

describe('cold segments in R2', () => {
  test('the oldest messages move a segment at a time; every read is unchanged', async () => {
    const path = await filled('moved', 1_050)
    const stored = await waitForInfo(path, 'ten segments', (i) => i.coldSegments === 10)
    expect(stored).toMatchObject({ messages: 1_050, coldMessages: 1_000, coldSegments: 10, coldObjects: 10, coldGarbage: 0 })
    expect(stored.nextOffset).toBe(offset(1_050))

    const { messages } = await readAll(path)
    expect(messages).toEqual(numbers(1, 1_050))
    // From inside a segment, across the boundary into the hot rows, and from the hot rows.
    expect((await readAll(path, offset(555))).messages).toEqual(numbers(556, 1_050))
    expect((await readAll(path, offset(990))).messages).toEqual(numbers(991, 1_050))
    expect((await readAll(path, offset(1_020))).messages).toEqual(numbers(1_021, 1_050))

    // The official client, and an SSE reader (through the Worker's bridge), from the start.
    const res = await stream({ url: `${worker.url}${path}`, offset: '-1', live: false, json: true, warnOnHttp: false })
    expect(await res.json()).toEqual(numbers(1, 1_050))
    const controller = new AbortController()
    const sse = await fetch(`${worker.url}${path}?offset=-1&live=sse`, { signal: controller.signal })
    let text = ''
    const decoder = new TextDecoder()
    for await (const chunk of sse.body) {
      text += decoder.decode(chunk, { stream: true })
      if (text.includes('"upToDate":true')) break
    }
    controller.abort()
    const seen = [...text.matchAll(/^data:(\[.*\])$/gm)].flatMap((m) => JSON.parse(m[1]))
    expect(seen).toEqual(numbers(1, 1_050))

    // More appends move more: the offsets never change.
    const more = await call(path, { method: 'POST', body: JSON.stringify(numbers(1_051, 1_120)), headers: json })
    expect(more.status).toBeLessThan(300)
    await waitForInfo(path, 'eleven segments', (i) => i.coldSegments === 11)
    expect((await readAll(path, offset(1_000))).messages).toEqual(numbers(1_001, 1_120))
  }, 120_000)

  test('large messages fill a segment by bytes', async () => {
    const path = fresh('bytes')
    expect((await call(path, { method: 'PUT', headers: json })).status).toBe(201)
    const big = (n) => ({ n, pad: 'x'.repeat(6_000) })
    for (let n = 1; n <= 5; n++) {
      expect((await call(path, { method: 'POST', body: JSON.stringify(big(n)), headers: json })).status).toBeLessThan(300)
    }
    // 6,000+ bytes each: the fourth reaches 20,000 bytes.
    const stored = await waitForInfo(path, 'a segment', (i) => i.coldSegments === 1)
    expect(stored).toMatchObject({ coldMessages: 4, messages: 5 })
    expect((await readAll(path)).messages).toEqual([1, 2, 3, 4, 5].map(big))
  }, 60_000)

  test('a fork reads the cold messages it inherits', async () => {
    const source = await filled('source', 450)
    await waitForInfo(source, 'four segments', (i) => i.coldSegments === 4)
    const fork = fresh('fork')
    const created = await call(fork, {
      method: 'PUT',
      headers: { ...json, 'stream-forked-from': source, 'stream-fork-offset': offset(250) },
    })
    expect(created.status, created.text).toBe(201)
    expect((await call(fork, { method: 'POST', body: JSON.stringify([{ own: 1 }]), headers: json })).status).toBeLessThan(300)
    expect((await readAll(fork)).messages).toEqual([...numbers(1, 250), { own: 1 }])
    // The source deleted while its fork lives: its segments stay for the fork.
    expect((await call(source, { method: 'DELETE' })).status).toBe(204)
    expect((await readAll(fork, offset(100))).messages).toEqual([...numbers(101, 250), { own: 1 }])
  }, 60_000)

  test("deleting a stream deletes its segments' objects", async () => {
    const path = await filled('deleted', 300)
    await waitForInfo(path, 'three segments', (i) => i.coldObjects === 3)
    expect((await call(path, { method: 'DELETE' })).status).toBe(204)
    // The same path again: the same object, a new stream, and nothing of the old one in R2.
    expect((await call(path, { method: 'PUT', headers: json })).status).toBe(201)
    const after = await waitForInfo(path, 'the old objects deleted', (i) => i.coldObjects === 0 && i.coldGarbage === 0)
    expect(after).toMatchObject({ messages: 0, coldSegments: 0 })
    expect((await readAll(path)).messages).toEqual([])
  }, 60_000)
})
