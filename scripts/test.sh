#!/usr/bin/env bash
# `make test`: every test, on fresh state, as CI runs it. Installs what is missing, then
#   1. lint (rustfmt, clippy, tsc), unit tests and the fuzz build  |  in parallel with the Worker builds
#   2. the end-to-end suite (tests/, vitest)  |  in parallel with the short fuzz run, at a lower CPU
#      priority
#   3. the Durable Streams conformance suite
# and ends with one line over every part: "N passed, N failed". Logs: .wrangler/test-logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

logs=.wrangler/test-logs
mkdir -p "$logs"
rm -f "$logs"/part-*.json "$logs"/vitest.json "$logs"/conformance.json
started=$(date +%s)

elapsed() {
  local s=$(($(date +%s) - started))
  printf '%d:%02d' $((s / 60)) $((s % 60))
}

note() {
  printf '\n== [%s] %s\n' "$(elapsed)" "$*"
}

# Records a part that is not a vitest report: part NAME PASSED FAILED.
part() {
  printf '{"passed":%d,"failed":%d}\n' "$2" "$3" >"$logs/part-$1.json"
}

# Runs "$@" with its output in $logs/$name.log (shown when it fails); records pass/fail as one check.
step() {
  local name=$1
  shift
  if "$@" >"$logs/$name.log" 2>&1; then
    part "$name" 1 0
  else
    part "$name" 0 1
    echo "-- $name FAILED; the end of $logs/$name.log:" >&2
    tail -40 "$logs/$name.log" >&2
    return 1
  fi
}

note "setup (tools, npm ci)"
if ! make -s setup; then
  part setup 0 1
  node tests/summary.mjs "$logs"
  exit 1
fi

note "lint, unit tests and fuzz build | Worker builds"
(
  step lint make -s lint
  # cargo test prints one "test result" line per test binary
  if make -s unit >"$logs/unit.log" 2>&1; then ok=1; else ok=0; fi
  read -r p f < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$logs/unit.log")
  if [ "$ok" = 0 ] && [ "$f" = 0 ]; then f=1; fi # did not build or run
  part unit "$p" "$f"
  [ "$ok" = 1 ] || { echo "-- unit tests FAILED; see $logs/unit.log" >&2; tail -40 "$logs/unit.log" >&2; }
  step fuzz-build env FUZZ_BUILD_ONLY=1 bash scripts/fuzz.sh
) &
checks=$!
(
  step builds make -s builds && step deploy-check make -s deploy-check
) &
builds=$!
wait $checks
wait $builds
builds_ok=$?
note "lint, unit tests and builds done"

if [ "$builds_ok" = 0 ]; then
  note "end-to-end suite | short fuzz run (niced)"
  nice -n 10 env FUZZ_REPORT="$PWD/$logs/part-fuzz-short.json" bash scripts/fuzz.sh "${FUZZ_SHORT_SECONDS:-8}" >"$logs/fuzz-short.log" 2>&1 &
  fuzz=$!
  (cd tests && npx vitest run --reporter=default --reporter=json --outputFile="../$logs/vitest.json") 2>&1 | tee "$logs/e2e.log" | grep -E '^ *(✓|×|❯|↓) |FAIL|Test Files|Tests |Duration' || true
  wait $fuzz || true
  cat "$logs/fuzz-short.log"
  # Alone: the suite gives many of its tests vitest's default 5 s, which a loaded machine can miss.
  note "conformance suite"
  node tests/conformance/run.mjs >"$logs/conformance.log" 2>&1 || true
  grep -A200 'Conformance by group' "$logs/conformance.log" || tail -40 "$logs/conformance.log"
fi

note "done in $(elapsed)"
node tests/summary.mjs "$logs"
