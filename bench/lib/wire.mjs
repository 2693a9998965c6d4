// A lean load-generating client for the @livestore/sync-cf 0.4.0 wire protocol (Effect-3 RPC JSON
// frames over WebSocket, one POST per RPC over HTTP; see docs and tests/support/raw-*.mjs).
// It does what the real client does on the wire (string request ids, an Ack for every Chunk,
// backendId in pushes once known) and nothing else, so that it is not the bottleneck.

import { WebSocket } from 'ws'

let nextId = 0
/** Effect 3 request ids: decimal strings, unique in this process. */
export const newId = () => String(nextId++)

export const wsUrl = (baseUrl, storeId) =>
  `${baseUrl.replace(/^http/, 'ws')}/sync?${new URLSearchParams({ storeId, transport: 'ws' })}`

export const httpUrl = (baseUrl, storeId) => `${baseUrl}/sync?${new URLSearchParams({ storeId, transport: 'http' })}`

const option = (value) => (value === undefined ? { _tag: 'None' } : { _tag: 'Some', value })

export const wsPull = (id, storeId, { live = false, cursor } = {}) =>
  JSON.stringify({ _tag: 'Request', id, tag: 'SyncWsRpc.Pull', payload: { storeId, live, cursor: option(cursor) }, headers: [] })

export const wsPush = (id, storeId, batch, backendId) =>
  JSON.stringify({ _tag: 'Request', id, tag: 'SyncWsRpc.Push', payload: { storeId, batch, backendId: option(backendId) }, headers: [] })

export const httpPull = (id, storeId, cursor) =>
  JSON.stringify({ _tag: 'Request', id, tag: 'SyncHttpRpc.Pull', payload: { storeId, cursor: option(cursor) }, headers: [] })

const ARGS_TEXT = 'x'.repeat(80)
/** Events `from..to` with ~100-byte args ({"id":"t<seq>","text":"xxx…"}), parent chain from `from - 1`. */
export const makeEvents = (from, to, clientId = 'bench-client', sessionId = 'bench-session') => {
  const events = []
  for (let seqNum = from; seqNum <= to; seqNum++) {
    events.push({ name: 'todoCreated-v1', args: { id: `t${seqNum}`, text: ARGS_TEXT }, seqNum, parentSeqNum: seqNum - 1, clientId, sessionId })
  }
  return events
}

const describeExit = (exit) => JSON.stringify(exit).slice(0, 400)

/**
 * One sync WebSocket. Frames are dispatched by requestId to the handler registered for that
 * request; every Chunk for a known request is Acked right away, as the real client does.
 */
