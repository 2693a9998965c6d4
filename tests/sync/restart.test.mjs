// Persistence across worker restarts, and recovery when the event log (D1, or the DO's SQLite with
// E2E_STORAGE=do-sqlite) holds a row the DO head does not know about. Runs on a DO-RPC test Worker of its
// own (the shipped Worker plus TestClientDO), so DO-RPC subscriptions are restarted too.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientDo, recordedEvents } from '../support/client-do.mjs'
import { eventsOf, clientPool } from '../support/livestore-client.mjs'
import { eventlogTable, makeEvents, normalizeEvent, storeSql, storedRows, uniqueStoreId } from '../support/util.mjs'
import { E2E_STORAGE, startDoRpcWorker } from '../support/worker.mjs'

// restarts re-run wrangler's [build] step (normally a quick no-op) and the worker start-up
const RESTART_TEST_TIMEOUT_MS = 300_000

let worker
let syncUrl
const clients = clientPool()

const open = (storeId, opts = {}) => clients.open({ url: syncUrl, storeId, ...opts })
const openWs = open

let clientCounter = 0
/** A fresh TestClientDO (unique name, so a fresh object with empty storage). */
const newClientDo = (label) => clientDo(worker, `${label}-${process.pid}-${clientCounter++}`)

const SUBSCRIPTIONS = 'do_rpc_subscriptions'
/** Rows of the store's do_rpc_subscriptions table ([] if the table does not exist yet). */
const subscriptions = async (storeId) =>
  (await worker.doSql(storeId, { sql: `SELECT * FROM ${SUBSCRIPTIONS} ORDER BY clientDoId`, ifTable: SUBSCRIPTIONS })).rows

const metadataMatcher = () => ({ _tag: 'Some', value: { _tag: 'SyncMessage.SyncMetadata', createdAt: expect.any(String) } })

/** The PullResponse a live update for `events` must carry (events pushed with args, so echoed as they are). */
const livePullResponse = (events, backendId) => ({
  batch: events.map((e) => ({ eventEncoded: e, metadata: metadataMatcher() })),
  pageInfo: { _tag: 'NoMore' },
  backendId,
})

beforeAll(async () => {
  worker = await startDoRpcWorker({ name: `restart-${E2E_STORAGE}` })
  syncUrl = `${worker.url}/sync`
})

afterAll(async () => {
  await clients.closeAll()
  await worker?.stop()
})

