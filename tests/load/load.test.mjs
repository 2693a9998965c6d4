// Load (issue 6 §2): many concurrent WebSocket clients with live pulls on several stores, some of them
// pushing at once, against the real Worker under `wrangler dev` (loopback only, bounded in time).
//
// Who is who:
// - Pushers are REAL LiveStore clients (`makeWsSync` of @livestore/sync-cf 0.4.0, one Effect runtime
//   each), every one with its own live pull, pushing like the leader does (support/pusher.mjs): on top
//   of the head their live pull reached, rebasing after ServerAheadError.
// - All other clients are raw WebSockets speaking the same wire (support/load.mjs LiveSocket): one
//   live pull each, an Ack for every Chunk like the real client. A real client per socket would mean
//   a thousand Effect runtimes in one test process; the server cannot tell the two apart.
//
// What must hold (asserted): no Defect, no unexpected close, no failed push other than ServerAheadError;
// every client (raw and real) ends with the complete log of its store: the same seqNums in the same
// order, each once, and the same event content and createdAt as the rows read back from D1 / the DO's
// SQLite; on every store exactly one push wins each parent and every loser got ServerAheadError and
// then succeeded after rebasing; no uncaught error in the worker's log.
//
// What is printed (not asserted: the machine is shared): delivery latency p50/p99/max (push sent →
// event handled by a receiving raw socket, same clock), and the workerd memory per idle live socket:
// RSS of the worker's workerd processes before and after opening the idle sockets, divided by their
// number. wrangler dev runs two workerd processes: the runtime with the Worker and its Durable
// Objects ("user") and wrangler's dev proxy in front of it ("proxy"); both are reported.
//
// The real pushers ping every LOAD_PING_MS (default 10 min, so not during the run) instead of the
// client's default 10 s. The 0.4.0 client's ping watchdog runs on Effect's Schedule.fixed, which now
// and then runs twice 2–4 ms apart; the second run finds the first ping unanswered, raises OpenTimeout
// and reconnects silently, and every request in flight on the old connection (its live pull, a push)
// stays pending forever (livestore #1365, client side). At 10 s this strands a pusher in most 1,000-
// client runs; `LOAD_PING_MS=10000` shows it. load-contention.test.mjs reproduces it deterministically
// and RELIABILITY.md § Load explains it. The raw sockets do not ping (the server never needs it).
//
// Size: LOAD_CLIENTS clients on LOAD_STORES stores, LOAD_PUSHERS of them pushing LOAD_PUSHES batches
// of 1–3 events each. `make test` runs the defaults below; `make soak-load` runs 1,000 clients on 10
// stores with 50 pushers (see Makefile). Results of the last long run: RELIABILITY.md § Load.
// Diagnostics: LOAD_TRACE_WS=1 logs when and by whom each real client's socket was closed (in the
// progress file); LOAD_VIA=direct connects to the runtime's own port, bypassing wrangler's dev proxy.

import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientPool } from '../support/livestore-client.mjs'
import { LiveSocket, chainProblems, diffAgainstStored, latencySummary, mapLimit, runtimeEntryUrl, workerdRss } from '../support/load.mjs'
import { checkPushRaces, makeRebasingPusher } from '../support/pusher.mjs'
import { expectNoUncaughtErrors, sleep, storedRows, uniqueStoreId } from '../support/util.mjs'
import { E2E_STORAGE, ROOT, startWorker } from '../support/worker.mjs'

