"""`down: true` servers through the real proxy: they get no request at all."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from edgeproxy.config import parse_config
from edgeproxy.errors import ConfigError
from tests.conftest import Gunicorn
from tests.integration.fake_upstreams import proxy_yaml

TIMEOUT = httpx.Timeout(30.0)


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "ip_hash", "random_two"])
async def test_down_server_gets_nothing(
    start_proxy, gunicorn_a: Gunicorn, gunicorn_b: Gunicorn, balance: str
) -> None:
    # A listening socket that never accepts: a connect to it would hang, not fail fast.
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(100)
        trap_address = f"127.0.0.1:{trap.getsockname()[1]}"
        proxy = await start_proxy(
            proxy_yaml(
                [
                    f'"{gunicorn_a.address}"',
                    f'{{address: "{trap_address}", down: true}}',
                    f'{{address: "{gunicorn_b.address}", down: true}}',
                ],
                upstream=f"balance: {balance}",
            )
        )
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            texts = [(await asyncio.wait_for(client.get("/"), 15)).text for _ in range(12)]
        assert texts == ["hello from a\n"] * 12
        peers = proxy.worker.pools["app"].peers
        assert [p.down for p in peers] == [False, True, True]
        assert all(p.active == 0 and p.fails == 0 for p in peers)
        assert proxy.worker.pools["app"].idle_connections(peers[2]) == 0


async def test_every_server_down_answers_502(start_proxy, gunicorn_a: Gunicorn) -> None:
    proxy = await start_proxy(proxy_yaml([f'{{address: "{gunicorn_a.address}", down: true}}']))
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        statuses = [(await client.get("/")).status_code for _ in range(3)]
    assert statuses == [502] * 3


def test_down_must_be_a_flag(tmp_path: Path) -> None:
    text = proxy_yaml(['{address: "127.0.0.1:1", down: maybe}']).replace("{temp}", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    assert "servers[0].down: expected true or false" in str(info.value)
