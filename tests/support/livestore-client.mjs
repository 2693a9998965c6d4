// Promise-based wrapper around the REAL LiveStore 0.4.0 sync clients (`makeWsSync` and `makeHttpSync`
// from @livestore/sync-cf/client) for use in plain vitest tests.
//
// Node 20 pitfalls (see docs §12): Node 20 has no global WebSocket, and the userland undici 7 that
// @effect/platform-node pulls in clashes with Node 20's built-in fetch. So the globals are replaced
// with undici 7's / ws's BEFORE LiveStore is loaded; hence the dynamic imports below.

import { FormData, Headers, Request, Response, fetch } from 'undici'
import { WebSocket } from 'ws'

Object.assign(globalThis, { fetch, Request, Response, Headers, FormData, WebSocket })

const { makeHttpSync, makeWsSync } = await import('@livestore/sync-cf/client')
const {
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
  SubscriptionRef,
} = await import('@livestore/utils/effect')

/**
 * A typed failure of the client (ServerAheadError, UnknownError, …) as a plain Error carrying the
 * error's JSON fields (`_tag`, `minimumExpectedNum`, …). Effect's error instances are proxies that
 * send chai/vitest's object inspector into infinite recursion when an assertion on them fails, so
 * they are not thrown as they are; the original stays reachable as `.original`.
 */
export class SyncClientError extends Error {
  constructor(original) {
    let fields
    try {
      // plain Errors inside (e.g. an UnknownError's decoded `cause`) keep their name and message
      const replacer = (_key, value) => (value instanceof Error ? { name: value.name, message: value.message, ...value } : value)
      fields = JSON.parse(JSON.stringify(original, replacer))
    } catch {
      fields = { _tag: original?._tag }
    }
    const text = JSON.stringify(fields) ?? ''
    // keep reports readable: an UnknownError can carry a whole HTTP request/response
    super(`${fields?._tag ?? 'UnknownFailure'}: ${text.length > 1_500 ? `${text.slice(0, 1_500)}…` : text}`)
    this.name = 'SyncClientError'
    Object.assign(this, fields)
    Object.defineProperty(this, 'original', { value: original, enumerable: false })
  }
}

/** Turns a failed Exit into a thrown error: a SyncClientError with the typed failure's fields if there is one. */
const throwCause = (cause) => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) throw new SyncClientError(failure.value)
  const error = new Error(`LiveStore client defect/interruption:\n${Cause.pretty(cause)}`)
  Object.defineProperty(error, 'original', { value: Cause.squash(cause), enumerable: false })
  throw error
}

/** Converts a pull page from the client (Option instances etc.) into plain data. */
const toPlainPage = (page) => ({
  batch: page.batch.map((item) => ({
    eventEncoded: { ...item.eventEncoded },
    metadata: Option.isSome(item.metadata) ? { _tag: 'Some', value: { ...item.metadata.value } } : { _tag: 'None' },
  })),
  pageInfo: { ...page.pageInfo },
})

/** Flattens pages into the list of encoded events. */
export const eventsOf = (pages) => pages.flatMap((p) => p.batch.map((item) => item.eventEncoded))

const defaultWaitMs = 30_000

/**
 * Opens a real LiveStore sync client (WebSocket by default, or HTTP).
 *
 * @param {object} opts
 * @param {string} opts.url         sync URL, e.g. http://127.0.0.1:8787/sync (the client appends `?storeId=…&transport=ws|http`)
 * @param {string} opts.storeId
 * @param {'ws' | 'http'} [opts.transport='ws']  `http` uses `makeHttpSync`: one POST per RPC, live pull = polling
 * @param {any}   [opts.payload]    sync payload (sent as the `payload` query param)
 * @param {string} [opts.clientId]
 * @param {string} [opts.backendId] pre-seed the backendId the client believes in (normally learnt from the first pull)
 * @param {number} [opts.pingInterval] client ping interval in ms (client default 10 s). NB (WS): the client's manual
 *   `ping` does not send a Ping itself; it waits for the Pong of the next *scheduled* ping, so with the default
 *   interval a later `ping()` can hit the client's own 10 s ping timeout. Over HTTP `ping()` sends a Ping.
 * @param {boolean} [opts.pingEnabled=true] HTTP only: `false` stops the client's background pings
 * @param {number} [opts.pollInterval] HTTP only: live-pull poll interval in ms (client default 5 s)
 * @param {Record<string, string>} [opts.headers] HTTP only: extra request headers (the WS client can't set any)
 * @param {boolean} [opts.connect=true] wait for the first ping/pong before returning
 */
