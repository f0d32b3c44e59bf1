#!/usr/bin/env bash
# docs/BENCHMARKS.md, "Inference over NATS": the same load (2 virtual users,
# the ten shared questions, one seed) against `serve --inference local` and
# against `serve --inference nats` with two workers (scripts/cluster.sh),
# back to back with one binary on this machine. About 5 minutes (DURATION=60s
# per run; SESSIONS=2; WORKERS=2).
#   bash scripts/bench-remote.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked
bin="$CARGO_TARGET_DIR/release/voxloop"
out="${1:-loadtest-results/remote}"
sessions="${SESSIONS:-2}"
mkdir -p "$out"
source scripts/bench-lib.sh
load() { # load PORT NAME
    "$bin" loadtest --url "http://127.0.0.1:$1" --sessions "$sessions" --duration "${DURATION:-60s}" \
        --audio tests/data/questions.tsv --seed 1 --out "$out/$2"
}
echo "machine: $(nproc) CPUs; $(uptime)"
serve 18490 --pipeline speech --inference local
load 18490 local
stop
trap 'VOXLOOP_BIN="$bin" bash scripts/cluster.sh down "$out/cluster"' EXIT
VOXLOOP_LOG=warn VOXLOOP_BIN="$bin" BASE_PORT=18491 bash scripts/cluster.sh up "$out/cluster"
load 18491 nats
VOXLOOP_NATS_URL=nats://127.0.0.1:14222 "$bin" workers
echo "after: $(uptime)"
