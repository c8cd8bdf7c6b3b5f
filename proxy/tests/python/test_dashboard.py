"""The admin dashboard in a real headless Chromium (Debian's `chromium`, driven by
Playwright): an admin signs in with email and password, the page shows live figures after
MCP traffic (routes, tools, workers, recent requests, users and keys), and the reload
button reports a broken configuration while the old one keeps serving. A user without the
admin role is turned away.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from conftest import _kill_group, bin_dir, free_ports

pytestmark = pytest.mark.anyio

CHROMIUM = os.environ.get("MCP_TEST_CHROMIUM", "/usr/bin/chromium")
ADMIN_EMAIL = "admin@example.test"
ADMIN_PASSWORD = "dashboard admin passphrase 1"
USER_EMAIL = "user@example.test"
USER_PASSWORD = "dashboard user passphrase 2"
ACCEPT = "application/json, text/event-stream"

CONFIG = """\
listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin_port}
shutdown_grace: 2s
public_url: http://127.0.0.1:{port}
database: {{ url: "sqlite://{db}" }}
identity: {{}}
routes:
  - path: /mcp
    pool: tools
    upstream_path: /mcp
pools:
  tools:
    spawn:
      command: [{worker}, tools, --id, "{{id}}"]
      count: 2
    health: {{ kind: http, path: /health, interval: 1s }}
"""


class Gw:
    def __init__(self, port: int, admin_port: int, proc: subprocess.Popen[bytes], config: Path, log: Path):
        self.port, self.admin_port, self.proc, self.config, self.log = port, admin_port, proc, config, log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: scripts/python-tests installs Debian's chromium", pytrace=False)
    work = tmp_path_factory.mktemp("dashboard")
    bins = bin_dir()
    port, admin_port = free_ports(2)
    db = work / "gw.db"
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    env["MCP_GATEWAY_CREDENTIALS_KEY"] = secrets.token_hex(32)
    env.pop("MCP_GATEWAY_ADMIN_TOKEN", None)
    # The admin exists before the gateway starts, as an operator would create it.
    subprocess.run(
        [str(bins / "mcp-proxy"), "user", "add", "--database", f"sqlite://{db}", "--email", ADMIN_EMAIL,
         "--role", "admin", "--password", ADMIN_PASSWORD],
        check=True, env=env, capture_output=True,
    )
    config = work / "gateway.yaml"
    config.write_text(CONFIG.format(port=port, admin_port=admin_port, db=db,
                                    worker=json.dumps(str(bins / "mcp-worker"))))
    log = work / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(bins / "mcp-proxy"), "run", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    gw = Gw(port, admin_port, proc, config, log)
    deadline = time.monotonic() + 30
    with httpx2.Client(trust_env=False, timeout=2.0) as http:
        while True:
            try:
                if http.get(f"{gw.admin}/readyz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                _kill_group(gw)  # type: ignore[arg-type]
                pytest.fail(f"gateway not ready; log:\n{gw.log_tail()}")
            time.sleep(0.1)
        r = http.post(f"{gw.base}/auth/register", json={"email": USER_EMAIL, "password": USER_PASSWORD})
        assert r.status_code == 201, r.text
    yield gw
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        _kill_group(gw)  # type: ignore[arg-type]


def traffic(gw: Gw, calls: int) -> None:
    """A user's MCP session with `calls` tools/call requests."""
    with httpx2.Client(trust_env=False, timeout=10.0) as http:
        tok = http.post(f"{gw.base}/auth/login", json={"email": USER_EMAIL, "password": USER_PASSWORD}).json()
        h = {"authorization": f"Bearer {tok['access_token']}", "accept": ACCEPT, "content-type": "application/json"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "dash-test", "version": "1"}}}
        r = http.post(f"{gw.base}/mcp", headers=h, json=init)
        assert r.status_code == 200, r.text
        h["mcp-session-id"] = r.headers["mcp-session-id"]
        h["mcp-protocol-version"] = "2025-06-18"
        http.post(f"{gw.base}/mcp", headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        for i in range(calls):
            r = http.post(f"{gw.base}/mcp", headers=h, json={"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                                                              "params": {"name": "add", "arguments": {"a": i, "b": 1}}})
            assert r.status_code == 200, r.text


async def launch(pw: Any) -> Any:
    return await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])


async def sign_in(page: Any, gw: Gw, email: str, password: str) -> None:
    await page.goto(f"{gw.admin}/")
    await page.fill("#email", email)
    await page.fill("#password", password)
    await page.click("#login-form button[type=submit]")


async def test_an_admin_sees_live_figures_and_a_broken_reload_is_reported(gateway: Gw) -> None:
    from playwright.async_api import async_playwright, expect

    traffic(gateway, 12)
    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            page = await browser.new_page()
            await sign_in(page, gateway, ADMIN_EMAIL, ADMIN_PASSWORD)
            await expect(page.locator("#app")).to_be_visible(timeout=15000)
            # Overview: the route and the tool with their counts, from the gateway's metrics.
            route_row = page.locator("#routes tbody tr", has_text="/mcp")
            await expect(route_row).to_be_visible(timeout=15000)
            requests = int(await route_row.locator("td").nth(2).inner_text())
            assert requests >= 14, requests
            await expect(page.locator("#tools tbody tr", has_text="add")).to_contain_text("12")
            # Rates appear once a second sample exists and traffic continues.
            traffic(gateway, 5)
            await expect(route_row.locator("td").nth(2)).not_to_have_text(str(requests), timeout=10000)
            # Workers with their health; recent requests; users and keys.
            await expect(page.locator("#workers tbody tr")).to_have_count(2)
            await expect(page.locator("#workers tbody")).to_contain_text("healthy")
            await page.click("#log-filter button[type=submit]")
            await expect(page.locator("#logs tbody tr").first).to_be_visible(timeout=15000)
            await page.fill("#f-tool", "add")
            await page.click("#log-filter button[type=submit]")
            await expect(page.locator("#logs tbody")).to_contain_text("add", timeout=15000)
            await expect(page.locator("#users tbody")).to_contain_text(USER_EMAIL)
            await expect(page.locator("#config-version")).to_have_text("1")

            # A broken file: the reload button reports it; the old configuration keeps serving.
            good = gateway.config.read_text()
            gateway.config.write_text(good.replace("pool: tools\n", "pool: missing\n"))
            try:
                await page.click("#reload")
                await expect(page.locator("#reload-result")).to_contain_text("refused", timeout=15000)
                await expect(page.locator("#reload-error")).to_contain_text('no pool named "missing"')
                await expect(page.locator("#config-version")).to_have_text("1")
            finally:
                gateway.config.write_text(good)
            traffic(gateway, 1)
            await page.click("#reload")
            await expect(page.locator("#reload-result")).to_contain_text("Reloaded: version", timeout=15000)
            await expect(page.locator("#reload-error-box")).to_be_hidden()
        finally:
            await browser.close()


async def test_a_user_without_the_admin_role_is_turned_away(gateway: Gw) -> None:
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            page = await browser.new_page()
            await sign_in(page, gateway, USER_EMAIL, USER_PASSWORD)
            await expect(page.locator("#login-error")).to_contain_text("admin role", timeout=15000)
            await expect(page.locator("#app")).to_be_hidden()
            await sign_in(page, gateway, ADMIN_EMAIL, "wrong password")
            await expect(page.locator("#login-error")).to_contain_text("wrong email or password", timeout=15000)
        finally:
            await browser.close()
