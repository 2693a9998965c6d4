// The sync transports behind one client interface, so one contract suite (sync/contract.test.mjs) runs the
// same scenarios over each of them:
//
//   ws       the real `makeWsSync` client (@livestore/sync-cf 0.4.0)
//   http     the real `makeHttpSync` client, live pulls by polling
//   do-rpc   the real `makeDoRpcSync` client, inside a TestClientDO of the DO-RPC test Worker
//   effect4  the Effect 4 flavor of the wire (LiveStore main): numeric request ids, spoken over a raw socket
//
// A client: push(batch) (rejects with the typed failure's fields: { _tag, … }), pullAll(cursor?) → pages
// ({ batch, pageInfo }), live(cursor?) → { pages, events(), waitForEvents(n) }, backendId() (what the client has
// learnt), ping(), close().
import { clientDo } from './client-do.mjs'
import { eventsOf, openClient } from './livestore-client.mjs'
import { RawSocket, pullRequest, pushRequest, wsSyncUrl } from './raw-ws.mjs'
import { sleep } from './util.mjs'

/** A typed failure as clients surface it: an Error carrying the failure's fields. */
const failure = (fields) => Object.assign(new Error(`${fields?._tag}: ${JSON.stringify(fields)}`), fields)

/** The page as the contract compares it: batch and pageInfo only. */
const plainPage = ({ batch, pageInfo }) => ({ batch, pageInfo })

/** Polls `read()` until it holds `n` events; for clients whose live pages are read by polling. */
const pollEvents = async (read, n, what, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs
  while (true) {
    const pages = await read()
    if (eventsOf(pages).length >= n) return pages
    if (Date.now() > deadline) throw new Error(`${what}: ${eventsOf(pages).length} of ${n} events after ${timeoutMs} ms`)
    await sleep(100)
  }
}

const realClient = (transport) => async (worker, { storeId, clientId, payload, backendId }) => {
  const client = await openClient({
    url: `${worker.url}/sync`,
    storeId,
    transport,
    clientId,
    payload,
    backendId,
    ...(transport === 'http' ? { pollInterval: 300 } : { pingInterval: 1_000 }),
  })
  return {
    push: (batch) => client.push(batch),
    pullAll: (cursor) => client.pullAll(cursor),
    live: (cursor) => client.live(cursor),
    backendId: () => client.backendId(),
    ping: () => client.ping(),
    close: () => client.close(),
  }
}

let clientDoCounter = 0

const doRpcClient = async (worker, { storeId, payload, backendId }) => {
  const c = clientDo(worker, `contract-${process.pid}-${clientDoCounter++}`)
  await c.open(storeId, { payload, backendId })
  return {
    push: async (batch) => {
      const res = await c.pushResult(storeId, batch)
      if (!res.ok) throw failure(res.error)
    },
    pullAll: async (cursor) => {
      const res = await c.pullResult(storeId, cursor)
      if (!res.ok) throw failure(res.error)
      return res.pages.map(plainPage)
    },
    live: async (cursor) => {
      const pages = (await c.live(storeId, cursor)).pages.map(plainPage)
      const state = { pages }
      const refresh = async () => {
        state.pages = (await c.livePages(storeId)).pages.map(plainPage)
        return state.pages
      }
      return {
        get pages() {
          return state.pages
        },
        events: () => eventsOf(state.pages),
        waitForEvents: (n, timeoutMs) => pollEvents(refresh, n, `DO-RPC live pull of ${storeId}`, timeoutMs),
      }
    },
    backendId: async () => (await c.pull(storeId)).backendId,
    ping: () => c.ping(storeId),
    close: () => c.forget(storeId),
  }
}

let numericId = 1_000_000

const effect4Client = async (worker, { storeId, payload, backendId }) => {
  const params = payload === undefined ? {} : { payload: encodeURIComponent(JSON.stringify(payload)) }
  const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId, params))
  let learnt = backendId
  const fail = (exit) => {
    // the Effect 4 cause: an array of reasons
    const reason = Array.isArray(exit.cause) ? exit.cause[0] : undefined
    return failure(reason?._tag === 'Fail' ? reason.error : { _tag: 'Defect', cause: exit.cause })
  }
  const cursorOf = (cursor) =>
    cursor === undefined ? undefined : { backendId: learnt, eventSequenceNumber: cursor }
  const learn = (values) => {
    if (values.length > 0) learnt = values[0].backendId
  }
  return {
    push: async (batch) => {
      const res = await raw.request(pushRequest(numericId++, storeId, batch, learnt))
      if (res.exit._tag !== 'Success') throw fail(res.exit)
    },
    pullAll: async (cursor) => {
      const res = await raw.request(pullRequest(numericId++, storeId, { cursor: cursorOf(cursor) }))
      if (res.exit._tag !== 'Success') throw fail(res.exit)
      learn(res.values)
      return res.values.map(plainPage)
    },
    live: async (cursor) => {
      const id = numericId++
      const from = raw.messages.length
      raw.send(pullRequest(id, storeId, { live: true, cursor: cursorOf(cursor) }))
      let acked = from
      const pages = () => {
        const chunks = raw.messages.slice(from).filter((m) => m.json?._tag === 'Chunk' && m.json.requestId === id)
        // Ack every chunk, as clients do
        for (; acked < from + chunks.length; acked++) raw.send({ _tag: 'Ack', requestId: id })
        const values = chunks.flatMap((m) => m.json.values)
        learn(values)
        return values.map(plainPage)
      }
      await raw.until(() => (pages().some((p) => p.pageInfo._tag === 'NoMore') ? true : undefined), {
        what: `the catch-up of live pull ${id}`,
      })
      return {
        get pages() {
          return pages()
        },
        events: () => eventsOf(pages()),
        waitForEvents: (n, timeoutMs = 30_000) =>
          raw.until(() => (eventsOf(pages()).length >= n ? pages() : undefined), { timeoutMs, what: `${n} live events` }),
      }
    },
    backendId: async () => learnt,
    ping: async () => {
      const from = raw.messages.length
      raw.send('{"_tag":"Ping"}')
      await raw.until(() => raw.messages.slice(from).find((m) => m.json?._tag === 'Pong'), { what: 'Pong' })
    },
    close: async () => raw.close(),
  }
}

/**
 * The transports. `open(worker, { storeId, clientId?, payload?, backendId? })` opens a client; `backendId` makes
 * it believe in that backend id (as if learnt earlier). The worker must be the DO-RPC test Worker (it also
 * serves the other transports).
 */
export const TRANSPORTS = [
  { name: 'ws', open: realClient('ws') },
  { name: 'http', open: realClient('http') },
  { name: 'do-rpc', open: doRpcClient },
  { name: 'effect4', open: effect4Client },
]
