// Live SSE readers through the hibernation bridge, against the real Worker: the Worker holds each
// reader's event stream and one hibernatable WebSocket to the stream's object, which sleeps between
// appends. Shown here: a reader stays connected while the object is evicted (the admin API says when
// the object last started) and gets the next append; 1,000 readers on one stream each get every
// message exactly once, in order; a client that stops reading is taken off the object's socket and
// catches up at its own pace; a reader the object cannot bring to the tail in one read catches up by
// itself; deleting the stream ends its readers; the official client reads through it all. A
// LiveStore store's stream view (/v1/livestore/<storeId>) has its live readers bridged the same way, by
// the store's sync object.

import { stream } from '@durable-streams/client'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientPool } from '../support/livestore-client.mjs'
import { sharedDefaultWorker } from '../support/shared.mjs'
import { makeEvents, uniqueStoreId } from '../support/util.mjs'

const ADMIN = 'sse-bridge-admin'
let worker
const runId = `${Date.now().toString(36)}-${process.pid}`
let counter = 0
const fresh = (what) => `/v1/stream/bridge-${runId}-${what}-${counter++}`

beforeAll(async () => {
  // Keep-alives every 5 s: a reader that went away is noticed at the next write.
  worker = await sharedDefaultWorker({ vars: { ADMIN_SECRET: ADMIN, DS_LONG_POLL_TIMEOUT_MS: '5000' } })
}, 120_000)

const clients = clientPool()
afterAll(async () => {
  await clients.closeAll()
})

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const request = async (path, { method = 'GET', body, headers = {} } = {}) => {
  const res = await fetch(`${worker.url}${path}`, { method, body, headers })
  const text = await res.text()
  return { status: res.status, text, headers: res.headers }
}

const create = (path) => request(path, { method: 'PUT', headers: { 'content-type': 'application/json' } })
const append = async (path, messages) => {
  const res = await request(path, {
    method: 'POST',
    body: JSON.stringify(messages),
    headers: { 'content-type': 'application/json' },
  })
  expect(res.status, res.text).toBeLessThan(300)
}
const info = async (path) => {
  const res = await request(`/admin/api/streams/${path.slice('/v1/stream/'.length)}`, { headers: { authorization: `Bearer ${ADMIN}` } })
  expect(res.status, res.text).toBe(200)
  return JSON.parse(res.text)
}

/**
 * A raw SSE reader: collects the messages of the data events (JSON arrays) and the control events,
 * and notes when the event stream ends.
 */
const openReader = async (path, offset = '-1') => {
  const controller = new AbortController()
  const res = await fetch(`${worker.url}${path}?offset=${offset}&live=sse`, { signal: controller.signal })
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toBe('text/event-stream')
  const reader = { messages: [], controls: [], ended: false, error: undefined, close: () => controller.abort() }
  reader.done = (async () => {
    const decoder = new TextDecoder()
    let buffer = ''
    try {
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk, { stream: true })
        let end
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const lines = event.split('\n')
          const kind = lines.find((l) => l.startsWith('event: '))?.slice(7)
          const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5)).join('\n')
          if (kind === 'data') reader.messages.push(...JSON.parse(data))
          else if (kind === 'control') reader.controls.push(JSON.parse(data))
        }
      }
    } catch (e) {
      if (e.name !== 'AbortError') reader.error = e
    }
    reader.ended = true
  })()
  return reader
}

