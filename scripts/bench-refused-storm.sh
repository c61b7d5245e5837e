#!/usr/bin/env bash
# Refused-connect storm on loopback against a running agent (release build):
# every refusal must be accounted for (sum of `count` over occurrences, or a
# drop counter), no ring record lost; prints agent CPU per connect, the
# agent's peak RSS, the workload's rate with and without the agent, and the
# per-program BPF cost when kernel.bpf_stats_enabled=1. Needs root.
# Usage: scripts/bench-refused-storm.sh [connects] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500000}
T=${2:-2}
# TAPIO_BIN=target/debug/tapio skips the release build (BPF objects are
# compiled the same way in both profiles).
if [ -z "${TAPIO_BIN:-}" ]; then cargo build --release --quiet --locked; fi
cargo build --release --quiet --locked --example refused_storm
BIN=${TAPIO_BIN:-target/release/tapio}
GEN=target/release/examples/refused_storm
WORK=$(mktemp -d /tmp/tapio-bench.XXXXXX)
AGENT=""
cleanup() { [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MPORT=$(port)
P0=$(port)
P1=$(port)

echo "== baseline: no agent"
$GEN "$P0" "$N" "$T" | tee "$WORK/base.txt"

printf '[metrics]\nenabled = true\naddr = "127.0.0.1:%s"\n' "$MPORT" > "$WORK/agent.toml"
"$BIN" agent --config "$WORK/agent.toml" --sink stdout > "$WORK/out.jsonl" 2> "$WORK/agent.log" &
AGENT=$!
for _ in $(seq 100); do grep -q "config applied" "$WORK/agent.log" && break; sleep 0.1; done
ticks() { awk '{print $14+$15}' "/proc/$AGENT/stat"; }
HZ=$(getconf CLK_TCK)
C0=$(ticks)
echo "== with the agent"
$GEN "$P1" "$N" "$T" | tee "$WORK/agent.txt"
sleep 2.5   # let the last fold window close and the sinks write
C1=$(ticks)
curl -sf "http://127.0.0.1:$MPORT/metrics" > "$WORK/metrics.txt"
RSS=$(awk '/VmHWM/{print $2}' "/proc/$AGENT/status")
kill -INT "$AGENT"; wait "$AGENT" || true; AGENT=""

python3 - "$WORK" "$P1" "$N" "$C0" "$C1" "$HZ" "$RSS" <<'PY'
import json, re, sys
work, port, n, c0, c1, hz, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
total = occ = 0
for line in open(f"{work}/out.jsonl"):
    o = json.loads(line)
    if o["type"] == "kernel.network.connection_refused" and o["data"]["dport"] == port:
        total += o["data"]["count"]; occ += 1
refused = int(re.search(r"refused=(\d+)", open(f"{work}/agent.txt").read()).group(1))
def rate(f): return float(re.search(r"rate_per_s=(\d+)", open(f"{work}/{f}").read()).group(1))
m = open(f"{work}/metrics.txt").read()
def metric(name):
    return sum(float(l.rsplit(" ", 1)[1]) for l in m.splitlines() if l.startswith(name))
lost = metric("tapio_lost_events_total")
drops = metric("tapio_sink_drops_total") + metric("tapio_correlation_drops_total")
cpu_s = (c1 - c0) / hz
print(f"refusals made:            {refused}")
print(f"refusals in occurrences:  {total} (in {occ} occurrences)")
print(f"lost ring records:        {lost:.0f}")
print(f"sink/correlation drops:   {drops:.0f}")
print(f"agent CPU:                {cpu_s:.2f} s = {cpu_s / max(refused, 1) * 1e6:.3f} us per connect")
print(f"agent peak RSS:           {rss / 1024:.1f} MiB")
print(f"workload rate:            {rate('base.txt'):.0f}/s without, {rate('agent.txt'):.0f}/s with the agent ({(1 - rate('agent.txt') / rate('base.txt')) * 100:.1f}% slower)")
runs = {}
for l in m.splitlines():
    mm = re.match(r'tapio_bpf_program_(runs|run_time_seconds)_total\{observer="(\w+)",program="(\w+)"\} (\S+)', l)
    if mm:
        runs.setdefault(mm.group(3), {})[mm.group(1)] = float(mm.group(4))
for p, v in sorted(runs.items()):
    if v.get("runs"):
        print(f"bpf {p}: {v['run_time_seconds'] * 1e9 / v['runs']:.0f} ns per run over {v['runs']:.0f} runs")
if not runs:
    print("bpf per-program cost: not collected (sysctl -w kernel.bpf_stats_enabled=1 to measure)")
ok = total == refused and lost == 0
print("accounted: " + ("yes" if ok else "NO"))
sys.exit(0 if ok else 1)
PY
