// Prints vitest's JSON report as one plain closing line: "e2e: N passed, N failed[, N skipped]".
// Exits non-zero when a test failed or was skipped (a skipped test counts as a failure here).
import fs from 'node:fs'

const [reportPath] = process.argv.slice(2)
const report = JSON.parse(fs.readFileSync(reportPath, 'utf8'))
const passed = report.numPassedTests
const failed = report.numFailedTests + (report.numRuntimeErrorTestSuites ?? 0)
const skipped = report.numPendingTests + report.numTodoTests
console.log(`e2e: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
process.exit(failed > 0 || skipped > 0 || passed === 0 ? 1 : 0)
