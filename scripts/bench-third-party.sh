#!/usr/bin/env bash
# Issue 11 item 2: what a third-party WebRTC client hears next to our own load
# tester, on one server, one session each, the ten shared questions.
# Release build, default models, loopback. Takes about 10 minutes.
#   bash scripts/bench-third-party.sh [OUT_DIR]
# The client is scripts/third_party_client.py (aiortc over WHIP). Its venv
# lives outside the repository and is made on first use:
#   ~/.cache/voxloop/venv-aiortc (pip install -r scripts/third_party_requirements.txt)
# An existing release binary is used as it is; BUILD=1 rebuilds it first,
# VOXLOOP_BIN=PATH measures another binary (before/after a change).
# Run it on a quiet machine (check `uptime`): the output notes the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
bin="${VOXLOOP_BIN:-$CARGO_TARGET_DIR/release/voxloop}"
if [ ! -x "$bin" ] || [ "${BUILD:-0}" = 1 ]; then
    cargo build --release --locked
else
    echo "using $bin (built $(date -ur "$bin" '+%F %T UTC'); BUILD=1 rebuilds)"
fi
venv="${VOXLOOP_AIORTC_VENV:-$HOME/.cache/voxloop/venv-aiortc}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r scripts/third_party_requirements.txt
fi
port="${PORT:-18495}"
url="http://127.0.0.1:$port"
out="${1:-loadtest-results/third-party-$(date +%s)}"
mkdir -p "$out"
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null || true' EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "commit: $(git rev-parse --short HEAD)"
uptime

# Embedded defaults; info logs keep each end-of-turn decision (reason, silence).
VOXLOOP_LOG="${VOXLOOP_LOG:-info}" NO_COLOR=1 "$bin" serve --bind "127.0.0.1:$port" \
    --pipeline speech >"$out/serve.log" 2>&1 &
server=$!
for _ in $(seq 120); do
    curl -sf "$url/healthz" >/dev/null && break
    sleep 1
done
curl -sf "$url/healthz" >/dev/null || { echo "server on $port did not come up" >&2; exit 1; }

# One turn first, not counted: the server's first conversation decodes the
# system prompt cold (~0.4 s more), and whichever client came first would pay it.
echo "== warm-up: one turn"
"$bin" loadtest --url "$url" --sessions 1 --turns 1 --duration 60s \
    --audio tests/data/questions.tsv --in-order --out "$out/warm-up" 2>/dev/null | grep '^summary:' || true

echo "== third-party client (aiortc $("$venv/bin/pip" show aiortc | sed -n 's/^Version: //p'), WHIP)"
third_rc=0
"$venv/bin/python" scripts/third_party_client.py --url "$url" --turns 10 \
    --json-out "$out/third_party.json" | tee "$out/third_party.txt" || third_rc=$?
uptime

echo "== voxloop loadtest, 1 session"
"$bin" loadtest --url "$url" --sessions 1 --turns 10 --duration 600s \
    --audio tests/data/questions.tsv --in-order --seed 1 --out "$out/loadtest" | tee "$out/loadtest.txt"
uptime

# The same client sending nothing between utterances (a muted track, DTX, or
# aiortc's MediaPlayer at the end of a file) instead of a live microphone's silence.
echo "== third-party client, nothing sent between utterances (--tail none)"
"$venv/bin/python" scripts/third_party_client.py --url "$url" --turns 10 --tail none \
    --json-out "$out/third_party_tail_none.json" | tee "$out/third_party_tail_none.txt" || true
uptime

kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
server=""

echo "== side by side"
if [ -s "$out/third_party.json" ]; then
    "$venv/bin/python" scripts/third_party_client.py \
        --compare "$out/third_party.json" "$out/loadtest/loadtest.json" | tee "$out/compare.txt"
fi
if [ -s "$out/third_party_tail_none.json" ]; then
    echo "-- with --tail none:"
    "$venv/bin/python" scripts/third_party_client.py \
        --compare "$out/third_party_tail_none.json" "$out/loadtest/loadtest.json" | tee "$out/compare_tail_none.txt"
fi
echo "end-of-turn decisions (server log):"
sed 's/\x1b\[[0-9;]*m//g' "$out/serve.log" | grep -o 'end of turn.*' | sed 's/^/  /' || true
uptime
exit "$third_rc"
