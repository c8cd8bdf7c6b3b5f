"""The MCP authorization flow end to end, as a desktop client runs it.

The official SDK's `OAuthClientProvider` starts unauthenticated against a gateway with its
own identity service: it gets a 401, discovers the protected-resource and authorization-
server metadata, registers itself, and hands the authorize URL to its redirect handler. The
handler drives a real headless Chromium (Debian's `chromium`, through Playwright) that fills
in the gateway's login form and grants consent; the gateway redirects the browser to a
loopback callback server, which hands the code back to the SDK. The SDK exchanges it and
lists tools through the gateway. Then: the SDK refreshes its token, and a revoked consent,
a wrong PKCE verifier, a mismatched redirect_uri and a token for another resource are each
refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import anyio
import httpx2
import pytest
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from conftest import CALL_TIMEOUT_S, HttpRecorder, _kill_group, bin_dir, child_pids, free_ports

pytestmark = pytest.mark.anyio

CHROMIUM = os.environ.get("MCP_TEST_CHROMIUM", "/usr/bin/chromium")
EMAIL = "pat@example.test"
PASSWORD = "correct horse battery staple"
CLIENT_NAME = "SDK Test Client"
BROWSER_TIMEOUT_S = 20.0

CONFIG = """\
listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin_port}
shutdown_grace: 2s
public_url: http://127.0.0.1:{port}
database: {{ url: "sqlite://{db}" }}
identity: {{}}
# Many flows from one address: the built-in login limit is not what these tests check.
rate_limits: {{ defaults: false }}
routes:
  - path: /mcp
    pool: tools
    upstream_path: /mcp
  - path: /other
    pool: tools
    upstream_path: /mcp
pools:
  tools:
    spawn:
      command: [{worker}, tools, --id, "{{id}}"]
      count: 1
    balance: round_robin
    health: {{ kind: http, path: /health, interval: 1s }}
