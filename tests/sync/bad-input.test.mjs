// Malformed / invalid input over a raw WebSocket and over plain HTTP: the server must answer with a
// protocol error (Defect frame or failed Exit) or close the socket, never hang, never store anything,
// and the store must keep working for a real client afterwards.

import { WebSocket } from 'ws'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { eventsOf, clientPool } from '../support/livestore-client.mjs'
import { RawSocket, newRequestId, pullRequest, pushRequest, wsSyncUrl } from '../support/raw-ws.mjs'
import { eventlogTable, makeEvents, normalizeEvent, storedRows, uniqueStoreId, rawEvent } from '../support/util.mjs'
import { MAX_FRAME_BYTES } from '../support/pages.mjs'
import { sharedDefaultWorker } from '../support/shared.mjs'

let worker
const clients = clientPool()

const open = (storeId) => clients.open({ url: `${worker.url}/sync`, storeId })

beforeAll(async () => {
  worker = await sharedDefaultWorker()
})

afterAll(async () => {
  await clients.closeAll()
})


/** Pushes events 1..n with a real client; returns them. */
const seed = async (storeId, n) => {
  if (n === 0) return []
  const client = await open(storeId)
  const events = makeEvents(1, n)
  await client.push(events)
  return events
}

/** Nothing beyond `seeded` is stored (raw pull + stored log in D1 or DO SQLite), and a real client can still push and pull. */
const expectUntouchedAndUsable = async (storeId, seeded) => {
  const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId))
  try {
    const res = await raw.request(pullRequest(newRequestId(), storeId))
    expect(res.exit._tag).toBe('Success')
    expect(res.values.flatMap((v) => v.batch).map((i) => normalizeEvent(i.eventEncoded))).toEqual(seeded.map(normalizeEvent))
    expect(res.values.at(-1).pageInfo).toEqual({ _tag: 'NoMore' })
  } finally {
    raw.close()
  }

  const rows = await storedRows(worker, storeId)
  expect(rows.map((r) => r.seqNum)).toEqual(seeded.map((e) => e.seqNum))

  const client = await open(storeId)
  const next = makeEvents(seeded.length + 1, seeded.length + 2, { clientId: 'after-bad-input' })
  await client.push(next)
  const all = eventsOf(await client.pullAll())
  expect(all.map(normalizeEvent)).toEqual([...seeded, ...next].map(normalizeEvent))
}

