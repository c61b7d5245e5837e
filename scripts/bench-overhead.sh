#!/usr/bin/env bash
# What the agent costs a healthy busy node, per workload operation:
#   connect  a successful loopback TCP connection (connect, 1-byte ping-pong, orderly close)
#   refused  a connect to a closed loopback port
#   fork     fork + exec /bin/true + exit + wait
#   io       a 4 KiB O_DIRECT write + fdatasync (a file under target/)
# For each it prints the in-kernel ns per operation, per BPF program and in
# total (the kernel's own run-time accounting, kernel.bpf_stats_enabled=1,
# turned on for the run and restored after; it adds a clock-read pair to
# every run, included in the figures), the agent's CPU per operation, and
# the wall-clock slowdown: ROUNDS rounds alternate a run without the agent,
# a run with it, and a second run without it (the null control, so the
# noise of this machine is visible next to the slowdown). Also checks the
# refused workload's accounting: every refusal in an occurrence `count`,
# no lost ring record. Background work on the machine (builds, other
# tests) adds runs to the fork and io programs: run it on a quiet machine.
# Needs root. Usage: scripts/bench-overhead.sh [ROUNDS] [SCALE]
#   SCALE multiplies the operations per run (default 1: 20k connects,
#   50k refusals, 2k forks, 2k writes). WORKLOADS="connect io" runs only
#   those; TAPIO_BIN=target/debug/tapio skips the release build (the BPF
#   objects, and so the kernel-side figures, are the same in both).
#   EBPF_DIR=<dir> runs the agent with --ebpf-dir <dir> (BPF objects built
#   elsewhere), so two versions of the kernel side can be compared with
#   one binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-6}
SCALE=${2:-1}
if [ -z "${TAPIO_BIN:-}" ]; then cargo build --release --quiet --locked; fi
cargo build --release --quiet --locked --example overhead_load
BIN=$(realpath "${TAPIO_BIN:-target/release/tapio}")
GEN=$(realpath target/release/examples/overhead_load)
WORK=$(mktemp -d "$PWD/target/bench-overhead.XXXXXX")
OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS" || true
  pkill -INT -f "$WORK/agent.toml" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
sysctl -qw kernel.bpf_stats_enabled=1
EBPF_ARGS=${EBPF_DIR:+--ebpf-dir $(realpath "$EBPF_DIR")}
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%FT%TZ); agent $BIN ${EBPF_ARGS}"
python3 - "$BIN" "$GEN" "$WORK" "$ROUNDS" "$SCALE" "$EBPF_ARGS" <<'PY'
import json, os, re, signal, socket, statistics, subprocess, sys, time, urllib.request
BIN, GEN, WORK, ROUNDS, SCALE = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
EBPF_ARGS = sys.argv[6].split()

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

ONLY = os.environ.get("WORKLOADS", "").split()

def workloads(port):
    return [w for w in [
        ("connect", ["connect", str(20000 * SCALE)]),
        ("refused", ["refused", str(port), str(50000 * SCALE)]),
        ("fork", ["fork", str(2000 * SCALE)]),
        ("io", ["io", f"{WORK}/io.bin", str(2000 * SCALE)]),
    ] if not ONLY or w[0] in ONLY]

def run(args):
    out = subprocess.run([GEN] + args, check=True, capture_output=True, text=True).stdout
    m = dict(kv.split("=") for kv in out.split())
    return int(m["ops"]), float(m["rate_per_s"])

def scrape(mport):
    text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    progs, other = {}, {}
    for line in text.splitlines():
        m = re.match(r'tapio_bpf_program_(runs|run_time_seconds)_total\{observer="(\w+)",program="(\w+)"\} (\S+)', line)
        if m:
            progs.setdefault(m.group(3), [0.0, 0.0])[0 if m.group(1) == "runs" else 1] = float(m.group(4))
        elif line.startswith(("tapio_lost_events_total", "tapio_sink_drops_total")):
            name, v = line.rsplit(" ", 1)
            other[name] = float(v)
    return progs, other

