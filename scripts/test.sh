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
cargo build --locked --all-targets
cargo clippy --locked --all-targets -- -D warnings
# One test at a time: the speech tests measure latency and must not
# compete with each other for the 2 cores.
cargo test --locked --all-targets -- --nocapture --test-threads=1
echo "tests finished in $(( $(date +%s) - start )) s"
