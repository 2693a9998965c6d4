// The last lines of `make test` (scripts/test.sh): one line per part, then one over all of them,
// "N passed, N failed". Reads the test-log dir given as argument: part-<name>.json files
// ({passed, failed}: lint, unit, builds, fuzz-short, conformance…) and vitest.json, the end-to-end
// suite's report (a skipped test counts as failed). A part that should have run and left no
// report counts as one failure. Exits non-zero unless everything passed.
import fs from 'node:fs'
import path from 'node:path'

const dir = process.argv[2]
const EXPECTED = ['lint', 'unit', 'fuzz-build', 'builds', 'deploy-check', 'e2e', 'conformance', 'fuzz-short']

const parts = new Map()
for (const file of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
  const match = /^part-(.+)\.json$/.exec(file)
  if (match) parts.set(match[1], JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')))
}
const vitestReport = path.join(dir, 'vitest.json')
if (fs.existsSync(vitestReport)) {
  const report = JSON.parse(fs.readFileSync(vitestReport, 'utf8'))
  const failed =
    report.numFailedTests + report.numPendingTests + report.numTodoTests + (report.numRuntimeErrorTestSuites ?? 0)
  parts.set('e2e', { passed: report.numPassedTests, failed })
}

let passed = 0
let failed = 0
const order = [...EXPECTED, ...[...parts.keys()].filter((name) => !EXPECTED.includes(name))]
console.log('')
for (const name of order) {
  const counts = parts.get(name) ?? { passed: 0, failed: 1, missing: true }
  passed += counts.passed
  failed += counts.failed
  const note = counts.missing ? '  (did not run)' : ''
  console.log(`${name.padEnd(14)} ${String(counts.passed).padStart(5)} passed, ${counts.failed} failed${note}`)
}
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 && passed > 0 ? 0 : 1)
