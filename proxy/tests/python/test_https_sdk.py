"""The official Python MCP SDK over HTTPS: a gateway with `tls` (a certificate from a CA
made here with the openssl command), the SDK's httpx2 client trusting only that CA.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import CALL_TIMEOUT_S, Gateway, bin_dir, mcp_session, resource_uri_collector, start_gateway, stop_gateway

pytestmark = pytest.mark.anyio


def openssl(*args: str) -> None:
    out = subprocess.run(["openssl", *args], capture_output=True, text=True)
    assert out.returncode == 0, f"openssl {' '.join(args)}: {out.stderr}"


def make_certificates(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signs for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates (Debian: apt-get install openssl)")
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=sdk test CA")
    openssl("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext),
    )
    return ca, cert, key


@pytest.fixture(scope="module")
def https_gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    bins = bin_dir()
    workdir = tmp_path_factory.mktemp("https-gateway")
    ca, cert, key = make_certificates(workdir)
    tls = f"tls:\n  cert_file: {cert}\n  key_file: {key}\n"
    gw = start_gateway(workdir, bins / "mcp-proxy", bins / "mcp-worker", extra=tls, scheme="https")
    yield gw, ssl.create_default_context(cafile=str(ca))
    stop_gateway(gw)

async def test_sdk_session_over_https(https_gateway: tuple[Gateway, ssl.SSLContext]) -> None:
    gw, trust = https_gateway
    assert gw.mcp_url.startswith("https://")
    seen, on_message = resource_uri_collector()
    with anyio.fail_after(CALL_TIMEOUT_S * 3):
        async with mcp_session(gw, message_handler=on_message, verify=trust) as (session, rec):
            listed = await session.list_tools()
            assert "add" in {t.name for t in listed.tools}
            result = await session.call_tool("add", {"a": 2, "b": 3})
            assert not result.is_error and result.content[0].text == "5", result
            # Notifications on the SDK's standalone GET stream, over TLS too.
            with anyio.fail_after(CALL_TIMEOUT_S):
                while not any(method == "GET" for method, _ in rec.exchanges):
                    await anyio.sleep(0.02)
            result = await session.call_tool("notify", {"text": "over-tls", "times": 2})
            assert not result.is_error, result
            with anyio.fail_after(CALL_TIMEOUT_S):
                while len(seen) < 2:
                    await anyio.sleep(0.02)
    assert seen == ["note://over-tls"] * 2, seen
    assert [s for m, s in rec.exchanges if m == "DELETE"] == [204], rec.exchanges

