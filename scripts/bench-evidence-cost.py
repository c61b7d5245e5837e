#!/usr/bin/env python3
"""Per-operation BPF cost of the evidence programs (issue 16), from the
agent's own tapio_bpf_program_* counters while BPF_ENABLE_STATS is held:
a healthy loopback connection, a dropped packet unrelated to any connect
(UDP to an nft drop rule) and a healthy fork+exit. Needs root. Figures
include bpf_stats' own timing overhead (an empty tp_btf program measured
~140 ns/run on the 2-core test VM), so compare programs with each other.

Usage: scripts/bench-evidence-cost.py [TAPIO_BIN] [N]
"""
import ctypes, os, re, socket, subprocess, sys, time, urllib.request
BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/tapio"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
libc = ctypes.CDLL(None, use_errno=True)
# BPF_ENABLE_STATS (32), type BPF_STATS_RUN_TIME (0): stats while the fd is open.
attr = ctypes.create_string_buffer(128)
fd = libc.syscall(321, 32, attr, 128)
assert fd >= 0, ctypes.get_errno()
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
mport = port()
import tempfile
work = tempfile.mkdtemp(prefix="tapio-cost.")
open(f"{work}/agent.toml", "w").write(f'[metrics]\nenabled = true\naddr = "127.0.0.1:{mport}"\n')
agent = subprocess.Popen([BIN, "agent", "--config", f"{work}/agent.toml", "--data-dir", f"{work}/data", "--sink", "stdout"],
                         stdout=subprocess.DEVNULL, stderr=open(f"{work}/agent.log", "w"))
for _ in range(200):
    if "config applied" in open(f"{work}/agent.log").read(): break
    time.sleep(0.1)
def prog_stats():
    time.sleep(1.5)
    m = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics").read().decode()
    out = {}
    for l in m.splitlines():
        g = re.match(r'tapio_bpf_program_(runs|run_time_seconds)_total\{observer="(?:network|container)",program="([^"]+)"\} (\S+)', l)
        if g: out.setdefault(g.group(2), {})[g.group(1)] = float(g.group(3))
    return out
def delta(a, b):
    r = {}
    for p in b:
        runs = b[p].get("runs", 0) - a.get(p, {}).get("runs", 0)
        ns = (b[p].get("run_time_seconds", 0) - a.get(p, {}).get("run_time_seconds", 0)) * 1e9
        r[p] = (int(runs), ns)
    return r
def report(name, d, n):
    tot = sum(ns for _, ns in d.values())
    print(f"== {name}: {n} ops, BPF total {tot/n:.0f} ns/op")
    for p, (runs, ns) in sorted(d.items()):
        if runs: print(f"   {p}: {runs} runs, {ns/runs:.0f} ns/run, {ns/n:.0f} ns/op")
try:
    # Healthy loopback connections (connect, accept, close).
    lp = port(); l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("127.0.0.1", lp)); l.listen(512)
    a = prog_stats()
    for _ in range(N):
        c = socket.create_connection(("127.0.0.1", lp)); s, _ = l.accept(); c.close(); s.close()
    report("healthy connection", delta(a, prog_stats()), N)
    # Dropped packets unrelated to any connect: UDP to a port with an nft drop rule.
    up = port()
    subprocess.run(f"nft add table inet tapiobench && nft add chain inet tapiobench out '{{ type filter hook output priority 0; policy accept; }}' && nft add rule inet tapiobench out udp dport {up} drop", shell=True, check=True)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a = prog_stats()
    for _ in range(N):
        try: u.sendto(b"x", ("127.0.0.1", up))
        except OSError: pass
    report("dropped UDP packet (socket not connecting)", delta(a, prog_stats()), N)
    a = prog_stats()
    for _ in range(N // 4):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    report("fork+exit (healthy)", delta(a, prog_stats()), N // 4)
finally:
    subprocess.run("nft delete table inet tapiobench", shell=True)
    agent.terminate(); agent.wait()
