"""Drives `tapio mcp` with the official MCP Python SDK (a client nobody here
wrote) over stdio, against tests/fixtures/occurrences/basic.

Usage: python mcp_client.py <path-to-tapio> <data-dir>
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


async def main(binary, data_dir):
    params = StdioServerParameters(
        command=binary, args=["mcp", "--data-dir", data_dir], env={"RUST_LOG": "warn"}
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            # The SDK offers its newest revision; tapio answers with the
            # newest it speaks, and the SDK must accept that.
            version = field(init, "protocol_version", "protocolVersion")
            check(version == "2025-06-18", f"negotiated {version}")
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
                sorted(recent_props) == ["limit", "observer", "severity", "since", "type"],
                "recent_anomalies filters as `recent`",
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
            result = await session.call_tool("recent_anomalies", {"since": "soon"})
            check(field(result, "is_error", "isError"), "bad since is a tool error")
            texts = [c.text for c in result.content if c.type == "text"]
            check(
                texts == ['invalid arguments for recent_anomalies: invalid --since "soon": '
                          "expected a duration like 30s, 5m, 2h, 1d or an RFC 3339 time like "
                          "2026-04-03T14:00:00Z"],
                f"bad since text {texts}",
            )
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
    asyncio.run(main(sys.argv[1], sys.argv[2]))
    print(f"mcp client: {CHECKS} checks passed")
