#!/usr/bin/env bash
# The README's run command: install what is missing, fetch the default
# models, build, start a local nats-server (JetStream, store in .state/nats)
# unless one is already listening or VOXLOOP_NATS_URL points elsewhere, and
# start the server on http://127.0.0.1:8080 (override with VOXLOOP_BIND or flags).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
python3 scripts/models.py fetch --profile "${VOXLOOP_MODELS_PROFILE:-default}"
cargo build --release --locked
nats_url="${VOXLOOP_NATS_URL-nats://127.0.0.1:4222}"
if [ "$nats_url" = "nats://127.0.0.1:4222" ] && ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  mkdir -p .state/nats
  models/bin/nats-server -js -a 127.0.0.1 -p 4222 -sd .state/nats >.state/nats/nats-server.log 2>&1 &
  nats_pid=$!
  trap 'kill "$nats_pid" 2>/dev/null || true' EXIT
  echo "started nats-server (pid $nats_pid; JetStream store .state/nats; log .state/nats/nats-server.log)"
fi
"${CARGO_TARGET_DIR:-target}/release/voxloop" serve "$@"
