#!/usr/bin/env bash
# The "real-time turn path" figures of docs/BENCHMARKS.md: release build,
# default models, server and load tester on this machine over loopback.
#   bash scripts/bench-turn-path.sh [OUT_DIR]
# About 8 minutes. Run it on a quiet machine (check `uptime`); each step
# prints the load average. Bounded: fixed durations, loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked
bin="$CARGO_TARGET_DIR/release/voxloop"
out="${1:-loadtest-results/turn-path}"
mkdir -p "$out"
source scripts/bench-lib.sh
hogs=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; [ -n "$hogs" ] && kill -- "-$hogs" 2>/dev/null; true' EXIT

load() { echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"; }

run() { # NAME PORT SESSIONS: one 60 s load test, its labelled lines
    load
    "$bin" loadtest --url "http://127.0.0.1:$2" --sessions "$3" --duration 60s \
        --audio tests/data --seed 1 --out "$out/$1" 2>/dev/null | grep -E '^(summary|server):'
}

echo "== one session, converse"; load
"$bin" converse --profile default tests/data/q*.wav 2>/dev/null | grep '^timings:'

echo "== 4 sessions, bulk inference niced"
VOXLOOP_BULK_NICE=5 serve 18490 --pipeline speech; run sessions-4-nice5 18490 4; stop
echo "== 4 sessions (default: VOXLOOP_BULK_NICE=0)"
serve 18491 --pipeline speech; run sessions-4 18491 4; stop

echo "== 1 session, two CPU hogs in another process group"
serve 18492 --pipeline speech
setsid bash -c 'for _ in 1 2; do (while :; do :; done) & done; wait' &
hogs=$!
sleep 3
run stress-1 18492 1
kill -- "-$hogs" 2>/dev/null || true
hogs=""
stop
