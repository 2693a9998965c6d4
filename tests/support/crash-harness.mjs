// Traffic and bookkeeping for the crash tests (crash.test.mjs, crash-points.test.mjs):
//
// - LiveStore writers: REAL `makeWsSync` clients (one per writer, never re-created) that push
//   continuously to one store and rebase like LiveStore's leader does: a push builds on the head the
//   writer knows; on ServerAheadError the writer waits until its live pull has caught up, drops
//   from its queue what the log already holds (pushed before a crash, never acknowledged), and
//   pushes the rest on top; on a transport failure it retries the very same batch (same seqNums),
//   so a batch that did land can only come back as ServerAheadError, never be stored twice. Each
//   writer keeps a live pull open, restarted from its cursor whenever it fails (the client's socket
//   reconnects by itself), and checks every page it gets: no gap, no fork.
// - Durable Streams producers: sequential appends with Producer-Id/Epoch/Seq to one JSON stream,
//   every failed request retried with the same (epoch, seq) until it gets 200 (new) or 204
//   (duplicate: it had been committed before the crash).
// - The checks run afterwards against the stored log, a fresh pull and each writer's view.
//
// "Acknowledged" = the client's push Effect succeeded (for producers: a 200 or 204 answer).

import { expect } from 'vitest'
import { eventsOf, SyncClientError } from './livestore-client.mjs'
import { eventlogTable, normalizeEvent, sleep, waitFor } from './util.mjs'

const between = (min, max) => min + Math.random() * (max - min)

const sameEvent = (a, b) => JSON.stringify(normalizeEvent(a)) === JSON.stringify(normalizeEvent(b))

const isTransportFailure = (e) =>
  e instanceof SyncClientError && e._tag === 'UnknownError' && e.cause?._tag === 'RpcClientError'

// ---------------------------------------------------------------------------------------------
// LiveStore writers

/**
 * Opens writer `index` (client `crash-client-<index>`) on `storeId` and starts its live pull and its
 * push loop. Items are todo events whose `args.id` (`w<index>-<n>`) names them across rebases.
 *
 * @returns the writer: `stats`, `problems` (gaps, forks, unexpected failures: must stay empty),
 *   `acked` (id → seqNum), `storedUnacked` (ids found in the log without an acknowledgement),
 *   `generated` (every id it made), `view()` (the events its live pull delivered, by seqNum),
 *   `viewHead()`, `pushedSince(mark)`, `stopGenerating()`, `drained` (resolves when its queue is
 *   empty after stopGenerating), `close()`
 */
/** Ping interval of the writers' clients: longer than any run. */
const QUIET_PING_MS = 600_000

