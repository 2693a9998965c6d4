// Drives a TestClientDO of the DO-RPC test Worker (test/do-rpc/entry.mjs) over HTTP: a LiveStore
// client Durable Object that syncs with the REAL `makeDoRpcSync` of @livestore/sync-cf 0.4.0 and
// records every `syncUpdateRpc` call it gets from the sync Durable Object.

import { sleep } from './util.mjs'

const call = async (base, method, action, body, timeoutMs) => {
  const res = await fetch(`${base}/${action}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  })
  const text = await res.text()
  let json
  try {
    json = JSON.parse(text)
  } catch {
    throw new Error(`TestClientDO ${action}: HTTP ${res.status}, not JSON: ${text.slice(0, 500)}`)
  }
  if (res.status !== 200) throw new Error(`TestClientDO ${action}: HTTP ${res.status}: ${text.slice(0, 2_000)}`)
  return json
}

/** Throws with the client's error unless the answer is ok. */
const must = (action) => (res) => {
  if (!res.ok) {
    // Schema errors put the path first and the offending value last: keep both ends.
    const error = JSON.stringify(res.error ?? res)
    const shown = error.length > 4_000 ? `${error.slice(0, 1_500)} … ${error.slice(-2_500)}` : error
    throw new Error(`TestClientDO ${action} failed: ${shown}`)
  }
  return res
}

/**
 * A handle on the TestClientDO named `name` in the test worker at `worker.url`.
 * Methods whose name ends in `Result` return the raw `{ ok, … }` answer; the others throw unless ok.
 */
export const clientDo = (worker, name, { timeoutMs = 30_000 } = {}) => {
  const base = `${worker.url}/__test/client/${encodeURIComponent(name)}`
  const get = (action) => call(base, 'GET', action, undefined, timeoutMs)
  const post = (action, body = {}) => call(base, 'POST', action, body, timeoutMs)
  const handle = {
    name,
    /** ctx.id.toString() of the object: the `clientDoId` the sync DO stores and calls back. */
    id: async () => must('id')(await get('id')).id,
    /** The client's syncPayload for `storeId`, and a backendId to believe in (before any other call for it). */
    open: async (storeId, { payload, backendId } = {}) => must('open')(await post('open', { storeId, payload, backendId })),
    pushResult: (storeId, batch) => post('push', { storeId, batch }),
    push: async (storeId, batch) => must('push')(await handle.pushResult(storeId, batch)),
    pullResult: (storeId, cursor) => post('pull', { storeId, cursor }),
    /** Non-live pull: { pages, backendId } (pages as makeDoRpcSync yields them: with rpcRequestId, without backendId). */
    pull: async (storeId, cursor) => must('pull')(await handle.pullResult(storeId, cursor)),
    /** A non-live pull that keeps a digest per event only: { pages, events } (see digest.mjs). */
    pullDigest: async (storeId, cursor) => must('pull-digest')(await post('pull-digest', { storeId, cursor })),
    pingResult: (storeId) => post('ping', { storeId }),
    ping: async (storeId) => must('ping')(await handle.pingResult(storeId)),
    /** Starts a live pull (subscribes this object); resolves with the catch-up pages. */
    live: async (storeId, cursor) => must('live')(await post('live', { storeId, cursor })),
    /** { running, pages, failure } of the live pull of `storeId` (in memory: gone after a restart). */
    livePages: async (storeId) => must('live-pages')(await get(`live-pages?storeId=${encodeURIComponent(storeId)}`)),
    /** 'ok' | 'leave' (syncUpdateRpc throws a plain Error) | 'retryable' (throws with retryable = true). */
    setMode: async (mode) => must('mode')(await post('mode', { mode })),
    /** Every syncUpdateRpc call so far (persisted): { count, records: [{ seq, at, mode, payload, shape, outcome, error }] }. */
    records: async () => must('records')(await get('records')),
    /** Drops the in-memory LiveStore backends (and live pulls) of `storeId`, or of all stores. */
    forget: async (storeId) => must('forget')(await post('forget', { storeId })),
    /**
     * Packs [request] with msgpackr (useRecords) inside the object and calls `stub.rpc(bytes)` on the store's
     * sync DO: { kind: 'stream' | 'bytes', isUint8Array, chunks: [{ byteLength, isUint8Array, values }], messages }.
     */
    rawRpcResult: (storeId, request) => post('raw-rpc', { storeId, request }),
    rawRpc: async (storeId, request) => must('raw-rpc')(await handle.rawRpcResult(storeId, request)),
    /** What a caller sees of an error thrown by another TestClientDO over JS RPC ('plain' | 'retryable'). */
    rpcErrorProbe: async (kind) => must('rpc-error-probe')(await post('rpc-error-probe', { kind })).caught,

    /** Waits until the live pull of `storeId` has delivered `n` events in total; returns the pages. */
    waitForLiveEvents: async (storeId, n, waitMs = 20_000) => {
      const deadline = Date.now() + waitMs
      while (true) {
        const state = await handle.livePages(storeId)
        const count = state.pages.flatMap((p) => p.batch).length
        if (count >= n) return state.pages
        if (!state.running) throw new Error(`live pull of ${name} (${storeId}) stopped: ${JSON.stringify(state.failure)}`)
        if (Date.now() > deadline) {
          throw new Error(`live pull of ${name} (${storeId}): ${count} of ${n} events after ${waitMs} ms`)
        }
        await sleep(200)
      }
    },

    /** Waits until `records()` satisfies `done(records)`; returns the records. */
    waitForRecords: async (done, { waitMs = 20_000, what = 'records' } = {}) => {
      const deadline = Date.now() + waitMs
      while (true) {
        const { records } = await handle.records()
        if (done(records)) return records
        if (Date.now() > deadline) {
          throw new Error(`${name}: timed out after ${waitMs} ms waiting for ${what}; have ${JSON.stringify(records).slice(0, 2_000)}`)
        }
        await sleep(200)
      }
    },
  }
  return handle
}

/** The events carried by syncUpdateRpc records (payload.values[*].batch[*].eventEncoded), in call order. */
export const recordedEvents = (records) =>
  records.flatMap((r) => (r.payload?.values ?? []).flatMap((v) => (v.batch ?? []).map((item) => item.eventEncoded)))
