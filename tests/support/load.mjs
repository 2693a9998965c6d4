// Helpers for the load tests (test/load*.test.mjs): lean raw live-pull sockets that speak the
// Effect-3 RPC wire of @livestore/sync-cf 0.4.0 (docs §3.2–3.4) and Ack every Chunk like the real
// client, a rebasing pusher around the real makeWsSync client, percentiles, bounded concurrency,
// and the memory of the workerd processes of a `wrangler dev` started by worker.mjs.
//
// RawSocket (raw-ws.mjs) keeps every frame and re-scans them on each one, which is right for protocol
// tests and too heavy for a thousand sockets; LiveSocket keeps only the decoded events.

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import { WebSocket } from 'ws'
import { newRequestId, pullRequest, pushRequest, wsSyncUrl } from './raw-ws.mjs'

export { wsSyncUrl }

/** One decoded event as a live socket records it, with the time its frame was handled. */
const recordOf = (item, receivedAt, live) => ({
  ...item.eventEncoded,
  createdAt: item.metadata?._tag === 'Some' ? item.metadata.value.createdAt : undefined,
  receivedAt,
  live,
})

/**
 * A raw WebSocket with one live pull (`SyncWsRpc.Pull`, live: true) that records every event it
 * receives and Acks every Chunk of the pull. Anything unexpected (a Defect, an Exit of the live pull,
 * a Chunk that breaks the chain, a close we did not ask for) is kept in `failures`.
 */
