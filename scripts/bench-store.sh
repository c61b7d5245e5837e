#!/usr/bin/env bash
# Measures the occurrence store on a large data dir: writes N (default
# 100,000) occurrence files spread over the last 7 days, the way the file
# sink names them, then prints wall and CPU time (best of 3, warm page
# cache) of
#   tapio status --json           (reads every file)
#   tapio recent --limit 50       (newest 50: stops early by name)
#   tapio recent --since 5m       (window: prunes by name)
#   tapio health                  (15-minute window)
#   tapio recent --since 1d --limit 0 --json   (a large window, no limit)
# Uses $TAPIO_BIN, else target/release/tapio, else target/debug/tapio
# (debug figures are an upper bound: JSON parsing is ~10x slower there).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-100000}
BIN=${TAPIO_BIN:-}
if [ -z "$BIN" ]; then
    for b in target/release/tapio target/debug/tapio; do
        if [ -x "$b" ]; then BIN=$b; break; fi
    done
fi
if [ -z "$BIN" ]; then
    echo "bench-store: no tapio binary; run cargo build first" >&2
    exit 2
fi

DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

python3 - "$DIR" "$N" <<'EOF'
import json, os, random, sys, time
A = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
def ulid(ms, r):
    n = (ms << 80) | r
    return "".join(A[(n >> (5 * (25 - i))) & 31] for i in range(26))
def rfc3339(ns):
    s, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % (rem // 1_000_000)
d, n = sys.argv[1], int(sys.argv[2])
now = time.time_ns()
span = 7 * 86400 * 1_000_000_000
types = [("kernel.network.connection_refused", "warning", "CONNECTION_REFUSED"),
         ("kernel.network.connection_timeout", "error", "CONNECTION_TIMEOUT"),
         ("kernel.container.oom_kill", "critical", "OOM_KILL"),
         ("kernel.storage.latency_spike", "warning", "IO_LATENCY"),
         ("kernel.node.memory_pressure", "warning", "MEMORY_PRESSURE")]
rng = random.Random(7)
for i in range(n):
    ts = now - span + span * i // n
    kind, sev, code = types[i % len(types)]
    u = ulid(ts // 1_000_000, rng.getrandbits(80))
    o = {"id": u, "timestamp": rfc3339(ts), "source": "tapio", "type": kind,
         "protocol_version": "1.0", "severity": sev, "outcome": "failure",
         "error": {"code": code, "message": "connect to 127.0.0.1:9 refused (rst), count=1"},
         "data": {"pid": 4242, "comm": "bash", "family": "ipv4", "saddr": "127.0.0.1",
                  "sport": 50312, "daddr": "127.0.0.1", "dport": 9, "cause": "rst", "count": 1,
                  "config_generation": 1, "timestamp_ns": ts}}
    with open(os.path.join(d, u + ".json"), "w") as f:
        f.write(json.dumps(o, separators=(",", ":")))
EOF

echo "bench-store: $N files in $DIR ($(du -sh "$DIR" | cut -f1)), binary $BIN"
# Best of 3 by wall time; CPU is user+sys of that run (wall time is noisy
# on a shared machine, CPU much less so).
best() {
    local label=$1; shift
    local best_real="" best_cpu=""
    for _ in 1 2 3; do
        local t real cpu
        # `|| true`: `health` exits with its verdict (1-3 are answers here).
        t=$( { TIMEFORMAT='%R %U %S'; time "$BIN" "$@" --data-dir "$DIR" > /dev/null 2>&1 || true; } 2>&1 )
        real=$(awk '{printf "%d", $1 * 1000}' <<< "$t")
        cpu=$(awk '{printf "%d", ($2 + $3) * 1000}' <<< "$t")
        if [ -z "$best_real" ] || [ "$real" -lt "$best_real" ]; then
            best_real=$real
            best_cpu=$cpu
        fi
    done
    printf '  %-40s %6d ms wall %6d ms cpu\n' "$label" "$best_real" "$best_cpu"
}
best "status --json (all files)" status --json
best "recent --limit 50" recent --limit 50
best "recent --since 5m" recent --since 5m
best "health (15m window)" health
best "recent --since 1d --limit 0 --json" recent --since 1d --limit 0 --json