export class Conn {
  static open(url, { timeoutMs = 30_000 } = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false })
      const timer = setTimeout(() => {
        ws.terminate()
        reject(new Error(`WebSocket to ${url} did not open within ${timeoutMs} ms`))
      }, timeoutMs)
      ws.once('open', () => {
        clearTimeout(timer)
        resolve(new Conn(ws))
      })
      ws.once('unexpected-response', (_req, res) => {
        clearTimeout(timer)
        reject(new Error(`WebSocket upgrade rejected with HTTP ${res.statusCode}`))
        ws.terminate()
      })
      ws.on('error', (e) => {
        clearTimeout(timer)
        reject(e)
      })
    })
  }

  constructor(ws) {
    this.ws = ws
    /** requestId → { onChunk(values, frameText, receivedAt), onExit(exit) } */
    this.handlers = new Map()
    this.closed = false
    this.error = undefined
    ws.on('message', (data) => this.onMessage(data))
    ws.on('close', (code) => {
      this.closed = true
      for (const h of this.handlers.values()) h.onClose?.(code)
    })
    ws.on('error', (e) => {
      this.error = e
    })
  }

  onMessage(data) {
    const receivedAt = performance.now()
    const text = data.toString()
    let frame
    try {
      frame = JSON.parse(text)
    } catch {
      const failure = new Error(`a frame that is not JSON: ${text.slice(0, 200)}`)
      for (const h of this.handlers.values()) h.onDefect?.(failure)
      return
    }
    if (frame._tag === 'Chunk') {
      const h = this.handlers.get(frame.requestId)
      if (h === undefined) return
      this.ws.send(h.ack)
      h.onChunk(frame.values, receivedAt, text.length)
    } else if (frame._tag === 'Exit') {
      const h = this.handlers.get(frame.requestId)
      if (h === undefined) return
      this.handlers.delete(frame.requestId)
      h.onExit(frame.exit, receivedAt)
    } else if (frame._tag === 'Defect') {
      const failure = new Error(`Defect frame: ${text.slice(0, 400)}`)
      for (const h of this.handlers.values()) h.onDefect?.(failure)
    }
  }

  /** Registers handlers for request `id` and sends `frame`. */
  send(id, frame, handlers) {
    this.handlers.set(id, { ack: `{"_tag":"Ack","requestId":${JSON.stringify(id)}}`, onChunk() {}, onExit() {}, ...handlers })
    this.ws.send(frame)
  }

  /**
   * A non-live pull from `cursor` to its Exit. `onPage(pullResponse, receivedAt)` sees every page.
   * Resolves { pages, events, backendId, lastSeqNum, noMore }; rejects on a failure Exit, a Defect,
   * a close or `timeoutMs`.
   */
  pull(storeId, { cursor, live = false, onPage, timeoutMs = 60_000 } = {}) {
    const id = newId()
    return new Promise((resolve, reject) => {
      const result = { id, pages: 0, events: 0, backendId: undefined, lastSeqNum: cursor?.eventSequenceNumber ?? 0, noMore: false }
      const timer = timeoutMs === Infinity ? undefined : setTimeout(() => fail(new Error(`pull timed out after ${timeoutMs} ms`)), timeoutMs)
      const fail = (e) => {
        clearTimeout(timer)
        this.handlers.delete(id)
        // after a live pull caught up, a later failure (a gap, a close) is kept for the caller
        if (result.caughtUp) result.error ??= e
        else reject(e)
      }
      this.send(id, wsPull(id, storeId, { live, cursor }), {
        onChunk: (values, receivedAt) => {
          for (const page of values) {
            result.pages++
            result.backendId = page.backendId
            for (const { eventEncoded } of page.batch) {
              if (eventEncoded.seqNum !== result.lastSeqNum + 1) {
                return fail(new Error(`pull: got seqNum ${eventEncoded.seqNum} after ${result.lastSeqNum}`))
              }
              result.lastSeqNum = eventEncoded.seqNum
              result.events++
            }
            result.noMore = page.pageInfo._tag === 'NoMore'
            onPage?.(page, receivedAt)
            // a live pull's catch-up ends with its NoMore page (no Exit follows)
            if (live && result.noMore && !result.caughtUp) {
              result.caughtUp = true
              clearTimeout(timer)
              resolve(result)
            }
          }
        },
        onExit: (exit) => {
          clearTimeout(timer)
          if (exit._tag !== 'Success') return reject(new Error(`pull failed: ${describeExit(exit)}`))
          if (!result.noMore) return reject(new Error('pull ended without a NoMore page'))
          resolve(result)
        },
        onDefect: fail,
        onClose: (code) => fail(new Error(`socket closed (${code}) during pull`)),
      })
      result.cancel = () => fail(new Error('pull cancelled'))
    })
  }

  /** A live pull: resolves once caught up (its NoMore page); `onPage` keeps receiving broadcasts. */
  livePull(storeId, opts = {}) {
    return this.pull(storeId, { ...opts, live: true })
  }

  /** Pushes a batch; resolves with the time of the ack, rejects on a failure Exit. */
  push(storeId, batch, backendId, { timeoutMs = 60_000 } = {}) {
    const id = newId()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.handlers.delete(id)
        reject(new Error(`push timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.send(id, wsPush(id, storeId, batch, backendId), {
        onExit: (exit, receivedAt) => {
          clearTimeout(timer)
          if (exit._tag !== 'Success') reject(new Error(`push of ${batch[0]?.seqNum}… failed: ${describeExit(exit)}`))
          else resolve(receivedAt)
        },
        onDefect: (e) => {
          clearTimeout(timer)
          reject(e)
        },
        onClose: (code) => {
          clearTimeout(timer)
          reject(new Error(`socket closed (${code}) during push`))
        },
      })
    })
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close()
  }

  terminate() {
    this.ws.terminate()
  }
}

/** Opens `n` sockets, at most `parallel` handshakes at a time. */
export const openMany = async (url, n, { parallel = 50 } = {}) => {
  const conns = []
  let next = 0
  const worker = async () => {
    while (next < n) {
      next++
      conns.push(await Conn.open(url))
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker))
  } catch (e) {
    for (const c of conns) c.terminate()
    throw e
  }
  return conns
}

/** One HTTP RPC: POST the request, return the parsed array of reply messages. */
export const httpRpc = async (url, body, { signal } = {}) => {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${text.slice(0, 300)}`)
  const messages = JSON.parse(text)
  if (!Array.isArray(messages)) throw new Error(`expected a JSON array, got ${text.slice(0, 300)}`)
  return { messages, bytes: text.length }
}
