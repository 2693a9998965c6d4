// The HTTP transport of @livestore/sync-cf 0.4.0 spoken by hand (docs §4), for tests that need to see
// or send exact requests: one POST per RPC, body = one Effect-3 RPC Request, response = JSON array
// of every message for that request ([Chunk…, Exit], or [Defect]).

import { newRequestId } from './raw-ws.mjs'

export { newRequestId }

/**
 * Query string of a sync request, as the real client builds it: storeId, payload (JSON, percent-encoded
 * once by the client and once more by URLSearchParams), transport.
 */
export const syncQuery = (storeId, { payload, transport = 'http', extra = {} } = {}) => {
  const params = { storeId }
  if (payload !== undefined) params.payload = encodeURIComponent(JSON.stringify(payload))
  return new URLSearchParams({ ...params, ...extra, transport }).toString()
}

/** http:// URL of the sync endpoint for a store with transport=http. */
export const httpSyncUrl = (baseUrl, storeId, opts = {}) => `${baseUrl}/sync?${syncQuery(storeId, opts)}`

const option = (value) => (value === undefined || value === null ? { _tag: 'None' } : { _tag: 'Some', value })

export const httpRequest = (id, tag, payload) => ({ _tag: 'Request', id, tag, payload, headers: [] })

/** `cursor`: { eventSequenceNumber, backendId } or undefined. */
export const httpPullRequest = (id, storeId, { cursor, payload } = {}) =>
  httpRequest(id, 'SyncHttpRpc.Pull', { storeId, ...(payload !== undefined ? { payload } : {}), cursor: option(cursor) })

export const httpPushRequest = (id, storeId, batch, { backendId, payload } = {}) =>
  httpRequest(id, 'SyncHttpRpc.Push', { storeId, ...(payload !== undefined ? { payload } : {}), batch, backendId: option(backendId) })

export const httpPingRequest = (id, storeId, { payload } = {}) =>
  httpRequest(id, 'SyncHttpRpc.Ping', { storeId, ...(payload !== undefined ? { payload } : {}) })

/**
 * POSTs `body` (object → JSON, string as is) and reads the whole answer, within `timeoutMs`.
 * @returns {Promise<{ status: number, headers: Headers, contentType: string | null, text: string, json: any }>}
 *   `json` is undefined when the body is not JSON.
 */
export const postRaw = async (url, body, { contentType = 'application/json', headers = {}, timeoutMs = 30_000, method = 'POST' } = {}) => {
  const res = await fetch(url, {
    method,
    headers: { ...(contentType ? { 'content-type': contentType } : {}), ...headers },
    body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  })
  const text = await res.text()
  let json
  try {
    json = JSON.parse(text)
  } catch {}
  return { status: res.status, headers: res.headers, contentType: res.headers.get('content-type'), text, json }
}

/**
 * Sends one RPC and checks the envelope: 200, JSON array, only messages of this request, ending with
 * exactly one Exit. Returns { status, messages, chunks, values, exit }.
 */
export const rpc = async (url, request, opts) => {
  const res = await postRaw(url, request, opts)
  if (res.status !== 200 || !Array.isArray(res.json)) {
    throw new Error(`HTTP RPC ${request.tag}: expected 200 with a JSON array, got ${res.status}: ${res.text.slice(0, 500)}`)
  }
  const messages = res.json
  const exits = messages.filter((m) => m._tag === 'Exit')
  const chunks = messages.filter((m) => m._tag === 'Chunk')
  if (exits.length !== 1 || messages.at(-1)._tag !== 'Exit' || chunks.length + exits.length !== messages.length) {
    throw new Error(`HTTP RPC ${request.tag}: expected [Chunk…, Exit], got ${res.text.slice(0, 500)}`)
  }
  for (const m of messages) {
    if (m.requestId !== request.id) throw new Error(`HTTP RPC ${request.tag}: message for another request: ${JSON.stringify(m).slice(0, 300)}`)
  }
  return { ...res, messages, chunks, values: chunks.flatMap((c) => c.values), exit: exits[0].exit }
}
