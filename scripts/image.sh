#!/usr/bin/env bash
# Builds the Tapio container image and proves it works the way the
# Kubernetes manifests in deploy/ run it.
#
#   scripts/image.sh build   release binary -> localhost/tapio:<version>,
#                            offline (FROM scratch, no registry pull)
#   scripts/image.sh smoke   runs that image as the DaemonSet does and checks,
#                            from the agent's own output inside the container,
#                            that a refused connect on the host and one inside
#                            another container are reported with the right
#                            host pid (and the second with its container_id)
#
# <version> is the package version in Cargo.toml. `build` runs one
# `cargo build --release` (a no-op when the binary is fresh); set
# TAPIO_IMAGE_BIN=/path/to/tapio to package a binary built elsewhere.
# `smoke` needs root, podman, a kernel with BTF, gcc (a static connect tool)
# and python3 (field checks); it removes every container, image and
# directory it made, also on failure. Prints the image size, the agent's
# peak RSS in the container and the time from `podman run` to ready.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
[ -n "$VERSION" ] || { echo "image: no version in Cargo.toml" >&2; exit 1; }
IMAGE="localhost/tapio:$VERSION"

die() { echo "image: $*" >&2; exit 1; }
say() { echo "image: $*" >&2; }

# What every podman run here needs: podman itself, and two host quirks
# handled or named.
ULIMITS=()
runtime_checks() {
  command -v podman >/dev/null 2>&1 || die "podman is not installed (scripts/setup.sh --test installs it)"
  # A runtime raises RLIMIT_NOFILE/NPROC to its own defaults when it starts
  # a container, which needs CAP_SYS_RESOURCE. Some sandboxes run even root
  # without it, and crun then refuses every container. There, and only
  # there, ask for limits no higher than the caller's own; a real node is
  # not affected.
  local cap_eff
  cap_eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
  if (( ((16#$cap_eff >> 24) & 1) == 0 )); then
    local nproc
    nproc=$(ulimit -Hu)
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ]; then nproc=4096; fi
    ULIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=$nproc:$nproc")
    say "no CAP_SYS_RESOURCE here: containers get ${ULIMITS[*]}"
  fi
  # crun cannot place a container in a hybrid cgroup layout (v1
  # controllers plus cgroup2 at /sys/fs/cgroup/unified) while a controller
  # is still attached to the cgroup2 side; systemd mounts every controller
  # on v1 there, some minimal hosts leave one (often hugetlb) behind.
  local u=/sys/fs/cgroup/unified/cgroup.controllers
  if [ -f "$u" ] && [ -n "$(cat "$u")" ]; then
    die "crun refuses containers: cgroup2 at /sys/fs/cgroup/unified still has controllers ($(cat "$u")); scripts/setup.sh --test mounts them on cgroup v1 as systemd does"
  fi
}

build() {
  runtime_checks
  local bin="${TAPIO_IMAGE_BIN:-}"
  if [ -z "$bin" ]; then
    say "cargo build --release"
    cargo build --release --locked --quiet
    bin=target/release/tapio
  fi
  [ -x "$bin" ] || die "no executable at $bin"
  local got
  got=$("$bin" --version)
  [ "$got" = "tapio $VERSION" ] || die "$bin says '$got', Cargo.toml says $VERSION"

  local ctx
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/tapio-image.XXXXXX")
  # shellcheck disable=SC2064  # expand now: the trap must remove this dir
  trap "rm -rf '$ctx'" EXIT
  local root="$ctx/rootfs"
  mkdir -p "$root/usr/local/bin" "$root/etc"
  install -m 0755 "$bin" "$root/usr/local/bin/tapio"

  # Exactly what the dynamic loader needs: every `=> /path` ldd resolves
  # and the loader itself, at the same paths, symlinks dereferenced.
  local line lib n=0
  while IFS= read -r line; do
    case "$line" in
      *"not found"*) die "ldd: $line" ;;
      *"=> /"*) lib=${line#*=> }; lib=${lib%% (*} ;;
      /*) lib=${line%% (*} ;;
      *) continue ;;
    esac
    lib=${lib//[[:space:]]/}
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
    n=$((n + 1))
  done < <(ldd "$bin" | sed 's/^[[:space:]]*//')
  say "copied $n shared objects ldd named: $(cd "$root" && find . -name '*.so*' | sed 's|^\.||' | sort | tr '\n' ' ')"

  # Names for the two users the manifests run as: 0 (agent), 65532
  # (controller). Nothing needs a shell or a home directory.
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"

  # A rebuild moves the tag; the image it leaves behind is removed, and no
  # intermediate layer images are kept (--layers=false).
  local old new
  old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  podman build --quiet --pull=never --layers=false --build-arg "VERSION=$VERSION" \
    -f Containerfile -t "$IMAGE" "$ctx" >/dev/null
  new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    podman rmi "$old" >/dev/null 2>&1 || say "kept the previous image $old (still in use)"
  fi

  # The image runs at all only if the loader and libraries are complete.
  got=$(podman run --rm "${ULIMITS[@]}" --network none --read-only --cap-drop ALL "$IMAGE" --version) ||
    die "the built image does not run"
  [ "$got" = "tapio $VERSION" ] || die "the image says '$got'"
  say "built $IMAGE ($(image_mb) MB)"
}

image_mb() {
  podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f", $1 / 1e6}'
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (bounded) until `podman logs` of $1 contains $2.
wait_log() {
  local i
  for ((i = 0; i < 600; i++)); do
    podman logs "$1" 2>&1 | grep -qF "$2" && return 0
    sleep 0.1
  done
  die "$1 never logged '$2'"
}

smoke() {
  [ "$(id -u)" -eq 0 ] || die "smoke needs root (it loads BPF programs)"
  [ -f /sys/kernel/btf/vmlinux ] || die "smoke needs a kernel with BTF (/sys/kernel/btf/vmlinux)"
  command -v gcc >/dev/null 2>&1 || die "smoke needs gcc"
  command -v python3 >/dev/null 2>&1 || die "smoke needs python3"
  command -v curl >/dev/null 2>&1 || die "smoke needs curl"
  runtime_checks
  podman image exists "$IMAGE" || die "no image $IMAGE: run scripts/image.sh build first"

  local tag="tapio-smoke-$$"
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/$tag.XXXXXX")
  AGENT="$tag-agent" CONTROLLER="$tag-controller" CONNECT="$tag-connect"
  CONNECT_IMAGE="localhost/$tag-connect:1" WORK="$work"
  trap smoke_cleanup EXIT
  # A signal (a test's timeout, Ctrl-C) exits through the same cleanup.
  trap 'exit 143' TERM
  trap 'exit 130' INT

  # A connect tool with no libc to bring along: static, on scratch. It
  # makes COUNT connects to ADDR:PORT, INTERVAL_MS apart, after DELAY_MS
  # (time for the caller to read its pid), and exits 0 only when every one
  # was refused, so a connect that was not refused cannot pass unnoticed.
  mkdir -p "$work/connect"
  cat >"$work/connect/connect.c" <<'EOF'
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: tapio-connect ADDR PORT COUNT INTERVAL_MS DELAY_MS\n");
    return 2;
  }
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
    fprintf(stderr, "tapio-connect: bad address %s\n", argv[1]);
    return 2;
  }
  int count = atoi(argv[3]), refused = 0;
  sleep_ms(atol(argv[5]));
  for (int i = 0; i < count; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
      perror("tapio-connect: socket");
      return 1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno == ECONNREFUSED)
      refused++;
    close(fd);
    sleep_ms(atol(argv[4]));
  }
  printf("%d/%d refused\n", refused, count);
  return refused == count ? 0 : 1;
}
EOF
  gcc -static -O2 -o "$work/connect/tapio-connect" "$work/connect/connect.c"
  printf 'FROM scratch\nCOPY tapio-connect /tapio-connect\nENTRYPOINT ["/tapio-connect"]\n' >"$work/connect/Containerfile"
  podman build --quiet --pull=never --layers=false -t "$CONNECT_IMAGE" "$work/connect" >/dev/null

  # What the Secret, the ConfigMap and the hostPath volumes hold on a node.
  # The controller runs as 65532, so the token must be readable by it.
  mkdir -p "$work/token" "$work/profile" "$work/data"
  chmod 0755 "$work" "$work/token" "$work/profile"
  head -c 32 /dev/urandom | base64 >"$work/token/token"
  chmod 0644 "$work/token/token"
  cp deploy/base/profile.yaml "$work/profile/profile.yaml"
  chmod 0644 "$work/profile/profile.yaml"

  local cport mport hport kport
  cport=$(free_port) mport=$(free_port) hport=$(free_port) kport=$(free_port)

  # The controller as its Deployment runs it: non-root, read-only root,
  # no capabilities. Host network only so the agent can reach it on
  # loopback here (in the cluster it is a Service).
  podman run -d --name "$CONTROLLER" "${ULIMITS[@]}" --network host \
    --user 65532:65532 --read-only --cap-drop ALL --security-opt no-new-privileges \
    -v "$work/profile:/etc/tapio/profile:ro" -v "$work/token:/etc/tapio/token:ro" \
    "$IMAGE" controller --listen="127.0.0.1:$cport" \
    --profile=/etc/tapio/profile/profile.yaml --token-file=/etc/tapio/token/token >/dev/null
  wait_log "$CONTROLLER" "controller listening on"

  # Flags the agent gained recently are passed only when this image has
  # them, so the smoke also runs against an older build.
  local help extra=() readyz=no
  help=$(podman run --rm "${ULIMITS[@]}" --network none "$IMAGE" agent --help)
  if grep -q -- '--metrics ' <<<"$help"; then
    extra+=(--metrics "--metrics-addr=127.0.0.1:$mport")
    readyz=maybe
  fi
  if grep -q -- '--shutdown-timeout' <<<"$help"; then extra+=(--shutdown-timeout=10); fi

  # The agent as the DaemonSet runs it (deploy/base/agent-daemonset.yaml): host
  # pid and network namespaces, uid 0 with exactly BPF, PERFMON and
  # NET_ADMIN, read-only root, no privilege escalation, no seccomp filter
  # (the manifest says why), the manifest's mounts and TAPIO_DATA_DIR.
  # The controller is reached by the manifest's short Service name, here
  # an /etc/hosts entry: the scratch image has no nsswitch.conf, and glibc
  # must still resolve names the way it will through the cluster's DNS.
  local t0 t1 ready_ms
  # The manifest's /var/log/pods hostPath is DirectoryOrCreate: the same here.
  mkdir -p /var/log/pods
  t0=$(date +%s%N)
  podman run -d --name "$AGENT" "${ULIMITS[@]}" --pid host --network host \
    --user 0:0 --cap-drop ALL --cap-add BPF,PERFMON,NET_ADMIN \
    --read-only --security-opt no-new-privileges --security-opt seccomp=unconfined \
    -v /sys/fs/cgroup:/sys/fs/cgroup:ro -v /sys/kernel/btf:/sys/kernel/btf:ro \
    -v "$work/data:/var/lib/tapio" -v "$work/token:/etc/tapio/token:ro" \
    -v /var/log/pods:/var/log/pods:ro \
    -e TAPIO_DATA_DIR=/var/lib/tapio/occurrences -e NODE_NAME=smoke-node \
    --add-host tapio-controller:127.0.0.1 \
    "$IMAGE" agent --controller-endpoint="http://tapio-controller:$cport" \
    --controller-token-file=/etc/tapio/token/token --sink=controller --sink=file \
    --data-dir=/var/lib/tapio/occurrences --node-name=smoke-node --heartbeat-interval=5 \
    "${extra[@]}" >/dev/null

  # Ready = /readyz answers 200 when the image serves it; an image whose
  # metrics listener has no /readyz yet (404) is timed to its "agent
  # running" log line instead.
  local i code what=""
  for ((i = 0; i < 600; i++)); do
    if [ "$readyz" != no ]; then
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$mport/readyz" || true)
      if [ "$code" = 200 ]; then what="/readyz 200" && break; fi
      if [ "$code" = 404 ]; then readyz=no; fi
    fi
    if [ "$readyz" = no ] && podman logs "$AGENT" 2>&1 | grep -qF "agent running"; then
      what="'agent running' logged (no /readyz in this image)" && break
    fi
    [ "$(podman inspect --format '{{.State.Running}}' "$AGENT")" = true ] || break
    sleep 0.05
  done
  t1=$(date +%s%N)
  [ -n "$what" ] || die "the agent never became ready"
  ready_ms=$(((t1 - t0) / 1000000))
  # Occurrences need the controller's config applied first.
  wait_log "$AGENT" "config applied"
  # The liveness probe's endpoint answers 200 on a healthy agent.
  if [ "$readyz" != no ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$mport/healthz" || true)
    [ "$code" = 200 ] || die "/healthz answered $code on a running agent"
  fi

  # (a) A refused connect made on the host.
  local hpid
  "$work/connect/tapio-connect" 127.0.0.1 "$hport" 5 50 0 >/dev/null &
  hpid=$!
  wait "$hpid" || die "the host connects to 127.0.0.1:$hport were not all refused"

  # (b) One made inside another container (its own network namespace, so
  # its loopback refuses too); the host pid is podman's view of it.
  local cid cpid
  podman run -d --name "$CONNECT" "${ULIMITS[@]}" "$CONNECT_IMAGE" 127.0.0.1 "$kport" 5 50 1000 >/dev/null
  cid=$(podman inspect --format '{{.Id}}' "$CONNECT")
  cpid=$(podman inspect --format '{{.State.Pid}}' "$CONNECT")
  [ "$cpid" -gt 0 ] || die "the connect container exited before its pid was read"
  [ "$(podman wait "$CONNECT")" = 0 ] || die "the container's connects to 127.0.0.1:$kport were not all refused"

  # The host's own cgroup decides whether (a) may carry a container_id: on
  # a plain host it must not; inside a CI container it legitimately does.
  local host_cg
  host_cg=$(sed -n 's/^0:://p' "/proc/self/cgroup")

  # Read them back the way `kubectl exec … tapio recent` does: inside the
  # agent's container, through TAPIO_DATA_DIR. The first refusal of a
  # destination is reported at once and the rest of its 1 s window as one
  # more occurrence with their count, so wait (bounded) until the counts
  # of both destinations add up to the 5 connects each made.
  local out="" check
  check=$(cat <<'EOF'
import json, sys
out, hport, hpid, kport, cpid, cid, host_cg, final = sys.argv[1:]
occ = json.loads(out)["occurrences"]
failures = []

def expect(o, path, want):
    v = o
    for k in path.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    if v != want:
        failures.append(f"dport {o['data'].get('dport')}: {path} = {v!r}, want {want!r}")

for port, pid, label in ((hport, hpid, "host"), (kport, cpid, "container")):
    found = [o for o in occ if o["data"].get("dport") == int(port)]
    total = sum(o["data"].get("count", 0) for o in found)
    if total != 5:
        failures.append(f"{label}: refusals counted for dport {port}: {total}, want 5 ({found})")
    for o in found:
        expect(o, "type", "kernel.network.connection_refused")
        expect(o, "error.code", "CONNECTION_REFUSED")
        expect(o, "data.pid", int(pid))
        expect(o, "data.comm", "tapio-connect")
        expect(o, "data.daddr", "127.0.0.1")
        if label == "container":
            expect(o, "data.container_id", cid)
            expect(o, "data.container_runtime", "podman")
        elif host_cg == "/":
            expect(o, "data.container_id", None)
    if final == "1" and found:
        d = found[0]["data"]
        print(f"smoke: {label}: {len(found)} occurrence(s), count {total}, pid {d.get('pid')}, "
              f"dport {d.get('dport')}, container_id {d.get('container_id', '-')}")
if failures:
    if final == "1":
        print("\n".join("smoke: FAIL " + f for f in failures), file=sys.stderr)
    sys.exit(1)
EOF
)
  for ((i = 0; i < 100; i++)); do
    out=$(podman exec "$AGENT" tapio recent --observer network --limit 0 --json)
    python3 -c "$check" "$out" "$hport" "$hpid" "$kport" "$cpid" "$cid" "$host_cg" 0 && break
    sleep 0.1
  done
  python3 -c "$check" "$out" "$hport" "$hpid" "$kport" "$cpid" "$cid" "$host_cg" 1 ||
    die "the agent's occurrences are not what the connects did"

  local apid hwm
  apid=$(podman inspect --format '{{.State.Pid}}' "$AGENT")
  hwm=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$apid/status")

  # SIGTERM as the kubelet sends it; the agent must exit 0 by itself well
  # inside the 30 s the DaemonSet grants.
  local s0 s1 rc
  s0=$(date +%s%N)
  podman stop -t 30 "$AGENT" >/dev/null
  s1=$(date +%s%N)
  rc=$(podman inspect --format '{{.State.ExitCode}}' "$AGENT")
  [ "$rc" = 0 ] || die "the agent exited $rc on SIGTERM"
  podman logs "$AGENT" 2>&1 | grep -qF "agent stopped" || die "the agent did not log 'agent stopped'"

  echo "smoke: image $IMAGE size $(image_mb) MB"
  echo "smoke: agent peak RSS (VmHWM) in the container ${hwm} MiB"
  echo "smoke: podman run -> ready ${ready_ms} ms ($what)"
  echo "smoke: SIGTERM -> exit 0 in $(((s1 - s0) / 1000000)) ms"
  echo "smoke: ok"
}

smoke_cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    for c in "$AGENT" "$CONTROLLER"; do
      echo "---- podman logs $c (last 40 lines)" >&2
      podman logs --tail 40 "$c" >&2 2>&1 || true
    done
  fi
  # One at a time: podman stops at the first name that does not exist.
  for c in "$AGENT" "$CONTROLLER" "$CONNECT"; do
    podman rm -f -i -t 0 "$c" >/dev/null 2>&1 || true
  done
  podman rmi -f "$CONNECT_IMAGE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}

case "${1:-}" in
  build) build ;;
  smoke) smoke ;;
  *) echo "usage: scripts/image.sh build|smoke" >&2; exit 2 ;;
esac