const waitFor = async (what, check, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

describe('SSE through the hibernation bridge', () => {
  test('a reader stays connected while the stream object is evicted, and gets the next append', async () => {
    const path = fresh('evicted')
    expect((await create(path)).status).toBe(201)
    await append(path, [{ n: 1 }])
    const reader = await openReader(path)
    await waitFor('the first message', () => reader.messages.length === 1)
    const before = await info(path)
    expect(before.liveReaders).toBe(1)
    // Nothing touches the object now: it has only a hibernatable socket, and is evicted.
    await sleep(25_000)
    const appendedAt = Date.now()
    await append(path, [{ n: 2 }])
    await waitFor('the append after the idle period', () => reader.messages.length === 2)
    const after = await info(path)
    expect(after.awakeSinceMs, 'the object that took the append started after the idle period').toBeGreaterThan(before.awakeSinceMs)
    expect(after.awakeSinceMs).toBeGreaterThanOrEqual(appendedAt - 1_000)
    expect(after.liveReaders).toBe(1)
    expect(reader.messages).toEqual([{ n: 1 }, { n: 2 }])
    expect(reader.ended).toBe(false)
    expect(reader.controls.at(-1)).toMatchObject({ upToDate: true, streamNextOffset: expect.any(String) })
    reader.close()
    await reader.done
  }, 90_000)

  test('1,000 readers on one stream each get every message exactly once, in order', async () => {
    const path = fresh('thousand')
    expect((await create(path)).status).toBe(201)
    await append(path, [{ i: 0 }])
    const readers = []
    for (let i = 0; i < 1_000; i += 100) {
      readers.push(...(await Promise.all(Array.from({ length: 100 }, () => openReader(path)))))
    }
    await waitFor('every reader at the tail', () => readers.every((r) => r.controls.some((c) => c.upToDate)), 60_000)
    expect((await info(path)).liveReaders).toBe(1_000)
    const count = 40
    for (let i = 1; i <= count; i++) {
      await append(path, [{ i }])
      await sleep(20)
    }
    await waitFor('every message at every reader', () => readers.every((r) => r.messages.length >= count + 1), 60_000)
    const expected = Array.from({ length: count + 1 }, (_, i) => ({ i }))
    const wrong = readers.filter((r) => JSON.stringify(r.messages) !== JSON.stringify(expected) || r.error || r.ended)
    expect(wrong.length, `readers with missing, duplicated or reordered messages: ${JSON.stringify(wrong[0]?.messages?.slice(0, 50))}`).toBe(0)
    for (const r of readers) r.close()
    await Promise.all(readers.map((r) => r.done))
    // Readers that went away release their sockets at the object (by the next keep-alive).
    const deadline = Date.now() + 20_000
    let left
    while ((left = (await info(path)).liveReaders) > 0 && Date.now() < deadline) await sleep(500)
    expect(left).toBe(0)
  }, 180_000)

  test('a reader one read cannot bring to the tail catches up by itself', async () => {
    const path = fresh('behind')
    expect((await create(path)).status).toBe(201)
    const reader = await openReader(path)
    await waitFor('the reader at the tail', () => reader.controls.some((c) => c.upToDate))
    // One append of more messages than one read takes: the object sends what it read and sends
    // the reader back to catching up.
    const many = Array.from({ length: 9_000 }, (_, i) => ({ i }))
    await append(path, many)
    await append(path, [{ i: 9_000 }])
    await waitFor('every message', () => reader.messages.length >= 9_001)
    expect(reader.messages).toEqual([...many, { i: 9_000 }])
    expect(reader.ended).toBe(false)
    reader.close()
    await reader.done
  }, 60_000)

  test('a client that stops reading is taken off the live socket, and gets every message once it reads again', async () => {
    const path = fresh('slow')
    expect((await create(path)).status).toBe(201)
    const res = await fetch(`${worker.url}${path}?offset=-1&live=sse`)
    expect(res.status).toBe(200)
    const body = res.body.getReader()
    const decoder = new TextDecoder()
    let buffer = ''
    const seen = []
    let upToDate = false
    // Reads one chunk; `false` when the event stream ended.
    const readSome = async () => {
      const { value, done } = await body.read()
      if (done) return false
      buffer += decoder.decode(value, { stream: true })
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const [kind, data] = buffer.slice(0, end).split('\n')
        buffer = buffer.slice(end + 2)
        if (kind === 'event: data') seen.push(...JSON.parse(data.slice(5)).map((m) => m.i))
        if (kind === 'event: control') upToDate = JSON.parse(data.slice(5)).upToDate === true
      }
      return true
    }
    while (!upToDate) expect(await readSome()).toBe(true)
    let live
    const connecting = Date.now() + 10_000
    while ((live = (await info(path)).liveReaders) !== 1 && Date.now() < connecting) await sleep(100)
    expect(live).toBe(1)
    // The client reads nothing now, while far more than the buffers between it and the Worker
    // hold is appended, one message of 200 KB at a time.
    const pad = 'x'.repeat(200_000)
    const count = 150
    for (let i = 0; i < count; i++) await append(path, [{ i, pad }])
    // The Worker noticed and took it off its socket: it catches up at the client's pace.
    const noticing = Date.now() + 30_000
    while ((live = (await info(path)).liveReaders) !== 0 && Date.now() < noticing) await sleep(200)
    expect(live, 'a reader that reads nothing is not held on the live socket').toBe(0)
    // It reads again: every message once, in order, then it follows live again.
    while (seen.length < count) expect(await readSome()).toBe(true)
    expect(seen).toEqual(Array.from({ length: count }, (_, i) => i))
    await append(path, [{ i: count }])
    while (seen.length < count + 1) expect(await readSome()).toBe(true)
    expect(seen.at(-1)).toBe(count)
    expect((await info(path)).liveReaders).toBe(1)
    await body.cancel()
  }, 120_000)

  test('closing a stream ends its readers after the last message; deleting it ends them too', async () => {
    const closing = fresh('closing')
    const deleting = fresh('deleting')
    for (const path of [closing, deleting]) expect((await create(path)).status).toBe(201)
    const a = await openReader(closing)
    const b = await openReader(deleting)
    await waitFor('both at the tail', () => a.controls.length > 0 && b.controls.length > 0)
    const res = await request(closing, {
      method: 'POST',
      body: JSON.stringify([{ last: true }]),
      headers: { 'content-type': 'application/json', 'stream-closed': 'true' },
    })
    expect(res.status).toBeLessThan(300)
    await waitFor('the closed stream to end its reader', () => a.ended)
    expect(a.messages).toEqual([{ last: true }])
    expect(a.controls.at(-1)).toMatchObject({ streamClosed: true, upToDate: true })
    expect((await request(deleting, { method: 'DELETE' })).status).toBe(204)
    await waitFor('the deleted stream to end its reader', () => b.ended)
    expect(b.error).toBeUndefined()
  }, 60_000)

  test('the official client reads live through the bridge, from an offset', async () => {
    const path = fresh('client')
    expect((await create(path)).status).toBe(201)
    await append(path, [{ k: 'a' }, { k: 'b' }])
    const first = await request(`${path}?offset=-1`)
    const offset = first.headers.get('stream-next-offset')
    const got = []
    const res = await stream({ url: `${worker.url}${path}`, offset, live: 'sse', json: true, warnOnHttp: false })
    res.subscribeJson((batch) => got.push(...batch.items))
    try {
      await sleep(300)
      await append(path, [{ k: 'c' }])
      await waitFor('the live message', () => got.length >= 1)
      expect(got).toEqual([{ k: 'c' }])
    } finally {
      res.cancel()
    }
  }, 30_000)
})