export const openClient = async ({
  url,
  storeId,
  transport = 'ws',
  payload,
  clientId = 'test-client',
  backendId,
  pingInterval,
  pingEnabled = true,
  pollInterval,
  headers,
  connect = true,
}) => {
  if (transport !== 'ws' && transport !== 'http') throw new Error(`openClient: unknown transport ${transport}`)
  if (transport === 'ws' && (headers !== undefined || pollInterval !== undefined || pingEnabled !== true)) {
    throw new Error('openClient: headers, pollInterval and pingEnabled only apply to the http transport')
  }
  const runtime = ManagedRuntime.make(Layer.mergeAll(FetchHttpClient.layer, KeyValueStore.layerMemory))
  const run = async (effect) => {
    const exit = await runtime.runPromiseExit(effect)
    if (Exit.isFailure(exit)) throwCause(exit.cause)
    return exit.value
  }

  // Everything the backend allocates (socket, pinger, …) lives in this scope until close().
  const scope = await run(Scope.make())
  const liveFibers = new Set()
  let closed = false

  const kvGet = (key) => Effect.flatMap(KeyValueStore.KeyValueStore, (kv) => kv.get(key))
  if (backendId !== undefined) {
    await run(Effect.flatMap(KeyValueStore.KeyValueStore, (kv) => kv.set('backendId', backendId)))
  }

  let backend
  try {
    const makeBackend =
      transport === 'http'
        ? makeHttpSync({
            url,
            headers,
            livePull: pollInterval !== undefined ? { pollInterval } : undefined,
            ping: { enabled: pingEnabled, ...(pingInterval ? { requestInterval: pingInterval } : {}) },
          })
        : makeWsSync({ url, ping: pingInterval ? { requestInterval: pingInterval } : undefined })
    backend = await run(makeBackend({ storeId, clientId, payload }).pipe(Scope.extend(scope)))
  } catch (e) {
    await runtime.runPromise(Scope.close(scope, Exit.void)).catch(() => {})
    await runtime.dispose()
    throw e
  }

  const isConnected = () => run(SubscriptionRef.get(backend.isConnected))

  /** `connect`/`ping` time out silently in the client (they just set isConnected=false); make that an error. */
  const ping = async () => {
    await run(backend.ping)
    if (!(await isConnected())) throw new Error(`ping to ${url} (store ${storeId}) got no Pong`)
  }

  const cursorOption = async (cursor) => {
    if (cursor === undefined || cursor === null) return Option.none()
    // the client builds the wire cursor from the backendId it learnt earlier (throws if it has none)
    if (Option.isNone(await run(kvGet('backendId')))) {
      throw new Error('pull with a cursor needs a known backendId: pull once without cursor first (or pass backendId)')
    }
    return Option.some({ eventSequenceNumber: cursor, metadata: Option.none() })
  }

  const client = {
    storeId,
    transport,
    backend,
    isConnected,
    ping,

    /** The backendId the client has learnt from pulls (or was seeded with); undefined if none yet. */
    backendId: async () => Option.getOrUndefined(await run(kvGet('backendId'))),

    /** Pushes a batch (the client itself splits it into ≤100 events / ≤900 kB requests). */
    push: (batch) => run(backend.push(batch)),

    /** Non-live pull of everything after `cursor` (a seqNum); resolves with all pages once the stream ended. */
    pullAll: async (cursor) => {
      const cursorOpt = await cursorOption(cursor)
      const pages = await run(backend.pull(cursorOpt, { live: false }).pipe(Stream.runCollect))
      return Chunk.toReadonlyArray(pages).map(toPlainPage)
    },

    /**
     * Starts a live pull (catch-up pages followed by pushed events) and records every page.
     * `onPage(page)` is called for each page as it arrives.
     * Returns { pages, events(), waitForEvents(n, timeoutMs), waitForPages(n, timeoutMs), stop(), ended },
     * where `ended` resolves with the error that ended the pull (a live pull never ends by itself).
     */
    live: async (cursor, { onPage } = {}) => {
      const cursorOpt = await cursorOption(cursor)
      const pages = []
      let failure
      let resolveEnded
      const ended = new Promise((resolve) => (resolveEnded = resolve))
      let waiters = []
      const notify = () => {
        for (const w of waiters) w()
      }
      const fiber = runtime.runFork(
        backend.pull(cursorOpt, { live: true }).pipe(
          Stream.runForEach((page) =>
            Effect.sync(() => {
              const plain = toPlainPage(page)
              pages.push(plain)
              onPage?.(plain)
              notify()
            }),
          ),
          Effect.scoped,
        ),
      )
      liveFibers.add(fiber)
      fiber.addObserver((exit) => {
        liveFibers.delete(fiber)
        if (Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)) {
          try {
            throwCause(exit.cause)
          } catch (e) {
            failure = e
          }
        } else {
          failure = new Error('live pull stream ended')
        }
        resolveEnded(failure)
        notify()
      })

      const waitUntil = (predicate, what, timeoutMs = defaultWaitMs) =>
        new Promise((resolve, reject) => {
          const check = () => {
            if (predicate()) {
              cleanup()
              resolve(pages)
            } else if (failure) {
              cleanup()
              reject(failure)
            }
          }
          const timer = setTimeout(() => {
            cleanup()
            reject(new Error(`live pull (store ${storeId}): timed out after ${timeoutMs} ms waiting for ${what}; ` +
              `got ${eventsOf(pages).length} events in ${pages.length} pages`))
          }, timeoutMs)
          const cleanup = () => {
            clearTimeout(timer)
            waiters = waiters.filter((w) => w !== check)
          }
          waiters.push(check)
          check()
        })

      return {
        pages,
        events: () => eventsOf(pages),
        waitForEvents: (n, timeoutMs) => waitUntil(() => eventsOf(pages).length >= n, `${n} events`, timeoutMs),
        waitForPages: (n, timeoutMs) => waitUntil(() => pages.length >= n, `${n} pages`, timeoutMs),
        stop: async () => {
          await runtime.runPromise(Fiber.interrupt(fiber))
        },
        ended,
      }
    },

    close: async () => {
      if (closed) return
      closed = true
      for (const fiber of liveFibers) await runtime.runPromise(Fiber.interrupt(fiber)).catch(() => {})
      await runtime.runPromise(Scope.close(scope, Exit.void)).catch(() => {})
      await runtime.dispose()
    },
  }

  if (connect) {
    try {
      await run(backend.connect)
      if (!(await isConnected())) {
        throw new Error(`could not connect to ${url} (store ${storeId}, ${transport}): no Pong within 10 s`)
      }
    } catch (e) {
      await client.close()
      throw e
    }
  }
  return client
}

/** Tracks the clients a test file opens, so they can all be closed at once. */
export const clientPool = () => {
  const clients = []
  return {
    open: async (options) => {
      const client = await openClient(options)
      clients.push(client)
      return client
    },
    closeAll: async () => {
      for (const client of clients.splice(0)) await client.close().catch(() => {})
    },
  }
}