// `build(storeId, requestId)` returns the frame to send (string or object)
const wsCases = [
  {
    name: 'invalid JSON text',
    seed: 2,
    build: () => 'this is {not json',
    allowed: ['defect', 'close'],
  },
  {
    name: 'JSON object with an unknown _tag',
    seed: 2,
    build: () => ({ _tag: 'Bogus', id: '1', hello: 'world' }),
    allowed: ['defect', 'close'],
  },
  {
    name: 'Request with an unknown rpc tag',
    seed: 2,
    build: (storeId, id) => ({ _tag: 'Request', id, tag: 'SyncWsRpc.Bogus', payload: { storeId }, headers: [] }),
    allowed: ['defect', 'failure', 'close'],
  },
  {
    name: 'push batch with a seqNum gap (1 then 3) on an empty store',
    seed: 0,
    build: (storeId, id) => pushRequest(id, storeId, [rawEvent(1, 0), rawEvent(3, 2)]),
    allowed: ['defect', 'failure', 'close'],
  },
  {
    name: 'push batch with a seqNum gap after the head (3 then 5)',
    seed: 2,
    build: (storeId, id) => pushRequest(id, storeId, [rawEvent(3, 2), rawEvent(5, 4)]),
    allowed: ['defect', 'failure', 'close'],
  },
  {
    name: 'push batch repeating an already stored seqNum',
    seed: 2,
    build: (storeId, id) => pushRequest(id, storeId, [rawEvent(2, 2)]),
    allowed: ['defect', 'failure', 'close'],
  },
  {
    name: 'push batch repeating a seqNum within the batch',
    seed: 2,
    build: (storeId, id) => pushRequest(id, storeId, [rawEvent(3, 2), rawEvent(3, 2)]),
    allowed: ['defect', 'failure', 'close'],
  },
  // Input limits (README "Limits"): each refused with a failed Exit naming the limit.
  {
    name: 'push batch over 1000 events',
    seed: 2,
    build: (storeId, id) => pushRequest(id, storeId, Array.from({ length: 1001 }, (_, i) => rawEvent(3 + i, 2 + i))),
    allowed: ['failure'],
    message: /a push batch holds at most 1000 events/,
  },
  {
    name: 'event args over 900 kB',
    seed: 2,
    build: (storeId, id) => pushRequest(id, storeId, [rawEvent(3, 2, { args: 'x'.repeat(900_000) })]),
    allowed: ['failure'],
    message: /event args are 900002 bytes of JSON; the limit is 900000/,
  },
  {
    name: 'event args nested 10,000 levels deep',
    seed: 2,
    build: (storeId, id) =>
      JSON.stringify(pushRequest(id, storeId, [rawEvent(3, 2, { args: 'DEEP' })])).replace(
        '"DEEP"',
        '['.repeat(10_000) + ']'.repeat(10_000),
      ),
    allowed: ['failure'],
    message: /nested deeper than 128 levels/,
  },
  {
    name: 'seqNum beyond 2^53',
    seed: 2,
    build: (storeId, id) => pushRequest(id, storeId, [rawEvent(2 ** 53, 2)]),
    allowed: ['failure'],
    message: /sequence number 9007199254740992 is beyond 2\^53-1/,
  },
  {
    name: 'pull cursor beyond 2^53',
    seed: 2,
    build: (storeId, id) => pullRequest(id, storeId, { cursor: { backendId: 'any', eventSequenceNumber: 2 ** 53 + 2 } }),
    allowed: ['failure'],
    message: /beyond 2\^53-1/,
  },
  {
    name: 'frame over 1 MiB',
    seed: 2,
    build: (storeId, id) => frameOfSize(id, storeId, 1_200_000),
    allowed: ['close'],
    closeCode: 1009,
  },
]

/** A push frame of exactly `bytes` bytes (ASCII), its size made up by the args of its one event. */
const frameOfSize = (id, storeId, bytes) => {
  const frame = (blob) => JSON.stringify(pushRequest(id, storeId, [rawEvent(3, 2, { args: { id: 'huge', blob } })]))
  const base = frame('').length
  return frame('x'.repeat(bytes - base))
}

