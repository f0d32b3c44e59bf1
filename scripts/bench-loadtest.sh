#!/usr/bin/env bash
# The load-test figures of docs/BENCHMARKS.md: release build, default models,
# server and load tester on this machine over loopback. Takes about 20 minutes.
#   bash scripts/bench-loadtest.sh [OUT_DIR]
# Run it on a quiet machine (check `uptime`): the reports note the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked
bin="$CARGO_TARGET_DIR/release/voxloop"
out="${1:-loadtest-results/bench}"
mkdir -p "$out"
source scripts/bench-lib.sh

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
uptime

# Every turn answered by the model (no start deadline), as in the anchor runs.
export VOXLOOP_START_DEADLINE_MS=0
serve 18480 --pipeline speech
unset VOXLOOP_START_DEADLINE_MS
"$bin" loadtest --url http://127.0.0.1:18480 --sessions 1 --duration 120s \
    --audio tests/data --seed 1 --out "$out/sessions-1"
for n in 2 4; do
    "$bin" loadtest --url http://127.0.0.1:18480 --sessions "$n" --duration 60s \
        --audio tests/data --seed 1 --out "$out/sessions-$n"
done
stop

# The shipped configuration (3 s start deadline) for the capacity search, on
# the ten shared questions (the two human clips are commands, and the default
# LLM answers "Front. Left." with an unspeakable "…": a failure every time).
serve 18481 --pipeline speech
for bound in 2 4; do
    "$bin" loadtest --url http://127.0.0.1:18481 --find-capacity --p95-bound "${bound}s" \
        --duration 60s --audio tests/data/questions.tsv --seed 1 --out "$out/capacity-${bound}s"
done
stop

serve 18482 --pipeline echo
"$bin" loadtest --url http://127.0.0.1:18482 --mode media --find-capacity \
    --max-late-pct 0.5 --sessions 8 --max-sessions 128 --ramp 10/s --duration 30s \
    --audio tests/data --seed 1 --out "$out/media"
stop
uptime
