// Shared helpers for the e2e tests: event factories, D1 table names, stored-row access.

let storeCounter = 0
/** A storeId unique to this test run (contains '-' so the table-name sanitizing is exercised too). */
export const uniqueStoreId = (prefix) => `${prefix}-${Date.now()}-${process.pid}-${storeCounter++}`

/** D1 event log table of a store: `eventlog_7_<storeId with [^a-zA-Z0-9] replaced by _>`. */
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

/** Rows of a store's event log in D1, ordered by seqNum ([] if the table does not exist yet). */
export const storedRows = async (worker, storeId) => {
  const table = eventlogTable(storeId)
  const exists = await worker.d1(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = '${table}'`)
  if (exists.length === 0) return []
  return worker.d1(
    `SELECT seqNum, parentSeqNum, name, args, createdAt, clientId, sessionId FROM ${table} ORDER BY seqNum ASC`,
  )
}

/** Splits an array into chunks of at most `size` items. */
export const chunksOf = (items, size) => {
  const out = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}
