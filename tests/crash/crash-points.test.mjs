// Crashes at exactly the dangerous moments (RELIABILITY.md, "Crashes"), on the fault-injection
// test Worker (test/faults/, Cargo feature `fault-injection`, never the shipped build). A crash point
// (src/faults.rs) armed through /__faults/arm makes the Durable Object log
// `FAULT-INJECTION stalled at <point>` and stall; the test then SIGKILLs wrangler and workerd,
// checks the persisted state while nothing runs, restarts on it and checks what clients see.
//
// - `d1-after-insert` / `sqlite-after-insert` (per E2E_STORAGE): a push's events are committed to
//   the event log and the push is not acknowledged. With D1 the head in context_7 (DO SQLite) is not
//   updated yet; with DO SQLite a trigger moved it in the same statement, so there is no window
//   between the two. After the restart the same real client reconnects on its own, finds the events
//   there exactly once, its retry of the batch is refused as ServerAheadError, its next push on the
//   recovered head succeeds.
// - `stream-after-data`: a Durable Streams append has written its message but not its producer
//   state, inside the operation's transaction, and fails there (a failing point: a stall inside
//   synchronous code could not show anything, the runtime drops an unfinished transaction's writes
//   whatever the code). The point logs what the transaction had written; the test checks that none
//   of it is stored, and that the retry is new data.
// - `stream-after-commit`: the append committed but the reply was never sent: the retry with the
//   same (epoch, seq) is answered 204 as a duplicate and the message is in the stream once.
// - `stream-cold-after-put`: a full segment is written to R2 and the index does not name it yet:
//   its rows are all still in SQLite and its key is noted as garbage; after the restart the stream
//   reads the same, the orphan object is deleted and the segment moved again, nothing lost or
//   read twice.
// - `fanout-midway`: a publish to a stream with 60 estuary subscribers is answered, and its fan-out
//   stalls after telling the first 50: after the restart the alarm (armed before the answer) tells
//   them all again, and every session holds the message exactly once.
// - `store-cold-after-put` (DO SQLite pass, SYNC_COLD_SEGMENTS): the same for a LiveStore store's
//   events: after the restart the real client pulls every event once, the orphan is collected and
//   the segment moved again.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createJsonStream, logRows, producerAppend, readJsonStream, storedHead } from '../support/crash-harness.mjs'
import { clientPool, eventsOf } from '../support/livestore-client.mjs'
import { eventlogTable, makeEvents, normalizeEvent, uniqueStoreId, waitFor } from '../support/util.mjs'
import { E2E_STORAGE, startFaultsWorker } from '../support/worker.mjs'

const TEST_TIMEOUT_MS = 180_000
const LOG_POINT = E2E_STORAGE === 'do-sqlite' ? 'sqlite-after-insert' : 'd1-after-insert'

let worker
const pool = clientPool()

beforeAll(async () => {
  // Cold segments of 10 messages, so that a few appends move one (the other tests append fewer).
  worker = await startFaultsWorker({
    name: `crash-points-${E2E_STORAGE}`,
    vars: { DS_SEGMENT_MESSAGES: '10', SYNC_COLD_SEGMENTS: 'true' },
  })
})

afterAll(async () => {
  await pool.closeAll()
  await worker?.stop()
})

const arm = async (target) => {
  const res = await fetch(`${worker.url}/__faults/arm?${new URLSearchParams(target)}`, { method: 'POST' })
  expect(res.status, await res.text()).toBe(204)
}

/** Runs `request`, waits until the worker stalls at `point`, SIGKILLs it; resolves with the request's outcome. */
const crashAt = async (point, request) => {
  const offset = worker.logOffset()
  const outcome = request().then(
    (value) => ({ settled: 'fulfilled', value }),
    (error) => ({ settled: 'rejected', error }),
  )
  await waitFor(() => worker.logSince(offset).includes(`FAULT-INJECTION stalled at ${point}`), `the worker to stall at ${point}`, 30_000)
  await worker.kill()
  return outcome
}

