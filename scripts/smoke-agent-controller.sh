#!/usr/bin/env bash
# Agent ↔ controller smoke test, real eBPF, loopback only:
#   hello, heartbeat, an event delivered and visible in /v1/status;
#   profile edit + SIGHUP → the agent applies the new generation within two
#   poll intervals and the next event carries it; controller killed → the
#   agent keeps writing its file sink and counts failures; controller back →
#   the agent converges; agent restarted → the controller sees the new
#   instance. Needs root. Usage: scripts/smoke-agent-controller.sh [tapio-binary]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/tapio}
[ -x "$BIN" ] || { echo "smoke: $BIN not built (cargo build first)" >&2; exit 2; }
BIN=$(realpath "$BIN")
INTERVAL=5
WORK=$(mktemp -d /tmp/tapio-smoke.XXXXXX)
CTL_PID="" AGENT_PID=""
cleanup() {
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  [ -n "$CTL_PID" ] && kill "$CTL_PID" 2>/dev/null && wait "$CTL_PID" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "smoke: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
fail() { echo "smoke: FAIL: $*" >&2; echo "--- controller log"; tail -n 30 "$WORK/ctl.log" >&2 || true; echo "--- agent log"; tail -n 30 "$WORK/agent.log" >&2 || true; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.5 s.
wait_until() {
  local limit=$1 what=$2; shift 2
  local tries=$((limit * 2))
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  fail "timed out after ${limit}s waiting for: $what"
}
status() { curl -sf -H "Authorization: Bearer $(cat "$WORK/token")" "http://127.0.0.1:$PORT/v1/status"; }
# py EXPR: evaluates EXPR with `s` = /v1/status JSON; exits 0 when truthy.
st() { status | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($1) else 1)"; }
refuse() { python3 -c "import socket,sys; s=socket.socket()
try: s.connect(('127.0.0.1',int(sys.argv[1])))
except ConnectionRefusedError: pass" "$1"; }
closed_port() { free_port; }
# occ_gen PORT: the config_generation of the file-sink occurrence for PORT.
occ_has() { python3 - "$WORK/occ" "$1" "$2" <<'PY'
import json,os,sys
d,port,gen=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
for n in os.listdir(d) if os.path.isdir(d) else []:
    if n.startswith('.'): continue
    try: o=json.load(open(os.path.join(d,n)))
    except Exception: continue
    if o["type"]=="kernel.network.connection_refused" and o["data"]["dport"]==port and o["data"]["config_generation"]==gen:
        sys.exit(0)
sys.exit(1)
PY
}

PORT=$(free_port)
MPORT=$(free_port)
echo "smoke-token-$$-$RANDOM" > "$WORK/token"
cp examples/profiles/default.yaml "$WORK/profile.yaml"
start_controller() {
  "$BIN" controller --listen "127.0.0.1:$PORT" --profile "$WORK/profile.yaml" --token-file "$WORK/token" >>"$WORK/ctl.log" 2>&1 &
  CTL_PID=$!
  wait_until 20 "controller listening" status
}
start_agent() {
  cat > "$WORK/agent.toml" <<TOML
[metrics]
enabled = true
addr = "127.0.0.1:$MPORT"
TOML
  "$BIN" agent --config "$WORK/agent.toml" --controller-endpoint "http://127.0.0.1:$PORT" \
    --controller-token-file "$WORK/token" --sink controller --sink file --data-dir "$WORK/occ" \
    --heartbeat-interval "$INTERVAL" --node-name smoke-node >>"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
}
agent_ids() { status | python3 -c "import json,sys; print(' '.join(a['agent_id'] for a in json.load(sys.stdin)['agents']))"; }

echo "smoke: controller on 127.0.0.1:$PORT"
start_controller
start_agent
wait_until 30 "agent hello + heartbeat with the applied hash" \
  st "len(s['agents'])==1 and s['agents'][0]['heartbeats']>=1 and s['agents'][0]['applied_hash_matches'] and s['agents'][0]['node_name']=='smoke-node'"
FIRST_ID=$(agent_ids)
echo "smoke: agent $FIRST_ID configured"

P1=$(closed_port); refuse "$P1"
wait_until 20 "event for port $P1 in /v1/status" \
  st "any(e['occurrence']['type']=='kernel.network.connection_refused' and e['occurrence']['data']['dport']==$P1 for e in s['events']['recent'])"
wait_until 10 "file sink occurrence for $P1 with generation 1" occ_has "$P1" 1
echo "smoke: event delivered (generation 1)"

sed -i 's/refused_window: 1s /refused_window: 2s /' "$WORK/profile.yaml"
grep -q 'refused_window: 2s' "$WORK/profile.yaml" || fail "profile edit did not apply"
kill -HUP "$CTL_PID"
wait_until 10 "controller generation 2" st "s['config']['config_version']=='2'"
wait_until $((2 * INTERVAL + 5)) "agent applied generation 2" \
  st "s['agents'][0]['applied_config_version']=='2' and s['agents'][0]['applied_hash_matches']"
P2=$(closed_port); refuse "$P2"
wait_until 10 "occurrence with generation 2" occ_has "$P2" 2
echo "smoke: SIGHUP reload applied (generation 2)"

kill "$CTL_PID"; wait "$CTL_PID" 2>/dev/null || true; CTL_PID=""
P3=$(closed_port); refuse "$P3"
wait_until 10 "file sink keeps writing during the outage" occ_has "$P3" 2
wait_until $((2 * INTERVAL + 10)) "controller send failures counted" \
  bash -c "curl -sf http://127.0.0.1:$MPORT/metrics | grep -E '^tapio_controller_send_failures_total\\{kind=\"[a-z]+\"\\} [1-9]'"
echo "smoke: outage: observation continued, failures counted"

start_controller
wait_until $((3 * INTERVAL + 10)) "agent re-hello and convergence after controller restart" \
  st "len(s['agents'])==1 and s['agents'][0]['agent_id']=='$FIRST_ID' and s['agents'][0]['applied_hash_matches']"
echo "smoke: converged after controller restart"

kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=""
start_agent
wait_until 30 "controller sees the new agent instance" \
  st "any(a['agent_id']!='$FIRST_ID' and a['applied_hash_matches'] for a in s['agents'])"
echo "smoke: restarted agent registered as a new instance"
echo "smoke: PASS"
