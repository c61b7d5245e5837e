#!/usr/bin/env python3
"""Writes the seed inputs each fuzz target starts from into fuzz/seeds/<target>/,
taken from the repo's fixtures (profiles, occurrences, the TOML example) plus
hand-made ring records and protocol messages in the targets' input formats.
`scripts/fuzz-smoke.sh` does not need it: the minimised corpora committed under
fuzz/corpus/ already grew from these. Re-run it to rebuild a corpus from scratch.
"""
import glob
import json
import os
import re
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fixture(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


# --- decode: selector byte (0x80 | observer) + one whole record; 0x40 + u64 = tick.
NET, CTR, STO = 0, 1, 2
MONO = 5_000_000_000


def hdr(mono, gen, kind, size):
    return struct.pack("<QIHH", mono, gen, kind, size)


def net(kind, mono=MONO, family=2, sk_err=111, flags=3, srtt=0, dport=9):
    saddr = bytes([127, 0, 0, 1]) + bytes(12) if family == 2 else bytes(15) + b"\x01"
    rec = hdr(mono, 1, kind, 104) + struct.pack("<II", 4242, 4242) + b"curl".ljust(16, b"\0")
    rec += saddr + saddr + struct.pack("<HHHHiIII", family, 50312, dport, flags, sk_err, srtt, 7, 4026531840)
    rec += struct.pack("<Q", 8429)
    assert len(rec) == 104
    return bytes([0x80 | NET]) + rec


def ctr(kind, exit_status=0, flags=7, mono=MONO):
    rec = hdr(mono, 1, kind, 112) + struct.pack("<II", 1234, 1234) + b"java".ljust(16, b"\0")
    rec += struct.pack("<QQIIII", 8429, 77, exit_status, flags, 1, 1)
    rec += struct.pack("<QQQQQ", 100000, 2000, 0, 131072, 131072)
    assert len(rec) == 112
    return bytes([0x80 | CTR]) + rec


def sto(status=0, latency=2_000_000_000, flags=1, mono=MONO):
    rec = hdr(mono, 1, 32, 56) + struct.pack("<QQIIIII", latency, 2048, (8 << 20) | 16, 8, 4096, 1, status)
    rec += struct.pack("<HH", 0, flags)
    assert len(rec) == 56
    return bytes([0x80 | STO]) + rec


def tick(now):
    return b"\x40" + struct.pack("<Q", now)


put("decode", "net_refused_then_tick", b"".join(net(1, MONO + i) for i in range(3)) + tick(MONO + 3_000_000_000))
put("decode", "net_timeout_v6", net(1, family=10, sk_err=110, flags=2) + tick(MONO + 2_000_000_000))
put("decode", "net_retransmits", b"".join(net(2, MONO + i * 1000) for i in range(6)) + tick(MONO + 2_000_000_000))
put("decode", "net_rtt_baseline_spike", b"".join(net(3, MONO + i, srtt=1000) for i in range(9)) + net(3, MONO + 10, srtt=90000))
put("decode", "ctr_oom_and_exit", ctr(16) + ctr(17, exit_status=0x8900, flags=1))
put("decode", "ctr_exit_code", ctr(17, exit_status=0x0100, flags=1))
put("decode", "sto_slow_and_error", sto() + sto(status=10, latency=1000) + tick(MONO * 2))
put("decode", "short_and_foreign", bytes([0x00, 8]) + bytes(8) + bytes([0x03, 16]) + bytes(16))

# --- profile: every profile in the repo.
for p in glob.glob(os.path.join(ROOT, "examples/profiles/*.yaml")) + glob.glob(
    os.path.join(ROOT, "tests/fixtures/profiles/*/*.yaml")
):
    put("profile", os.path.relpath(p, ROOT).replace("/", "_"), fixture(p))

# --- store: every occurrence fixture.
for p in glob.glob(os.path.join(ROOT, "tests/fixtures/occurrences/basic/*.json")) + [
    os.path.join(ROOT, "tests/fixtures/occurrence_oom_kill.json")
]:
    put("store", os.path.basename(p), fixture(p))

# --- wire_v1: selector byte + body; 0xFF separates requests.
AGENT = "01JA1B2C3D4E5F6G7H8J9K0L1M"
occ = json.loads(fixture("tests/fixtures/occurrence_oom_kill.json"))
hello = {"wire_version": "tapio-wire/v1", "agent_id": AGENT, "node_name": "node-a", "version": "0.1.0",
         "kernel": "6.8.0", "observers": ["network", "container", "storage", "node"]}
hb_unconf = {"wire_version": "tapio-wire/v1", "agent_id": AGENT, "config_hash": "", "config_version": "0",
             "state": "degraded", "reason": "unconfigured", "observers": {}, "loss": {}}
hb = {"wire_version": "tapio-wire/v1", "agent_id": AGENT,
      "config_hash": "sha256:" + "ab" * 32, "config_version": "1", "state": "ok",
      "observers": {"network": {"state": "running"}, "node": {"state": "unavailable", "reason": "no PMU"}},
      "loss": {"lost_events.network": 0, "sink_drops.controller": 2}}
events = {"wire_version": "tapio-wire/v1", "agent_id": AGENT, "sequence": 1, "occurrences": [occ]}


def req(sel, body):
    return bytes([sel]) + (json.dumps(body) if not isinstance(body, str) else body).encode()


put("wire_v1", "hello", req(0x10, hello))
put("wire_v1", "hello_token_missing", req(0x08, hello))
put("wire_v1", "heartbeat_unconfigured", req(0x11, hb_unconf))
put("wire_v1", "heartbeat", req(0x01, hb))
put("wire_v1", "events_then_dup", req(0x02, events) + b"\xff" + req(0x02, events))
put("wire_v1", "events_seq_max", req(0x02, dict(events, sequence=2**64 - 1)) + b"\xff" + req(0x02, dict(events, sequence=2)))
put("wire_v1", "config", req(0x03, "agent_id=" + AGENT + "&node_name=node-a&version=0.1.0"))
put("wire_v1", "status", req(0x04, ""))
put("wire_v1", "other", req(0x25, "/v1/agents/hello"))
put("wire_v1", "reasoning", req(0x02, dict(events, occurrences=[dict(occ, data=dict(occ["data"], root_cause="x"))])))
put("wire_v1", "hello_heartbeat_events", b"\xff".join([req(0x00, hello), req(0x01, hb), req(0x02, events)]))

# --- mcp: one JSON-RPC message per line.
lines = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": "a", "method": "tools/list"},
    {"jsonrpc": "2.0", "id": 2, "method": "ping"},
]
put("mcp", "handshake", "\n".join(json.dumps(l) for l in lines))
put("mcp", "recent", json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "recent_anomalies", "arguments": {"since": "1h", "limit": 5, "severity": "warning", "type": "kernel.network.connection_refused"}}}))
put("mcp", "health", json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "node_health", "arguments": {"observer": "network", "since": "24h"}}}))
put("mcp", "status", json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "status"}}))
put("mcp", "errors", "\n".join(['{"jsonrpc":"2.0","id":6,"method":"nope"}', "[1]", "{", '{"jsonrpc":"1.0","id":7,"method":"ping"}',
                                '{"jsonrpc":"2.0","id":8,"result":{}}', '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"x"}}']))

# --- config: the documented example and small variations.
doc = fixture("src/agent/config.rs").decode()
example = "\n".join(l[4:] if l.startswith("//! ") else "" for l in doc.split("```toml", 1)[1].split("```", 1)[0].splitlines())
put("config", "documented_example", example)
put("config", "minimal", 'sinks = ["stdout", "file"]\ndata_dir = "/tmp/x"\n')
put("config", "overrides", '[observers.network]\nrefused_window_ms = 2000\nrefused_min_count = 3\n[observers.container]\nignore_exit_codes = [130, 143]\nexit_scope = "all"\n[observers.storage]\nenabled = false\n')
put("config", "metrics", '[metrics]\nenabled = true\naddr = "127.0.0.1:9464"\n')
