#!/usr/bin/env bash
# Registers N simulated agents (default 1000: one hello + one heartbeat each,
# over loopback) with a real `tapio controller` and prints its memory from
# /proc/<pid>/status. Debug build unless PROFILE=release.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
PROFILE="${PROFILE:-debug}"
flag=""; [ "$PROFILE" = release ] && flag="--release"
cargo build -q $flag --bin tapio --example controller_load
bin="target/$PROFILE/tapio"
load="target/$PROFILE/examples/controller_load"

log="$(mktemp)"
"$bin" controller --listen 127.0.0.1:0 --profile examples/profiles/default.yaml 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

addr=""
for _ in $(seq 1 200); do   # bounded: at most ~20 s
    addr="$(sed -n 's/.*controller listening on \([0-9.:]*\).*/\1/p' "$log" | head -n1)"
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { echo "controller did not start:"; cat "$log"; exit 1; }

mem() { awk '/^(VmRSS|VmHWM)/ {printf "%s %s %s  ", $1, $2, $3}' "/proc/$pid/status"; echo; }
echo "controller pid $pid on $addr ($PROFILE build)"
echo -n "before: "; mem
"$load" "$addr" "$N"
agents="$(curl -fsS "http://$addr/v1/status" | grep -o '"agent_id"' | wc -l)"
echo "agents in /v1/status: $agents"
echo -n "after $N agents: "; mem
