// Forks without copies: a byte stream of 50 MB (50 appends of 1 MB of random bytes), forked twice at
// its tail. Creating a fork copies nothing (its own SQLite holds no message, only what it inherits: the
// source's 50 messages, by offset); reading a fork from the start returns the source's bytes through
// the source, a budget at a time, with the Worker's memory bounded (measured once a first read of
// the source has grown V8's heap to its working size); and deleting source and forks in
// either order frees everything: a fork deleted first gives back its reference, the source deleted
// while a fork still reads it answers 410 but keeps its data for that fork, and the last fork's
// deletion frees the source. Stream objects keep their data in their own SQLite whatever
// SYNC_STORAGE says, so this runs once (the D1 pass), on a Worker of its own.

import crypto from 'node:crypto'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { sampleRss } from '../support/rss.mjs'
import { uniqueStoreId } from '../support/util.mjs'
import { startWorker } from '../support/worker.mjs'

const MESSAGES = 50
const MESSAGE_BYTES = 1_000_000
const PEAK_GROWTH_MB = 100
const TEST_TIMEOUT_MS = 240_000
const BYTES = 'application/octet-stream'

let worker
const source = `/v1/stream/${uniqueStoreId('fork-source')}`
const forkA = `/v1/stream/${uniqueStoreId('fork-a')}`
const forkB = `/v1/stream/${uniqueStoreId('fork-b')}`
/** sha256 of the source's bytes, in order (a Hash still open, for a fork's own appends to extend) */
let sourceHash
let sourceDigest

const request = async (path, init = {}) => {
  const res = await fetch(`${worker.url}${path}`, init)
  const body = Buffer.from(await res.arrayBuffer())
  return { status: res.status, headers: res.headers, body }
}

/** Every byte of a stream from the start, following `stream-next-offset`: its sha256, size and reads. */
const readAll = async (path) => {
  const hash = crypto.createHash('sha256')
  let offset = '-1'
  let bytes = 0
  let reads = 0
  for (;;) {
    const res = await request(`${path}?offset=${offset}`)
    if (res.status !== 200) throw new Error(`reading ${path} at ${offset}: ${res.status} ${res.body.toString('utf8')}`)
    hash.update(res.body)
    bytes += res.body.length
    reads += 1
    offset = res.headers.get('stream-next-offset')
    if (res.headers.get('stream-up-to-date') === 'true') return { digest: hash.digest('hex'), bytes, reads }
  }
}

/** What the stream object of `path` keeps in its own SQLite. */
const stored = async (path) => {
  const { rows } = await worker.doSql(path, {
    objectClass: 'StreamObject',
    sql:
      // Both tiers: the hot rows, and the segments moved to R2 (4 MB each here).
      'SELECT (SELECT COUNT(*) FROM ds_messages) + (SELECT COALESCE(SUM(messages), 0) FROM ds_segments) AS messages, ' +
      '(SELECT COALESCE(SUM(length(data)), 0) FROM ds_messages) + (SELECT COALESCE(SUM(bytes), 0) FROM ds_segments) AS bytes, ' +
      '(SELECT COUNT(*) FROM ds_producers) AS producers, (SELECT meta FROM ds_meta) AS meta',
  })
  const [row] = rows
  return { ...row, meta: row.meta === null ? null : JSON.parse(row.meta) }
}

const nothingLeft = { messages: 0, bytes: 0, producers: 0, meta: null }

beforeAll(async () => {
  worker = await startWorker({ name: 'memory-fork', storage: 'd1' })
  expect((await request(source, { method: 'PUT', headers: { 'content-type': BYTES } })).status).toBe(201)
  const hash = crypto.createHash('sha256')
  for (let i = 0; i < MESSAGES; i++) {
    const chunk = crypto.randomBytes(MESSAGE_BYTES)
    hash.update(chunk)
    const res = await request(source, { method: 'POST', headers: { 'content-type': BYTES }, body: chunk })
    if (res.status !== 204 && res.status !== 200) throw new Error(`append ${i}: ${res.status} ${res.body.toString('utf8')}`)
  }
  sourceHash = hash
  sourceDigest = hash.copy().digest('hex')
}, TEST_TIMEOUT_MS)

