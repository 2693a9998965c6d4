// The "ceiling" for `make bench`: a bare JS Durable Object doing the same storage and fan-out
// work as a LiveStore sync server, with as little protocol machinery as possible.
//
// - One Durable Object per store (idFromName(storeId)), SQLite-backed, one event-log table with
//   LiveStore's shape (seqNum, parentSeqNum, name, args, createdAt, clientId, sessionId).
// - Hibernatable WebSockets (ctx.acceptWebSocket), Ping/Pong as an auto-response, live pull ids
//   in the socket attachment (cached in memory while the object is awake).
// - It answers the minimal subset of the Effect RPC JSON frames that the load generator needs:
//   Request SyncWsRpc.Pull / SyncWsRpc.Push (and SyncHttpRpc.* over HTTP POST) with Chunk and
//   Exit frames in the wire shape of @livestore/sync-cf 0.4.0; Ack is ignored, Interrupt drops a
//   live pull. No schema decoding, no hooks, no validation beyond the parent check: frames are
//   built by string concatenation and stored args are spliced in as stored.
import { DurableObject } from 'cloudflare:workers'

export { StreamCeilingDO } from './streams.mjs'

const PAGE_EVENTS = 100
const PONG = '{"_tag":"Pong"}'
const EMPTY_HEADERS = { 'content-type': 'application/json' }

const q = JSON.stringify

const exitSuccess = (id, value) =>
  `{"_tag":"Exit","requestId":${q(id)},"exit":{"_tag":"Success"${value === undefined ? '' : `,"value":${value}`}}}`

const exitFailure = (id, error) =>
  `{"_tag":"Exit","requestId":${q(id)},"exit":{"_tag":"Failure","cause":{"_tag":"Fail","error":${q(error)}}}}`

const chunk = (id, pullResponse) => `{"_tag":"Chunk","requestId":${q(id)},"values":[${pullResponse}]}`

const metadata = (createdAt) =>
  `{"_tag":"Some","value":{"_tag":"SyncMessage.SyncMetadata","createdAt":${q(createdAt)}}}`

/** One stored row (or pushed event, with its args already JSON text) as a PullResponse batch item. */
const item = (seqNum, parentSeqNum, name, args, clientId, sessionId, createdAt) =>
  `{"eventEncoded":{"name":${q(name)},"args":${args ?? 'null'},"seqNum":${seqNum},"parentSeqNum":${parentSeqNum},` +
  `"clientId":${q(clientId)},"sessionId":${q(sessionId)}},"metadata":${metadata(createdAt)}}`