const envInt = (name, fallback) => {
  const v = process.env[name]
  if (v === undefined || v === '') return fallback
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, not ${v}`)
  return n
}

const CLIENTS = envInt('LOAD_CLIENTS', 200)
const STORES = envInt('LOAD_STORES', 4)
const PUSHERS = envInt('LOAD_PUSHERS', 20)
const PUSHES = envInt('LOAD_PUSHES', 8)
const OPEN_CONCURRENCY = envInt('LOAD_OPEN_CONCURRENCY', 50)
/** The longest any single wait may take before it counts as a hang/wedge. */
const WEDGE_MS = envInt('LOAD_WEDGE_MS', 120_000)
const TEST_TIMEOUT_MS = envInt('LOAD_TIMEOUT_MS', 15 * 60_000)
/** The real clients' ping interval (ms); see the note on the 0.4.0 pinger above. */
const PING_MS = envInt('LOAD_PING_MS', 10 * 60_000)
/** LOAD_VIA=direct connects to the runtime's own port instead of through wrangler's dev proxy. */
const VIA = process.env.LOAD_VIA ?? 'proxy'

if (PUSHERS + STORES > CLIENTS) throw new Error('LOAD_CLIENTS must cover the pushers and one idle socket per store')

// LOAD_TRACE_WS=1: trace the real clients' sockets (they use globalThis.WebSocket, set to ws's class by
// livestore-client.mjs): when each was opened, its pings and pongs, and who closed it when.
const traced = []
if (process.env.LOAD_TRACE_WS) {
  const Base = globalThis.WebSocket
  globalThis.WebSocket = class TracedWebSocket extends Base {
    constructor(...args) {
      super(...args)
      const rec = { url: String(args[0]).replace(/^.*storeId=([^&]*).*$/, '$1'), created: Date.now(), pings: 0, pongs: 0, frames: 0 }
      this.rec = rec
      traced.push(rec)
      this.on('open', () => (rec.opened = Date.now()))
      this.on('message', (d) => {
        rec.frames++
        rec.lastFrame = Date.now()
        if (String(d) === '{"_tag":"Pong"}') {
          rec.pongs++
          rec.lastPong = Date.now()
        }
      })
      this.on('close', (code, reason) => (rec.closed = { at: Date.now(), code, reason: String(reason) }))
    }
    send(data, ...rest) {
      const id = typeof data === 'string' ? data.match(/"_tag":"Request","id":"(\d+)"/)?.[1] : undefined
      if (id) (this.rec.ids ??= []).push(id)
      if (data === '{"_tag":"Ping"}') {
        this.rec.pings++
        this.rec.lastPing = Date.now()
      }
      return super.send(data, ...rest)
    }
    close(code, reason) {
      const now = Date.now()
      // the first call tells who closed; ws calls close() again itself when the peer's close frame arrives
      if (!this.rec.closeCalled) this.rec.closeCalled = { at: now, code, reason: reason === undefined ? undefined : String(reason), closeFrameReceived: this._closeFrameReceived, stack: new Error().stack.split('\n').slice(2, 7).map((l) => l.trim().replace(/^at /, '').replace(/\(.*node_modules\//, '(')).join(' < '), sinceFrame: now - (this.rec.lastFrame ?? now), sincePing: now - (this.rec.lastPing ?? now), pings: this.rec.pings, pongs: this.rec.pongs }
      return super.close(code, reason)
    }
  }
}

let worker
let baseUrl
const clients = clientPool()
const sockets = []

beforeAll(async () => {
  worker = await startWorker({ name: `load-${E2E_STORAGE}` })
  baseUrl = VIA === 'direct' ? await runtimeEntryUrl(worker) : worker.url
})

afterAll(async () => {
  await Promise.all(sockets.map((s) => s.closeAndWait()))
  await clients.closeAll()
  await worker?.stop()
})

/** RSS after letting the runtime settle (two samples 1 s apart, the later one). */
const settledRss = async () => {
  await sleep(2_000)
  workerdRss(worker)
  await sleep(1_000)
  return workerdRss(worker)
}

const mb = (kb) => (kb / 1024).toFixed(1)

// Progress goes to a file as it happens (vitest shows console output only at the end of a test).
const progressFile = path.join(ROOT, '.wrangler', 'test-logs', `load-progress-${E2E_STORAGE}.log`)
let progressStart = Date.now()
const progress = (message) => {
  fs.mkdirSync(path.dirname(progressFile), { recursive: true })
  fs.appendFileSync(progressFile, `${((Date.now() - progressStart) / 1000).toFixed(1).padStart(7)} s  ${message}\n`)
}

describe(`load (${E2E_STORAGE}): ${CLIENTS} WebSocket clients on ${STORES} stores, ${PUSHERS} pushing`, () => {
  test('no errors; every client ends with its store’s complete log; one push wins each parent', async () => {
    const logOffset = worker.logOffset()
    const t0 = Date.now()
    progressStart = t0
    fs.writeFileSync(progressFile, `load (${E2E_STORAGE}): ${CLIENTS} clients, ${STORES} stores, ${PUSHERS} pushers × ${PUSHES} batches\n`)
    const stores = Array.from({ length: STORES }, (_, i) => uniqueStoreId(`load-${i}`))
    const storeOf = (i) => stores[i % STORES]

    // 1. a warm-up group of sockets (at least one per store, which creates its Durable Object), so that
    //    the baseline memory already includes the objects and warmed-up code paths
    const rawCount = CLIENTS - PUSHERS
    const warmCount = Math.min(rawCount, Math.max(STORES, Math.floor(rawCount / 10)))
    const openRaw = (from, to, concurrency) =>
      mapLimit(to - from, concurrency, async (j) => {
        const i = from + j
        const s = await LiveSocket.open(baseUrl, storeOf(i), { label: `raw-${i}`, timeoutMs: WEDGE_MS })
        sockets.push(s)
        await s.waitCaughtUp(WEDGE_MS)
        return s
      })
    await openRaw(0, STORES, 1)
    await openRaw(STORES, warmCount, OPEN_CONCURRENCY)
    const rssBefore = await settledRss()
    progress(`${warmCount} warm-up sockets open; RSS ${JSON.stringify(rssBefore)}`)

    // 2. the idle crowd: raw live sockets, opened OPEN_CONCURRENCY at a time
    //    (in two halves: the second half's growth is the marginal cost, without one-time growth)
    const idleSockets = rawCount - warmCount
    const half = warmCount + Math.floor(idleSockets / 2)
    const tOpen = Date.now()
    await openRaw(warmCount, half, OPEN_CONCURRENCY)
    let openMs = Date.now() - tOpen
    const rssHalf = await settledRss()
    const tOpen2 = Date.now()
    await openRaw(half, rawCount, OPEN_CONCURRENCY)
    openMs += Date.now() - tOpen2
    const rssIdle = await settledRss()
    progress(`${idleSockets} idle sockets open in ${openMs} ms; RSS halfway ${JSON.stringify(rssHalf)}, after ${JSON.stringify(rssIdle)}`)

    // 3. the pushers: real makeWsSync clients with live pulls
    const pushers = await mapLimit(PUSHERS, 10, async (i) => {
      const client = await clients.open({ url: `${baseUrl}/sync`, storeId: storeOf(i), clientId: `pusher-${i}`, pingInterval: PING_MS })
      return makeRebasingPusher({ client, label: `pusher-${i}`, wedgeMs: WEDGE_MS })
    })

    progress(`${PUSHERS} pushers connected with live pulls`)

    // 4. everybody pushes at once: PUSHES batches of 1–3 events each
    const tPush = Date.now()
    let batchesDone = 0
    // event-loop lag of this process and silent reconnects of the real clients, sampled
    let lagMax = 0
    let lagLast = Date.now()
    const lagTimer = setInterval(() => {
      const now = Date.now()
      lagMax = Math.max(lagMax, now - lagLast - 100)
      lagLast = now
    }, 100)
    const wasConnected = pushers.map(() => true)
    let disconnects = 0
    const connTimer = setInterval(async () => {
      const states = await Promise.all(pushers.map((p) => p.client.isConnected()))
      states.forEach((c, i) => {
        if (wasConnected[i] && !c) disconnects++
        wasConnected[i] = c
      })
    }, 250)
    const ticker = setInterval(async () => {
      progress(`  event-loop lag max so far ${lagMax} ms; real-client disconnects seen ${disconnects}`)
      for (const rec of traced.filter((r) => r.closeCalled && !r.reported)) {
        rec.reported = true
        progress(`  real client socket closed by the client: ${JSON.stringify({ ...rec, created: undefined })}`)
      }
      const connected = (await Promise.all(pushers.map((p) => p.client.isConnected()))).filter(Boolean).length
      const serverAhead = pushers.reduce((a, p) => a + p.attempts.filter((x) => !x.ok).length, 0)
      progress(`pushing: ${batchesDone} of ${PUSHERS * PUSHES} batches accepted, ${serverAhead} ServerAheadError, ${connected}/${PUSHERS} pushers connected`)
    }, 5_000)
    try {
      await Promise.all(
        pushers.map(async (pusher, i) => {
          for (let k = 0; k < PUSHES; k++) {
            const size = ((i * 7 + k * 3) % 3) + 1
            await pusher.pushBatch(Array.from({ length: size }, (_, j) => ({ tag: `p${i}-b${k}-e${j}` })))
            batchesDone++
          }
        }),
      )
    } finally {
      clearInterval(ticker)
      clearInterval(lagTimer)
      clearInterval(connTimer)
    }
    const pushMs = Date.now() - tPush
    progress(`all ${batchesDone} batches accepted in ${pushMs} ms`)

    // 5. every raw socket reaches the head of its store (what the accepted pushes add up to) ...
    const headOf = new Map(stores.map((storeId) => [storeId, 0]))
    pushers.forEach((p, i) => {
      for (const a of p.attempts) if (a.ok) headOf.set(storeOf(i), headOf.get(storeOf(i)) + a.size)
    })
    await Promise.all(sockets.map((s) => s.waitForHead(headOf.get(s.storeId), WEDGE_MS)))
    const deliveredMs = Date.now() - tPush
    progress(`every socket has every event (${deliveredMs} ms after the first push)`)
    // ... which is the stored log, read back from D1 / the DO's SQLite
    const rowsByStore = new Map()
    for (const storeId of stores) {
      const rows = await storedRows(worker, storeId)
      expect(chainProblems(rows), `stored chain of ${storeId}`).toEqual([])
      expect(rows.length, `stored events of ${storeId}`).toBe(headOf.get(storeId))
      rowsByStore.set(storeId, rows)
    }

    // 6. the complete log everywhere, and nothing went wrong on any socket
    const failures = sockets.filter((s) => s.failures.length > 0).map((s) => `${s.label}: ${s.failures.join('; ')}`)
    expect(failures.slice(0, 10), `${failures.length} sockets failed`).toEqual([])
    let compared = 0
    for (const s of sockets) {
      const diffs = diffAgainstStored(s.events, rowsByStore.get(s.storeId))
      expect(diffs, `${s.label} (${s.storeId})`).toEqual([])
      compared++
    }
    for (const [i, pusher] of pushers.entries()) {
      const diffs = diffAgainstStored(pusher.live.events(), rowsByStore.get(storeOf(i)))
      expect(diffs, `pusher-${i} (${storeOf(i)})`).toEqual([])
      compared++
    }
    expect(compared).toBe(CLIENTS)

    // 7. the push races: one winner per parent, losers rebased and succeeded
    let accepted = 0
    let rejected = 0
    let contested = 0
    for (const [s, storeId] of stores.entries()) {
      const mine = pushers.filter((_, i) => i % STORES === s).map((p) => p.attempts)
      const check = checkPushRaces(mine, rowsByStore.get(storeId))
      expect(check.problems, `push races on ${storeId}`).toEqual([])
      accepted += check.accepted
      rejected += check.rejected
      contested += check.contestedParents
    }
    expect(accepted).toBe(PUSHERS * PUSHES)

    await expectNoUncaughtErrors(worker, logOffset)

    // 8. figures
    const latencies = []
    for (const s of sockets) for (const e of s.events) if (e.live) latencies.push(e.receivedAt - e.args.sentAt)
    const lat = latencySummary(latencies)
    const events = [...rowsByStore.values()].reduce((a, rows) => a + rows.length, 0)
    const deliveries = sockets.reduce((a, s) => a + s.events.length, 0)
    const chunks = sockets.reduce((a, s) => a + s.chunks, 0)
    const perSocket = (kb, n = idleSockets) => ((kb * 1024) / n / 1024).toFixed(1)
    const secondHalf = rawCount - half
    const result = {
      at: new Date().toISOString(),
      storage: E2E_STORAGE,
      clients: CLIENTS,
      stores: STORES,
      pushers: PUSHERS,
      pushesPerPusher: PUSHES,
      events,
      acceptedPushes: accepted,
      serverAheadErrors: rejected,
      contestedParents: contested,
      rawDeliveries: deliveries,
      rawChunks: chunks,
      latencyMs: lat,
      openIdleMs: openMs,
      pushPhaseMs: pushMs,
      allDeliveredMs: deliveredMs,
      totalMs: Date.now() - t0,
      idleSockets,
      rssKb: { before: rssBefore, half: rssHalf, idle: rssIdle },
      kbPerIdleSocket: {
        user: Number(perSocket(rssIdle.user - rssBefore.user)),
        proxy: Number(perSocket(rssIdle.proxy - rssBefore.proxy)),
        total: Number(perSocket(rssIdle.total - rssBefore.total)),
      },
      kbPerIdleSocketSecondHalf: {
        user: Number(perSocket(rssIdle.user - rssHalf.user, secondHalf)),
        proxy: Number(perSocket(rssIdle.proxy - rssHalf.proxy, secondHalf)),
        total: Number(perSocket(rssIdle.total - rssHalf.total, secondHalf)),
      },
    }
    const lines = [
      `load (${E2E_STORAGE}): ${CLIENTS} clients (${CLIENTS - PUSHERS} raw, ${PUSHERS} real makeWsSync pushers) on ${STORES} stores`,
      `  ${events} events stored from ${accepted} accepted pushes; ${rejected} ServerAheadError (rebased and retried) on ${contested} contested parents`,
      `  ${deliveries} events delivered to raw sockets in ${chunks} chunks (all Acked); every client holds its store's complete log`,
      `  delivery latency (push sent → raw socket handled it), n=${lat.n}: p50 ${lat.p50} ms, p99 ${lat.p99} ms, max ${lat.max} ms`,
      `  opening ${idleSockets} idle live sockets took ${openMs} ms; pushes took ${pushMs} ms; every socket had every event ${deliveredMs} ms after the first push`,
      `  workerd RSS before / halfway / after ${idleSockets} idle sockets: user ${mb(rssBefore.user)} → ${mb(rssHalf.user)} → ${mb(rssIdle.user)} MB, ` +
        `proxy ${mb(rssBefore.proxy)} → ${mb(rssHalf.proxy)} → ${mb(rssIdle.proxy)} MB`,
      `  memory per idle live socket: ${result.kbPerIdleSocket.user} kB in the runtime (user), ${result.kbPerIdleSocket.proxy} kB in the dev proxy ` +
        `(${result.kbPerIdleSocket.total} kB together); second half alone: ${result.kbPerIdleSocketSecondHalf.user} kB runtime, ` +
        `${result.kbPerIdleSocketSecondHalf.proxy} kB proxy`,
    ]
    console.log(lines.join('\n'))
    const outDir = path.join(ROOT, '.wrangler', 'test-logs')
    fs.mkdirSync(outDir, { recursive: true })
    fs.writeFileSync(path.join(outDir, `load-${E2E_STORAGE}-${CLIENTS}.json`), `${JSON.stringify(result, null, 2)}\n`)
  }, TEST_TIMEOUT_MS)
})
