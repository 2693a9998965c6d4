// The Worker's requests to its Durable Objects go by JS RPC (`serve`) when the objects offer it, as
// the shipped entry module's wrappers do, and by `fetch` when they do not (a Worker built on the Rust
// API alone). It finds out per binding: tests/workers/rust-objects has a wrapped sync object (RPC)
// and a stream object as the wasm build exports it (no RPC). The sync object answers first here,
// then the stream object's first request, one that carries a body, must still land exactly once;
// then everything that reaches a stream object works: create/append/read, long-poll, SSE through
// the bridge and the official Durable Streams client.

import { stream } from '@durable-streams/client'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientPool } from '../support/livestore-client.mjs'
import { sharedWorker } from '../support/shared.mjs'
import { makeEvents, uniqueStoreId } from '../support/util.mjs'
import { E2E_STORAGE } from '../support/worker.mjs'

let worker
const runId = `${Date.now().toString(36)}-${process.pid}`
const clients = clientPool()

beforeAll(async () => {
  worker = await sharedWorker({
    name: `shared-rust-objects-${E2E_STORAGE}`,
    config: 'tests/workers/rust-objects/wrangler.toml',
    storage: E2E_STORAGE,
  })
}, 120_000)

afterAll(async () => {
  await clients.closeAll()
})

const call = async (path, { method = 'GET', body, headers = {} } = {}) => {
  const res = await fetch(`${worker.url}${path}`, { method, body, headers })
  return { status: res.status, text: await res.text(), headers: res.headers }
}
const json = { 'content-type': 'application/json' }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

describe('a Worker whose stream objects offer no RPC and whose sync objects do', () => {
  test('LiveStore sync over HTTP with the real client (by RPC): pushes stored and pulled back in order', async () => {
    const storeId = uniqueStoreId('rust-objects')
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'http' })
    const events = makeEvents(1, 25)
    await client.push(events.slice(0, 10))
    await client.push(events.slice(10))
    const pages = await client.pullAll()
    expect(pages.flatMap((p) => p.batch.map((item) => item.eventEncoded.seqNum))).toEqual(events.map((e) => e.seqNum))
  }, 60_000)

  test('streams (by fetch): the first request (a create with a body) lands once; appends, reads, long-poll, SSE and the official client work', async () => {
    const path = `/v1/stream/rust-objects-${runId}`
    const created = await call(path, { method: 'PUT', body: JSON.stringify([{ n: 1 }]), headers: json })
    expect(created.status, created.text).toBe(201)
    const appended = await call(path, { method: 'POST', body: JSON.stringify([{ n: 2 }, { n: 3 }]), headers: json })
    expect(appended.status, appended.text).toBe(204)
    const read = await call(`${path}?offset=-1`)
    expect(read.status).toBe(200)
    expect(JSON.parse(read.text)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }])
    const tail = read.headers.get('stream-next-offset')

    // A long-poll at the tail is answered by the next append.
    const polled = call(`${path}?offset=${tail}&live=long-poll`)
    await sleep(300)
    expect((await call(path, { method: 'POST', body: JSON.stringify({ n: 4 }), headers: json })).status).toBe(204)
    const answer = await polled
    expect(answer.status, answer.text).toBe(200)
    expect(JSON.parse(answer.text)).toEqual([{ n: 4 }])

    // SSE through the bridge (its pages and its socket to the object), read by the official client.
    const got = []
    const live = await stream({ url: `${worker.url}${path}`, offset: answer.headers.get('stream-next-offset'), live: 'sse', json: true, warnOnHttp: false })
    live.subscribeJson((batch) => got.push(...batch.items))
    try {
      await sleep(300)
      expect((await call(path, { method: 'POST', body: JSON.stringify({ n: 5 }), headers: json })).status).toBe(204)
      const deadline = Date.now() + 10_000
      while (got.length < 1 && Date.now() < deadline) await sleep(50)
      expect(got).toEqual([{ n: 5 }])
    } finally {
      live.cancel()
    }
    const all = await call(`${path}?offset=-1`)
    expect(JSON.parse(all.text)).toEqual([1, 2, 3, 4, 5].map((n) => ({ n })))
  }, 60_000)
})