export class LiveSocket {
  /**
   * Opens the socket and starts the live pull (from `cursor`, a seqNum, or from the start).
   * Resolves once the socket is open and the pull request was sent.
   */
  static open(baseUrl, storeId, { timeoutMs = 30_000, cursor, backendId, payload, label } = {}) {
    const extra = payload === undefined ? {} : { payload: encodeURIComponent(JSON.stringify(payload)) }
    const url = wsSyncUrl(baseUrl, storeId, extra)
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false })
      const timer = setTimeout(() => {
        ws.terminate()
        reject(new Error(`LiveSocket ${label ?? storeId}: not open within ${timeoutMs} ms`))
      }, timeoutMs)
      ws.once('open', () => {
        clearTimeout(timer)
        const socket = new LiveSocket(ws, storeId, label)
        socket.startLive(cursor, backendId)
        resolve(socket)
      })
      ws.once('unexpected-response', (_req, res) => {
        clearTimeout(timer)
        reject(new Error(`LiveSocket ${label ?? storeId}: upgrade rejected with HTTP ${res.statusCode}`))
      })
      ws.once('error', (e) => {
        clearTimeout(timer)
        reject(e)
      })
    })
  }

  constructor(ws, storeId, label) {
    this.ws = ws
    this.storeId = storeId
    this.label = label ?? storeId
    /** Events in the order received. */
    this.events = []
    /** Number of Chunk frames of the live pull received (= Acks sent). */
    this.chunks = 0
    this.backendId = undefined
    /** The first page (catch-up done, NoMore seen) has arrived. */
    this.caughtUp = false
    this.failures = []
    this.closeInfo = undefined
    this.closing = false
    this.pending = new Map()
    this.waiters = new Set()
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary))
    ws.on('close', (code, reason) => {
      this.closeInfo = { code, reason: reason.toString('utf8') }
      if (!this.closing) this.failures.push(`socket closed by the server (${code} ${this.closeInfo.reason})`)
      for (const { reject } of this.pending.values()) reject(new Error(`${this.label}: socket closed (${code})`))
      this.pending.clear()
      this.notify()
    })
    ws.on('error', (e) => {
      if (!this.closing) this.failures.push(`socket error: ${e.message}`)
    })
  }

  get head() {
    return this.events.length === 0 ? this.cursor ?? 0 : this.events.at(-1).seqNum
  }

  startLive(cursor, backendId) {
    this.cursor = cursor ?? 0
    this.pullId = newRequestId()
    const at = cursor === undefined ? undefined : { backendId, eventSequenceNumber: cursor }
    this.ws.send(JSON.stringify(pullRequest(this.pullId, this.storeId, { live: true, cursor: at })))
  }

  onFrame(data, isBinary) {
    const receivedAt = Date.now()
    if (isBinary) {
      this.failures.push('binary frame')
      return
    }
    let frame
    try {
      frame = JSON.parse(data.toString('utf8'))
    } catch {
      this.failures.push(`unparseable frame: ${data.toString('utf8').slice(0, 200)}`)
      return
    }
    switch (frame._tag) {
      case 'Chunk': {
        if (frame.requestId !== this.pullId) {
          this.failures.push(`Chunk for unknown request ${frame.requestId}`)
          return
        }
        // Ack like the real client (one per Chunk of a known stream)
        this.ws.send(JSON.stringify({ _tag: 'Ack', requestId: frame.requestId }))
        this.chunks++
        for (const value of frame.values) {
          if (this.backendId === undefined) this.backendId = value.backendId
          else if (value.backendId !== this.backendId) this.failures.push(`backendId changed: ${value.backendId}`)
          for (const item of value.batch) {
            const record = recordOf(item, receivedAt, this.caughtUp)
            const expected = this.head + 1
            if (record.seqNum !== expected || record.parentSeqNum !== expected - 1) {
              this.failures.push(`chain broken: got seqNum ${record.seqNum} (parent ${record.parentSeqNum}) after ${this.head}`)
            }
            this.events.push(record)
          }
          if (value.pageInfo?._tag === 'NoMore') this.caughtUp = true
        }
        this.notify()
        return
      }
      case 'Exit': {
        const waiter = this.pending.get(frame.requestId)
        if (waiter) {
          this.pending.delete(frame.requestId)
          waiter.resolve(frame.exit)
        } else if (frame.requestId === this.pullId) {
          this.failures.push(`live pull ended: ${JSON.stringify(frame.exit).slice(0, 300)}`)
          this.notify()
        }
        return
      }
      case 'Defect':
        this.failures.push(`Defect: ${JSON.stringify(frame.defect).slice(0, 300)}`)
        this.notify()
        return
      case 'Pong':
        return
      default:
        this.failures.push(`unexpected frame: ${JSON.stringify(frame).slice(0, 200)}`)
    }
  }

  notify() {
    for (const w of [...this.waiters]) w()
  }

  /** Resolves once `predicate()` holds; rejects on a failure or after `timeoutMs`. */
  waitFor(predicate, what, timeoutMs = 60_000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (predicate()) {
          done()
          resolve()
        } else if (this.failures.length > 0) {
          done()
          reject(new Error(`${this.label}: ${this.failures.join('; ')}`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${what} (head ${this.head}, ${this.events.length} events)`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        this.waiters.delete(check)
      }
      this.waiters.add(check)
      check()
    })
  }

  waitForHead(seqNum, timeoutMs) {
    return this.waitFor(() => this.head >= seqNum, `head ${seqNum}`, timeoutMs)
  }

  waitCaughtUp(timeoutMs) {
    return this.waitFor(() => this.caughtUp, 'the end of the catch-up (NoMore)', timeoutMs)
  }

  /** Sends a raw push on this socket; resolves with its Exit (`{_tag:'Success'…}` or `{_tag:'Failure'…}`). */
  push(batch, { backendId = this.backendId, timeoutMs = 60_000 } = {}) {
    const id = newRequestId()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`${this.label}: no Exit for push ${id} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, {
        resolve: (exit) => {
          clearTimeout(timer)
          resolve(exit)
        },
        reject: (e) => {
          clearTimeout(timer)
          reject(e)
        },
      })
      this.ws.send(JSON.stringify(pushRequest(id, this.storeId, batch, backendId)))
    })
  }

  close() {
    this.closing = true
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close()
  }

  /** Resolves once the socket is closed (closing it first). */
  closeAndWait(timeoutMs = 10_000) {
    this.close()
    if (this.closeInfo || this.ws.readyState === WebSocket.CLOSED) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.ws.terminate()
        resolve()
      }, timeoutMs)
      this.ws.once('close', () => {
        clearTimeout(timer)
        resolve()
      })
    })
  }
}

/** Runs `fn(i)` for i in [0, n) with at most `concurrency` at a time; resolves with the results in order. */
export const mapLimit = async (n, concurrency, fn) => {
  const results = new Array(n)
  let next = 0
  const worker = async () => {
    while (next < n) {
      const i = next++
      results[i] = await fn(i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker))
  return results
}

/** The p-th percentile (0–100, nearest rank) of numbers (sorted in place). */
export const percentile = (values, p) => {
  if (values.length === 0) return NaN
  values.sort((a, b) => a - b)
  const rank = Math.min(values.length - 1, Math.max(0, Math.ceil((p / 100) * values.length) - 1))
  return values[rank]
}

/** { n, p50, p99, max } of a list of latencies (ms). */
export const latencySummary = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  return { n: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? NaN }
}

// ------------------------------------------------------------------------------------------------
// workerd memory

const readProc = (pid, file) => {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, 'utf8')
  } catch {
    return undefined
  }
}

const statFields = (pid) => {
  const stat = readProc(pid, 'stat')
  if (!stat) return undefined
  // fields after "pid (comm) ": state ppid pgrp …
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { ppid: Number(rest[1]), pgid: Number(rest[2]) }
}

/**
 * The workerd processes of a worker started by worker.mjs (found through the process group of its
 * `wrangler dev --port <port> --persist-to <dir>`), each { pid, role, rssKb }: `role` is `user` for
 * the runtime that runs the Worker and its Durable Objects (started with --inspector-addr) and `proxy`
 * for wrangler's dev proxy in front of it, which holds the client side of every connection too.
 */
