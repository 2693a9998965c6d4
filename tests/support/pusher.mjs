// The push side of LiveStore's leader (LeaderSyncProcessor, @livestore/common 0.4.0), emulated on top of
// a REAL makeWsSync backend (livestore-client.mjs), for tests with several writers on one store.
//
// The real leader pushes its pending events on top of the upstream head its live pull has reached. On
// ServerAheadError it parks the push fiber until the live pull delivers a chunk (the events the server
// has beyond that parent: "a core part of the sync protocol", LeaderSyncProcessor.ts), rebases pending
// on the new head and pushes again. A server that answers ServerAheadError without ever delivering
// those events wedges the client forever (livestore #1394). Here a wait that does not end within
// `wedgeMs` fails the test as a wedge instead of hanging.

import { settleWithin } from './util.mjs'

/** Event name the pushers use. */
export const PUSHER_EVENT = 'loadEvent-v1'

/**
 * @param {object} opts
 * @param {object} opts.client  an open client from livestore-client.mjs (transport ws)
 * @param {string} opts.label
 * @param {number} [opts.cursor]  start the live pull after this seqNum (the client must know the backendId)
 * @param {number} [opts.wedgeMs=60000]  longest wait for an echo, a catch-up or a push answer before it counts as a wedge
 * @param {boolean} [opts.waitForCatchUp=true]  wait for the live pull's first page before returning
 */
export const makeRebasingPusher = async ({ client, label, cursor, wedgeMs = 60_000, waitForCatchUp = true }) => {
  const live = await client.live(cursor)
  const base = cursor ?? 0
  // the first page (catch-up, ending NoMore) tells the backendId and the head; a reconnecting
  // client that already knows both pushes without waiting for it
  if (waitForCatchUp) await live.waitForPages(1, wedgeMs)
  const head = () => {
    const events = live.events()
    return events.length === 0 ? base : events.at(-1).seqNum
  }
  const waitForHead = async (seqNum, what) => {
    try {
      await live.waitForEvents(seqNum - base, wedgeMs)
    } catch (e) {
      throw new Error(`${label}: WEDGED waiting for ${what} (head ${head()}, wanted ${seqNum}): ${e.message}`)
    }
  }

  /** Every push attempt: { parent, size, ok, error?, minimumExpectedNum?, tags } */
  const attempts = []

  /**
   * Pushes one batch of events (given by their args) the way the leader does: on top of the current
   * head, rebasing after every ServerAheadError. `onAttempt(parent)` may delay/coordinate the send.
   * Resolves with the accepted batch once its own echo came back on the live pull.
   */
  const pushBatch = async (argsList, { clientId = label, sessionId = `${label}-session`, parent: firstParent, onAttempt } = {}) => {
    for (let attempt = 0; ; attempt++) {
      const parent = attempt === 0 && firstParent !== undefined ? firstParent : head()
      if (onAttempt) await onAttempt(parent, attempt)
      const sentAt = Date.now()
      const batch = argsList.map((args, i) => ({
        name: PUSHER_EVENT,
        args: { ...args, attempt, sentAt },
        seqNum: parent + 1 + i,
        parentSeqNum: parent + i,
        clientId,
        sessionId,
      }))
      const tags = argsList.map((a) => a.tag)
      try {
        const outcome = await settleWithin(client.push(batch), wedgeMs, 'push')
        if (outcome.status === 'timeout') {
          throw new Error(`${label}: WEDGED: push on parent ${parent} got no answer within ${wedgeMs} ms (connected: ${await client.isConnected()})`)
        }
        if (outcome.status === 'rejected') throw outcome.error
      } catch (e) {
        if (e?._tag !== 'ServerAheadError') {
          attempts.push({ parent, size: batch.length, ok: false, error: String(e?.message ?? e).slice(0, 300), tags })
          throw e
        }
        attempts.push({ parent, size: batch.length, ok: false, error: 'ServerAheadError', minimumExpectedNum: e.minimumExpectedNum, tags })
        if (!(e.minimumExpectedNum > parent)) throw new Error(`${label}: ServerAheadError with minimumExpectedNum ${e.minimumExpectedNum} for parent ${parent}`)
        // the events the server has beyond `parent` must come on the live pull (#1394)
        await waitForHead(e.minimumExpectedNum, `the catch-up after ServerAheadError(min ${e.minimumExpectedNum})`)
        continue
      }
      attempts.push({ parent, size: batch.length, ok: true, tags })
      // the server broadcasts an accepted push to the pusher's own live pull before acknowledging it
      await waitForHead(parent + batch.length, 'the echo of its own accepted push')
      return batch
    }
  }

  return { client, live, base, head, pushBatch, attempts, label, stop: () => live.stop() }
}

/**
 * Checks the push attempts of several pushers on one store against its stored rows:
 * - the accepted batches tile the log: sorted by parent, each starts where the previous ended;
 * - exactly one accepted batch per parent; every rejected attempt had a parent that some accepted
 *   batch started from (so it lost a race, it was not refused for nothing) and got ServerAheadError;
 * - the stored rows are exactly the accepted batches' events (tags and attempt numbers).
 * Returns the list of problems (empty if none) and counts.
 */
export const checkPushRaces = (attemptLists, rows) => {
  const problems = []
  const all = attemptLists.flat()
  const accepted = all.filter((a) => a.ok).sort((a, b) => a.parent - b.parent)
  const rejected = all.filter((a) => !a.ok)
  let expectedParent = 0
  const winnerParents = new Set()
  for (const a of accepted) {
    if (winnerParents.has(a.parent)) problems.push(`two accepted pushes on parent ${a.parent}`)
    winnerParents.add(a.parent)
    if (a.parent !== expectedParent) problems.push(`accepted push on parent ${a.parent}, expected ${expectedParent}`)
    expectedParent = a.parent + a.size
  }
  for (const r of rejected) {
    if (r.error !== 'ServerAheadError') problems.push(`push on parent ${r.parent} failed with ${r.error}`)
    else if (!winnerParents.has(r.parent)) problems.push(`ServerAheadError on parent ${r.parent}, but no push won that parent`)
  }
  const storedTags = rows.map((r) => JSON.parse(r.args).tag)
  const acceptedTags = accepted.flatMap((a) => a.tags)
  if (JSON.stringify(storedTags) !== JSON.stringify(acceptedTags)) {
    problems.push(`stored events differ from the accepted pushes: stored ${storedTags.length}, accepted ${acceptedTags.length}`)
  }
  if (new Set(storedTags).size !== storedTags.length) problems.push('an event is stored twice')
  if (rows.length !== expectedParent) problems.push(`${rows.length} rows stored, accepted pushes end at ${expectedParent}`)
  const contested = new Set(rejected.map((r) => r.parent)).size
  return { problems: problems.slice(0, 10), accepted: accepted.length, rejected: rejected.length, contestedParents: contested }
}
