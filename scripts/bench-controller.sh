#!/usr/bin/env bash
# Registers N simulated agents (default 1000) with a real `tapio controller`,
# every field at its allowed maximum (examples/controller_load.rs: a hello,
# a heartbeat and an event batch each, over loopback), then prints the
# controller's memory from /proc/<pid>/status and the /v1/status sizes.
# Debug build unless PROFILE=release; the README's figures use
#   PROFILE=release scripts/bench-controller.sh 10000
# ROUNDS=R repeats the whole load R times against the same controller (the
# same agents again: records are replaced, the batches are duplicates), to
# see that memory settles rather than grows.
# Measured (release, 10,000 maximal agents, 2 cores): before issue 14
# (LIMITS=old) 416 MB RSS after the load, a 325 MB /v1/status, 2.44 GB peak
# with four at once; after: 76 MB after the load, 84 MB after the status
# requests and flat over ROUNDS=5; summary 458 KB, pages of 500 ≤ 2.9 MB.
# BIN=path/to/tapio measures another build (e.g. an older one, with
# LIMITS=old so the load uses the maxima that build allowed).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
PROFILE="${PROFILE:-debug}"
LIMITS="${LIMITS:-current}"
ROUNDS="${ROUNDS:-1}"
flag=""; [ "$PROFILE" = release ] && flag="--release"
if [ -z "${BIN:-}" ]; then
  cargo build -q $flag --bin tapio --example controller_load
  BIN="target/$PROFILE/tapio"
else
  cargo build -q $flag --example controller_load
fi
load="target/$PROFILE/examples/controller_load"

work="$(mktemp -d)"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
token="$(cat "$work/token")"
"$BIN" controller --listen 127.0.0.1:0 --profile examples/profiles/default.yaml \
  --token-file "$work/token" 2>"$work/log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

addr=""
for _ in $(seq 1 200); do   # bounded: at most ~20 s
  addr="$(sed -n 's/.*controller listening on \([0-9.:]*\).*/\1/p' "$work/log" | head -n1)"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "controller did not start:"; cat "$work/log"; exit 1; }

mem() { awk '/^(VmRSS|VmHWM)/ {printf "%s %s %s  ", $1, $2, $3}' "/proc/$pid/status"; echo; }
echo "controller pid $pid on $addr ($BIN, load limits: $LIMITS)"
echo -n "before: "; mem
for round in $(seq 1 "$ROUNDS"); do
  "$load" "$addr" "$N" "$token" --limits "$LIMITS" --only load || echo "(the load reported failures)"
  echo -n "round $round, after $N agents: "; mem
  "$load" "$addr" "$N" "$token" --only status || echo "(the status requests reported failures)"
  echo -n "round $round, after the status requests: "; mem
done