test(`a crash between the event-log insert and the head update (${LOG_POINT}) loses nothing and stores nothing twice`, async () => {
  const url = `${worker.url}/sync`
  const storeId = uniqueStoreId('crash-point')
  const pusher = await pool.open({ url, storeId, clientId: 'pusher' })
  const watcher = await pool.open({ url, storeId, clientId: 'watcher' })
  const opts = { clientId: 'pusher', sessionId: 'pusher-session' }
  await pusher.push(makeEvents(1, 3, opts))
  const live = await watcher.live()
  await live.waitForEvents(3)

  await arm({ point: LOG_POINT, store: storeId })
  const batch = makeEvents(4, 5, opts)
  const outcome = await crashAt(LOG_POINT, () => pusher.push(batch))
  // never acknowledged: the client saw its socket die
  expect(outcome.settled).toBe('rejected')
  expect(outcome.error).toMatchObject({ _tag: 'UnknownError', cause: { _tag: 'RpcClientError' } })
  // with nothing running: the log holds the batch; with D1 the head checkpoint is behind (the window
  // was hit), with DO SQLite it moved with the inserts (one statement, head trigger)
  expect((await logRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3, 4, 5])
  expect(await storedHead(worker, storeId)).toBe(E2E_STORAGE === 'do-sqlite' ? 5 : 3)
  await live.ended // the watcher's live pull failed with its socket

  await worker.start()
  // The same clients, never re-created: their sockets reconnect on their own (requests wait for it).
  // The client's retry of its batch: the server recovered head 5 from the log.
  await expect(pusher.push(batch)).rejects.toMatchObject({ _tag: 'ServerAheadError', minimumExpectedNum: 5, providedNum: 3 })
  expect(await storedHead(worker, storeId), 'head checkpoint repaired').toBe(5)
  const pulled = eventsOf(await pusher.pullAll())
  expect(pulled.map(normalizeEvent)).toEqual(makeEvents(1, 5, opts).map(normalizeEvent))
  await pusher.push(makeEvents(6, 6, opts))

  const resumed = await watcher.live(3)
  await resumed.waitForEvents(3)
  expect(resumed.events().map((e) => e.seqNum)).toEqual([4, 5, 6])

  const rows = await logRows(worker, storeId)
  expect(rows.map((r) => r.seqNum)).toEqual([1, 2, 3, 4, 5, 6])
  expect(rows.map((r) => r.parentSeqNum)).toEqual([0, 1, 2, 3, 4, 5])
  expect(await storedHead(worker, storeId)).toBe(6)
}, TEST_TIMEOUT_MS)

// Stores kept in DO SQLite only: D1 tables stay whole (registered in the DO SQLite pass only).
const describeDoSqlite = E2E_STORAGE === 'do-sqlite' ? describe : () => {}

describeDoSqlite('LiveStore cold segments', () => {
  test('a crash between the R2 write of a store segment and its index (store-cold-after-put) loses and duplicates nothing', async () => {
    const url = `${worker.url}/sync`
    const storeId = uniqueStoreId('crash-store-cold')
    const opts = { clientId: 'cold', sessionId: 'cold-session' }
    const client = await pool.open({ url, storeId, clientId: 'cold' })
    const cold = async () =>
      (
        await worker.doSql(storeId, {
          sql: `SELECT (SELECT COUNT(*) FROM "${eventlogTable(storeId)}") AS hot, (SELECT COUNT(*) FROM ls_segments) AS segments, (SELECT COUNT(*) FROM ls_cold_garbage) AS garbage`,
        })
      ).rows[0]
    await client.push(makeEvents(1, 5, opts))
    await arm({ point: 'store-cold-after-put', store: storeId })
    // The push is stored; the move after it stalls between the R2 write and the index.
    await crashAt('store-cold-after-put', () => client.push(makeEvents(6, 12, opts)))
    expect(await cold(), 'every event still in the table, the key noted as garbage').toEqual({ hot: 12, segments: 0, garbage: 1 })

    await worker.start()
    const fresh = await pool.open({ url, storeId, clientId: 'fresh' })
    expect(eventsOf(await fresh.pullAll()).map(normalizeEvent)).toEqual(makeEvents(1, 12, opts).map(normalizeEvent))
    // The next push collects the orphan and moves the segment again.
    await fresh.push(makeEvents(13, 14, { clientId: 'fresh', sessionId: 'fresh-session' }))
    const deadline = Date.now() + 30_000
    let after = await cold()
    while (after.segments === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200))
      after = await cold()
    }
    expect(after, 'the orphan collected, the segment moved again').toEqual({ hot: 4, segments: 1, garbage: 0 })
    const again = await pool.open({ url, storeId, clientId: 'again' })
    const all = eventsOf(await again.pullAll())
    expect(all.map((e) => e.seqNum)).toEqual(Array.from({ length: 14 }, (_, i) => i + 1))
    expect(all.slice(0, 12).map(normalizeEvent)).toEqual(makeEvents(1, 12, opts).map(normalizeEvent))
  }, TEST_TIMEOUT_MS)
})

