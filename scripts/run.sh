#!/usr/bin/env bash
# The README's run command: install what is missing, fetch the default
# models, build, and start the server on http://127.0.0.1:8080 (override
# with VOXLOOP_BIND or flags).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
python3 scripts/models.py fetch --profile "${VOXLOOP_MODELS_PROFILE:-default}"
cargo build --release --locked
exec "${CARGO_TARGET_DIR:-target}/release/voxloop" serve "$@"