export const startWriter = async ({ pool, url, storeId, index, batchMax = 4, paceMs = [5, 60] }) => {
  const clientId = `crash-client-${index}`
  const sessionId = `session-${index}`
  // No scheduled pings during the run: the 0.4.0 client's ping watchdog sometimes fires twice and
  // reconnects silently, leaving its in-flight push unanswered (livestore #1365, client side; see
  // RELIABILITY.md "Load"), which would wedge a writer for reasons no server controls. A SIGKILL
  // closes the TCP connection, so the client notices the crash without pings.
  const client = await pool.open({ url, storeId, clientId, pingInterval: QUIET_PING_MS })

  const view = [] // view[seqNum] = event, contiguous from 1
  let viewHead = 0
  const viewIds = new Map() // args.id → seqNum, for what the live pull delivered
  const problems = []
  const generated = []
  const pending = [] // items not known to be stored, in push order
  const acked = new Map()
  const storedUnacked = new Set()
  const stats = { pushes: 0, ackedPushes: 0, ackedEvents: 0, serverAhead: 0, transportFailures: 0, liveRestarts: 0, lastAckAt: 0 }
  let generating = true
  let closed = false
  let nextItem = 0

  const onPage = (page) => {
    for (const { eventEncoded: e } of page.batch) {
      if (e.seqNum <= viewHead) {
        if (!sameEvent(view[e.seqNum], e)) {
          problems.push(`fork at seqNum ${e.seqNum}: had ${JSON.stringify(view[e.seqNum])}, got ${JSON.stringify(e)}`)
        }
      } else if (e.seqNum === viewHead + 1 && e.parentSeqNum === viewHead) {
        view[e.seqNum] = e
        viewHead = e.seqNum
        if (e.args?.id !== undefined) viewIds.set(e.args.id, e.seqNum)
      } else {
        problems.push(`gap: live pull delivered seqNum ${e.seqNum} (parent ${e.parentSeqNum}) after ${viewHead}`)
      }
    }
  }

  // The live pull, restarted from the last event seen whenever it fails (as LiveStore's leader does).
  let currentLive
  const liveLoop = (async () => {
    while (!closed) {
      try {
        currentLive = await client.live(viewHead === 0 ? undefined : viewHead, { onPage })
        await currentLive.ended
      } catch (e) {
        if (!closed && !isTransportFailure(e)) problems.push(`live pull could not start: ${String(e).slice(0, 300)}`)
      }
      if (closed) break
      stats.liveRestarts++
      await sleep(200)
    }
  })()

  const item = () => {
    const id = `w${index}-${nextItem++}`
    generated.push(id)
    return { id, text: `todo ${id}` }
  }

  const eventsFor = (items, head) =>
    items.map((it, i) => ({
      name: 'todoCreated-v1',
      args: { id: it.id, text: it.text },
      seqNum: head + 1 + i,
      parentSeqNum: head + i,
      clientId,
      sessionId,
    }))

  /** After ServerAheadError: wait for the live pull to reach the server's head, then drop what is stored. */
  const rebase = async (minimumHead) => {
    await waitFor(() => viewHead >= minimumHead || closed, `${clientId}'s live pull to reach seqNum ${minimumHead}`, 120_000)
    while (pending.length > 0 && viewIds.has(pending[0].id)) storedUnacked.add(pending.shift().id)
    for (const it of pending) {
      if (viewIds.has(it.id)) problems.push(`${it.id} is stored out of its push order`)
    }
    return viewHead
  }

  const pushLoop = (async () => {
    let head = 0
    while (!closed) {
      while (generating && pending.length < batchMax) pending.push(item())
      if (pending.length === 0) break
      const size = 1 + Math.floor(Math.random() * Math.min(batchMax, pending.length))
      const items = pending.slice(0, size)
      const batch = eventsFor(items, head)
      // the same batch until it is acknowledged or the server says it moved on
      for (;;) {
        stats.pushes++
        try {
          await client.push(batch)
          for (const e of batch) acked.set(e.args.id, e.seqNum)
          pending.splice(0, size)
          head = batch.at(-1).seqNum
          stats.ackedPushes++
          stats.ackedEvents += batch.length
          stats.lastAckAt = Date.now()
          break
        } catch (e) {
          if (closed) return
          if (e instanceof SyncClientError && e._tag === 'ServerAheadError') {
            stats.serverAhead++
            try {
              head = await rebase(e.minimumExpectedNum)
            } catch (waitError) {
              problems.push(`${clientId} wedged: ${waitError.message} (known client bug or lost broadcast?)`)
              return
            }
            break
          }
          if (isTransportFailure(e)) {
            stats.transportFailures++
            await sleep(between(100, 400))
            continue
          }
          problems.push(`${clientId} push failed unexpectedly: ${String(e).slice(0, 500)}`)
          await sleep(500)
        }
      }
      await sleep(between(...paceMs))
    }
  })()

  return {
    clientId,
    client,
    stats,
    problems,
    acked,
    storedUnacked,
    generated,
    view: () => view.slice(1, viewHead + 1),
    viewHead: () => viewHead,
    /** Acknowledged pushes after `mark` (a Date.now() value). */
    pushedSince: (mark) => stats.lastAckAt > mark,
    stopGenerating: () => {
      generating = false
    },
    drained: pushLoop,
    close: async () => {
      closed = true
      await currentLive?.stop().catch(() => {})
      await client.close()
      await liveLoop.catch(() => {})
      await pushLoop.catch(() => {})
    },
  }
}

