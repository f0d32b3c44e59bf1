#!/usr/bin/env bash
# The layout of docs/DEPLOY.md on one machine: one nats-server (JetStream),
# WORKERS `voxloop worker` processes and SERVERS `voxloop serve --inference
# nats` processes on ports BASE_PORT, BASE_PORT+1, ...
#   bash scripts/cluster.sh up [DIR]     start, wait until every server sees
#                                        a worker for each role, print the URLs
#   bash scripts/cluster.sh down [DIR]   SIGTERM servers, then workers (both
#                                        drain), then nats-server
# Environment: VOXLOOP_BIN (target/release/voxloop), WORKERS (2), SERVERS (1),
# BASE_PORT (18500), NATS_PORT (14222), WORKER_ROLES (roles of each worker,
# space separated, e.g. "asr llm,tts"; default all roles for every worker).
# Other VOXLOOP_* variables reach every process. DIR (.state/cluster) holds
# the logs and the pids.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:-}"
dir="${2:-.state/cluster}"
bin="${VOXLOOP_BIN:-${CARGO_TARGET_DIR:-target}/release/voxloop}"
workers="${WORKERS:-2}"
servers="${SERVERS:-1}"
base="${BASE_PORT:-18500}"
nats_port="${NATS_PORT:-14222}"
nats_url="nats://127.0.0.1:$nats_port"

wait_for() { # wait_for SECONDS CMD...: poll CMD until it succeeds
    local n=$1; shift
    for _ in $(seq $((n * 5))); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}

up() {
    mkdir -p "$dir/nats"
    : >"$dir/pids"
    models/bin/nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$dir/nats" >"$dir/nats.log" 2>&1 &
    echo "nats $!" >>"$dir/pids"
    wait_for 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$nats_port" 2>/dev/null \
        || { echo "nats-server did not start (see $dir/nats.log)" >&2; exit 1; }
    read -r -a roles <<<"${WORKER_ROLES:-}"
    for i in $(seq 0 $((workers - 1))); do
        VOXLOOP_NATS_URL="$nats_url" "$bin" worker --roles "${roles[$i]:-asr,llm,tts,embed}" \
            >"$dir/worker-$i.out" 2>"$dir/worker-$i.log" &
        echo "worker $!" >>"$dir/pids"
    done
    for i in $(seq 0 $((workers - 1))); do
        wait_for 120 grep -q '^worker: ' "$dir/worker-$i.out" \
            || { echo "worker $i did not start (see $dir/worker-$i.log)" >&2; exit 1; }
    done
    for i in $(seq 0 $((servers - 1))); do
        port=$((base + i))
        VOXLOOP_NATS_URL="$nats_url" "$bin" serve --inference nats --bind "127.0.0.1:$port" \
            >"$dir/serve-$i.out" 2>"$dir/serve-$i.log" &
        echo "serve $!" >>"$dir/pids"
        wait_for 60 bash -c "curl -sf http://127.0.0.1:$port/healthz | grep -q '\"status\":\"ok\"'" \
            || { echo "server $i did not see its workers (see $dir/serve-$i.log)" >&2; exit 1; }
        echo "server: http://127.0.0.1:$port"
    done
    echo "nats: $nats_url"
    VOXLOOP_NATS_URL="$nats_url" "$bin" workers
}

down() {
    [ -f "$dir/pids" ] || return 0
    for kind in serve worker nats; do
        pids=$(awk -v k="$kind" '$1 == k { print $2 }' "$dir/pids")
        for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
        for p in $pids; do
            for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        done
    done
    rm -f "$dir/pids"
}

case "$cmd" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down [DIR]" >&2; exit 2 ;;
esac