// Stream objects always keep their data in their own SQLite (SYNC_STORAGE does not apply), so these
// run in the D1 pass only (not registered at all in the DO SQLite pass, where a skip would count as
// a failure in the e2e summary).
const describeOnce = E2E_STORAGE === 'd1' ? describe : () => {}
describeOnce('Durable Streams', () => {
  const producerRow = async (path) =>
    (
      await worker.doSql(path, {
        objectClass: 'StreamObject',
        sql: "SELECT (SELECT COUNT(*) FROM ds_messages) AS messages, (SELECT last_seq FROM ds_producers WHERE id = 'p') AS lastSeq",
      })
    ).rows[0]

  test('a failure inside the append transaction (stream-after-data), after the message was written, stores none of it', async () => {
    const path = `/v1/stream/${uniqueStoreId('crash-point')}`
    await createJsonStream(worker.url, path)
    const append = (seq) => producerAppend(worker.url, path, { id: 'p', seq, body: { seq } })
    expect((await append(0)).status).toBe(200)

    await arm({ point: 'stream-after-data', stream: path })
    const offset = worker.logOffset()
    const failed = await append(1)
    expect(failed.status).toBe(500)
    // inside the transaction the message was written...
    await waitFor(() => worker.logSince(offset).includes('FAULT-INJECTION failed at stream-after-data (2 messages in the transaction)'),
      'the failing point to report what the transaction wrote', 10_000)
    // ...and none of it was committed: neither the message nor the producer's seq 1
    expect(await producerRow(path)).toEqual({ messages: 1, lastSeq: 0 })
    expect(await readJsonStream(worker.url, path)).toEqual([{ seq: 0 }])
    const retry = await append(1)
    expect(retry.status, 'the retry is new data').toBe(200)
    expect(retry.headers.get('producer-seq')).toBe('1')
    expect((await append(2)).status).toBe(200)
    expect(await readJsonStream(worker.url, path)).toEqual([{ seq: 0 }, { seq: 1 }, { seq: 2 }])
    expect(await producerRow(path)).toEqual({ messages: 3, lastSeq: 2 })
  }, TEST_TIMEOUT_MS)

  test('a crash between the R2 write of a segment and its index (stream-cold-after-put) loses and duplicates nothing', async () => {
    const path = `/v1/stream/${uniqueStoreId('crash-cold')}`
    await createJsonStream(worker.url, path)
    const append = async (from, to) => {
      const body = JSON.stringify(Array.from({ length: to - from + 1 }, (_, i) => ({ n: from + i })))
      const res = await fetch(`${worker.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
      expect(res.status).toBeLessThan(300)
    }
    const cold = async () =>
      (
        await worker.doSql(path, {
          objectClass: 'StreamObject',
          sql: 'SELECT (SELECT COUNT(*) FROM ds_messages) AS hot, (SELECT COUNT(*) FROM ds_segments) AS segments, (SELECT COUNT(*) FROM ds_cold_garbage) AS garbage',
        })
      ).rows[0]
    const numbers = (to) => Array.from({ length: to }, (_, i) => ({ n: i + 1 }))
    await append(1, 5)
    await arm({ point: 'stream-cold-after-put', stream: path })
    // The append is answered; the move after it stalls between the R2 write and the index.
    await crashAt('stream-cold-after-put', () => append(6, 12))
    expect(await cold(), 'every row still in SQLite, the key noted as garbage').toEqual({ hot: 12, segments: 0, garbage: 1 })

    await worker.start()
    expect(await readJsonStream(worker.url, path)).toEqual(numbers(12))
    // The next write collects the orphan and moves the segment again.
    await append(13, 14)
    const deadline = Date.now() + 30_000
    let after = await cold()
    while (after.segments === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200))
      after = await cold()
    }
    expect(after, 'the orphan collected, the segment moved again').toEqual({ hot: 4, segments: 1, garbage: 0 })
    expect(await readJsonStream(worker.url, path)).toEqual(numbers(14))
  }, TEST_TIMEOUT_MS)

  test('a crash after the append committed, before the reply (stream-after-commit): the retry is a duplicate, not doubled', async () => {
    const path = `/v1/stream/${uniqueStoreId('crash-point')}`
    await createJsonStream(worker.url, path)
    const append = (seq) => producerAppend(worker.url, path, { id: 'p', seq, body: { seq } })
    expect((await append(0)).status).toBe(200)

    await arm({ point: 'stream-after-commit', stream: path })
    const outcome = await crashAt('stream-after-commit', () => append(1))
    expect(outcome.settled).toBe('rejected')
    expect(await producerRow(path)).toEqual({ messages: 2, lastSeq: 1 })

    await worker.start()
    const retry = await append(1)
    expect(retry.status, 'the retry is answered as a duplicate').toBe(204)
    expect(retry.headers.get('producer-epoch')).toBe('0')
    expect(retry.headers.get('producer-seq')).toBe('1')
    expect(retry.headers.get('stream-next-offset')).toBe('0000000000000000_0000000000000002')
    expect(await readJsonStream(worker.url, path)).toEqual([{ seq: 0 }, { seq: 1 }])
    expect((await append(2)).status).toBe(200)
    expect(await readJsonStream(worker.url, path)).toEqual([{ seq: 0 }, { seq: 1 }, { seq: 2 }])
  }, TEST_TIMEOUT_MS)

  test('a crash in the middle of a fan-out (fanout-midway) loses no copy and duplicates none', async () => {
    const project = uniqueStoreId('crash-fanout')
    const source = `/v1/stream/${project}/room`
    await createJsonStream(worker.url, source)
    const ids = Array.from({ length: 60 }, (_, i) => `s${String(i).padStart(2, '0')}`)
    for (const id of ids) {
      const res = await fetch(`${worker.url}/v1/estuary/subscribe/${project}/room`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ estuaryId: id }),
      })
      expect(res.status, await res.text()).toBe(200)
    }
    const sessions = async () => Promise.all(ids.map((id) => readJsonStream(worker.url, `/v1/stream/${project}/${id}`)))
    const until = async (check, what, timeoutMs) => {
      const deadline = Date.now() + timeoutMs
      while (!(await check())) {
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
        await new Promise((r) => setTimeout(r, 200))
      }
    }
    const publish = (n) =>
      fetch(`${worker.url}${source}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) })
    expect((await publish(1)).status).toBe(204)
    await until(async () => (await sessions()).every((s) => s.length === 1), 'the first publish everywhere', 30_000)

    await arm({ point: 'fanout-midway', stream: source })
    const outcome = await crashAt('fanout-midway', () => publish(2))
    expect(outcome.settled, 'the publish was answered before its fan-out').toBe('fulfilled')
    expect(outcome.value.status).toBe(204)

    // Read from the sessions' own SQLite while the runtime is down (once it runs again, the alarm
    // may finish the fan-out before any read).
    const held = []
    for (const id of ids) {
      const rows = await worker.doSql(`/v1/stream/${project}/${id}`, { objectClass: 'StreamObject', sql: 'SELECT COUNT(*) AS n FROM ds_messages' })
      held.push(rows.rows[0].n)
    }
    expect(held.filter((n) => n === 2).length, 'the first 50 were told before the crash').toBe(50)
    expect(held.filter((n) => n === 1).length).toBe(10)
    await worker.start()
    // Deployed, the alarm armed before the answer wakes the source; local workerd does not resume
    // the alarms of a runtime it was killed in, so a read of the source wakes it here.
    expect((await fetch(`${worker.url}${source}`, { method: 'HEAD' })).status).toBe(200)
    await until(async () => (await sessions()).every((s) => s.length === 2), 'the owed fan-out to finish after the restart', 60_000)
    for (const held of await sessions()) expect(held).toEqual([{ n: 1 }, { n: 2 }])
    expect((await publish(3)).status).toBe(204)
    await until(async () => (await sessions()).every((s) => s.length === 3), 'the next publish everywhere', 30_000)
    for (const held of await sessions()) expect(held).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }])
  }, TEST_TIMEOUT_MS)
})
