"""The gateway driven by the official Python MCP SDK (`mcp` on PyPI).

Every test goes through one gateway (see conftest.py) in front of two
`mcp-worker tools` processes, tools-0 and tools-1, balanced round robin.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from conftest import (
    CALL_TIMEOUT_S,
    Gateway,
    HttpRecorder,
    mcp_session,
    recording_http_client,
    resource_uri_collector,
)

pytestmark = pytest.mark.anyio

EXPECTED_TOOLS = {
    "add",
    "multiply",
    "divide",
    "upper",
    "reverse",
    "word_count",
    "echo",
    "large_result",
    "slow_count",
    "whoami",
}
WORKER_IDS = {"tools-0", "tools-1"}
MODERN_VERSION = "2026-07-28"


def only_text(result: CallToolResult) -> str:
    assert not result.is_error, f"tool returned an error: {result.content}"
    assert len(result.content) == 1, result.content
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


def whoami_of(result: CallToolResult, gw: Gateway) -> dict[str, Any]:
    info = json.loads(only_text(result))
    assert info["worker"] in WORKER_IDS, info
    gw.worker_pids.add(int(info["pid"]))
    return info


# 1. initialize -> tools/list -> tools/call add -> DELETE on close
async def test_initialize_list_tools_and_add(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(CALL_TIMEOUT_S * 2):
        async with mcp_session(gateway, initialize=False) as (session, rec):
            init = await session.initialize()
            assert init.server_info.name == "mcp-workers-tools"
            assert init.capabilities.tools is not None
            # The gateway issued a session id on initialize and the SDK sends it back.
            assert len(set(rec.issued_session_ids())) == 1

            listed = await session.list_tools()
            names = {tool.name for tool in listed.tools}
            assert EXPECTED_TOOLS <= names, f"missing tools: {sorted(EXPECTED_TOOLS - names)}"

            result = await session.call_tool("add", {"a": 2, "b": 3})
            assert only_text(result) == "5"
            # The SDK opens its standalone GET stream in the background after initialize;
            # wait for its answer before closing, so the check below does not race it.
            with anyio.fail_after(CALL_TIMEOUT_S):
                while not any(method == "GET" for method, _ in rec.exchanges):
                    await anyio.sleep(0.02)

    # Closing the client ends the session with DELETE. The worker answers 202 with no body;
    # the gateway passes it on as 204, one of the two statuses the SDK takes as success.
    deletes = [status for method, status in rec.exchanges if method == "DELETE"]
    assert deletes == [204], rec.exchanges
    # The SDK's standalone GET stream, which the gateway carries to the worker over h2c.
    gets = [status for method, status in rec.exchanges if method == "GET"]
    assert gets == [200], rec.exchanges
    assert not [r for r in caplog.records if "termination failed" in r.getMessage()]


# 1b. notifications on the standalone GET stream, which the gateway carries in a task of its
# own on an h2c_streams pool (docs/decisions.md, "Detached GET streams")
async def test_standalone_stream_notifications_reach_the_sdk(gateway: Gateway) -> None:
    seen, on_message = resource_uri_collector()
    with anyio.fail_after(CALL_TIMEOUT_S * 3):
        async with mcp_session(gateway, message_handler=on_message) as (session, rec):
            # The SDK opens its GET stream in the background; a notification sent before it
            # is open would be lost, so wait for the stream's answer first.
            with anyio.fail_after(CALL_TIMEOUT_S):
                while not any(method == "GET" for method, _ in rec.exchanges):
                    await anyio.sleep(0.02)
            result = await session.call_tool("notify", {"text": "from-the-worker", "times": 3})
            assert only_text(result) == "sent 3"
            with anyio.fail_after(CALL_TIMEOUT_S):
                while len(seen) < 3:
                    await anyio.sleep(0.02)
    assert seen == ["note://from-the-worker"] * 3, seen
    gets = [status for method, status in rec.exchanges if method == "GET"]
    assert gets == [200], rec.exchanges


# 2. progress notifications stream through before the result
async def test_progress_notifications_arrive_before_result(gateway: Gateway) -> None:
    n, delay_ms = 4, 50
    events: list[tuple[float, float | None, str | None, bool, float]] = []
    state = {"returned": False}

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        events.append((progress, total, message, state["returned"], time.monotonic()))

    with anyio.fail_after(CALL_TIMEOUT_S * 2):
        async with mcp_session(gateway) as (session, _rec):
            result = await session.call_tool(
                "slow_count", {"n": n, "delay_ms": delay_ms}, progress_callback=on_progress
            )
            returned_at = time.monotonic()
            state["returned"] = True
            # Anything still in flight would land now, and be flagged as late.
            await anyio.sleep(0.3)

    assert only_text(result) == f"counted to {n}"
    assert [e[0] for e in events] == [float(i) for i in range(1, n + 1)], events
    assert all(e[1] == float(n) for e in events), events
    late = [e for e in events if e[3]]
    assert not late, f"progress delivered after call_tool returned: {late}"
    # Streamed, not buffered: the worker sleeps delay_ms before each step, so the first
    # notification must reach the client well before the final result does.
    lead = returned_at - events[0][4]
    assert lead >= 1.5 * delay_ms / 1000, f"first progress only {lead * 1000:.0f} ms before the result"


# 3. a 1 MiB argument and result survive the round trip unchanged
async def test_echo_one_mib_mixed_text(gateway: Gateway) -> None:
    rnd = random.Random(20240728)
    # ASCII, characters JSON must escape, a control character, and 2-, 3- and 4-byte UTF-8.
    alphabet = list("abcXYZ0129 .,;:-_/") + ['"', "\\", "\n", "\t", "\r", "\x01", "é", "ß", "中", "€", "😀", "🦀"]
    parts: list[str] = []
    size = 0
    target = 1 << 20
    while size < target - 4:
        ch = rnd.choice(alphabet)
        parts.append(ch)
        size += len(ch.encode())
    parts.append("z" * (target - size))
    text = "".join(parts)
    assert len(text.encode()) == target
    assert len(set(text)) == len(set(alphabet)) + ("z" not in alphabet)

    with anyio.fail_after(CALL_TIMEOUT_S * 2):
        async with mcp_session(gateway) as (session, _rec):
            result = await session.call_tool("echo", {"text": text})
    echoed = only_text(result)
    assert len(echoed) == len(text)
    assert echoed == text


# 4. one session sticks to one worker, and the worker's session id never reaches the client
async def test_session_affinity_and_sealed_session_id(gateway: Gateway) -> None:
    with anyio.fail_after(CALL_TIMEOUT_S * 2):
        async with mcp_session(gateway) as (session, rec):
            infos = [whoami_of(await session.call_tool("whoami", {}), gateway) for _ in range(6)]

    workers = {i["worker"] for i in infos}
    pids = {i["pid"] for i in infos}
    assert len(workers) == 1 and len(pids) == 1, f"one session was served by {workers} / pids {pids}"

    upstream_ids = {i["headers"].get("mcp-session-id") for i in infos}
    assert len(upstream_ids) == 1 and None not in upstream_ids, upstream_ids
    (upstream_id,) = upstream_ids

    # The session id the client holds: what the SDK sent on every post-initialize request.
    held = set(rec.sent_session_ids())
    assert len(held) == 1, held
    (client_id,) = held
    assert set(rec.issued_session_ids()) == {client_id}
    assert client_id != upstream_id
    assert upstream_id not in client_id, "the worker's session id is readable inside the client's"


# 5. new sessions are spread over the pool
async def test_sessions_spread_over_both_workers(gateway: Gateway) -> None:
    seen: dict[str, str] = {}
    with anyio.fail_after(CALL_TIMEOUT_S * 3):
        for _ in range(6):
            async with mcp_session(gateway) as (session, rec):
                first = whoami_of(await session.call_tool("whoami", {}), gateway)
                second = whoami_of(await session.call_tool("whoami", {}), gateway)
                assert first["worker"] == second["worker"]
                (client_id,) = set(rec.sent_session_ids())
                seen[client_id] = first["worker"]
    assert len(seen) == 6, "the gateway handed out the same session id twice"
    assert set(seen.values()) == WORKER_IDS, f"sessions landed on {sorted(seen.values())}"


# 6. protocol 2026-07-28: stateless server/discover, no session ids
async def test_modern_protocol_discover_is_stateless(gateway: Gateway) -> None:
    if MODERN_VERSION not in MODERN_PROTOCOL_VERSIONS:
        pytest.skip(f"the installed mcp SDK does not speak {MODERN_VERSION} (server/discover)")
    rec = HttpRecorder()
    with anyio.fail_after(CALL_TIMEOUT_S * 2):
        async with recording_http_client(rec) as http:
            transport = streamable_http_client(gateway.mcp_url, http_client=http, terminate_on_close=False)
            # mode="auto" (the SDK default) probes server/discover and only falls back to
            # the initialize handshake when the server does not answer it.
            async with Client(transport, mode="auto", read_timeout_seconds=CALL_TIMEOUT_S) as client:
                assert client.protocol_version == MODERN_VERSION
                discovered = client.session.discover_result
                assert discovered is not None and client.session.initialize_result is None
                assert MODERN_VERSION in discovered.supported_versions
                assert discovered.capabilities.tools is not None

                assert only_text(await client.call_tool("add", {"a": 2, "b": 3})) == "5"

                progress: list[float] = []

                async def on_progress(p: float, _total: float | None, _msg: str | None) -> None:
                    progress.append(p)

                result = await client.call_tool("slow_count", {"n": 3, "delay_ms": 10}, progress_callback=on_progress)
                assert only_text(result) == "counted to 3"
                assert progress == [1.0, 2.0, 3.0]

                infos = [whoami_of(await client.call_tool("whoami", {}), gateway) for _ in range(4)]

    methods = [h.get("mcp-method") for _, h in rec.requests]
    assert methods[0] == "server/discover", methods
    assert "initialize" not in methods
    assert all(h.get("mcp-protocol-version") == MODERN_VERSION for _, h in rec.requests)
    assert not rec.issued_session_ids(), "a session id was issued on the stateless protocol"
    assert not rec.sent_session_ids()
    assert all("mcp-session-id" not in i["headers"] for i in infos), infos
    # No session means no affinity: round robin spreads the requests over the pool.
    assert {i["worker"] for i in infos} == WORKER_IDS, infos


# 7. raw HTTP: Origin check, sealed-id tampering, body limit
INIT_BODY = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw-httpx2", "version": "0"},
    },
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture
def raw_http() -> Any:
    with httpx2.Client(trust_env=False, timeout=CALL_TIMEOUT_S) as http:
        yield http


def error_code(response: httpx2.Response) -> int:
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert body.get("jsonrpc") == "2.0", body
    return body["error"]["code"]


def test_foreign_origin_is_forbidden(gateway: Gateway, raw_http: httpx2.Client) -> None:
    denied = raw_http.post(gateway.mcp_url, json=INIT_BODY, headers={**MCP_HEADERS, "origin": "http://evil.example"})
    assert denied.status_code == 403, denied.text
    assert "mcp-session-id" not in denied.headers
    error_code(denied)
    # Control: the same request without the Origin header is served.
    ok = raw_http.post(gateway.mcp_url, json=INIT_BODY, headers=MCP_HEADERS)
    assert ok.status_code == 200, ok.text
    assert ok.headers.get("mcp-session-id")


def test_tampered_session_id_is_not_found(gateway: Gateway, raw_http: httpx2.Client) -> None:
    init = raw_http.post(gateway.mcp_url, json=INIT_BODY, headers=MCP_HEADERS)
    assert init.status_code == 200, init.text
    sealed = init.headers["mcp-session-id"]
    list_body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}

    # Flip one character in the middle (the end of a base64 text may only hold padding bits).
    mid = len(sealed) // 2
    tampered = sealed[:mid] + ("B" if sealed[mid] == "A" else "A") + sealed[mid + 1 :]
    assert tampered != sealed
    bad = raw_http.post(gateway.mcp_url, json=list_body, headers={**MCP_HEADERS, "mcp-session-id": tampered})
    assert bad.status_code == 404, bad.text
    assert error_code(bad) == -32001

    # Control: the untouched id still works.
    good = raw_http.post(gateway.mcp_url, json=list_body, headers={**MCP_HEADERS, "mcp-session-id": sealed})
    assert good.status_code == 200, good.text
    assert "whoami" in good.text


def test_oversized_body_is_rejected(gateway: Gateway, raw_http: httpx2.Client) -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x" * (4 * 1024 * 1024 + 1024)}},
        }
    )
    too_big = raw_http.post(gateway.mcp_url, content=body.encode(), headers=MCP_HEADERS)
    assert too_big.status_code == 413, too_big.text[:500]
