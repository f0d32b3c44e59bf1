#!/usr/bin/env bash
# The README's test command (and what CI runs): install what is missing,
# fetch the models the tests use, check formatting and lints, then run every
# test against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
start=$(date +%s)
# Tests use the default set (the in-process ASR + default-LLM check) and the
# small "fast" LLM; both are cached, so a warm run only verifies hashes.
python3 scripts/models.py fetch --profile default
python3 scripts/models.py fetch --profile fast
echo "models ready in $(( $(date +%s) - start )) s"
# The browser tests' driver, pinned in tests/browser/package-lock.json;
# installed only when the pinned version is not already there.
want=$(node -p "require('./tests/browser/package.json').dependencies['playwright-core']")
have=$(node -p "try { require('./tests/browser/node_modules/playwright-core/package.json').version } catch { '' }")
if [ "$want" != "$have" ]; then
  npm ci --prefix tests/browser --no-audit --no-fund
fi
cargo fmt --all -- --check
# The release profile, as `make run` builds: after it, only voxloop's own
# test targets compile here, never whisper.cpp, llama.cpp or opus again.
cargo build --release --locked --all-targets
cargo clippy --release --locked --all-targets -- -D warnings
# One test at a time: the speech tests measure latency and must not
# compete with each other for the 2 cores. --no-fail-fast runs every test
# binary even after one fails (cargo still exits non-zero), so one failure
# does not hide the others.
cargo test --release --locked --no-fail-fast --all-targets -- --nocapture --test-threads=1
echo "tests finished in $(( $(date +%s) - start )) s"
