// Entry module of the DO-RPC test Worker (see wrangler.toml next to this file).
//
// - Re-exports the project's real sync Durable Object (the JS wrapper around the Rust object).
// - The default export sends /__test/client/<name>/<action> to the TestClientDO named <name> and
//   everything else to the project's Rust Worker, unchanged.
// - TestClientDO is a LiveStore "client Durable Object" as @livestore/adapter-cloudflare builds it:
//   it syncs with the REAL `makeDoRpcSync` from @livestore/sync-cf 0.4.0 (calling
//   `env.SYNC_BACKEND_DO.getByName(storeId).rpc(bytes)`) and gets live updates through its
//   `syncUpdateRpc` method, which records every call in the object's own SQLite (so the records
//   survive restarts) and hands the payload to the real `handleSyncUpdateRpc`.
//
// TestClientDO endpoints (JSON in, JSON out; every answer is 200 with `ok: true|false` unless the
// request itself is wrong):
//   GET  id                          → { ok, id }  (ctx.id.toString(), the id the sync DO calls back)
//   POST open     {storeId, payload?, backendId?} → { ok }  the client's syncPayload for the store, and a
//                                       backendId to believe in (as if learnt earlier); before any other action
//   POST push     {storeId, batch}   → { ok } | { ok: false, error }   (error: the typed failure's fields)
//   POST pull     {storeId, cursor?} → { ok, pages, backendId }        (non-live; all pages)
//   POST pull-digest {storeId, cursor?} → { ok, pages, events }    a non-live pull that keeps nothing of
//                                       it but a digest per event (support/digest.mjs) and the number of pages
//   POST live     {storeId, cursor?} → { ok, pages }   starts a live pull (rpcContext = this object),
//                                       answers once the catch-up has ended (a NoMore page arrived)
//   GET  live-pages?storeId=         → { ok, running, pages, failure }
//   POST ping     {storeId}          → { ok } | { ok: false, error }
//   POST mode     {mode}             → { ok }  'ok' | 'leave' (syncUpdateRpc throws a plain Error) |
//                                       'retryable' (throws an Error whose `retryable` is true)
//   GET  records                     → { ok, count, records }  every syncUpdateRpc call, oldest first
//   POST forget   {storeId?}         → { ok }  drops the in-memory LiveStore backends (not the records)
//   POST raw-rpc  {storeId, request} → { ok, kind, isUint8Array, chunks: [{ byteLength, isUint8Array, values }],
//                                       leftoverBytes, messages } | { ok: false, error: { _tag: 'RpcThrew', … } }
//                                       packs [request] with msgpackr (useRecords) and calls stub.rpc(bytes)
//                                       itself; `values` = what unpackMultiple decodes of each reply chunk (for a
//                                       stream, with one decoder that completes a message cut between reads,
//                                       as the real client does), `messages` = all values flattened one level
//   POST rpc-error-probe {kind}      → { ok, caught }  calls throwForProbe(kind) on another TestClientDO
//                                       and reports what the caller sees of the thrown error

import { DurableObject, WorkerEntrypoint } from 'cloudflare:workers'
import { handleSyncUpdateRpc, makeDoRpcSync } from '@livestore/sync-cf/client'
import {
  Cause,
  Chunk,
  Effect,
  Exit,
  FetchHttpClient,
  Fiber,
  KeyValueStore,
  Layer,
  ManagedRuntime,
  Option,
  Scope,
  Stream,
} from '@livestore/utils/effect'
import { Packr, Unpackr } from 'msgpackr'
import { eventDigest } from '../../support/digest.mjs'
import RustWorker, { StreamObject, SyncBackendDO } from '../../../client-ts/src/entry.ts'

export { StreamObject, SyncBackendDO }

const CLIENT_PREFIX = /^\/__test\/client\/([^/]+)\/(.+)$/

export default class TestWorker extends WorkerEntrypoint {
  fetch(request) {
    const match = new URL(request.url).pathname.match(CLIENT_PREFIX)
    if (match) return this.env.TEST_CLIENT_DO.getByName(decodeURIComponent(match[1])).fetch(request)
    return new RustWorker(this.ctx, this.env).fetch(request)
  }
}

