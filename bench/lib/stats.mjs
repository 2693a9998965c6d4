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
