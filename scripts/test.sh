#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests
# (real eBPF where the machine allows), then the smoke scripts.
# With TAPIO_REQUIRE_EBPF=1, a kernel test that cannot run fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets --quiet -- -D warnings
scripts/verify-lean.sh  # budgets and boundaries; its release build is the one tests/image.rs reuses
echo "== cargo test"
cargo build --locked --quiet
cargo test --locked --no-fail-fast 2>&1
echo "== fuzz smoke"
scripts/fuzz-smoke.sh "${TAPIO_FUZZ_SECONDS:-20}"
