// A raw WebSocket speaking the Effect-3 RPC JSON envelope of @livestore/sync-cf 0.4.0 (docs §3.2–3.4),
// for tests that need to see or send exact frames.

import { WebSocket } from 'ws'

/** ws:// URL of the sync endpoint for a store (the query string the real client would send). */
export const wsSyncUrl = (httpUrl, storeId, extraParams = {}) => {
  const params = new URLSearchParams({ storeId, ...extraParams, transport: 'ws' })
  return `${httpUrl.replace(/^http/, 'ws')}/sync?${params}`
}

// Effect 3 request ids are decimal strings; start high so they are easy to tell apart in logs.
let nextId = 1_000_000
export const newRequestId = () => String(nextId++)

export const pullRequest = (id, storeId, { live = false, cursor } = {}) => ({
  _tag: 'Request',
  id,
  tag: 'SyncWsRpc.Pull',
  payload: { storeId, live, cursor: cursor ? { _tag: 'Some', value: cursor } : { _tag: 'None' } },
  headers: [],
})

export const pushRequest = (id, storeId, batch, backendId) => ({
  _tag: 'Request',
  id,
  tag: 'SyncWsRpc.Push',
  payload: { storeId, batch, backendId: backendId ? { _tag: 'Some', value: backendId } : { _tag: 'None' } },
  headers: [],
})

