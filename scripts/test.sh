#!/usr/bin/env bash
# The test command (README, CI): installs test dependencies, then runs format
# and lint checks, every Rust test, and the Python client tests of `lucebox serve`.
# Under CI=true, checks that need NVRTC or third-party test data fail instead of skipping.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
t0=$(date +%s)
eval "$(bash scripts/setup-deps.sh)"
echo "== setup done in $(( $(date +%s) - t0 ))s"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked --bins
cargo test --workspace --locked --no-fail-fast -- --nocapture 2>&1 | tee .cache/cargo-test.log
grep -E "^test result:" .cache/cargo-test.log | awk '{p+=$4; f+=$6} END {print "cargo test totals:", p, "passed,", f, "failed"}'

if [ -d tests/python ]; then
  LUCEBOX_BIN="$root/target/debug/lucebox" "$LUCEBOX_PYTHON" -m pytest -q tests/python
fi
echo "== all tests done in $(( $(date +%s) - t0 ))s"