export const workerdProcesses = (worker) => {
  const pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))
  let pgid
  for (const pid of pids) {
    const argv = (readProc(pid, 'cmdline') ?? '').split('\0')
    const i = argv.indexOf('--port')
    if (argv.includes('dev') && i !== -1 && argv[i + 1] === String(worker.port) && argv.includes(worker.persistDir)) {
      pgid = statFields(pid)?.pgid
      if (pgid !== undefined) break
    }
  }
  if (pgid === undefined) throw new Error(`no wrangler dev process for port ${worker.port}`)
  const out = []
  for (const pid of pids) {
    if (statFields(pid)?.pgid !== pgid) continue
    const argv = (readProc(pid, 'cmdline') ?? '').split('\0')
    if (!argv[0]?.endsWith('/workerd')) continue
    const rssKb = Number((readProc(pid, 'status') ?? '').match(/VmRSS:\s+(\d+)/)?.[1] ?? NaN)
    out.push({ pid: Number(pid), role: argv.some((a) => a.startsWith('--inspector-addr')) ? 'user' : 'proxy', rssKb })
  }
  if (!out.some((p) => p.role === 'user')) throw new Error(`no workerd runtime in process group ${pgid}: ${JSON.stringify(out)}`)
  return out
}

/** RSS in kB of the worker's workerd processes: { user, proxy, total }. */
export const workerdRss = (worker) => {
  const procs = workerdProcesses(worker)
  const sum = (role) => procs.filter((p) => role === undefined || p.role === role).reduce((a, p) => a + p.rssKb, 0)
  return { user: sum('user'), proxy: sum('proxy'), total: sum() }
}

// ------------------------------------------------------------------------------------------------
// the stored log and the logs clients saw

/**
 * Compares the events a client received with the stored rows of its store: same seqNums in the
 * same order (each exactly once), same parent, name, args, clientId, sessionId and createdAt.
 * Returns a list of differences (empty when equal); stops after `limit` differences.
 */
export const diffAgainstStored = (received, rows, { limit = 5, checkCreatedAt = true } = {}) => {
  const diffs = []
  if (received.length !== rows.length) diffs.push(`${received.length} events received, ${rows.length} stored`)
  const n = Math.min(received.length, rows.length)
  for (let i = 0; i < n && diffs.length < limit; i++) {
    const got = received[i]
    const row = rows[i]
    const want = {
      seqNum: row.seqNum,
      parentSeqNum: row.parentSeqNum,
      name: row.name,
      args: row.args === null ? null : JSON.parse(row.args),
      clientId: row.clientId,
      sessionId: row.sessionId,
    }
    const have = {
      seqNum: got.seqNum,
      parentSeqNum: got.parentSeqNum,
      name: got.name,
      args: got.args === undefined ? null : got.args,
      clientId: got.clientId,
      sessionId: got.sessionId,
    }
    if (JSON.stringify(have) !== JSON.stringify(want)) diffs.push(`#${i}: got ${JSON.stringify(have)}, stored ${JSON.stringify(want)}`)
    else if (checkCreatedAt && got.createdAt !== undefined && got.createdAt !== row.createdAt) {
      diffs.push(`#${i} (seqNum ${row.seqNum}): createdAt ${got.createdAt}, stored ${row.createdAt}`)
    }
  }
  return diffs
}

/**
 * Checks a stored log is one chain 1..n (parent = seqNum - 1). Returns the differences.
 */
export const chainProblems = (rows) => {
  const problems = []
  rows.forEach((row, i) => {
    if (row.seqNum !== i + 1 || row.parentSeqNum !== i) problems.push(`row ${i}: seqNum ${row.seqNum}, parent ${row.parentSeqNum}`)
  })
  return problems.slice(0, 5)
}

/**
 * http:// URL of the worker's runtime itself, bypassing wrangler's dev proxy: the first TCP port the
 * `user` workerd listens on that answers `GET /` with the sync Worker's info text (found with `ss`).
 */
export const runtimeEntryUrl = async (worker) => {
  const user = workerdProcesses(worker).find((p) => p.role === 'user')
  const listening = execFileSync('ss', ['-ltnpH']).toString().split('\n')
  const ports = listening.filter((l) => l.includes(`pid=${user.pid},`)).map((l) => l.trim().split(/\s+/)[3].split(':').pop())
  for (const port of ports) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(5_000) })
      if (res.status === 200 && (await res.text()).startsWith('Info:')) return `http://127.0.0.1:${port}`
    } catch {}
  }
  throw new Error(`no port of workerd ${user.pid} answers like the sync Worker (ports ${ports.join(', ')})`)
}
