#!/usr/bin/env bash
# Soak: an agent in controller mode (file + stdout + controller sinks) under
# mixed storms for DURATION seconds (default 600) — refused-connect storms,
# process churn with crashing processes, O_DIRECT+fsync block I/O — while the
# controller is killed and restarted twice. Prints agent and controller RSS
# every minute; at the end checks that every refusal is accounted (in a
# `count` or a drop counter, no lost ring record), that the file sink holds
# exactly what stdout printed, and that SIGTERM stops the agent cleanly.
# Loopback only; needs root. Not part of the default test run.
# Usage: scripts/soak.sh [DURATION_SECONDS]   (TAPIO_BIN=… skips the build)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
if [ -z "${TAPIO_BIN:-}" ]; then cargo build --release --quiet --locked; fi
cargo build --release --quiet --locked --example refused_storm
BIN=$(realpath "${TAPIO_BIN:-target/release/tapio}")
GEN=$(realpath target/release/examples/refused_storm)
WORK=$(mktemp -d /tmp/tapio-soak.XXXXXX)
CTL="" AGENT=""
cleanup() {
  [ -n "$AGENT" ] && kill -9 "$AGENT" 2>/dev/null
  [ -n "$CTL" ] && kill -9 "$CTL" 2>/dev/null
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "soak: files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
fail() { echo "soak: FAIL: $*" >&2; tail -n 20 "$WORK/agent.log" >&2 || true; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

CPORT=$(free_port)
MPORT=$(free_port)
head -c 32 /dev/urandom | base64 > "$WORK/token"
start_controller() {
  "$BIN" controller --listen "127.0.0.1:$CPORT" --profile examples/profiles/default.yaml \
    --token-file "$WORK/token" >> "$WORK/ctl.log" 2>&1 &
  CTL=$!
}
start_controller
printf '[metrics]\nenabled = true\naddr = "127.0.0.1:%s"\n' "$MPORT" > "$WORK/agent.toml"
"$BIN" agent --config "$WORK/agent.toml" --controller-endpoint "http://127.0.0.1:$CPORT" \
  --controller-token-file "$WORK/token" --heartbeat-interval 5 \
  --sink stdout --sink file --sink controller --data-dir "$WORK/occ" \
  > "$WORK/out.jsonl" 2> "$WORK/agent.log" &
AGENT=$!
for _ in $(seq 300); do grep -q "config applied" "$WORK/agent.log" && break; sleep 0.1; done
grep -q "config applied" "$WORK/agent.log" || fail "the agent applied no config within 30 s"

# Block I/O target: a file on the work directory's disk.
IOFILE="$WORK/io.bin"
: > "$WORK/refusals.txt"
START=$(date +%s)
NEXT_REPORT=$START
KILLS_AT=("$((START + DURATION / 3))" "$((START + 2 * DURATION / 3))")
KILLED_AT=0
cycle=0
echo "soak: ${DURATION}s, agent pid $AGENT, controller on :$CPORT, metrics on :$MPORT"
printf '%6s %12s %12s %10s %8s\n' "t(s)" "agent_rss" "ctl_rss" "refusals" "files"
while :; do
  now=$(date +%s)
  [ "$now" -ge $((START + DURATION)) ] && break
  cycle=$((cycle + 1))
  # Refusals: a fresh closed port per cycle, so each is accounted on its own.
  p=$(free_port)
  "$GEN" "$p" 20000 2 | sed -n "s/.*refused=\([0-9]*\).*/$p \1/p" >> "$WORK/refusals.txt"
  # Process churn, with a few crashes the agent must report.
  for _ in $(seq 200); do /bin/true; done
  # In a subshell whose stderr is discarded: the parent shell's own
  # "Segmentation fault" notice would flood the log.
  ( for _ in 1 2; do bash -c 'kill -SEGV $$' || true; done ) 2>/dev/null
  # Block I/O: small direct writes, each flushed.
  dd if=/dev/zero of="$IOFILE" bs=4k count=256 oflag=direct conv=fsync status=none
  # Controller outages: killed at 1/3 and 2/3 of the run, back 20 s later.
  for k in "${!KILLS_AT[@]}"; do
    if [ "${KILLS_AT[$k]}" -gt 0 ] && [ "$now" -ge "${KILLS_AT[$k]}" ]; then
      echo "soak: t=$((now - START))s killing the controller (kill -9)"
      kill -9 "$CTL"; wait "$CTL" 2>/dev/null || true; CTL=""
      KILLS_AT[$k]=0; KILLED_AT=$now
    fi
  done
  if [ -z "$CTL" ] && [ "$now" -ge $((KILLED_AT + 20)) ]; then
    echo "soak: t=$((now - START))s restarting the controller"
    start_controller
  fi
  if [ "$now" -ge "$NEXT_REPORT" ]; then
    NEXT_REPORT=$((now + 60))
    made=$(awk '{s+=$2} END {print s+0}' "$WORK/refusals.txt")
    files=$(find "$WORK/occ" -maxdepth 1 -name '*.json' ! -name '.*' | wc -l)
    ctl_rss=0; [ -n "$CTL" ] && ctl_rss=$(rss_kib "$CTL")
    printf '%6s %9s KiB %9s KiB %10s %8s\n' "$((now - START))" "$(rss_kib "$AGENT")" "$ctl_rss" "$made" "$files"
  fi
done
sleep 3   # let the last fold windows close and the sinks write
curl -sf "http://127.0.0.1:$MPORT/metrics" > "$WORK/metrics.txt" || fail "no /metrics"
PEAK=$(awk '/VmHWM/{print $2}' "/proc/$AGENT/status")
kill -TERM "$AGENT"
for _ in $(seq 600); do kill -0 "$AGENT" 2>/dev/null || break; sleep 0.1; done
kill -0 "$AGENT" 2>/dev/null && fail "the agent did not stop within 60 s of SIGTERM"
set +e; wait "$AGENT"; RC=$?; set -e
AGENT=""
echo "soak: agent exit code $RC; last log line:"
tail -n 1 "$WORK/agent.log"

python3 - "$WORK" "$PEAK" "$RC" <<'PY'
import json, os, sys
work, peak, rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
made = {}
for line in open(f"{work}/refusals.txt"):
    p, n = line.split()
    made[int(p)] = made.get(int(p), 0) + int(n)
seen, kinds, lines = {}, {}, 0
for line in open(f"{work}/out.jsonl"):
    lines += 1
    o = json.loads(line)
    kinds[o["type"]] = kinds.get(o["type"], 0) + 1
    if o["type"] == "kernel.network.connection_refused" and o["data"]["dport"] in made:
        seen[o["data"]["dport"]] = seen.get(o["data"]["dport"], 0) + o["data"]["count"]
files = [n for n in os.listdir(f"{work}/occ") if n.endswith(".json") and not n.startswith(".")]
m = open(f"{work}/metrics.txt").read()
def metric(prefix):
    return sum(float(l.rsplit(" ", 1)[1]) for l in m.splitlines() if l.startswith(prefix))
lost = metric("tapio_lost_events_total")
drops = metric("tapio_sink_drops_total{sink=\"stdout\"") + metric("tapio_sink_drops_total{sink=\"file\"") \
    + metric("tapio_sink_drops_total{sink=\"pipeline\"")
total_made, total_seen = sum(made.values()), sum(seen.values())
short = {p: (n, seen.get(p, 0)) for p, n in made.items() if seen.get(p, 0) != n}
print(f"refusals made:           {total_made} over {len(made)} storms")
print(f"refusals in occurrences: {total_seen}")
print(f"lost ring records:       {lost:.0f}")
print(f"stdout/file/pipeline drops: {drops:.0f}")
print(f"occurrences: stdout {lines}, file sink {len(files)}")
for k, v in sorted(kinds.items()):
    print(f"  {k}: {v}")
print(f"agent peak RSS:          {peak / 1024:.1f} MiB")
ok = not short and lost == 0 and len(files) == lines and rc == 0
if short:
    print(f"unaccounted storms (port: made, seen): {dict(list(short.items())[:10])}")
print("soak: " + ("PASS" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
