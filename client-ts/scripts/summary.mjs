// Prints vitest JSON reports as plain lines, then one closing line for all of them:
// "e2e: N passed, N failed[, N skipped]". Exits non-zero when a test failed or was skipped
// (a skipped test counts as a failure here) or when nothing ran.
import fs from 'node:fs'

let passed = 0
let failed = 0
let skipped = 0
for (const reportPath of process.argv.slice(2)) {
  let report
  try {
    report = JSON.parse(fs.readFileSync(reportPath, 'utf8'))
  } catch (error) {
    console.log(`${reportPath}: no report (${error.message})`)
    failed += 1
    continue
  }
  const p = report.numPassedTests
  const f = report.numFailedTests + (report.numRuntimeErrorTestSuites ?? 0)
  const s = report.numPendingTests + report.numTodoTests
  console.log(`${reportPath}: ${p} passed, ${f} failed${s ? `, ${s} skipped` : ''}`)
  passed += p
  failed += f
  skipped += s
}
console.log(`e2e: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
process.exit(failed > 0 || skipped > 0 || passed === 0 ? 1 : 0)