/**
 * The store's event-log rows, ordered by seqNum, read straight from the SQLite file that holds them
 * (the local D1 database's, or the store's Durable Object's): no wrangler process, so it is quick
 * and works while the worker is down.
 */
export const logRows = async (worker, storeId) => {
  const sql = `SELECT seqNum, parentSeqNum, name, args, createdAt, clientId, sessionId FROM "${eventlogTable(storeId)}" ORDER BY seqNum`
  return worker.storage === 'do-sqlite' ? (await worker.doSql(storeId, { sql })).rows : worker.d1(sql)
}

/** Reads context_7's head of the store from its Durable Object's SQLite. */
export const storedHead = async (worker, storeId) => {
  const { rows } = await worker.doSql(storeId, { sql: 'SELECT "currentHead" FROM "context_7" WHERE "storeId" = ?', params: [storeId] })
  return rows[0]?.currentHead
}

/**
 * The checks after a crash run: the stored log is a gap-free, fork-free chain holding every item
 * the writers generated exactly once, every acknowledged event at the seqNum it was acknowledged
 * with; a fresh pull and every writer's live view equal it; context_7's head agrees with the log.
 *
 * @returns { events, ackedPushes, ackedEvents, storedUnacked } for the report
 */
export const verifyLiveStore = async ({ worker, storeId, writers, freshClient }) => {
  for (const w of writers) expect(w.problems, `${w.clientId} saw problems`).toEqual([])

  const rows = await logRows(worker, storeId)
  const n = rows.length
  expect(rows.map((r) => r.seqNum), 'seqNums 1..n, each once, no gap').toEqual(Array.from({ length: n }, (_, i) => i + 1))
  expect(rows.map((r) => r.parentSeqNum), 'each event follows the previous one').toEqual(Array.from({ length: n }, (_, i) => i))

  const ids = rows.map((r) => JSON.parse(r.args).id)
  const counts = new Map()
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1)
  expect([...counts].filter(([, c]) => c > 1), 'no item stored twice').toEqual([])
  const generated = writers.flatMap((w) => w.generated)
  expect(new Set(ids), 'the log holds exactly the items the writers generated').toEqual(new Set(generated))

  let ackedEvents = 0
  for (const w of writers) {
    for (const [id, seqNum] of w.acked) {
      ackedEvents++
      const row = rows[seqNum - 1]
      expect({ id: JSON.parse(row.args).id, clientId: row.clientId }, `acked ${id} at seqNum ${seqNum}`).toEqual({ id, clientId: w.clientId })
    }
  }

  const fresh = eventsOf(await freshClient.pullAll()).map(normalizeEvent)
  const stored = rows.map((r) => normalizeEvent({ ...r, args: JSON.parse(r.args) }))
  expect(fresh, 'a fresh pull returns the stored log').toEqual(stored)
  for (const w of writers) {
    await waitFor(() => w.viewHead() >= n, `${w.clientId}'s live view to reach ${n}`, 60_000)
    expect(w.view().map(normalizeEvent), `${w.clientId}'s live view`).toEqual(fresh)
  }
  expect(await storedHead(worker, storeId), 'context_7 head = the log\'s last seqNum').toBe(n)

  return {
    events: n,
    ackedPushes: writers.reduce((s, w) => s + w.stats.ackedPushes, 0),
    ackedEvents,
    storedUnacked: writers.reduce((s, w) => s + w.storedUnacked.size, 0),
    serverAhead: writers.reduce((s, w) => s + w.stats.serverAhead, 0),
    transportFailures: writers.reduce((s, w) => s + w.stats.transportFailures, 0),
    liveRestarts: writers.reduce((s, w) => s + w.stats.liveRestarts, 0),
  }
}

// ---------------------------------------------------------------------------------------------
// Durable Streams

/** Creates a JSON stream at `path` (`/v1/stream/...`). */
export const createJsonStream = async (baseUrl, path) => {
  const res = await fetch(`${baseUrl}${path}`, { method: 'PUT', headers: { 'content-type': 'application/json' } })
  await res.arrayBuffer()
  if (res.status !== 201) throw new Error(`creating ${path}: ${res.status}`)
}