const BINDING_NAME = 'TEST_CLIENT_DO'

const json = (body, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } })

/** Fields of a typed failure (ServerAheadError, UnknownError, …) as plain JSON. */
const errorFields = (error) => {
  try {
    const replacer = (_key, value) => (value instanceof Error ? { name: value.name, message: value.message, ...value } : value)
    const fields = JSON.parse(JSON.stringify(error, replacer))
    return typeof fields === 'object' && fields !== null ? fields : { value: fields }
  } catch {
    return { _tag: error?._tag, message: String(error) }
  }
}

/** Exit → { ok: true, value } | { ok: false, error } (error = typed failure fields, or a defect text). */
const settle = (exit) => {
  if (Exit.isSuccess(exit)) return { ok: true, value: exit.value }
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) return { ok: false, error: errorFields(failure.value) }
  return { ok: false, error: { _tag: 'Defect', message: Cause.pretty(exit.cause) } }
}

/** Option instances etc. → plain JSON data; other fields of a page (rpcRequestId, …) are kept. */
const plainOption = (o) => (Option.isOption(o) ? (Option.isSome(o) ? { _tag: 'Some', value: { ...o.value } } : { _tag: 'None' }) : o)
const toPlainPage = (page) => ({
  ...page,
  batch: page.batch.map((item) => ({ eventEncoded: { ...item.eventEncoded }, metadata: plainOption(item.metadata) })),
  pageInfo: { ...page.pageInfo },
})

const isPlainObject = (v) => typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype

/**
 * The msgpack decoding of @effect/rpc's RpcSerialization.msgPack (`makeMsgPack({ useRecords: true })`), as the
 * DO-RPC client uses it on a reply stream: unpackMultiple, keeping an incomplete tail for the next read.
 */
const makeStreamDecoder = () => {
  const unpackr = new Unpackr({ useRecords: true })
  let incomplete
  return {
    decode(bytes) {
      let buf = bytes
      if (incomplete !== undefined) {
        buf = new Uint8Array(incomplete.length + bytes.length)
        buf.set(incomplete)
        buf.set(bytes, incomplete.length)
        incomplete = undefined
      }
      try {
        return unpackr.unpackMultiple(buf)
      } catch (error) {
        if (error.incomplete) {
          incomplete = buf.subarray(error.lastPosition)
          return error.values ?? []
        }
        throw error
      }
    },
    leftover: () => incomplete?.length ?? 0,
  }
}

