#!/usr/bin/env bash
# Installs what building Tapio needs on Debian/Ubuntu (with --test, also
# what its test suite uses: a Prometheus server and promtool, and cargo-fuzz
# for the fuzz smoke run), only what is missing. Safe to run again. Needs root (or sudo) for apt-get.
set -euo pipefail

need_pkgs=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$1"); }
for p in clang libelf-dev zlib1g-dev pkg-config make gcc iproute2 nftables python3 python3-venv procps util-linux curl ca-certificates; do
  want "$p"
done
if [ "${1:-}" = "--test" ]; then
  want prometheus
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain with rustup" >&2
    command -v curl >/dev/null 2>&1 || { apt-get install -y -qq curl >/dev/null; }
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true

if [ "${1:-}" = "--test" ] && ! command -v cargo-fuzz >/dev/null 2>&1; then
  # From crates.io, built locally: the fuzz targets in fuzz/ need it
  # (scripts/fuzz-smoke.sh). --locked pins its own dependencies.
  echo "setup: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
