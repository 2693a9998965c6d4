// Pub/sub fan-out (estuaries, /v1/estuary/…), our Worker only (neither reference has it): a publish
// to a stream with `subscribers` estuaries, through the FANOUT queue above 100. Two figures:
// - the time from a publish until every session stream holds it (polled with HEADs, not metered);
// - the server CPU per copy: `publishes` more publishes, metered until every session holds them
//   (sampled), then read back in full (not metered).

import { round, sleep } from './stats.mjs'

const json = { 'content-type': 'application/json' }

const ok = async (res, what) => {
  if (!res.ok) throw new Error(`${what}: HTTP ${res.status} ${(await res.text()).slice(0, 300)}`)
  await res.arrayBuffer()
  return res
}

/** How many messages each session holds (its Stream-Next-Offset), for `ids`. */
const counts = async (base, project, ids) => {
  const out = []
  for (let i = 0; i < ids.length; i += 50) {
    const heads = await Promise.all(
      ids.slice(i, i + 50).map(async (id) => {
        const res = await fetch(`${base}/v1/stream/${project}/${id}`, { method: 'HEAD' })
        const next = res.headers.get('stream-next-offset') ?? '0_0'
        return Number(next.split('_')[1])
      }),
    )
    out.push(...heads)
  }
  return out
}

const until = async (check, ms) => {
  const deadline = performance.now() + ms
  while (performance.now() < deadline) {
    if (await check()) return true
    await sleep(100)
  }
  return false
}

export const streamsEstuary = async (ctx, { subscribers = 1_000, publishes = 5 } = {}) => {
  const base = ctx.baseUrl
  const project = `bench-est-${Date.now()}`
  const source = `${base}/v1/stream/${project}/src`
  await ok(await fetch(source, { method: 'PUT', headers: json }), 'create')
  const ids = Array.from({ length: subscribers }, (_, i) => `s${i}`)
  for (let i = 0; i < ids.length; i += 25) {
    await Promise.all(
      ids.slice(i, i + 25).map(async (id) =>
        ok(
          await fetch(`${base}/v1/estuary/subscribe/${project}/src`, { method: 'POST', headers: json, body: JSON.stringify({ estuaryId: id }) }),
          'subscribe',
        ),
      ),
    )
  }
  const publish = async (n) => ok(await fetch(source, { method: 'POST', headers: json, body: JSON.stringify({ n }) }), 'publish')

  // Time until every session holds one publish.
  const t0 = performance.now()
  await publish(0)
  const publishedMs = performance.now() - t0
  let pending = ids
  while (pending.length > 0 && performance.now() - t0 < ctx.capMs) {
    const held = await counts(base, project, pending)
    pending = pending.filter((_, i) => held[i] < 1)
    if (pending.length > 0) await sleep(50)
  }
  const allMs = performance.now() - t0
  if (pending.length > 0) throw new Error(`${pending.length} sessions never got the first publish`)

  // CPU per copy.
  await sleep(1_000)
  const end = ctx.meter.begin()
  for (let k = 1; k <= publishes; k++) await publish(k)
  const sample = ids.filter((_, i) => i % 97 === 0 || i === ids.length - 1)
  await until(async () => (await counts(base, project, sample)).every((c) => c >= 1 + publishes), ctx.capMs)
  await sleep(500)
  const cpu = end()
  const final = await counts(base, project, ids)
  const exact = final.filter((c) => c === 1 + publishes).length
  return {
    figure: `every session holds a publish after ${round(allMs)} ms (publish answered in ${round(publishedMs, 1)} ms); ${exact}/${subscribers} sessions hold all ${1 + publishes} exactly`,
    primary: { value: allMs, unit: 'ms to all', better: 'lower' },
    ops: publishes * subscribers,
    opUnit: 'copy',
    cpu,
    complete: exact === subscribers,
    details: { subscribers, publishes, allMs: round(allMs), publishedMs: round(publishedMs, 1), exact },
  }
}