export class CeilingDO extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env)
    this.sql = ctx.storage.sql
    this.sql.exec(
      'CREATE TABLE IF NOT EXISTS eventlog ("seqNum" integer primary key, "parentSeqNum" integer not null, ' +
        '"name" text not null, "args" text, "createdAt" text not null, "clientId" text not null, ' +
        '"sessionId" text not null) strict',
    )
    this.sql.exec('CREATE TABLE IF NOT EXISTS meta (k text primary key, v text not null) strict')
    let backendId = this.sql.exec("SELECT v FROM meta WHERE k = 'backendId'").toArray()[0]?.v
    if (backendId === undefined) {
      backendId = crypto.randomUUID()
      this.sql.exec("INSERT INTO meta (k, v) VALUES ('backendId', ?)", backendId)
    }
    this.backendId = backendId
    this.backendIdJson = q(backendId)
    this.head = this.sql.exec('SELECT coalesce(max(seqNum), 0) AS head FROM eventlog').one().head
    /** live pull ids per socket while awake; the attachment is the copy that survives hibernation */
    this.live = new WeakMap()
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair('{"_tag":"Ping"}', PONG))
  }

  async fetch(request) {
    const url = new URL(request.url)
    if (url.searchParams.get('transport') === 'ws') {
      if (request.headers.get('Upgrade') !== 'websocket') return new Response('expected a WebSocket upgrade', { status: 426 })
      const { 0: client, 1: server } = new WebSocketPair()
      this.ctx.acceptWebSocket(server)
      server.serializeAttachment([])
      return new Response(null, { status: 101, webSocket: client })
    }
    if (request.method !== 'POST') return new Response('expected POST', { status: 405 })
    const msg = JSON.parse(await request.text())
    const out = []
    this.request(msg, (frame) => out.push(frame))
    return new Response(`[${out.join(',')}]`, { headers: EMPTY_HEADERS })
  }

  webSocketMessage(ws, text) {
    const msg = JSON.parse(text)
    switch (msg._tag) {
      case 'Request': {
        const live = this.request(msg, (frame) => ws.send(frame))
        if (live) {
          const ids = this.liveIds(ws)
          ids.push(msg.id)
          ws.serializeAttachment(ids)
        }
        return
      }
      case 'Interrupt': {
        const ids = this.liveIds(ws).filter((id) => id !== msg.requestId)
        this.live.set(ws, ids)
        ws.serializeAttachment(ids)
        return
      }
      case 'Ping':
        ws.send(PONG)
        return
      default:
        return // Ack
    }
  }

  webSocketClose(ws, code) {
    try {
      ws.close(code === 1005 ? 1000 : code)
    } catch {}
  }

  liveIds(ws) {
    let ids = this.live.get(ws)
    if (ids === undefined) {
      ids = ws.deserializeAttachment() ?? []
      this.live.set(ws, ids)
    }
    return ids
  }

  /** Serves one RPC request; `send` gets each reply frame. Returns true for a live pull. */
  request(msg, send) {
    const { id, tag, payload } = msg
    if (tag === 'SyncWsRpc.Pull' || tag === 'SyncHttpRpc.Pull') {
      const cursor = payload.cursor._tag === 'Some' ? payload.cursor.value.eventSequenceNumber : 0
      this.pull(id, cursor, send)
      if (payload.live === true) return true
      send(exitSuccess(id))
    } else if (tag === 'SyncWsRpc.Push' || tag === 'SyncHttpRpc.Push') {
      this.push(id, payload.batch, send)
    } else if (tag === 'SyncHttpRpc.Ping') {
      send(exitSuccess(id, '{"_tag":"SyncMessage.Pong"}'))
    } else {
      send(`{"_tag":"Defect","defect":${q(`Unknown request tag: ${tag}`)}}`)
    }
    return false
  }

  /** Pages of at most 100 events after `cursor`, `remaining` from the head (seqNums are contiguous). */
  pull(id, cursor, send) {
    let remaining = this.head - cursor
    let after = cursor
    if (remaining <= 0) {
      send(chunk(id, `{"batch":[],"pageInfo":{"_tag":"NoMore"},"backendId":${this.backendIdJson}}`))
      return
    }
    while (remaining > 0) {
      const rows = this.sql
        .exec(
          'SELECT seqNum, parentSeqNum, name, args, createdAt, clientId, sessionId FROM eventlog WHERE seqNum > ? ORDER BY seqNum LIMIT ?',
          after,
          PAGE_EVENTS,
        )
        .raw()
      const items = []
      for (const [seqNum, parentSeqNum, name, args, createdAt, clientId, sessionId] of rows) {
        items.push(item(seqNum, parentSeqNum, name, args, clientId, sessionId, createdAt))
        after = seqNum
      }
      if (items.length === 0) break
      remaining -= items.length
      const pageInfo = remaining > 0 ? `{"_tag":"MoreKnown","remaining":${remaining}}` : '{"_tag":"NoMore"}'
      send(chunk(id, `{"batch":[${items.join(',')}],"pageInfo":${pageInfo},"backendId":${this.backendIdJson}}`))
    }
  }

  push(id, batch, send) {
    if (batch.length === 0) return send(exitSuccess(id, '{}'))
    if (batch[0].parentSeqNum !== this.head) {
      return send(
        exitFailure(id, { _tag: 'ServerAheadError', minimumExpectedNum: this.head, providedNum: batch[0].parentSeqNum }),
      )
    }
    const createdAt = new Date().toISOString()
    const items = []
    try {
      this.ctx.storage.transactionSync(() => {
        for (const e of batch) {
          const args = e.args === undefined ? null : q(e.args)
          this.sql.exec(
            'INSERT INTO eventlog (seqNum, parentSeqNum, args, name, createdAt, clientId, sessionId) VALUES (?, ?, ?, ?, ?, ?, ?)',
            e.seqNum,
            e.parentSeqNum,
            args,
            e.name,
            createdAt,
            e.clientId,
            e.sessionId,
          )
          items.push(item(e.seqNum, e.parentSeqNum, e.name, args, e.clientId, e.sessionId, createdAt))
        }
      })
    } catch (error) {
      return send(exitFailure(id, { _tag: 'UnknownError', cause: { name: 'Error', message: String(error) } }))
    }
    this.head = batch.at(-1).seqNum
    // broadcast (before the ack), one frame per live pull of every socket of the store
    const body = `"values":[{"batch":[${items.join(',')}],"pageInfo":{"_tag":"NoMore"},"backendId":${this.backendIdJson}}]}`
    for (const ws of this.ctx.getWebSockets()) {
      for (const liveId of this.liveIds(ws)) {
        try {
          ws.send(`{"_tag":"Chunk","requestId":${q(liveId)},${body}`)
        } catch {}
      }
    }
    send(exitSuccess(id, '{}'))
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url)
    const storeId = url.searchParams.get('storeId')
    const transport = url.searchParams.get('transport')
    if (storeId && (transport === 'ws' || transport === 'http')) return env.CEILING_DO.getByName(storeId).fetch(request)
    if (url.pathname.startsWith('/v1/stream/')) return env.STREAMS_CEILING_DO.getByName(url.pathname).serve(request)
    if (request.method === 'GET' && url.pathname === '/') return new Response('Info: bench ceiling (bare JS Durable Object).')
    return new Response('Invalid path', { status: 400 })
  },
}
