#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions (default 200000; `frames`, whose
# inputs are whole streams, FRAME_RUNS, default RUNS / 10) from the
# committed seed corpus in fuzz/corpus/TARGET; new inputs libFuzzer finds go
# to a scratch corpus, so the committed one changes only by hand.
# Needs a nightly toolchain and cargo-fuzz (`.ci/run` installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-200000}"
frame_runs="${2:-$((runs / 10))}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in frames manifest resume; do
  mkdir -p "$scratch/$t"
  # -seed fixes libFuzzer's choices, so a run is repeatable. -max_len: a
  # stream of a full 1000-class record frame (4.2 KB) and a few small ones;
  # longer inputs only repeat what shorter ones cover, at 3x the cost.
  n="$runs"; len=16384
  [ "$t" = frames ] && { n="$frame_runs"; len=4608; }
  if ! cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
    -runs="$n" -seed=1 -max_len="$len" -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
    tail -n 60 "$scratch/$t.log"
    echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb|new_units_added)|^Done" "$scratch/$t.log" | sed "s/^/$t: /"
done