describe('worker restart', () => {
  test('events, head and backendId survive a restart', async () => {
    const storeId = uniqueStoreId('restart')
    const before = await open(storeId)
    const events = makeEvents(1, 150, { argsFor: (n) => ({ id: `t${n}`, text: `before restart ${n}` }) })
    await before.push(events.slice(0, 100))
    await before.push(events.slice(100))
    const pagesBefore = await before.pullAll()
    const backendId = await before.backendId()
    expect(eventsOf(pagesBefore)).toHaveLength(150)
    await clients.closeAll()

    await worker.restart()

    const after = await open(storeId)
    const pages = await after.pullAll()
    expect(eventsOf(pages).map(normalizeEvent)).toEqual(events.map(normalizeEvent))
    expect(pages.at(-1).pageInfo).toEqual({ _tag: 'NoMore' })
    expect(await after.backendId()).toBe(backendId)
    // createdAt metadata is persisted as well
    expect(pages.flatMap((p) => p.batch).map((i) => i.metadata)).toEqual(pagesBefore.flatMap((p) => p.batch).map((i) => i.metadata))

    // the head is still 150: a stale parent is refused, the right one accepted
    await expect(after.push(makeEvents(150, 150))).rejects.toMatchObject({
      _tag: 'ServerAheadError',
      minimumExpectedNum: 150,
      providedNum: 149,
    })
    const more = makeEvents(151, 160)
    await after.push(more)
    const all = eventsOf(await after.pullAll())
    expect(all.map(normalizeEvent)).toEqual([...events, ...more].map(normalizeEvent))

    // a client that still believes in the old backendId is not told about a mismatch
    const seeded = await open(storeId, { backendId })
    await seeded.push(makeEvents(161, 161))
    expect(eventsOf(await seeded.pullAll(160)).map((e) => e.seqNum)).toEqual([161])
  }, RESTART_TEST_TIMEOUT_MS)

  test(`a row written to the event log (${E2E_STORAGE}) without the head being updated is picked up after restart`, async () => {
    const storeId = uniqueStoreId('crash')
    const client = await open(storeId)
    await client.push(makeEvents(1, 5))
    await client.pullAll() // learn the backendId
    const backendId = await client.backendId()
    await clients.closeAll()

    // simulate a crash between the D1 insert and the head update: add seqNum 6 behind the server's back
    await worker.stop()
    const createdAt = new Date().toISOString()
    // into D1, or into the store's DO SQLite file (E2E_STORAGE=do-sqlite); the worker is stopped
    await storeSql(
      worker,
      storeId,
      `INSERT INTO ${eventlogTable(storeId)} (seqNum, parentSeqNum, name, args, createdAt, clientId, sessionId) ` +
        `VALUES (6, 5, 'todoCreated-v1', '{"id":"crash","text":"written before the crash"}', '${createdAt}', 'crash-client', 'crash-session')`,
      { write: true },
    )
    // the row really landed where the worker keeps the log (storedRows throws if it finds no store)
    expect((await storedRows(worker, storeId)).map((r) => r.seqNum)).toEqual([1, 2, 3, 4, 5, 6])
    await worker.restart()

    const after = await open(storeId)
    const pages = await after.pullAll()
    const pulled = eventsOf(pages)
    expect(pulled.map((e) => e.seqNum)).toEqual([1, 2, 3, 4, 5, 6])
    expect(normalizeEvent(pulled[5])).toEqual({
      name: 'todoCreated-v1',
      args: { id: 'crash', text: 'written before the crash' },
      seqNum: 6,
      parentSeqNum: 5,
      clientId: 'crash-client',
      sessionId: 'crash-session',
    })
    expect(pages.flatMap((p) => p.batch)[5].metadata).toMatchObject({ _tag: 'Some', value: { createdAt } })
    expect(await after.backendId()).toBe(backendId)

    // the old head (5) is stale now
    await expect(after.push(makeEvents(6, 6))).rejects.toMatchObject({
      _tag: 'ServerAheadError',
      minimumExpectedNum: 6,
      providedNum: 5,
    })
    // pushing on top of the recovered max works
    await after.push(makeEvents(7, 8))
    expect(eventsOf(await after.pullAll()).map((e) => e.seqNum)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])

    // stored log: every seqNum exactly once, chain intact
    const rows = await storedRows(worker, storeId)
    expect(rows.map((r) => r.seqNum)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    expect(rows.map((r) => r.parentSeqNum)).toEqual([0, 1, 2, 3, 4, 5, 6, 7])
    const dupes = await storeSql(
      worker,
      storeId,
      `SELECT seqNum, COUNT(*) AS n FROM ${eventlogTable(storeId)} GROUP BY seqNum HAVING COUNT(*) > 1`,
    )
    expect(dupes).toEqual([])
    // the DO's head checkpoint (context_7, kept like the TypeScript server's) agrees with the log
    const { rows: context } = await worker.doSql(storeId, { sql: 'SELECT currentHead FROM context_7', ifTable: 'context_7' })
    expect(context).toEqual([{ currentHead: 8 }])
  }, RESTART_TEST_TIMEOUT_MS)
})

