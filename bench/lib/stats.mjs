export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** p-th percentile (0–100) of an array of numbers (sorted in place). */
export const percentiles = (values, ps) => {
  const sorted = values instanceof Float64Array ? values.sort() : Float64Array.from(values).sort()
  const at = (p) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))])
  return Object.fromEntries(ps.map((p) => [p === 100 ? 'max' : `p${p}`, round(at(p), 2)]))
}

export const round = (x, digits = 0) => {
  if (!Number.isFinite(x)) return x
  const f = 10 ** digits
  return Math.round(x * f) / f
}

/** Waits until `check()` is true, polling every `everyMs`; returns whether it became true in time. */
export const waitFor = async (check, timeoutMs, everyMs = 20) => {
  const deadline = performance.now() + timeoutMs
  while (!check()) {
    if (performance.now() > deadline) return false
    await sleep(everyMs)
  }
  return true
}

/**
 * The result of `count` sequential operations timed one by one (`latencies` in ms, over
 * `seconds`): rate, latency p50/p99 and the details every scenario reports. `countKey` names
 * the count in the details (`pushes`, `appends`, `requests`).
 */
export const sequentialResult = ({ latencies, seconds, count, cpu, unit, opUnit, countKey }) => {
  const n = latencies.length
  const lat = percentiles(latencies, [50, 99])
  return {
    figure: `${round(n / seconds)} ${unit}  p50 ${lat.p50} ms  p99 ${lat.p99} ms`,
    primary: { value: n / seconds, unit, better: 'higher' },
    ops: n,
    opUnit,
    cpu,
    complete: n === count,
    details: { [countKey]: n, seconds: round(seconds, 3), perSecond: round(n / seconds), latencyMs: lat },
  }
}