def cpu(pid):
    """CPU seconds of every thread of pid, ns-exact (schedstat, not ticks)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended between listdir and read
    return total / 1e9

null_a, null_b, agent_rate = {}, {}, {}
kernel, agent_cpu, per_prog = {}, {}, {}
accounting = []
for r in range(ROUNDS):
    port = free_port()
    wl = workloads(port)
    for name, args in wl:
        null_a.setdefault(name, []).append(run(args)[1])
    mport = free_port()
    with open(f"{WORK}/agent.toml", "w") as f:
        f.write(f'[metrics]\nenabled = true\naddr = "127.0.0.1:{mport}"\n')
    out = open(f"{WORK}/out-{r}.jsonl", "w")
    log = open(f"{WORK}/agent-{r}.log", "w")
    agent = subprocess.Popen([BIN, "agent", "--config", f"{WORK}/agent.toml", "--sink", "stdout"] + EBPF_ARGS,
                             stdout=out, stderr=log)
    for _ in range(300):
        if "config applied" in open(f"{WORK}/agent-{r}.log").read():
            break
        time.sleep(0.1)
    else:
        sys.exit("bench: the agent did not apply its config within 30 s")
    time.sleep(1.2)
    refusals = 0
    for name, args in wl:
        p0, _ = scrape(mport); c0 = cpu(agent.pid)
        ops, rate = run(args)
        time.sleep(1.3)  # the agent exports BPF run time once a second
        p1, other = scrape(mport); c1 = cpu(agent.pid)
        agent_rate.setdefault(name, []).append(rate)
        total = 0.0
        for prog, (runs, secs) in p1.items():
            runs0, secs0 = p0.get(prog, [0.0, 0.0])
            dr, dt = runs - runs0, secs - secs0
            if dr > 0:
                total += dt * 1e9
                per_prog.setdefault(name, {}).setdefault(prog, []).append((dr / ops, dt * 1e9 / dr))
        kernel.setdefault(name, []).append(total / ops)
        agent_cpu.setdefault(name, []).append((c1 - c0) / ops * 1e6)
        if name == "refused":
            refusals = ops
    agent.send_signal(signal.SIGINT)
    agent.wait(timeout=60)
    out.close()
    seen = 0
    for line in open(f"{WORK}/out-{r}.jsonl"):
        o = json.loads(line)
        if o["type"] == "kernel.network.connection_refused" and o["data"]["dport"] == port:
            seen += o["data"]["count"]
    lost = sum(v for k, v in other.items() if k.startswith("tapio_lost_events_total"))
    drops = sum(v for k, v in other.items() if k.startswith("tapio_sink_drops_total"))
    accounting.append((refusals, seen, lost, drops))
    for name, args in wl:
        null_b.setdefault(name, []).append(run(args)[1])

med = statistics.median
print(f"\n{ROUNDS} rounds; medians (min-max)")
print(f"{'workload':9} {'kernel ns/op':>14} {'agent us/op':>12} {'slowdown':>9} {'null control':>13}")
for name in kernel:
    slow = [1 - a / ((x + y) / 2) for a, x, y in zip(agent_rate[name], null_a[name], null_b[name])]
    ctrl = [1 - y / x for x, y in zip(null_a[name], null_b[name])]
    print(f"{name:9} {med(kernel[name]):9.0f} ({min(kernel[name]):.0f}-{max(kernel[name]):.0f})"
          f" {med(agent_cpu[name]):8.3f}   {med(slow) * 100:6.1f} %   {med(ctrl) * 100:6.1f} %")
print("\nper program (median runs per op x ns per run):")
for name, progs in per_prog.items():
    for prog, v in sorted(progs.items(), key=lambda kv: -med([a * b for a, b in kv[1]])):
        rpo, npr = med([a for a, _ in v]), med([b for _, b in v])
        if rpo >= 0.01:
            print(f"  {name:8} {prog:42} {rpo:6.2f} runs/op x {npr:6.0f} ns = {rpo * npr:6.0f} ns/op")
if "refused" not in kernel:
    sys.exit(0)
print("\nrefused storm accounting (per round: made / in counts / lost ring records / sink drops):")
ok = True
for made, seen, lost, drops in accounting:
    print(f"  {made} / {seen} / {lost:.0f} / {drops:.0f}")
    ok &= made == seen and lost == 0
print("accounted: " + ("yes" if ok else "NO"))
sys.exit(0 if ok else 1)
PY