afterAll(async () => {
  await worker?.stop()
})

test(`two forks of a ${(MESSAGES * MESSAGE_BYTES) / 1e6} MB stream copy nothing and read it all; deleting them and the source in either order frees everything`, async () => {
  const before = await stored(source)
  expect(before).toMatchObject({ messages: MESSAGES, bytes: MESSAGES * MESSAGE_BYTES })
  expect(before.meta.stream.ref_count).toBe(0)

  for (const fork of [forkA, forkB]) {
    const res = await request(fork, { method: 'PUT', headers: { 'content-type': BYTES, 'stream-forked-from': source } })
    expect(res.status, res.body.toString('utf8')).toBe(201)
    const own = await stored(fork)
    expect(own.messages, 'a fork copies no message').toBe(0)
    expect(own.meta.stream.fork).toMatchObject({ source, inherited: MESSAGES })
  }
  expect((await stored(source)).meta.stream.ref_count).toBe(2)

  // The source reads back whole (this first 50 MB read also grows V8's heap to its working size).
  expect(await readAll(source)).toMatchObject({ digest: sourceDigest, bytes: MESSAGES * MESSAGE_BYTES })

  // A fork reads its inherited 50 MB through the source, within a bounded memory.
  const sampler = await sampleRss(worker.processes().runtime)
  let read
  try {
    read = await readAll(forkA)
  } finally {
    const rss = await sampler.stop()
    console.log(
      `reading a fork of ${MESSAGES} MB in ${read?.reads} requests: RSS ${Math.round(rss.firstKb / 1024)} MB → peak ` +
        `${Math.round(rss.peakKb / 1024)} MB (+${rss.growthMb.toFixed(1)} MB)`,
    )
    expect(rss.growthMb).toBeLessThanOrEqual(PEAK_GROWTH_MB)
  }
  expect(read).toMatchObject({ digest: sourceDigest, bytes: MESSAGES * MESSAGE_BYTES })

  // Its own appends follow what it inherits; the source does not see them.
  const tail = crypto.randomBytes(1000)
  expect((await request(forkB, { method: 'POST', headers: { 'content-type': BYTES }, body: tail })).status).toBeLessThan(300)
  const forkBDigest = sourceHash.copy().update(tail).digest('hex')
  expect(await readAll(forkB)).toMatchObject({ digest: forkBDigest, bytes: MESSAGES * MESSAGE_BYTES + tail.length })
  expect((await stored(forkB)).messages).toBe(1)
  expect((await readAll(source)).bytes, 'the source does not see the fork\'s appends').toBe(MESSAGES * MESSAGE_BYTES)

  // Fork first: deleting fork A gives its reference back and frees it.
  expect((await request(forkA, { method: 'DELETE' })).status).toBe(204)
  expect(await stored(forkA)).toEqual(nothingLeft)
  expect((await stored(source)).meta.stream.ref_count).toBe(1)
  expect((await request(forkA)).status).toBe(404)

  // Source next: gone for its readers, kept for fork B.
  expect((await request(source, { method: 'DELETE' })).status).toBe(204)
  expect((await request(`${source}?offset=-1`)).status).toBe(410)
  const soft = await stored(source)
  expect(soft).toMatchObject({ messages: MESSAGES, bytes: MESSAGES * MESSAGE_BYTES })
  expect(soft.meta.stream).toMatchObject({ soft_deleted: true, ref_count: 1 })
  expect((await readAll(forkB)).digest).toBe(forkBDigest)

  // The last fork: its deletion frees the source too.
  expect((await request(forkB, { method: 'DELETE' })).status).toBe(204)
  expect(await stored(forkB)).toEqual(nothingLeft)
  expect(await stored(source)).toEqual(nothingLeft)
  expect((await request(`${source}?offset=-1`)).status).toBe(404)
}, TEST_TIMEOUT_MS)
