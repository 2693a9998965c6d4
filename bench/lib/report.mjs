// The result table (plain text) and the ratios ours/reference and ours/ceiling.

import { round } from './stats.mjs'

/** µs of CPU per op from a meter reading. */
export const perOp = (cpu, ops) => {
  if (!cpu || !ops) return undefined
  const us = (s) => round((s * 1e6) / ops, 1)
  return { server: us(cpu.serverCpuS), runtime: us(cpu.runtimeCpuS), aux: us(cpu.auxCpuS), node: us(cpu.nodeCpuS), loadGen: us(cpu.loadGenCpuS) }
}

const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? round(a / b, 2) : undefined)

/**
 * For each result of one of our targets: ours/other of the scenario's main figure and of the
 * server CPU per op, against the reference with the same storage and against the ceiling.
 */
export const computeRatios = (results, targets, earlier = []) => {
  const find = (scenario, target) =>
    results.find((r) => r.scenario === scenario && r.target === target && r.ok) ??
    earlier.find((r) => r.scenario === scenario && r.target === target && r.ok)
  for (const r of results) {
    const t = targets.find((x) => x.name === r.target)
    if (!r.ok || t?.kind !== 'ours') continue
    r.ratios = {}
    // Streams scenarios compare with the Node reference Durable Streams server.
    const ref = r.scenario.startsWith('streams-') ? (t.streamsRef ?? t.ref) : t.ref
    for (const [key, otherName] of [['ref', ref], ['ceiling', 'ceiling']]) {
      const other = find(r.scenario, otherName)
      if (!other) continue
      r.ratios[key] = {
        against: otherName,
        ...(other.earlier ? { earlier: other.earlier } : {}),
        figure: ratio(r.primary.value, other.primary.value),
        serverCpuPerOp: ratio(r.cpuPerOp?.server, other.cpuPerOp?.server),
      }
    }
  }
}

const fmtUs = (x) => (x === undefined ? '–' : x >= 100 ? `${Math.round(x)}` : `${x}`)
const fmtRatio = (r) => (r ? `${r.figure ?? '–'} / ${r.serverCpuPerOp ?? '–'}${r.earlier ? ' *' : ''}` : '')

const pad = (s, n) => (s.length >= n ? s : s + ' '.repeat(n - s.length))
const padStart = (s, n) => (s.length >= n ? s : ' '.repeat(n - s.length) + s)

/** The table: one row per scenario × target, in run order. */
export const formatTable = (results) => {
  const header = ['scenario', 'target', 'result', 'srv µs/op', 'run+aux+node', 'lg µs/op', 'op', '÷ref fig/cpu', '÷ceil fig/cpu']
  const rows = results.map((r) => {
    if (!r.ok) {
      return [r.scenario, r.target, r.skipped ? `skipped: ${r.error}` : `ERROR: ${r.error}`, '', '', '', '', '', '']
    }
    const c = r.cpuPerOp ?? {}
    return [
      r.scenario,
      r.target,
      r.figure + (r.complete === false && !r.figure.includes('capped') ? '  (capped)' : '') + (r.error ? `  ERROR: ${r.error}` : ''),
      fmtUs(c.server),
      c.runtime === undefined ? '' : `${fmtUs(c.runtime)}+${fmtUs(c.aux)}+${fmtUs(c.node)}`,
      fmtUs(c.loadGen),
      r.opUnit ?? '',
      fmtRatio(r.ratios?.ref),
      fmtRatio(r.ratios?.ceiling),
    ]
  })
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)))
  const numeric = new Set([3, 4, 5])
  const line = (cells) => cells.map((c, i) => (numeric.has(i) ? padStart(c, widths[i]) : pad(c, widths[i]))).join('  ').trimEnd()
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('  ')]
  let last
  for (const [i, row] of rows.entries()) {
    if (last !== undefined && results[i].scenario !== last) out.push('')
    last = results[i].scenario
    out.push(line(row))
  }
  return out.join('\n')
}
