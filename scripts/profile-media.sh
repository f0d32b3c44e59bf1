#!/usr/bin/env bash
# docs/BENCHMARKS.md, "Media cost per session": where the server's cycles go
# with SESSIONS (32) echo sessions and with SESSIONS silent speech sessions
# (`loadtest --mode listen` with no question in the run). perf samples the
# server for 20 s in the steady state (DWARF call graphs); inferno folds
# them into flame graphs. The load tester's report gives the per-session CPU.
#   bash scripts/profile-media.sh [OUT_DIR]
# SERVER_BIN=path profiles another build of the server (the load tester is
# always this checkout's build), e.g. the one before a change. PROFILE=0
# runs the same loads without perf, for the per-session figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
perf="${PROFILE:-1}"
if [ "$perf" = 1 ]; then
    command -v perf >/dev/null || { echo "needs perf (Debian: apt-get install linux-perf)" >&2; exit 1; }
    command -v inferno-flamegraph >/dev/null || cargo install --locked inferno
fi
cargo build --release --locked --bin voxloop
bin="$CARGO_TARGET_DIR/release/voxloop"
server_bin="${SERVER_BIN:-$bin}"
out="${1:-loadtest-results/profile}"
sessions="${SESSIONS:-32}"
mkdir -p "$out"
source scripts/bench-lib.sh

profile() { # profile PORT NAME MODE THINK SERVE_ARGS...
    local port=$1 name=$2 mode=$3 think=$4; shift 4
    bin="$server_bin" serve "$port" "$@"
    # Users join at 10/s. Echo users speak again 1-3 s after each echo; a
    # listening user asks nothing within the run.
    "$bin" loadtest --url "http://127.0.0.1:$port" --mode "$mode" --sessions "$sessions" \
        --ramp 10/s --duration "${DURATION:-50s}" --think "$think" --audio tests/data --seed 1 \
        --out "$out/$name" >"$out/$name.log" 2>&1 &
    local lt=$!
    if [ "$perf" != 1 ]; then
        wait "$lt"
        stop
        grep -E "^(summary|server|media):" "$out/$name.log" || true
        return
    fi
    sleep $((sessions / 10 + 12))
    perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$server" \
        -o "$out/$name.perf" -- sleep 20 2>/dev/null
    wait "$lt"
    stop
    perf script --no-inline -i "$out/$name.perf" 2>/dev/null | inferno-collapse-perf >"$out/$name.folded"
    inferno-flamegraph --title "voxloop serve, $sessions $name sessions" \
        <"$out/$name.folded" >"$out/$name.svg"
    echo "flame graph: $out/$name.svg"
    grep -E "^(summary|server|media):" "$out/$name.log" || true
}

echo "machine: $(nproc) CPUs; $(uptime)"
profile 18483 echo media 1s..3s --pipeline echo
profile 18484 silent listen 600s --pipeline speech
echo "after: $(uptime)"