export class TestClientDO extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env)
    this.sql = ctx.storage.sql
    this.sql.exec(`CREATE TABLE IF NOT EXISTS received (
      seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, mode TEXT NOT NULL,
      payload TEXT NOT NULL, shape TEXT NOT NULL, outcome TEXT NOT NULL, error TEXT)`)
    this.sql.exec('CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)')
    this.runtime = ManagedRuntime.make(Layer.mergeAll(FetchHttpClient.layer, KeyValueStore.layerMemory))
    /** storeId → Promise<{ backend, scope }> */
    this.backends = new Map()
    /** storeId → { payload } given by `open` */
    this.options = new Map()
    /** storeId → { pages, failure, running, fiber, waiters } */
    this.livePulls = new Map()
  }

  setting(key, fallback) {
    const row = this.sql.exec('SELECT value FROM settings WHERE key = ?', key).toArray()[0]
    return row ? row.value : fallback
  }

  // ------------------------------------------------------------------------------------------
  // the callback the sync Durable Object calls for every push while this object is subscribed

  async syncUpdateRpc(payload, storeId) {
    const mode = this.setting('mode', 'ok')
    // An Effect 4 client (LiveStore main) gets `syncUpdateRpc(msgpack bytes, storeId)`: recorded as
    // unpacked here (with Effect RPC's msgpack options); the 0.4.0 handler below cannot take it.
    const packed = payload instanceof Uint8Array
    const received = packed ? new Unpackr({ useRecords: true }).unpackMultiple(payload) : payload
    const shape = {
      payloadIsPlainObject: isPlainObject(payload),
      valuesIsArray: Array.isArray(payload?.values),
      valuesArePlainObjects: Array.isArray(payload?.values) && payload.values.every(isPlainObject),
      argumentCount: arguments.length,
      packed,
      storeId: storeId ?? null,
    }
    let text
    try {
      text = JSON.stringify(received) ?? 'undefined'
    } catch (e) {
      text = JSON.stringify({ unserializable: String(e) })
    }
    const seq = this.sql
      .exec("INSERT INTO received (at, mode, payload, shape, outcome) VALUES (?, ?, ?, ?, 'pending') RETURNING seq",
        Date.now(), mode, text, JSON.stringify(shape))
      .one().seq
    const finish = (outcome, error) =>
      this.sql.exec('UPDATE received SET outcome = ?, error = ? WHERE seq = ?', outcome, error ?? null, seq)

    if (mode === 'leave') {
      finish('threw')
      throw new Error('TestClientDO has left: not interested in updates any more')
    }
    if (mode === 'retryable') {
      finish('threw-retryable')
      const error = new Error('TestClientDO is temporarily unavailable')
      error.retryable = true
      throw error
    }
    if (packed) {
      finish('recorded')
      return
    }
    try {
      await handleSyncUpdateRpc(payload)
      finish('handled')
    } catch (e) {
      finish('handler-failed', String(e?.stack ?? e))
      throw e
    }
  }

  /** For rpc-error-probe: what does a caller see of an error thrown here? */
  async throwForProbe(kind) {
    const error = new Error(`probe ${kind}`)
    if (kind === 'retryable') error.retryable = true
    throw error
  }

  // ------------------------------------------------------------------------------------------
  // the LiveStore DO-RPC client

  backendFor(storeId) {
    let entry = this.backends.get(storeId)
    if (!entry) {
      entry = (async () => {
        const scope = await this.runtime.runPromise(Scope.make())
        const makeBackend = makeDoRpcSync({
          syncBackendStub: this.env.SYNC_BACKEND_DO.getByName(storeId),
          durableObjectContext: { bindingName: BINDING_NAME, durableObjectId: this.ctx.id.toString() },
        })
        const exit = await this.runtime.runPromiseExit(
          makeBackend({ storeId, clientId: `client-do-${this.ctx.id.toString().slice(0, 8)}`, payload: this.options.get(storeId)?.payload }).pipe(
            Scope.extend(scope),
          ),
        )
        if (Exit.isFailure(exit)) throw new Error(`makeDoRpcSync failed: ${Cause.pretty(exit.cause)}`)
        return { backend: exit.value, scope }
      })()
      entry.catch(() => this.backends.delete(storeId))
      this.backends.set(storeId, entry)
    }
    return entry
  }

  async open({ storeId, payload, backendId }) {
    this.options.set(storeId, { payload })
    if (backendId !== undefined) {
      const res = await this.run(Effect.flatMap(KeyValueStore.KeyValueStore, (kv) => kv.set('backendId', backendId)))
      if (!res.ok) return res
    }
    return { ok: true }
  }

  async run(effect) {
    return settle(await this.runtime.runPromiseExit(effect))
  }

  async backendId() {
    const res = await this.run(Effect.flatMap(KeyValueStore.KeyValueStore, (kv) => kv.get('backendId')))
    return res.ok ? Option.getOrUndefined(res.value) : undefined
  }

  cursorOf(cursor) {
    return cursor === undefined || cursor === null ? Option.none() : Option.some({ eventSequenceNumber: cursor, metadata: Option.none() })
  }

  async push({ storeId, batch }) {
    const { backend } = await this.backendFor(storeId)
    const res = await this.run(backend.push(batch))
    return res.ok ? { ok: true } : res
  }

  async pull({ storeId, cursor }) {
    const { backend } = await this.backendFor(storeId)
    const res = await this.run(backend.pull(this.cursorOf(cursor), { live: false }).pipe(Stream.runCollect))
    if (!res.ok) return res
    return { ok: true, pages: Chunk.toReadonlyArray(res.value).map(toPlainPage), backendId: await this.backendId() }
  }

  async pullDigest({ storeId, cursor }) {
    const { backend } = await this.backendFor(storeId)
    const digest = { pages: 0, events: [] }
    const res = await this.run(
      backend.pull(this.cursorOf(cursor), { live: false }).pipe(
        Stream.runForEach((page) =>
          Effect.sync(() => {
            digest.pages++
            for (const item of page.batch) digest.events.push(eventDigest(item.eventEncoded))
          }),
        ),
      ),
    )
    return res.ok ? { ok: true, ...digest } : res
  }

  async ping({ storeId }) {
    const { backend } = await this.backendFor(storeId)
    const res = await this.run(backend.ping)
    return res.ok ? { ok: true } : res
  }

  async live({ storeId, cursor }) {
    const { backend } = await this.backendFor(storeId)
    const previous = this.livePulls.get(storeId)
    if (previous?.running) await this.runtime.runPromise(Fiber.interrupt(previous.fiber)).catch(() => {})
    const state = { pages: [], failure: undefined, running: true, waiters: new Set() }
    const notify = () => {
      for (const w of [...state.waiters]) w()
    }
    state.fiber = this.runtime.runFork(
      backend.pull(this.cursorOf(cursor), { live: true }).pipe(
        Stream.runForEach((page) =>
          Effect.sync(() => {
            state.pages.push(toPlainPage(page))
            notify()
          }),
        ),
        Effect.scoped,
      ),
    )
    state.fiber.addObserver((exit) => {
      state.running = false
      if (Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)) state.failure = settle(exit).error
      else state.failure = { _tag: 'Ended', message: 'live pull stream ended' }
      notify()
    })
    this.livePulls.set(storeId, state)

    // answer once the catch-up phase is over (its last page is NoMore) or the pull failed
    const caughtUp = () => state.pages.some((p) => p.pageInfo?._tag === 'NoMore')
    await new Promise((resolve) => {
      const check = () => {
        if (caughtUp() || !state.running) {
          state.waiters.delete(check)
          clearTimeout(timer)
          resolve()
        }
      }
      const timer = setTimeout(() => {
        state.waiters.delete(check)
        resolve()
      }, 20_000)
      state.waiters.add(check)
      check()
    })
    if (!caughtUp()) return { ok: false, error: state.failure ?? { _tag: 'Timeout', message: 'no NoMore page within 20 s' }, pages: state.pages }
    return { ok: true, pages: state.pages }
  }

  livePages(storeId) {
    const state = this.livePulls.get(storeId)
    if (!state) return { ok: true, running: false, pages: [], failure: { _tag: 'NoLivePull' } }
    return { ok: true, running: state.running, pages: state.pages, failure: state.failure }
  }

  async forget(storeId) {
    const ids = storeId ? [storeId] : [...this.backends.keys()]
    for (const id of ids) {
      const live = this.livePulls.get(id)
      if (live?.running) await this.runtime.runPromise(Fiber.interrupt(live.fiber)).catch(() => {})
      this.livePulls.delete(id)
      const entry = this.backends.get(id)
      this.backends.delete(id)
      if (entry) {
        const { scope } = await entry.catch(() => ({}))
        if (scope) await this.runtime.runPromise(Scope.close(scope, Exit.void)).catch(() => {})
      }
    }
    return { ok: true }
  }

  records() {
    const rows = this.sql.exec('SELECT seq, at, mode, payload, shape, outcome, error FROM received ORDER BY seq').toArray()
    const records = rows.map((r) => ({ ...r, payload: JSON.parse(r.payload), shape: JSON.parse(r.shape) }))
    return { ok: true, count: records.length, records }
  }

  // ------------------------------------------------------------------------------------------
  // msgpackr by hand, exactly as @livestore/common-cf's DO-RPC client frames it

  async rawRpc({ storeId, request }) {
    const bytes = new Packr({ useRecords: true }).pack([request])
    let reply
    try {
      reply = await this.env.SYNC_BACKEND_DO.getByName(storeId).rpc(bytes)
    } catch (e) {
      return { ok: false, error: { _tag: 'RpcThrew', name: e?.name, message: String(e?.message ?? e) } }
    }
    if (reply instanceof ReadableStream) {
      // Decoded like the real client (common-cf's processReadableStream with RpcSerialization.msgPack):
      // one Unpackr for the whole stream, a message cut between two reads is completed by the next read.
      const decoder = makeStreamDecoder()
      const chunks = []
      const reader = reply.getReader()
      const deadline = Date.now() + 20_000
      while (true) {
        const timeout = new Promise((resolve) => setTimeout(() => resolve({ timedOut: true }), Math.max(0, deadline - Date.now())))
        const next = await Promise.race([reader.read(), timeout])
        if (next.timedOut) {
          await reader.cancel().catch(() => {})
          return { ok: false, error: { _tag: 'Timeout', message: 'reply stream did not end within 20 s' }, chunks }
        }
        if (next.done) break
        chunks.push({ byteLength: next.value?.byteLength, isUint8Array: next.value instanceof Uint8Array, values: decoder.decode(next.value) })
      }
      return {
        ok: true,
        kind: 'stream',
        chunks,
        leftoverBytes: decoder.leftover(),
        messages: chunks.flatMap((c) => c.values.flat(1)),
      }
    }
    const values = new Unpackr({ useRecords: true }).unpackMultiple(reply)
    return {
      ok: true,
      kind: 'bytes',
      isUint8Array: reply instanceof Uint8Array,
      chunks: [{ byteLength: reply?.byteLength, isUint8Array: reply instanceof Uint8Array, values }],
      messages: values.flat(1),
    }
  }

  async rpcErrorProbe({ kind }) {
    const other = this.env.TEST_CLIENT_DO.getByName(`probe-target-${this.ctx.id.toString()}`)
    try {
      await other.throwForProbe(kind)
      return { ok: false, error: { message: 'throwForProbe did not throw' } }
    } catch (e) {
      return { ok: true, caught: { name: e?.name, message: e?.message, retryable: e?.retryable, isError: e instanceof Error } }
    }
  }

  // ------------------------------------------------------------------------------------------

  async fetch(request) {
    const url = new URL(request.url)
    const action = url.pathname.match(CLIENT_PREFIX)?.[2]
    const body = request.method === 'POST' ? await request.json().catch(() => ({})) : {}
    try {
      switch (`${request.method} ${action}`) {
        case 'GET id':
          return json({ ok: true, id: this.ctx.id.toString() })
        case 'POST open':
          return json(await this.open(body))
        case 'POST push':
          return json(await this.push(body))
        case 'POST pull':
          return json(await this.pull(body))
        case 'POST pull-digest':
          return json(await this.pullDigest(body))
        case 'POST live':
          return json(await this.live(body))
        case 'GET live-pages':
          return json(this.livePages(url.searchParams.get('storeId')))
        case 'POST ping':
          return json(await this.ping(body))
        case 'POST mode':
          if (!['ok', 'leave', 'retryable'].includes(body.mode)) return json({ ok: false, error: { message: `bad mode ${body.mode}` } }, 400)
          this.sql.exec("INSERT OR REPLACE INTO settings (key, value) VALUES ('mode', ?)", body.mode)
          return json({ ok: true })
        case 'GET records':
          return json(this.records())
        case 'POST forget':
          return json(await this.forget(body.storeId))
        case 'POST raw-rpc':
          return json(await this.rawRpc(body))
        case 'POST rpc-error-probe':
          return json(await this.rpcErrorProbe(body))
        default:
          return json({ ok: false, error: { message: `unknown test action ${request.method} ${action}` } }, 404)
      }
    } catch (e) {
      return json({ ok: false, error: { _tag: 'Thrown', name: e?.name, message: String(e?.message ?? e), stack: e?.stack } }, 500)
    }
  }
}