describe("SSE of a LiveStore store's stream through the bridge", () => {
  const storeInfo = async (storeId) => {
    const res = await request(`/admin/api/stores/${encodeURIComponent(storeId)}`, { headers: { authorization: `Bearer ${ADMIN}` } })
    expect(res.status, res.text).toBe(200)
    return JSON.parse(res.text)
  }
  const push = async (storeId, events) => {
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    await client.push(events)
    await client.close()
  }

  test("a store's reader stays connected while the store's object is evicted, gets the next pushes, and ends at a reset", async () => {
    const storeId = uniqueStoreId('bridge-store')
    const path = `/v1/livestore/${encodeURIComponent(storeId)}`
    const events = makeEvents(1, 3)
    await push(storeId, events.slice(0, 1))
    const reader = await openReader(path)
    await waitFor('the first event', () => reader.messages.length === 1)
    const before = await storeInfo(storeId)
    expect(before.liveReaders).toBe(1)
    // No client now: the store's object has only the reader's hibernatable socket, and is evicted.
    await sleep(25_000)
    const pushedAt = Date.now()
    await push(storeId, events.slice(1))
    await waitFor('the pushes after the idle period', () => reader.messages.length === 3)
    const after = await storeInfo(storeId)
    expect(after.awakeSinceMs, 'the object that took the pushes started after the idle period').toBeGreaterThan(before.awakeSinceMs)
    expect(after.awakeSinceMs).toBeGreaterThanOrEqual(pushedAt - 1_000)
    expect(after.liveReaders).toBe(1)
    expect(reader.messages.map((m) => [m.seqNum, m.parentSeqNum, m.name])).toEqual(events.map((e) => [e.seqNum, e.parentSeqNum, e.name]))
    expect(reader.ended).toBe(false)

    // A reset makes the store another log: its readers' event streams end (they read it afresh).
    const reset = await request(`/admin/api/stores/${encodeURIComponent(storeId)}/reset`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
    })
    expect(reset.status, reset.text).toBe(200)
    await waitFor('the reset to end the reader', () => reader.ended)
    expect(reader.error).toBeUndefined()
    expect((await storeInfo(storeId)).liveReaders).toBe(0)
  }, 90_000)
})