describe('bad input over a raw WebSocket', () => {
  for (const c of wsCases) {
    test(c.name, async () => {
      const storeId = uniqueStoreId('bad')
      const seeded = await seed(storeId, c.seed)

      const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId))
      const requestId = newRequestId()
      const frame = c.build(storeId, requestId)
      let reaction
      try {
        const from = raw.messages.length
        raw.send(frame)
        reaction = await raw.reaction({ from, requestId, timeoutMs: 20_000 })
      } finally {
        raw.terminate()
      }
      expect(c.allowed, `unexpected reaction ${JSON.stringify(reaction).slice(0, 500)}`).toContain(reaction.kind)
      if (reaction.kind === 'failure') expect(reaction.frame.exit.cause).toBeTypeOf('object')
      if (c.message !== undefined) {
        // An InvalidRequestError: UnknownError whose cause names the limit.
        const { error } = reaction.frame.exit.cause
        expect(error._tag).toBe('UnknownError')
        expect(error.cause.name).toBe('InvalidRequestError')
        expect(error.cause.message).toMatch(c.message)
      }
      if (c.closeCode !== undefined) expect(reaction.code).toBe(c.closeCode)

      await expectUntouchedAndUsable(storeId, seeded)
    })
  }

  test('the server’s own size check closes a frame of 1 MiB + 1 byte with 1009 and its reason; a frame of exactly 1 MiB is read', async () => {
    const storeId = uniqueStoreId('bad-size')
    const seeded = await seed(storeId, 2)
    const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId))
    try {
      // exactly at the limit: decoded, and refused for what it says (args over 900 kB), the socket open
      const atLimit = newRequestId()
      let from = raw.messages.length
      raw.send(frameOfSize(atLimit, storeId, MAX_FRAME_BYTES))
      const reaction = await raw.reaction({ from, requestId: atLimit, timeoutMs: 20_000 })
      expect(reaction.kind).toBe('failure')
      expect(reaction.frame.exit.cause.error.cause.message).toMatch(/event args are \d+ bytes of JSON; the limit is 900000/)
      expect(raw.closeInfo).toBeUndefined()
      // one byte more: closed by the server's check (its reason names the sizes), nothing decoded
      from = raw.messages.length
      raw.send(frameOfSize(newRequestId(), storeId, MAX_FRAME_BYTES + 1))
      expect(await raw.closed({ timeoutMs: 20_000 })).toEqual({
        code: 1009,
        reason: `frame of ${MAX_FRAME_BYTES + 1} bytes is over the ${MAX_FRAME_BYTES}-byte limit`,
      })
      expect(raw.messages.slice(from)).toEqual([])
    } finally {
      raw.terminate()
    }
    await expectUntouchedAndUsable(storeId, seeded)
  })

  test('a socket that got a protocol error does not break other sockets of the store', async () => {
    const storeId = uniqueStoreId('bad-iso')
    const seeded = await seed(storeId, 1)
    const good = await open(storeId)
    const live = await good.live()
    await live.waitForEvents(1)

    const raw = await RawSocket.open(wsSyncUrl(worker.url, storeId))
    try {
      raw.send('{{{')
      const reaction = await raw.reaction({ timeoutMs: 20_000 })
      expect(['defect', 'close']).toContain(reaction.kind)
    } finally {
      raw.terminate()
    }

    await good.push(makeEvents(2, 3))
    await live.waitForEvents(3)
    expect(live.events().map((e) => e.seqNum)).toEqual([1, 2, 3])
    await expectUntouchedAndUsable(storeId, [...seeded, ...makeEvents(2, 3)])
  })
})

describe('store ids that map to one table name', () => {
  // `eventlog_7_<id with [^A-Za-z0-9] as _>`, and SQLite ignores ASCII case in table names: these
  // three ids name one table. They must never share a log: in D1 (one database for all stores) the
  // first to claim the name keeps it and the others are refused; with DO SQLite every store has its
  // own database.
  test('never share data', async () => {
    const first = uniqueStoreId('Same')
    const others = [first.replaceAll('-', '_'), first.toLowerCase()]
    expect(new Set([first, ...others].map((id) => eventlogTable(id).toLowerCase())).size).toBe(1)
    const seeded = await seed(first, 2)

    for (const other of others) {
      const raw = await RawSocket.open(wsSyncUrl(worker.url, other))
      try {
        const pulled = await raw.request(pullRequest(newRequestId(), other))
        const pushId = newRequestId()
        const from = raw.messages.length
        raw.send(pushRequest(pushId, other, [rawEvent(1, 0)]))
        const pushed = await raw.reaction({ from, requestId: pushId, timeoutMs: 20_000 })
        if (worker.storage === 'd1') {
          for (const exit of [pulled.exit, pushed.frame.exit]) {
            expect(exit._tag).toBe('Failure')
            expect(exit.cause.error.cause.message).toMatch(/already holds store/)
          }
        } else {
          expect(pulled.exit._tag).toBe('Success')
          expect(pulled.values.flatMap((v) => v.batch)).toEqual([])
          expect(pushed.kind).toBe('success')
        }
      } finally {
        raw.terminate()
      }
    }
    await expectUntouchedAndUsable(first, seeded)
  })
})

