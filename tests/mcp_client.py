"""Drives `tapio mcp` with the official MCP Python SDK (a client nobody here
wrote) over stdio: every tool with good and bad arguments, against a
populated data dir (tests/fixtures/occurrences/basic, and .../who for the
pod/container/pid filters), an empty one and a missing one.

Usage: python mcp_client.py <path-to-tapio> <basic-dir> <who-dir> <empty-dir> <missing-dir>
Exits 0 and prints "mcp client: N checks passed" when everything holds.
Run by tests/mcp.rs, which installs the SDK into a venv under target/.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

CHECKS = 0


def check(cond, what):
    global CHECKS
    if not cond:
        raise AssertionError(what)
    CHECKS += 1


def field(obj, snake, camel):
    """SDK 2.x names fields in snake_case, 1.x in camelCase."""
    if hasattr(obj, snake):
        return getattr(obj, snake)
    return getattr(obj, camel)


async def call(session, name, arguments):
    result = await session.call_tool(name, arguments)
    check(not field(result, "is_error", "isError"), f"{name} {arguments}: isError")
    structured = field(result, "structured_content", "structuredContent")
    check(structured is not None, f"{name}: structuredContent present")
    texts = [c.text for c in result.content if c.type == "text"]
    check(len(texts) == 1, f"{name}: one text block")
    check(json.loads(texts[0]) == structured, f"{name}: text is the structured content")
    return structured


def session_for(binary, data_dir):
    params = StdioServerParameters(
        command=binary, args=["mcp", "--data-dir", data_dir], env={"RUST_LOG": "warn"}
    )
    return stdio_client(params)


async def bad_call(session, name, arguments, starts):
    """A call the tool refuses: a tool result with isError and a message
    that says what to change (never a protocol error)."""
    result = await session.call_tool(name, arguments)
    check(field(result, "is_error", "isError"), f"{name} {arguments}: isError")
    texts = [c.text for c in result.content if c.type == "text"]
    check(len(texts) == 1 and texts[0].startswith(starts), f"{name} {arguments}: {texts}")
    return texts[0]


BAD = [
    ("recent_anomalies", {"since": "soon"}, "invalid arguments for recent_anomalies: invalid --since"),
    ("recent_anomalies", {"limit": 0}, "invalid arguments for recent_anomalies: limit must be between 1 and 50"),
    ("recent_anomalies", {"limit": 51}, "invalid arguments for recent_anomalies: limit must be between 1 and 50"),
    ("recent_anomalies", {"container": "nginx"}, "invalid arguments for recent_anomalies: invalid --container"),
    ("recent_anomalies", {"pod": "a/b/c"}, "invalid arguments for recent_anomalies: invalid --pod"),
    ("recent_anomalies", {"cursor": "page2"}, "invalid arguments for recent_anomalies: invalid cursor"),
    ("recent_anomalies", {"pid": -1}, "invalid arguments for recent_anomalies: "),
    ("recent_anomalies", {"observer": "gpu"}, "invalid arguments for recent_anomalies: "),
    ("node_health", {"observer": "gpu"}, "invalid arguments for node_health: "),
    ("node_health", {"until": "2600-01-01T00:00:00Z"}, "invalid arguments for node_health: "),
    ("node_health", {"window": "5m"}, "invalid arguments for node_health: "),
    ("status", {"x": 1}, "invalid arguments for status: "),
]


async def blind(binary, data_dir, exists):
    """An empty or missing data dir: empty answers, health unknown (never
    ok), and bad arguments refused the same way."""
    async with session_for(binary, data_dir) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            r = await call(session, "recent_anomalies", {})
            check(r["data_dir_exists"] == exists, f"{data_dir}: exists {r['data_dir_exists']}")
            check(r["count"] == 0 and r["matched"] == 0 and r["next_cursor"] is None, f"empty {r}")
            check(r["summary"]["by_type"] == {} and r["summary"]["by_place"] == [], "empty summary")
            h = await call(session, "node_health", {})
            check(h["verdict"] == "unknown", f"{data_dir}: verdict {h['verdict']}")
            check(len(h["reasons"]) >= 1, f"{data_dir}: says why {h['reasons']}")
            check(all(o["verdict"] != "ok" for o in h["observers"]), f"no ok when blind {h}")
            s = await call(session, "status", {})
            check(s["total"] == 0 and s["newest"] is None, f"status {s}")
            for name, args, starts in BAD:
                await bad_call(session, name, args, starts)


async def who(binary, data_dir):
    """Who and where: the pod, container and pid filters and the summary."""
    async with session_for(binary, data_dir) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            r = await call(session, "recent_anomalies", {})
            check(r["matched"] == 5, f"who matched {r['matched']}")
            check(
                r["summary"]["by_place"]
                == [
                    # Ties in count are ordered by key.
                    {"key": "host", "count": 2},
                    {"key": "shop/cart-7d9f", "count": 2},
                    {"key": "9b8c7d6e5f4a", "count": 1},
                ],
                f"by_place {r['summary']['by_place']}",
            )
            check(
                r["summary"]["by_destination"]
                == [
                    {"key": "10.0.0.7:443", "count": 1},
                    {"key": "10.96.0.12:8080", "count": 1},
                    {"key": "[::1]:9", "count": 1},
                ],
                f"by_destination {r['summary']['by_destination']}",
            )
            ids = lambda r: [o["id"] for o in r["occurrences"]]
            pod = ["01JQY0DM700000000000000002", "01JQY0BSM00000000000000001"]
            r = await call(session, "recent_anomalies", {"pod": "shop/cart-7d9f"})
            check(ids(r) == pod and r["matched"] == 2, f"pod {ids(r)}")
            r = await call(session, "recent_anomalies", {"namespace": "shop", "pid": 4242})
            check(ids(r) == pod[1:], f"namespace+pid {ids(r)}")
            r = await call(session, "recent_anomalies", {"container": "9b8c7d6e5f4a"})
            check(ids(r) == ["01JQY0FET00000000000000003"], f"container {ids(r)}")
            r = await call(session, "recent_anomalies", {"namespace": "dev"})
            check(r["matched"] == 0 and r["occurrences"] == [], "no such namespace")


async def main(binary, data_dir, who_dir, empty_dir, missing_dir):
    await blind(binary, empty_dir, True)
    await blind(binary, missing_dir, False)
    await who(binary, who_dir)
    async with session_for(binary, data_dir) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            # The SDK offers a revision tapio may not speak; tapio answers
            # with the newest it speaks, and the SDK must accept that.
            version = field(init, "protocol_version", "protocolVersion")
            check(version == "2025-11-25", f"negotiated {version}")
            info = field(init, "server_info", "serverInfo")
            check(info.name == "tapio", "server name")
            caps = init.capabilities
            check(caps.tools is not None, "tools capability")

            await session.send_ping()
            check(True, "ping")

            listed = await session.list_tools()
            tools = {t.name: t for t in listed.tools}
            check(
                sorted(tools) == ["node_health", "recent_anomalies", "status"],
                f"tools {sorted(tools)}",
            )
            for t in tools.values():
                schema = field(t, "input_schema", "inputSchema")
                check(schema["type"] == "object", f"{t.name} input schema")
                check(
                    field(t, "output_schema", "outputSchema")["type"] == "object",
                    f"{t.name} output schema",
                )
            recent_props = field(tools["recent_anomalies"], "input_schema", "inputSchema")[
                "properties"
            ]
            check(
                sorted(recent_props)
                == ["container", "cursor", "limit", "namespace", "observer", "pid", "pod",
                    "severity", "since", "type"],
                f"recent_anomalies filters as `recent`: {sorted(recent_props)}",
            )

            # All of it, newest first; the two unusable files are counted.
            r = await call(session, "recent_anomalies", {})
            check(r["count"] == 5, f"count {r['count']}")
            check(
                r["skipped"]
                == {"corrupt": 2, "unreadable": 0, "not_regular": 0, "too_large": 0, "foreign": 1},
                f"skipped {r['skipped']}",
            )
            ts = [o["timestamp"] for o in r["occurrences"]]
            check(ts == sorted(ts, reverse=True), "newest first")
            check(r["occurrences"][0]["id"] == "01JQY0HADQ0000000000000003", "newest id")
            check(r["occurrences"][0]["data"]["memory_usage_bytes"] == 536870912, "data kept")
            check(r["matched"] == 5 and r["next_cursor"] is None, "one page")
            check(
                r["summary"]["by_type"]
                == {"kernel.container.oom_kill": 1, "kernel.network.connection_refused": 1,
                    "kernel.network.connection_timeout": 1, "kernel.node.memory_pressure": 1,
                    "kernel.storage.latency_spike": 1},
                f"by_type {r['summary']['by_type']}",
            )
            everything = [o["id"] for o in r["occurrences"]]

            # Paging: the cursor walks the same list in order, no repeats.
            seen, cursor, pages = [], None, 0
            while pages < 10:
                args = {"limit": 2}
                if cursor:
                    args["cursor"] = cursor
                p = await call(session, "recent_anomalies", args)
                pages += 1
                check(p["matched"] == 5, "matched counts every page's matches")
                seen += [o["id"] for o in p["occurrences"]]
                cursor = p["next_cursor"]
                if cursor is None:
                    break
            check(pages == 3 and seen == everything, f"pages {pages}: {seen}")

            r = await call(
                session,
                "recent_anomalies",
                {"since": "2025-04-03T14:15:00Z", "observer": "network"},
            )
            check(
                [o["type"] for o in r["occurrences"]]
                == ["kernel.network.connection_timeout", "kernel.network.connection_refused"],
                f"network since 14:15: {r['occurrences']}",
            )
            check(r["query"]["since"] == "2025-04-03T14:15:00.000Z", "since echoed")

            r = await call(
                session, "recent_anomalies", {"type": "oom_kill", "severity": "critical", "limit": 1}
            )
            check(r["count"] == 1 and r["occurrences"][0]["error"]["code"] == "OOM_KILL", "oom")

            h = await call(
                session,
                "node_health",
                {"since": "2025-04-03T14:00:00Z", "until": "2025-04-03T14:30:00Z"},
            )
            check(h["verdict"] == "failing", f"node verdict {h['verdict']}")
            verdicts = {o["observer"]: (o["verdict"], o["total"]) for o in h["observers"]}
            check(
                verdicts
                == {
                    "network": ("degraded", 2),
                    "container": ("failing", 1),
                    "storage": ("ok", 1),
                    "node": ("ok", 0),
                },
                f"observer verdicts {verdicts}",
            )
            check(h["window"]["seconds"] == 1800, "window")
            # No status file in the fixture: states unknown, evidence decides.
            check(h["agent"]["status_file"] == "missing", f"agent {h['agent']}")
            check(
                all(o["state"] == "unknown" for o in h["observers"]),
                f"observer states {h['observers']}",
            )

            h = await call(
                session, "node_health", {"observer": "node", "until": "2025-04-03T13:10:00Z"}
            )
            check(
                [(o["observer"], o["verdict"], o["warning"]) for o in h["observers"]]
                == [("node", "ok", 1)],
                f"node only: {h['observers']}",
            )

            s = await call(session, "status", {})
            check(s["total"] == 5, "status total")
            check(
                s["by_observer"] == {"network": 2, "container": 1, "storage": 1, "node": 1},
                f"by_observer {s['by_observer']}",
            )
            check(s["newest"]["type"] == "kernel.container.oom_kill", "status newest")

            # Arguments the tool cannot use come back as a tool error the
            # model reads (isError, with what to change), and the server keeps
            # answering afterwards.
            text = await bad_call(session, "recent_anomalies", {"since": "soon"}, "")
            check(
                text == 'invalid arguments for recent_anomalies: invalid --since "soon": '
                        "expected a duration like 30s, 5m, 2h, 1d or an RFC 3339 time like "
                        "2026-04-03T14:00:00Z",
                f"bad since text {text}",
            )
            for name, args, starts in BAD:
                await bad_call(session, name, args, starts)
            result = await session.call_tool(
                "recent_anomalies", {"type": "kernel.network.conection_refused"}
            )
            check(field(result, "is_error", "isError"), "unknown type is a tool error")
            check(
                "did you mean kernel.network.connection_refused?" in result.content[0].text,
                f"unknown type text {result.content[0].text}",
            )
            s = await call(session, "status", {})
            check(s["total"] == 5, "still answering")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
    print(f"mcp client: {CHECKS} checks passed")
