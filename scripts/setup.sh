#!/usr/bin/env bash
# Installs what building Tapio needs on Debian/Ubuntu (with --test, also
# what its test suite uses: a Prometheus server and promtool, podman,
# kubectl, cargo-fuzz for the fuzz smoke run), only what is missing. Safe to
# run again. Needs root (or sudo) for apt-get. The kubernetes-validate venv is
# made by the test that uses it.
set -euo pipefail

need_pkgs=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$1"); }
# libclang1: build.rs generates the Rust ABI types with bindgen, which loads
# libclang.so.1 at build time (clang depends on it on today's Debian/Ubuntu;
# named so it never goes missing). libclang-dev (240 MB of headers and
# static libraries) is not needed: nothing links against libclang.
for p in clang libclang1 libelf-dev zlib1g-dev pkg-config make gcc iproute2 nftables python3 python3-venv procps util-linux curl ca-certificates; do
  want "$p"
done
if [ "${1:-}" = "--test" ]; then
  want prometheus
  # scripts/image.sh (and tests/image.rs): podman builds and runs the image,
  # gcc + libc6-dev link its static connect tool.
  want podman
  want libc6-dev
  # tests/deploy.rs renders deploy/ with `kubectl kustomize`. Debian's own
  # archive has no kubectl; install it from apt only where a configured
  # repository offers it (e.g. Kubernetes' or Google Cloud's).
  if ! command -v kubectl >/dev/null 2>&1; then
    if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      want kubectl
    else
      echo "setup: kubectl is not installed and no apt repository offers it; tests/deploy.rs will skip its rendering checks (see https://kubernetes.io/docs/tasks/tools/)" >&2
    fi
  fi
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

# crun (podman's runtime) refuses every container on a hybrid cgroup layout
# (v1 controllers, cgroup2 at /sys/fs/cgroup/unified) while a controller is
# still attached to the cgroup2 side. systemd mounts every controller on v1
# there; minimal hosts can leave one behind (hugetlb here). Mount those on
# v1 the way systemd would, so scripts/image.sh smoke can run containers.
if [ "${1:-}" = "--test" ] && [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    echo "setup: mounting the $c cgroup controller on v1 (/sys/fs/cgroup/$c) for podman" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO mkdir -p "/sys/fs/cgroup/$c"
    $SUDO mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
  done
fi
if [ "${1:-}" = "--test" ] && ! command -v cargo-fuzz >/dev/null 2>&1; then
  # From crates.io, built locally: the fuzz targets in fuzz/ need it
  # (scripts/fuzz-smoke.sh). --locked pins its own dependencies.
  echo "setup: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
