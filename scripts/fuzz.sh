#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ for SECONDS each (default 8) and prints one summary
# line per target. Fails on any crash, panic, timeout, leak or out-of-memory.
#   scripts/fuzz.sh [SECONDS] [--merge]
# FUZZ_BUILD_ONLY=1 only builds the targets; FUZZ_REPORT=<file> writes {"passed","failed"} (targets) there.
# The committed corpora are fuzz/corpus/<target>. New inputs go to fuzz/work/ (not
# committed): a fresh directory per short run; with --merge (the long form) they accumulate
# in fuzz/work/<target>, and afterwards the corpus is replaced by a small set of inputs
# (from corpus and work together) that still reaches every code edge found. Hit counts are
# left out of that (-use_counters=0): keeping them multiplies the corpus several times over,
# and a short run finds them again in seconds.
# Stable Rust: RUSTC_BOOTSTRAP lets cargo-fuzz pass its -Z sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="$HOME/.cargo/bin:$PATH" RUSTC_BOOTSTRAP=1

seconds=${1:-8}
merge=${2:-}
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
# -rss_limit_mb / -malloc_limit_mb: growing memory or one huge allocation is a failure.
# -timeout: one input that takes more than 10 s is a failure (a hang).
limits=(-rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=10 -max_len=65536)
build=(-O --debug-assertions)

cargo fuzz build "${build[@]}" >/dev/null 2>&1 || cargo fuzz build "${build[@]}"
if [ -n "${FUZZ_BUILD_ONLY:-}" ]; then
  exit 0
fi
mkdir -p logs
status=0
passed=0
failed=0
for target in $targets; do
  work="work/$target"
  if [ "$merge" != --merge ]; then
    work="work/short/$target"
    rm -rf "$work"
  fi
  mkdir -p "$work" "corpus/$target"
  # Inputs that once found a bug (fuzz/regressions/<target>/) run every time, whatever the
  # minimized corpus keeps.
  inputs=("$work" "corpus/$target")
  if [ -d "regressions/$target" ]; then
    inputs+=("regressions/$target")
  fi
  log="logs/$target.log"
  if cargo fuzz run "${build[@]}" "$target" "${inputs[@]}" -- \
    "${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    result=ok
    passed=$((passed + 1))
  else
    result=FAILED
    status=1
    failed=$((failed + 1))
  fi
  execs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  rate=$(grep -m1 -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  rss=$(grep -m1 -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  printf '%-16s %-6s %12s execs %8s/s  peak rss %5s MB\n' "$target" "$result" "$execs" "$rate" "$rss"
  if [ "$result" != ok ]; then
    grep -m20 -E 'panicked|ERROR|SUMMARY|Test unit written|artifact' "$log" >&2 || tail -20 "$log" >&2
  fi
  if [ "$merge" = --merge ] && [ "$result" = ok ]; then
    minimized="work/$target.min"
    rm -rf "$minimized" && mkdir -p "$minimized"
    if cargo fuzz run "${build[@]}" "$target" "$minimized" "corpus/$target" "$work" -- \
      -merge=1 -use_counters=0 "${limits[@]}" >"logs/$target.merge.log" 2>&1; then
      rm -rf "corpus/$target" && mv "$minimized" "corpus/$target"
      echo "  corpus: $(find "corpus/$target" -type f | wc -l) inputs, $(cat "corpus/$target"/* | wc -c) bytes"
    else
      echo "  merge failed, corpus kept: see fuzz/logs/$target.merge.log" >&2
      status=1
    fi
  fi
done
if [ -n "${FUZZ_REPORT:-}" ]; then
  printf '{"passed":%d,"failed":%d}\n' "$passed" "$failed" >"$FUZZ_REPORT"
fi
exit $status