describe('Durable Streams JSON mode limits', () => {
  const stream = async () => {
    const url = `${worker.url}/v1/stream/${uniqueStoreId('json-limits')}`
    const res = await fetch(url, { method: 'PUT', headers: { 'content-type': 'application/json' } })
    expect(res.status).toBe(201)
    await res.arrayBuffer()
    return url
  }
  const append = (url, body) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  const read = async (url) => (await fetch(`${url}?offset=-1`)).json()

  test('a body nested 10,000 levels deep is a 400 and stores nothing', async () => {
    const url = await stream()
    const res = await append(url, '['.repeat(10_000) + ']'.repeat(10_000))
    expect(res.status).toBe(400)
    expect(await res.text()).toMatch(/nested deeper than 128 levels/)
    expect(await read(url)).toEqual([])
    const ok = await append(url, '[{"a":1}]')
    expect(ok.status).toBe(204)
    await ok.arrayBuffer()
    expect(await read(url)).toEqual([{ a: 1 }])
  })

  test('a body of more than 10,000 messages is a 400 and stores nothing', async () => {
    const url = await stream()
    const res = await append(url, JSON.stringify(Array.from({ length: 10_001 }, (_, i) => i)))
    expect(res.status).toBe(400)
    expect(await res.text()).toMatch(/at most 10000 messages/)
    expect(await read(url)).toEqual([])
  })
})

/** Attempts a WebSocket upgrade; resolves with the HTTP status (101 if it was accepted). */
const upgradeStatus = (url) =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    const timer = setTimeout(() => {
      ws.terminate()
      reject(new Error(`no answer to upgrade of ${url}`))
    }, 15_000)
    ws.once('open', () => {
      clearTimeout(timer)
      ws.close()
      resolve(101)
    })
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer)
      res.resume()
      resolve(res.statusCode)
      ws.terminate()
    })
    ws.once('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
  })

describe('HTTP routing', () => {
  test('GET / → 200 info text', async () => {
    const res = await fetch(`${worker.url}/`)
    expect(res.status).toBe(200)
    expect(await res.text()).toMatch(/^Info:/)
  })

  test('ws transport without Upgrade → 426', async () => {
    const res = await fetch(`${worker.url}/sync?storeId=x&transport=ws`)
    expect(res.status).toBe(426)
    await res.arrayBuffer()
  })

  test('unknown path / query → 400 with a message', async () => {
    // as in @livestore/sync-cf's makeWorker: anything that is neither a sync request nor `GET /` is 400
    const requests = [
      ['POST', '/whatever'],
      ['GET', '/whatever'],
      ['GET', '/sync?storeId=x'], // no transport
      ['GET', '/sync?storeId=x&transport=carrier-pigeon'],
      ['GET', '/sync?transport=ws'], // no storeId
    ]
    const results = []
    for (const [method, path] of requests) {
      const res = await fetch(`${worker.url}${path}`, { method, body: method === 'POST' ? '{}' : undefined })
      const body = (await res.text()).trim()
      results.push({ request: `${method} ${path}`, status: res.status, hasMessage: body.length > 0 })
    }
    expect(results).toEqual(requests.map(([method, path]) => ({ request: `${method} ${path}`, status: 400, hasMessage: true })))
  })

  test('malformed payload param → 400', async () => {
    const base = `${worker.url.replace(/^http/, 'ws')}/sync`
    // not percent-decodable after form-decoding
    expect(await upgradeStatus(`${base}?storeId=x&payload=%25ZZ&transport=ws`)).toBe(400)
    // decodable but not JSON
    expect(await upgradeStatus(`${base}?storeId=x&payload=not%2520json&transport=ws`)).toBe(400)
    // store ids over 256 bytes or with control characters
    expect(await upgradeStatus(`${base}?storeId=${'x'.repeat(257)}&transport=ws`)).toBe(400)
    expect(await upgradeStatus(`${base}?storeId=a%0Ab&transport=ws`)).toBe(400)
    // sanity check: a well-formed payload is accepted
    const ok = encodeURIComponent(encodeURIComponent(JSON.stringify({ authToken: 't' })))
    expect(await upgradeStatus(`${base}?storeId=x&payload=${ok}&transport=ws`)).toBe(101)
  })
})
