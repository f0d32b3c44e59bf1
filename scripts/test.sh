#!/usr/bin/env bash
# The README's test command (and what CI runs): install what is missing,
# check formatting and lints, then run every test against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
start=$(date +%s)
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets -- --nocapture
echo "tests finished in $(( $(date +%s) - start )) s"
