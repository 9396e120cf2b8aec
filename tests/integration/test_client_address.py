"""Who the client is: trusted_proxies and X-Forwarded-For, and a unix-socket listener."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import Gunicorn


def config(upstream: str, listen: str, trusted: str) -> str:
    return f"""
temp_path: "{{temp}}"
access_log: {{format: off}}
upstreams:
  app: {{servers: ["{upstream}"]}}
servers:
  - listen: ["{listen}"]
    trusted_proxies: {trusted}
    locations:
      - {{path: /, proxy_pass: app}}
"""


@pytest.mark.parametrize(
    ("trusted", "real_ip"),
    [("[127.0.0.0/8]", "203.0.113.7"), ("[10.0.0.0/8]", "127.0.0.1"), ("[]", "127.0.0.1")],
    ids=["peer-trusted", "peer-not-trusted", "none-trusted"],
)
async def test_client_ip_comes_from_a_trusted_proxy_only(
    start_proxy, gunicorn_a: Gunicorn, trusted: str, real_ip: str
) -> None:
    proxy = await start_proxy(config(gunicorn_a.address, "127.0.0.1:0", trusted))
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.get(
            "/echo", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
        )
    headers = response.json()["headers"]
    assert headers["x-real-ip"] == real_ip
    # X-Forwarded-For is always appended to, whoever is trusted.
    assert headers["x-forwarded-for"] == "198.51.100.1, 203.0.113.7, 127.0.0.1"


async def test_serves_on_a_unix_socket(start_proxy, gunicorn_a: Gunicorn, tmp_path: Path) -> None:
    path = tmp_path / "edge.sock"
    await start_proxy(config(gunicorn_a.address, f"unix:{path}", "[]"))
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        response = await client.get("/echo")
    assert response.status_code == 200
    echoed = json.loads(response.content)
    assert echoed["headers"]["host"] == "edge"
    assert echoed["headers"]["x-real-ip"] == "unix:"
