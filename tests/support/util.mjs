// Shared helpers for the e2e tests: event factories, event-log table names, stored-row access (D1 or DO SQLite).

let storeCounter = 0
/** A storeId unique to this test run (contains '-' so the table-name sanitizing is exercised too). */
export const uniqueStoreId = (prefix) => `${prefix}-${Date.now()}-${process.pid}-${storeCounter++}`

/** Event log table of a store (in D1 or DO SQLite): `eventlog_7_<storeId with [^a-zA-Z0-9] replaced by _>`. */
export const eventlogTable = (storeId) => `eventlog_7_${storeId.replaceAll(/[^a-zA-Z0-9]/g, '_')}`

/**
 * Builds events `from..to` (inclusive) with a contiguous parent chain starting at `from - 1`.
 * `argsFor(seqNum)` may return `undefined` to push an event without `args`.
 */
export const makeEvents = (from, to, { clientId = 'client-A', sessionId = 'session-1', name = 'todoCreated-v1', argsFor } = {}) => {
  const events = []
  for (let seqNum = from; seqNum <= to; seqNum++) {
    const args = argsFor ? argsFor(seqNum) : { id: `t${seqNum}`, text: `todo ${seqNum}` }
    const event = { name, seqNum, parentSeqNum: seqNum - 1, clientId, sessionId }
    if (args !== undefined) event.args = args
    events.push(event)
  }
  return events
}

/** One event as a raw client would push it (for hand-built frames and bodies). */
export const rawEvent = (seqNum, parentSeqNum, extra = {}) => ({
  name: 'todoCreated-v1',
  args: { id: `bad${seqNum}` },
  seqNum,
  parentSeqNum,
  clientId: 'raw-client',
  sessionId: 'raw-session',
  ...extra,
})

/** The wire/D1 view of an event as pushed (absent args come back as null). */
export const normalizeEvent = (e) => ({
  name: e.name,
  args: e.args === undefined ? null : e.args,
  seqNum: e.seqNum,
  parentSeqNum: e.parentSeqNum,
  clientId: e.clientId,
  sessionId: e.sessionId,
})

const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/
export const isIsoTimestamp = (s) => typeof s === 'string' && ISO_RE.test(s) && !Number.isNaN(Date.parse(s))

const ROW_COLUMNS = 'seqNum, parentSeqNum, name, args, createdAt, clientId, sessionId'

const d1HasTable = async (worker, table) =>
  (await worker.d1(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = '${table}'`)).length > 0

/**
 * Rows of a store's event log, ordered by seqNum, read from where the worker keeps event logs
 * (`worker.storage`: D1, or the store's Durable Object SQLite file). [] if the store has no
 * event-log table yet; but the store must be known to the server (its Durable Object exists),
 * otherwise this throws, so a test cannot pass by reading the wrong place.
 */
export const storedRows = async (worker, storeId) => {
  const table = eventlogTable(storeId)
  const select = `SELECT ${ROW_COLUMNS} FROM "${table}" ORDER BY seqNum ASC`
  if (worker.storage === 'do-sqlite') {
    return (await worker.doSql(storeId, { sql: select, ifTable: table })).rows
  }
  if (!(await d1HasTable(worker, table))) {
    await worker.doSql(storeId) // throws unless the store's Durable Object exists
    return []
  }
  return worker.d1(select)
}

/**
 * Runs SQL against the database that holds the store's event log (D1 or the store's DO SQLite file).
 * `write: true` requires the worker to be stopped.
 */
export const storeSql = async (worker, storeId, sql, { write = false } = {}) => {
  if (worker.storage === 'do-sqlite') return (await worker.doSql(storeId, { sql, write })).rows
  return worker.d1(sql, { write })
}

/** Where the store's event-log table exists: { d1: boolean, doSqlite: boolean } (the DO must exist). */
export const eventlogLocations = async (worker, storeId) => {
  const table = eventlogTable(storeId)
  const { tables } = await worker.doSql(storeId)
  return { d1: await d1HasTable(worker, table), doSqlite: tables.includes(table) }
}

/** Splits an array into chunks of at most `size` items. */
export const chunksOf = (items, size) => {
  const out = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

/**
 * Settles `promise` within `timeoutMs`: resolves with { status: 'fulfilled', value } |
 * { status: 'rejected', error } | { status: 'timeout' } (a hang is reported, not waited out).
 */
export const settleWithin = (promise, timeoutMs, what = 'operation') => {
  let timer
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ status: 'timeout', what, timeoutMs }), timeoutMs)
  })
  return Promise.race([
    promise.then(
      (value) => ({ status: 'fulfilled', value }),
      (error) => ({ status: 'rejected', error }),
    ),
    timeout,
  ]).finally(() => clearTimeout(timer))
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Asserts that the worker logged no uncaught exception since `offset` (from worker.logOffset()).
 * Waits `settleMs` first: wrangler writes its log asynchronously.
 */
export const expectNoUncaughtErrors = async (worker, offset, settleMs = 500) => {
  await sleep(settleMs)
  const lines = worker
    .logSince(offset)
    .split('\n')
    .filter((l) => /Uncaught|Your worker restarted/i.test(l))
    // strip ANSI colours for a readable failure message
    .map((l) => l.replaceAll(/\u001b\[[0-9;]*m/g, '').trim())
  if (lines.length > 0) {
    throw new Error(`worker "${worker.name}" logged uncaught errors (see ${worker.logFile}):\n${lines.join('\n')}`)
  }
}

/** Resolves once `predicate()` holds, polling every 50 ms; rejects with `what` after `timeoutMs`. */
export const waitFor = async (predicate, what, timeoutMs = 120_000) => {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(50)
  }
}