export class RawSocket {
  /**
   * @param {string} url
   * @param {{ timeoutMs?: number, headers?: Record<string, string> }} [opts] `headers`: extra upgrade request headers
   */
  static open(url, { timeoutMs = 10_000, headers } = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, headers ? { headers } : undefined)
      const timer = setTimeout(() => {
        ws.terminate()
        reject(new Error(`raw WebSocket to ${url} did not open within ${timeoutMs} ms`))
      }, timeoutMs)
      ws.once('open', () => {
        clearTimeout(timer)
        resolve(new RawSocket(ws))
      })
      ws.once('unexpected-response', (_req, res) => {
        clearTimeout(timer)
        reject(new Error(`WebSocket upgrade to ${url} rejected with HTTP ${res.statusCode}`))
      })
      ws.once('error', (e) => {
        clearTimeout(timer)
        reject(e)
      })
    })
  }

  constructor(ws) {
    this.ws = ws
    /** every frame received: { raw, bytes, json } (json undefined if not parseable) */
    this.messages = []
    /** { code, reason } once the socket closed */
    this.closeInfo = undefined
    this.listeners = new Set()
    ws.on('message', (data, isBinary) => {
      const raw = isBinary ? data : data.toString('utf8')
      let json
      try {
        json = isBinary ? undefined : JSON.parse(raw)
      } catch {}
      this.messages.push({ raw, bytes: Buffer.byteLength(raw), json })
      this.emit()
    })
    ws.on('close', (code, reason) => {
      this.closeInfo = { code, reason: reason.toString('utf8') }
      this.emit()
    })
    // errors are followed by 'close'; keep them from becoming uncaught
    ws.on('error', (e) => {
      this.lastError = e
    })
  }

  emit() {
    for (const l of [...this.listeners]) l()
  }

  /** Sends an object (JSON-encoded) or a string as one text frame. */
  send(frame) {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame))
  }

  /**
   * Resolves with `check()`'s first non-undefined result, re-evaluated on every frame / close.
   * Rejects after `timeoutMs` (a hang is a failure).
   */
  until(check, { timeoutMs = 15_000, what = 'a frame' } = {}) {
    return new Promise((resolve, reject) => {
      const listener = () => {
        let result
        try {
          result = check()
        } catch (e) {
          cleanup()
          reject(e)
          return
        }
        if (result !== undefined) {
          cleanup()
          resolve(result)
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`raw WebSocket: timed out after ${timeoutMs} ms waiting for ${what}; ` +
          `frames so far: ${this.messages.map((m) => m.raw.slice(0, 200)).join(' | ')}`))
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        this.listeners.delete(listener)
      }
      this.listeners.add(listener)
      listener()
    })
  }

  /**
   * Sends a request and collects its Chunk frames (Ack-ing each, like the real client) until its Exit.
   * Rejects on a Defect frame, a close or a timeout.
   * @returns {Promise<{ id: string, chunks: object[], values: object[], exit: object }>}
   */
  async request(request, { timeoutMs = 60_000, ack = true } = {}) {
    const { id } = request
    const from = this.messages.length
    let seen = from
    const chunks = []
    this.send(request)
    return this.until(
      () => {
        for (; seen < this.messages.length; seen++) {
          const msg = this.messages[seen]
          const f = msg.json
          if (f?._tag === 'Defect') throw new Error(`Defect frame for request ${id}: ${msg.raw.slice(0, 500)}`)
          if (f?._tag === 'Chunk' && f.requestId === id) {
            chunks.push(msg)
            if (ack) this.send({ _tag: 'Ack', requestId: id })
          }
          if (f?._tag === 'Exit' && f.requestId === id) {
            return { id, chunks, values: chunks.flatMap((c) => c.json.values), exit: f.exit }
          }
        }
        if (this.closeInfo) throw new Error(`socket closed (${this.closeInfo.code}) before Exit of request ${id}`)
        return undefined
      },
      { timeoutMs, what: `Exit of request ${id}` },
    )
  }

  /**
   * Waits for how the server reacts to a bad frame sent after message index `from`:
   * { kind: 'defect', frame } | { kind: 'failure', frame } (Exit Failure for `requestId`) |
   * { kind: 'success', frame } (Exit Success for `requestId`, i.e. the bad input was accepted) |
   * { kind: 'close', code, reason }.
   */
  reaction({ from = 0, requestId, timeoutMs = 15_000 } = {}) {
    return this.until(
      () => {
        for (const msg of this.messages.slice(from)) {
          const f = msg.json
          if (f === undefined) return { kind: 'garbage', frame: msg.raw }
          if (f._tag === 'Defect') return { kind: 'defect', frame: f }
          if (f._tag === 'Exit' && requestId !== undefined && f.requestId === requestId) {
            return { kind: f.exit?._tag === 'Failure' ? 'failure' : 'success', frame: f }
          }
        }
        if (this.closeInfo) return { kind: 'close', ...this.closeInfo }
        return undefined
      },
      { timeoutMs, what: 'a protocol error or close' },
    )
  }

  /** Resolves with { code, reason } once closed. */
  closed({ timeoutMs = 15_000 } = {}) {
    return this.until(() => this.closeInfo, { timeoutMs, what: 'the socket to close' })
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close()
  }

  terminate() {
    this.ws.terminate()
  }
}

/**
 * Attempts a WebSocket upgrade and reports the HTTP answer: { status, headers, body } where `status`
 * is 101 when the upgrade was accepted (the socket is closed right away) and `body` is the text of a
 * refused upgrade. `headers` are the response headers (lower-case names). Rejects only on a network
 * error or if nothing came within `timeoutMs`.
 */
export const upgradeResponse = (url, { headers, timeoutMs = 15_000 } = {}) =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, headers ? { headers } : undefined)
    const timer = setTimeout(() => {
      ws.terminate()
      reject(new Error(`no answer to the upgrade of ${url} within ${timeoutMs} ms`))
    }, timeoutMs)
    let upgradeHeaders
    ws.once('upgrade', (res) => {
      upgradeHeaders = res.headers
    })
    ws.once('open', () => {
      clearTimeout(timer)
      ws.close()
      resolve({ status: 101, headers: upgradeHeaders ?? {}, body: '' })
    })
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer)
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => {
        resolve({ status: res.statusCode, headers: res.headers, body })
        ws.terminate()
      })
    })
    // `on`, not `once`: terminate() during the handshake emits another error after we resolved
    ws.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
  })