describe('subscriptions across a restart', () => {
  test(
    'after a restart (sync DO evicted, same persisted state) a push still reaches the subscribed client DO',
    async () => {
      const storeId = uniqueStoreId('dorpc-restart')
      const sub = newClientDo('restart-sub')
      const pusherDo = newClientDo('restart-pusher')
      const clientDoId = await sub.id()
      const requestId = (await sub.live(storeId)).pages[0].rpcRequestId
      await pusherDo.push(storeId, makeEvents(1, 2))
      await sub.waitForRecords((r) => r.length >= 1, { what: 'the call before the restart' })
      const rowsBefore = await subscriptions(storeId)
      expect(rowsBefore).toHaveLength(1)
      await clients.closeAll()

      await worker.restart()

      // the row is still there, untouched
      expect(await subscriptions(storeId)).toEqual(rowsBefore)
      // the client's in-memory live pull is gone with the old process; its records are not
      expect((await sub.livePages(storeId)).failure).toEqual({ _tag: 'NoLivePull' })
      expect((await sub.records()).count).toBe(1)

      // a push over WS: the restarted sync DO reads the subscription from SQLite and calls the client
      const ws = await openWs(storeId)
      await ws.push(makeEvents(3, 4, { clientId: 'after-restart' }))
      const records = await sub.waitForRecords((r) => r.length >= 2, { what: 'the call after the restart' })
      expect(records[1].payload).toEqual({
        _tag: 'Chunk',
        requestId,
        values: [livePullResponse(makeEvents(3, 4, { clientId: 'after-restart' }), records[0].payload.values[0].backendId)],
      })
      // no mailbox any more: handleSyncUpdateRpc just logs it
      expect(records[1].outcome).toBe('handled')

      // and a push over DO-RPC from a client DO that was restarted too (fresh makeDoRpcSync)
      await pusherDo.push(storeId, makeEvents(5, 5))
      const more = await sub.waitForRecords((r) => r.length >= 3, { what: 'the second call after the restart' })
      expect(recordedEvents(more).map((e) => e.seqNum)).toEqual([1, 2, 3, 4, 5])
      expect(await subscriptions(storeId)).toEqual([expect.objectContaining({ clientDoId, requestId })])
    },
    RESTART_TEST_TIMEOUT_MS,
  )

  test(
    'updates owed when the runtime is SIGKILLed are delivered after the restart: every one, in order, each once',
    async () => {
      const storeId = uniqueStoreId('dorpc-kill')
      const sub = newClientDo('kill-sub')
      const pusherDo = newClientDo('kill-pusher')
      const clientDoId = await sub.id()
      await sub.live(storeId)
      // The client refuses for now (retryable): the updates stay owed, the cursor at 0.
      await sub.setMode('retryable')
      await pusherDo.push(storeId, makeEvents(1, 2))
      await pusherDo.push(storeId, makeEvents(3, 3))
      await sub.waitForRecords((r) => r.length >= 1, { what: 'a refused call' })
      expect((await subscriptions(storeId)).map((r) => [r.clientDoId, r.delivered])).toEqual([[clientDoId, 0]])

      await worker.kill()
      await worker.start()
      await sub.setMode('ok')

      // No push: any request that opens the store makes the sync DO deliver what it owes.
      const ws = await openWs(storeId)
      expect(eventsOf(await ws.pullAll()).map((e) => e.seqNum)).toEqual([1, 2, 3])
      const handled = (records) => recordedEvents(records.filter((r) => r.outcome === 'handled')).map((e) => e.seqNum)
      await sub.waitForRecords((r) => handled(r).length >= 3, { what: 'the owed updates after the restart', waitMs: 30_000 })

      await ws.push(makeEvents(4, 4, { clientId: 'after-kill' }))
      const records = await sub.waitForRecords((r) => handled(r).length >= 4, { what: 'the next update' })
      expect(handled(records)).toEqual([1, 2, 3, 4])
      expect(records.filter((r) => r.outcome !== 'handled').every((r) => r.outcome === 'threw-retryable')).toBe(true)
      expect((await subscriptions(storeId)).map((r) => [r.clientDoId, r.delivered])).toEqual([[clientDoId, 4]])
    },
    RESTART_TEST_TIMEOUT_MS,
  )
})