/** One append of `body` (JSON) by producer `id` at (epoch, seq); resolves with the response. */
export const producerAppend = (baseUrl, path, { id, epoch = 0, seq, body, timeoutMs = 30_000 }) =>
  fetch(`${baseUrl}${path}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'producer-id': id,
      'producer-epoch': String(epoch),
      'producer-seq': String(seq),
    },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  })

/** Every message of a JSON stream, following `stream-next-offset` until up to date. */
export const readJsonStream = async (baseUrl, path) => {
  const messages = []
  let offset = '-1'
  for (;;) {
    const res = await fetch(`${baseUrl}${path}?offset=${offset}`)
    if (res.status !== 200) throw new Error(`reading ${path} at ${offset}: ${res.status} ${await res.text()}`)
    messages.push(...(await res.json()))
    offset = res.headers.get('stream-next-offset')
    if (res.headers.get('stream-up-to-date') === 'true') return messages
  }
}

/**
 * `count` producers (`p0`…) appending `{p, seq}` to the JSON stream at `path`, each retrying a failed
 * request with the same (epoch, seq) until the server answers 200 or 204.
 */
export const startProducers = ({ baseUrl, path, count, paceMs = [10, 80] }) => {
  const stats = { appends: 0, acked: 0, duplicates: 0, transportFailures: 0, lastAckAt: 0 }
  const problems = []
  const ackedSeqs = new Map() // producer id → acknowledged seqs
  let generating = true
  const loops = Array.from({ length: count }, async (_, i) => {
    const id = `p${i}`
    ackedSeqs.set(id, [])
    for (let seq = 0; generating; seq++) {
      for (;;) {
        stats.appends++
        try {
          const res = await producerAppend(baseUrl, path, { id, seq, body: { p: id, seq } })
          await res.arrayBuffer()
          if (res.status === 200 || res.status === 204) {
            if (res.status === 204) stats.duplicates++
            if (res.headers.get('producer-seq') !== String(seq)) problems.push(`${id} seq ${seq}: answered producer-seq ${res.headers.get('producer-seq')}`)
            ackedSeqs.get(id).push(seq)
            stats.acked++
            stats.lastAckAt = Date.now()
            break
          }
          problems.push(`${id} seq ${seq}: unexpected ${res.status}`)
          await sleep(500)
        } catch {
          stats.transportFailures++
          await sleep(between(100, 400))
        }
      }
      await sleep(between(...paceMs))
    }
  })
  return {
    stats,
    problems,
    ackedSeqs,
    pushedSince: (mark) => stats.lastAckAt > mark,
    stop: async () => {
      generating = false
      await Promise.all(loops)
    },
  }
}

/** Every acknowledged append is in the stream exactly once, each producer's in seq order, no gap. */
export const verifyStream = async ({ baseUrl, path, producers, worker }) => {
  expect(producers.problems).toEqual([])
  const messages = await readJsonStream(baseUrl, path)
  const byProducer = new Map()
  for (const m of messages) {
    if (!byProducer.has(m.p)) byProducer.set(m.p, [])
    byProducer.get(m.p).push(m.seq)
  }
  for (const [id, seqs] of producers.ackedSeqs) {
    // each producer appends sequentially, so its messages are exactly its acknowledged seqs, in order
    expect(byProducer.get(id) ?? [], `${id}'s messages in the stream`).toEqual(seqs)
  }
  expect([...byProducer.keys()].sort()).toEqual([...producers.ackedSeqs.keys()].sort())
  // the stream object's own SQLite agrees: one row per message, producer state at the last seq
  const { rows } = await worker.doSql(path, { objectClass: 'StreamObject', sql: 'SELECT (SELECT COUNT(*) FROM ds_messages) AS messages, id, epoch, last_seq FROM ds_producers ORDER BY id' })
  expect(rows.map((r) => ({ id: r.id, last: r.last_seq }))).toEqual([...producers.ackedSeqs].map(([id, seqs]) => ({ id, last: seqs.at(-1) })))
  expect(rows[0]?.messages).toBe(messages.length)
  return { messages: messages.length, acked: producers.stats.acked, duplicates: producers.stats.duplicates }
}
