#!/usr/bin/env bash
# Builds Tapio (release) and runs the agent printing occurrences to stdout.
# Extra arguments are passed to `tapio agent`. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet
exec target/release/tapio agent --sink stdout "$@"