"""


@dataclass
class OAuthGateway:
    port: int
    admin_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _start(workdir: Path) -> OAuthGateway | None:
    bins = bin_dir()
    proxy, worker = bins / "mcp-proxy", bins / "mcp-worker"
    port, admin_port = free_ports(2)
    config = workdir / f"oauth-{port}.yaml"
    config.write_text(
        CONFIG.format(
            port=port,
            admin_port=admin_port,
            db=workdir / f"oauth-{port}.db",
            worker=json.dumps(str(worker)),
        )
    )
    log_path = workdir / f"oauth-{port}.log"
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    env["MCP_GATEWAY_CREDENTIALS_KEY"] = secrets.token_hex(32)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(proxy), "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    gw = OAuthGateway(port=port, admin_port=admin_port, proc=proc, log_path=log_path)
    deadline = time.monotonic() + 30
    with httpx2.Client(trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None
            try:
                if http.get(f"http://127.0.0.1:{admin_port}/readyz").status_code == 200:
                    return gw
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
    _kill_group(gw)  # type: ignore[arg-type]
    pytest.fail(f"gateway with identity not ready within 30 s; log:\n{gw.log_tail()}")


@pytest.fixture(scope="module")
def oauth_gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: scripts/python-tests installs Debian's chromium", pytrace=False)
    workdir = tmp_path_factory.mktemp("oauth")
    gw = None
    for _ in range(3):
        gw = _start(workdir)
        if gw is not None:
            break
    if gw is None:
        pytest.fail("gateway with identity exited during start-up three times")
    with httpx2.Client(trust_env=False, timeout=10.0) as http:
        r = http.post(f"{gw.base_url}/auth/register", json={"email": EMAIL, "password": PASSWORD})
        assert r.status_code == 201, r.text
    yield gw
    pids = child_pids(gw.proc.pid)
    gw.proc.send_signal(signal.SIGTERM)
    try:
        code = gw.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        _kill_group(gw)  # type: ignore[arg-type]
        pytest.fail(f"gateway did not exit after SIGTERM; log:\n{gw.log_tail()}")
    assert code == 0, gw.log_tail()
    assert pids, "no worker was ever started"


# ---------------------------------------------------------------------------------------------
# The loopback callback server and the browser


class Callback:
    """A loopback HTTP server that receives the authorization redirect (RFC 8252 §7.3)."""

    def __init__(self) -> None:
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.results: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode("latin-1")
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            target = line.split(" ")[1] if " " in line else "/"
            query = {k: v[0] for k, v in parse_qs(urlparse(target).query).items()}
            if urlparse(target).path == "/callback":
                await self.results.put(query)
            body = b"<!doctype html><title>done</title><p>You can close this window.</p>"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        finally:
            writer.close()

    async def next(self) -> dict[str, str]:
        with anyio.fail_after(BROWSER_TIMEOUT_S):
            return await self.results.get()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class Browser:
    """A headless Chromium that signs in and answers the consent page like a user."""

    browser: Any
    pages_seen: list[str] = field(default_factory=list)

    async def sign_in(self, url: str, *, decision: str = "Allow") -> str:
        """Open `url`, sign in, answer the consent page when it comes; returns the last page's
        text (the callback's, or the gateway's error page)."""
        context = await self.browser.new_context()
        page = await context.new_page()
        try:
            await page.goto(url)
            self.pages_seen.append(await page.content())
            if await page.get_by_label("Email").count() == 0:
                return await page.inner_text("body")
            await page.get_by_label("Email").fill(EMAIL)
            await page.get_by_label("Password").fill(PASSWORD)
            async with page.expect_navigation():
                await page.get_by_role("button", name="Sign in").click()
            self.pages_seen.append(await page.content())
            consent = page.get_by_role("button", name=decision)
            if await consent.count() == 1:
                async with page.expect_navigation():
                    await consent.click()
            return await page.inner_text("body")
        finally:
            await context.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield Browser(chromium)
        finally:
            await chromium.close()


@pytest.fixture
async def callback() -> AsyncIterator[Callback]:
    cb = Callback()
    await cb.start()
    try:
        yield cb
    finally:
        await cb.stop()


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def provider_for(gw: OAuthGateway, browser: Browser, cb: Callback, storage: MemoryStorage) -> OAuthClientProvider:
    async def redirect_handler(url: str) -> None:
        await browser.sign_in(url)

    async def callback_handler() -> AuthorizationCodeResult:
        q = await cb.next()
        assert "code" in q, f"the redirect carried no code: {q}"
        return AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))

    return OAuthClientProvider(
        server_url=gw.mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name=CLIENT_NAME,
            redirect_uris=[cb.redirect_uri],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )


async def list_tools_with(gw: OAuthGateway, provider: OAuthClientProvider, rec: HttpRecorder) -> list[str]:
    async with httpx2.AsyncClient(
        auth=provider,
        trust_env=False,
        timeout=httpx2.Timeout(30.0, read=60.0),
        event_hooks={"request": [rec.on_request], "response": [rec.on_response]},
    ) as http:
        async with streamable_http_client(gw.mcp_url, http_client=http) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT_S) as session:
                await session.initialize()
                tools = await session.list_tools()
                return [t.name for t in tools.tools]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def authorize_url(gw: OAuthGateway, client_id: str, redirect_uri: str, challenge: str, resource: str, state: str) -> str:
    return f"{gw.base_url}/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": resource,
        }
    )


async def initialize_status(http: httpx2.AsyncClient, url: str, token: str) -> int:
    r = await http.post(
        url,
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        },
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
    )
    return r.status_code


# ---------------------------------------------------------------------------------------------
# Tests


async def test_sdk_logs_in_through_the_browser_refreshes_and_is_refused_after_revocation(
    oauth_gateway: OAuthGateway, browser: Browser, callback: Callback
) -> None:
    gw = oauth_gateway
    storage = MemoryStorage()
    provider = provider_for(gw, browser, callback, storage)
    rec = HttpRecorder()
    names = await list_tools_with(gw, provider, rec)
    assert "add" in names and "whoami" in names, names

    # The SDK went the whole way: 401, discovery, registration, token exchange.
    statuses = [s for s, _ in rec.responses]
    assert 401 in statuses, statuses
    assert storage.client_info is not None and storage.client_info.client_id.startswith("mcpc_")
    assert storage.tokens is not None and storage.tokens.refresh_token
    login_page, consent_page = browser.pages_seen[0], browser.pages_seen[1]
    assert "MCP Gateway" in login_page and "Sign in" in login_page
    assert CLIENT_NAME in consent_page and "Allow access?" in consent_page
    first_access = storage.tokens.access_token
    first_refresh = storage.tokens.refresh_token

    # Refresh: the access token is past its expiry for the SDK, which refreshes by itself.
    provider.context.token_expiry_time = time.time() - 10
    rec2 = HttpRecorder()
    names = await list_tools_with(gw, provider, rec2)
    assert "add" in names
    assert storage.tokens.access_token != first_access
    assert storage.tokens.refresh_token != first_refresh
    assert len(browser.pages_seen) == 2, "a refresh must not need the browser"

    # The rotated-out refresh token is refused (and its reuse revokes the grant).
    client_id = storage.client_info.client_id
    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
        r = await http.post(
            f"{gw.base_url}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": first_refresh, "client_id": client_id},
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text

    # Sign in again (consent is remembered: no consent page), then revoke the consent.
    storage.tokens = None
    provider.context.current_tokens = None
    rec3 = HttpRecorder()
    assert "add" in await list_tools_with(gw, provider, rec3)
    assert len(browser.pages_seen) == 4
    assert "Allow access?" not in browser.pages_seen[3], "consent should have been remembered"
    refresh = storage.tokens.refresh_token
    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
        login = await http.post(f"{gw.base_url}/auth/login", json={"email": EMAIL, "password": PASSWORD})
        user = {"authorization": f"Bearer {login.json()['access_token']}"}
        consents = (await http.get(f"{gw.base_url}/auth/consents", headers=user)).json()["consents"]
        assert [c["client_name"] for c in consents] == [CLIENT_NAME], consents
        r = await http.delete(f"{gw.base_url}/auth/consents/{client_id}", headers=user)
        assert r.status_code == 204, r.text
        r = await http.post(
            f"{gw.base_url}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id},
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


async def test_wrong_verifier_mismatched_redirect_and_foreign_resource_are_refused(
    oauth_gateway: OAuthGateway, browser: Browser, callback: Callback
) -> None:
    gw = oauth_gateway
    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
        reg = await http.post(
            f"{gw.base_url}/oauth/register",
            json={"client_name": CLIENT_NAME, "redirect_uris": [callback.redirect_uri]},
        )
        assert reg.status_code == 201, reg.text
        client_id = reg.json()["client_id"]
        mcp_resource, other_resource = gw.mcp_url, f"{gw.base_url}/other"

        # A code obtained in the browser, exchanged with the wrong PKCE verifier.
        verifier, challenge = pkce()
        await browser.sign_in(authorize_url(gw, client_id, callback.redirect_uri, challenge, mcp_resource, "s1"))
        q = await callback.next()
        assert q.get("state") == "s1" and "code" in q, q
        token_form = {
            "grant_type": "authorization_code",
            "code": q["code"],
            "redirect_uri": callback.redirect_uri,
            "client_id": client_id,
        }
        wrong, _ = pkce()
        r = await http.post(f"{gw.base_url}/oauth/token", data={**token_form, "code_verifier": wrong})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        # A redirect_uri other than the authorization request's.
        r = await http.post(
            f"{gw.base_url}/oauth/token",
            data={**token_form, "code_verifier": verifier, "redirect_uri": callback.redirect_uri + "/x"},
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        # The right one still works (those refusals did not consume the code).
        r = await http.post(f"{gw.base_url}/oauth/token", data={**token_form, "code_verifier": verifier})
        assert r.status_code == 200, r.text
        assert await initialize_status(http, gw.mcp_url, r.json()["access_token"]) == 200

        # An unregistered redirect_uri: the user is told, the browser is not sent anywhere.
        _, challenge = pkce()
        text = await browser.sign_in(
            authorize_url(gw, client_id, "http://127.0.0.1:1/elsewhere", challenge, mcp_resource, "s2")
        )
        assert "is not one the application" in text, text
        assert callback.results.empty()

        # A token for the other route is refused on /mcp (and accepted on its own route).
        verifier, challenge = pkce()
        await browser.sign_in(authorize_url(gw, client_id, callback.redirect_uri, challenge, other_resource, "s3"))
        q = await callback.next()
        r = await http.post(
            f"{gw.base_url}/oauth/token",
            data={**token_form, "code": q["code"], "code_verifier": verifier},
        )
        assert r.status_code == 200, r.text
        other_token = r.json()["access_token"]
        assert await initialize_status(http, other_resource, other_token) == 200
        assert await initialize_status(http, gw.mcp_url, other_token) == 401

        # A resource this gateway does not serve: the client gets invalid_target.
        _, challenge = pkce()
        await browser.sign_in(
            authorize_url(gw, client_id, callback.redirect_uri, challenge, "https://elsewhere.example/mcp", "s4")
        )
        q = await callback.next()
        assert q.get("error") == "invalid_target" and q.get("state") == "s4", q

