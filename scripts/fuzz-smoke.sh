#!/usr/bin/env bash
# Bounded fuzz smoke run: builds every target in fuzz/ once (cargo-fuzz,
# libFuzzer; stable toolchain via RUSTC_BOOTSTRAP=1, which cargo-fuzz needs
# for its instrumentation flags), then runs each for SECONDS (default 20)
# starting from its committed corpus in fuzz/corpus/<target>/. Any crash,
# panic, timeout or OOM fails the run. New inputs go to a scratch corpus,
# so the committed one is left as it is.
#
# Usage: scripts/fuzz-smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1

secs="${1:-20}"
case "$secs" in
  '' | *[!0-9]*) echo "fuzz-smoke: SECONDS must be a whole number, got '$secs'" >&2; exit 2 ;;
esac
command -v cargo-fuzz >/dev/null 2>&1 || {
  echo "fuzz-smoke: cargo-fuzz is missing (scripts/setup.sh --test installs it)" >&2
  exit 2
}

# -O with debug assertions: integer overflow panics like in a debug build.
# No sanitizer: the library is safe Rust but for two audited unsafe blocks,
# and without ASan each target runs several times faster.
build_flags=(-O -a -s none)
echo "== fuzz: building targets"
cargo fuzz build "${build_flags[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in $(cargo fuzz list); do
  corpus="fuzz/corpus/$target"
  [ -d "$corpus" ] || { echo "fuzz-smoke: no corpus $corpus" >&2; failed+=("$target"); continue; }
  mkdir -p "$scratch/$target" "$scratch/artifacts/$target"
  log="$scratch/$target.log"
  echo "== fuzz: $target for ${secs}s"
  # The first corpus dir receives new inputs; the committed one is read only.
  if cargo fuzz run "${build_flags[@]}" "$target" "$scratch/$target" "$corpus" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$scratch/artifacts/$target/" >"$log" 2>&1; then
    # One line of figures per target: coverage, features, speed.
    grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 || true
  else
    echo "fuzz-smoke: $target FAILED; last lines:" >&2
    tail -40 "$log" >&2
    for a in "$scratch/artifacts/$target"/*; do
      [ -e "$a" ] && echo "fuzz-smoke: crashing input ($target): $(base64 -w0 "$a")" >&2
    done
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz-smoke: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz-smoke: all targets ran ${secs}s without a crash"
