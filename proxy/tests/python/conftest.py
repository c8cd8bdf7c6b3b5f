"""Fixtures for driving the gateway with the official Python MCP SDK.

One `mcp-proxy` (with its two `mcp-worker` processes) is started for the whole
test session on two free loopback ports; teardown stops it with SIGTERM and
checks that it, and the workers it spawned, are gone.

The binaries come from `MCP_BIN_DIR` (set by `scripts/python-tests`), else
`${CARGO_TARGET_DIR:-<repo>/target}/debug`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parents[3]

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
# How long a call through the gateway may take before the test fails instead of hanging.
CALL_TIMEOUT_S = 15.0


def bin_dir() -> Path:
    explicit = os.environ.get("MCP_BIN_DIR")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    return Path(target) / "debug"


def free_ports(n: int) -> list[int]:
    """Ports the kernel hands out for port 0, all held open at once so they differ."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an unreaped orphan counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    for line in status.splitlines():
        if line.startswith("State:"):
            return "Z" not in line.split()[1]
    return True


def child_pids(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out.update(int(p) for p in (task / "children").read_text().split())
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        pass
    return out


CONFIG_TEMPLATE = """\
listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin_port}
shutdown_grace: 2s
routes:
  - path: /mcp
    pool: tools
    upstream_path: /mcp
pools:
  tools:
    spawn:
      command: [{worker}, tools, --id, "{{id}}"]
      count: 2
    balance: round_robin
    health: {{ kind: http, path: /health, interval: 1s }}
    h2c_streams: true
"""


@dataclass
class Gateway:
    port: int
    admin_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    # Worker pids seen while the gateway ran (spawned children and whoami answers).
    worker_pids: set[int] = field(default_factory=set)
    # "https" when the configuration has a `tls` section.
    scheme: str = "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _start_gateway(workdir: Path, proxy: Path, worker: Path, extra: str = "", scheme: str = "http") -> Gateway | None:
    """Start one gateway and wait for /readyz; None if it died early (e.g. a port was taken).

    `extra` is appended to the configuration (a `tls` section, with `scheme="https"`)."""
    port, admin_port = free_ports(2)
    config = workdir / f"gateway-{port}.yaml"
    config.write_text(CONFIG_TEMPLATE.format(port=port, admin_port=admin_port, worker=json.dumps(str(worker))) + extra)
    log_path = workdir / f"gateway-{port}.log"
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(proxy), "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Own process group, so a failed teardown can end the gateway and its workers by group id.
            start_new_session=True,
        )
    gw = Gateway(port=port, admin_port=admin_port, proc=proc, log_path=log_path, scheme=scheme)

    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx2.Client(trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None
            try:
                if http.get(f"{gw.admin_url}/readyz").status_code == 200:
                    gw.worker_pids |= child_pids(proc.pid)
                    return gw
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
    _kill_group(gw)
    pytest.fail(
        f"gateway not ready (GET {gw.admin_url}/readyz != 200) within {READY_TIMEOUT_S:.0f}s; "
        f"log {log_path}:\n{gw.log_tail()}"
    )


def _kill_group(gw: Gateway) -> None:
    try:
        os.killpg(gw.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        gw.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def start_gateway(workdir: Path, proxy: Path, worker: Path, extra: str = "", scheme: str = "http") -> Gateway:
    """`_start_gateway`, tried three times: a port picked by free_ports() can be taken before
    the gateway binds it."""
    for _ in range(3):
        gw = _start_gateway(workdir, proxy, worker, extra, scheme)
        if gw is not None:
            return gw
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(workdir.glob("*.log")))
    pytest.fail(f"gateway exited during start-up three times; logs:\n{logs}")


def stop_gateway(gw: Gateway) -> None:
    """SIGTERM; the gateway must exit 0 within STOP_TIMEOUT_S."""
    gw.proc.send_signal(signal.SIGTERM)
    try:
        code = gw.proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_group(gw)
        pytest.fail(f"gateway did not exit within {STOP_TIMEOUT_S:.0f}s of SIGTERM; log:\n{gw.log_tail()}")
    assert code == 0, f"gateway exited with {code} after SIGTERM; log:\n{gw.log_tail()}"


def resource_uri_collector() -> tuple[list[str], Any]:
    """A list and a message handler that appends the `uri` of every notification carrying one
    (the worker's `notify` tool sends resource-updated notifications)."""
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        uri = getattr(getattr(message, "params", None), "uri", None)
        if isinstance(uri, str):
            seen.append(uri)

    return seen, on_message


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    bins = bin_dir()
    proxy, worker = bins / "mcp-proxy", bins / "mcp-worker"
    missing = [str(p) for p in (proxy, worker) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"missing gateway binaries {missing} (MCP_BIN_DIR={bins}): run cargo build --workspace first",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("gateway")

    gw = start_gateway(workdir, proxy, worker)
    yield gw
    gw.worker_pids |= child_pids(gw.proc.pid)
    stop_gateway(gw)
    # It stops its workers before it exits: none may be left running.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(p) for p in gw.worker_pids):
        time.sleep(0.1)
    left = sorted(p for p in gw.worker_pids if pid_alive(p))
    if left:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"workers {left} still running after the gateway exited; log:\n{gw.log_tail()}")
    assert gw.worker_pids, "no worker pid was ever observed"


@dataclass
class HttpRecorder:
    """What went over the wire for one SDK client, captured by httpx2 event hooks."""

    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    responses: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    # (request method, response status), in the order the answers came.
    exchanges: list[tuple[str, int]] = field(default_factory=list)

    async def on_request(self, request: httpx2.Request) -> None:
        self.requests.append((request.method, {k.lower(): v for k, v in request.headers.items()}))

    async def on_response(self, response: httpx2.Response) -> None:
        self.responses.append((response.status_code, {k.lower(): v for k, v in response.headers.items()}))
        self.exchanges.append((response.request.method, response.status_code))

    def sent_session_ids(self) -> list[str]:
        """The Mcp-Session-Id the client sent, request by request (the id the client holds)."""
        return [h["mcp-session-id"] for _, h in self.requests if "mcp-session-id" in h]

    def issued_session_ids(self) -> list[str]:
        return [h["mcp-session-id"] for _, h in self.responses if "mcp-session-id" in h]


def recording_http_client(recorder: HttpRecorder, verify: Any = True) -> httpx2.AsyncClient:
    # Same timeouts the SDK's own default client uses; no proxy from the environment for loopback.
    # `verify`: an ssl.SSLContext trusting a test CA, for a gateway with `tls`.
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(30.0, read=300.0),
        trust_env=False,
        verify=verify,
        event_hooks={"request": [recorder.on_request], "response": [recorder.on_response]},
    )


@asynccontextmanager
async def mcp_session(
    gw: Gateway, *, initialize: bool = True, message_handler: Any = None, verify: Any = True
) -> AsyncIterator[tuple[ClientSession, HttpRecorder]]:
    """A legacy (initialize handshake, Mcp-Session-Id) SDK session through the gateway.

    `max_sse_event_size=None`: the SDK's default caps one SSE event at 1 MiB, which a
    1 MiB echo result (plus its JSON-RPC envelope) exceeds.
    """
    rec = HttpRecorder()
    async with recording_http_client(rec, verify) as http:
        async with streamable_http_client(gw.mcp_url, http_client=http, max_sse_event_size=None) as (read, write):
            async with ClientSession(
                read, write, read_timeout_seconds=CALL_TIMEOUT_S, message_handler=message_handler
            ) as session:
                if initialize:
                    await session.initialize()
                yield session, rec
