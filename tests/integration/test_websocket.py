"""WebSocket through the proxy: a real `websockets` server behind it, the `websockets`
client in front, over real sockets, with each codec (the start_proxy fixture)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from tests.conftest import async_wait_until
from tests.integration.fake_upstreams import proxy_yaml
from tests.integration.raw_http import Client

TIMEOUT = 30.0
MIB = 1024 * 1024


@dataclass
class WebSocketUpstream:
    """A real WebSocket server: /echo echoes, /fragments sends one message in fragments,
    /close/<code> closes with that code, /vanish drops its TCP connection, /hold waits,
    /flood sends until told to stop; /refuse answers the upgrade with a plain 403."""

    address: str = ""
    server: Server | None = None
    connections: list[ServerConnection] = field(default_factory=list)
    closed: list[tuple[int | None, str | None]] = field(default_factory=list)  # code, reason
    requests: list[Request] = field(default_factory=list)
    flood_sent = 0

    async def start(self) -> WebSocketUpstream:
        self.server = await serve(
            self._handle, "127.0.0.1", 0, max_size=None, ping_interval=None,
            process_request=self._process_request, compression=None,
        )  # fmt: skip
        port = self.server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if request.path == "/refuse":
            body = b"no WebSocket for you"
            headers = Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return Response(403, "Forbidden", headers, body)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        path = ws.request.path if ws.request is not None else ""
        try:
            if path == "/echo":
                async for message in ws:
                    await ws.send(message)
            elif path == "/fragments":
                await ws.send(["one ", "two ", "three"])
                await ws.wait_closed()
            elif path.startswith("/close/"):
                await ws.close(int(path.removeprefix("/close/")), "server says bye")
            elif path == "/vanish":
                await ws.recv()
                ws.transport.abort()
            elif path == "/flood":
                chunk = os.urandom(MIB)
                for _ in range(256):  # bounded: 256 MiB at most, far more than any buffer
                    await ws.send(chunk)
                    self.flood_sent += MIB
            else:
                await ws.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            self.closed.append((ws.close_code, ws.close_reason))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def ws_upstream() -> AsyncIterator[WebSocketUpstream]:
    upstream = await WebSocketUpstream().start()
    yield upstream
    upstream.close()


def ws_yaml(upstream: WebSocketUpstream, read_timeout: str = "30s", access_log: str = "") -> str:
    yaml_text = proxy_yaml([upstream.address], upstream=f"read_timeout: {read_timeout}")
    if access_log:
        yaml_text = yaml_text.replace(
            "access_log: {format: off}",
            f"access_log: {{path: {access_log}, format: json, flush: 0}}",
        )
    return yaml_text


def ws_connect(port: int, path: str) -> connect:
    return connect(
        f"ws://127.0.0.1:{port}{path}", max_size=None, ping_interval=None, compression=None,
        open_timeout=TIMEOUT, close_timeout=TIMEOUT,
    )  # fmt: skip


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


def tunnels_released(proxy: object) -> bool:
    """No client connection left open in the worker, and no connection in flight on any
    peer: what a tunnel held is released."""
    worker = proxy.worker  # type: ignore[attr-defined]
    peers = [peer for pool in worker.pools.values() for peer in pool.peers]
    return not worker.connections and all(peer.active == 0 for peer in peers)


async def test_echo_text_binary_and_large_messages(start_proxy, ws_upstream) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    async with ws_connect(proxy.port, "/echo") as ws:
        await ws.send("hello")
        assert await recv(ws) == "hello"
        await ws.send(b"\x00\x01binary")
        assert await recv(ws) == b"\x00\x01binary"
        large = os.urandom(8 * MIB)
        await ws.send(large)
        assert await recv(ws) == large
        for index in range(20):  # many small ones, back to back
            await ws.send(f"message {index}")
        assert [await recv(ws) for _ in range(20)] == [f"message {i}" for i in range(20)]
    (request,) = ws_upstream.requests
    assert request.headers["Upgrade"].lower() == "websocket"
    assert "upgrade" in request.headers["Connection"].lower()
    assert request.headers["X-Forwarded-For"] == "127.0.0.1"
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnel released")


async def test_fragmented_messages_both_ways(start_proxy, ws_upstream) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    async with ws_connect(proxy.port, "/echo") as ws:
        await ws.send(["frag", "mented ", "text"])  # one message in three frames
        assert await recv(ws) == "fragmented text"
        await ws.send([b"a" * 100_000, b"b" * 300_000])
        assert await recv(ws) == b"a" * 100_000 + b"b" * 300_000
    async with ws_connect(proxy.port, "/fragments") as ws:
        assert await recv(ws) == "one two three"


async def test_ping_pong(start_proxy, ws_upstream) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    async with ws_connect(proxy.port, "/echo") as ws:
        for index in range(3):
            pong = await ws.ping(f"ping {index}".encode())
            await asyncio.wait_for(pong, TIMEOUT)  # the server's pong came back through


async def test_close_codes_pass_both_ways(start_proxy, ws_upstream) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    ws = await ws_connect(proxy.port, "/echo")
    await ws.close(4001, "client says bye")
    await async_wait_until(lambda: bool(ws_upstream.closed), TIMEOUT, "the server saw the close")
    assert ws_upstream.closed == [(4001, "client says bye")]
    async with ws_connect(proxy.port, "/close/4002") as ws:
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert (ws.close_code, ws.close_reason) == (4002, "server says bye")
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnels released")


async def test_a_client_that_vanishes_closes_the_upstream(start_proxy, ws_upstream) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    ws = await ws_connect(proxy.port, "/echo")
    await ws.send("still there?")
    assert await recv(ws) == "still there?"
    ws.transport.abort()  # no close frame, no FIN handshake: gone
    await async_wait_until(lambda: bool(ws_upstream.closed), TIMEOUT, "the server saw it go")
    code, _ = ws_upstream.closed[0]
    assert code == 1006  # closed abnormally: the server knows the client did not say bye
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnel released")


async def test_an_upstream_that_vanishes_closes_the_client(start_proxy, ws_upstream) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    async with ws_connect(proxy.port, "/vanish") as ws:
        await ws.send("go away")
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1006
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnel released")


async def test_an_idle_tunnel_is_closed_after_read_timeout(start_proxy, ws_upstream) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream, read_timeout="1s"))
    async with ws_connect(proxy.port, "/echo") as ws:
        # Traffic keeps it open past the timeout (bounded: 6 round trips 0.3s apart).
        started = time.monotonic()
        for index in range(6):
            await ws.send(str(index))
            assert await recv(ws) == str(index)
            await asyncio.sleep(0.3)
        assert time.monotonic() - started > 1.5
        quiet = time.monotonic()
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert time.monotonic() - quiet > 0.5  # closed for being idle, not at once
    await async_wait_until(lambda: bool(ws_upstream.closed), TIMEOUT, "the server saw the close")
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnel released")


async def test_flow_control_holds_the_upstream_when_the_client_does_not_read(
    start_proxy, ws_upstream
) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    ws = await ws_connect(proxy.port, "/flood")
    try:
        ws.transport.pause_reading()  # the client takes nothing
        (client_side,) = proxy.worker.connections
        client_end = client_side.transport.get_protocol()  # the tunnel's end, after the 101
        upstream_transport = client_end.other.transport
        await async_wait_until(
            lambda: not upstream_transport.is_reading(), TIMEOUT, "the proxy to stop reading"
        )
        # The proxy holds about one read for the client meanwhile, not the server's flood.
        assert client_side.transport.get_write_buffer_size() < 2 * MIB
        sent_while_held = ws_upstream.flood_sent
        assert sent_while_held < 256 * MIB
        ws.transport.resume_reading()
        # The flow resumes once the client reads again: the server sends well past what
        # it had sent while held (more than any buffer between holds).
        for _ in range(256):
            assert len(await recv(ws)) == MIB
            if ws_upstream.flood_sent > sent_while_held + 16 * MIB:
                break
        assert ws_upstream.flood_sent > sent_while_held + 16 * MIB
    finally:
        ws.transport.abort()  # a close handshake would queue behind the flood
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnel released")


async def test_flow_control_holds_the_client_when_the_upstream_does_not_read(
    start_proxy, ws_upstream
) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    ws = await ws_connect(proxy.port, "/hold")  # the server reads nothing past its queue

    async def flood() -> None:
        chunk = os.urandom(MIB)
        for _ in range(256):  # bounded, as the server's flood
            await ws.send(chunk)

    sending = asyncio.ensure_future(flood())
    try:
        (client_side,) = proxy.worker.connections
        client_end = client_side.transport.get_protocol()
        await async_wait_until(
            lambda: not client_side.transport.is_reading(), TIMEOUT, "the proxy to stop reading"
        )
        assert client_end.other.transport.get_write_buffer_size() < 2 * MIB
        assert not sending.done()  # the client's sends are held back, not all taken
    finally:
        sending.cancel()
        ws.transport.abort()  # (its FIN waits behind the data the proxy does not read)
        for server_side in ws_upstream.connections:
            server_side.transport.abort()  # which the proxy hears at once
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnel released")


def masked_frame(payload: bytes) -> bytes:
    """A client's text frame (RFC 6455 5.2), masked with a fixed key; payload < 126 bytes."""
    key = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + key + masked


async def test_bytes_sent_with_the_upgrade_request_reach_the_upstream(
    start_proxy, ws_upstream
) -> None:
    """A client may send its first frames right behind the request, before the 101."""
    proxy = await start_proxy(ws_yaml(ws_upstream))
    client = await Client.connect(proxy.port)
    await client.send(
        b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        + masked_frame(b"early")
        + masked_frame(b"bird")
    )
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 ")
    lowered = head.lower()
    assert b"\r\nupgrade: websocket\r\n" in lowered
    assert b"\r\nconnection: upgrade\r\n" in lowered
    assert b"sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in lowered  # RFC 6455's
    assert b"content-length" not in lowered and b"transfer-encoding" not in lowered
    echoed = await asyncio.wait_for(client.reader.readexactly(2 + 5 + 2 + 4), TIMEOUT)
    assert echoed == b"\x81\x05early\x81\x04bird"
    client.close()
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnel released")


async def test_an_upgrade_the_upstream_refuses_is_relayed(start_proxy, ws_upstream) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    with pytest.raises(InvalidStatus) as refused:
        await ws_connect(proxy.port, "/refuse")
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"no WebSocket for you"
    # The same on a raw connection, which then goes on serving plain requests.
    client = await Client.connect(proxy.port)
    upgrade = (
        b"GET /refuse HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    response = await client.exchange(upgrade)
    assert response.status == 403 and response.body == b"no WebSocket for you"
    assert response.get("upgrade") is None
    client.close()


async def test_upgrades_other_than_websocket_are_ignored_as_before(start_proxy, recorder) -> None:
    """h2c (and any other upgrade) is not tunnelled: the hop-by-hop Upgrade is dropped and
    the request answered over HTTP/1.1, as RFC 9110 7.8 lets a server do."""
    proxy = await start_proxy(proxy_yaml([recorder.address], upstream="keepalive: 0"))
    client = await Client.connect(proxy.port)
    for upgrade in (b"h2c", b"websocket, h2c", b"TLS/1.0"):
        response = await client.exchange(
            b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: " + upgrade + b"\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
        assert response.status == 200 and response.body == b"ok"
        sent = recorder.requests[-1].lower()
        assert b"upgrade" not in sent and b"http2-settings" not in sent
    # HTTP/1.0 has no upgrades (RFC 9110 7.8): ignored too.
    response = await client.exchange(
        b"GET /x HTTP/1.0\r\nConnection: Upgrade, keep-alive\r\nUpgrade: websocket\r\n\r\n"
    )
    assert response.status == 200
    assert b"upgrade" not in recorder.requests[-1].lower()
    client.close()


@pytest.mark.parametrize(
    "request_head",
    [
        b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 4\r\n\r\nbody",
        b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["post", "length", "chunked"],
)
async def test_a_websocket_upgrade_with_a_body_or_not_a_get_is_400(
    start_proxy, ws_upstream, request_head: bytes
) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    client = await Client.connect(proxy.port)
    response = await client.exchange(request_head)
    assert response.status == 400
    assert not ws_upstream.requests


async def test_the_access_log_has_one_101_line_per_tunnel(
    start_proxy, ws_upstream, tmp_path: Path
) -> None:
    log_path = tmp_path / "access.log"
    proxy = await start_proxy(ws_yaml(ws_upstream, access_log=str(log_path)))
    async with ws_connect(proxy.port, "/echo") as ws:
        await ws.send("x")
        assert await recv(ws) == "x"
        # Logged when the tunnel starts: the line is there while it is open.
        await async_wait_until(log_path.exists, TIMEOUT, "the access log")
        lines = log_path.read_text().splitlines()
        assert len(lines) == 1
        entry = json.loads(lines[0])
        assert entry["status"] == 101
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnel released")
    assert len(log_path.read_text().splitlines()) == 1  # not again when it ends


async def test_an_open_tunnel_counts_as_a_connection_until_it_closes(
    start_proxy, ws_upstream
) -> None:
    """For limit_conn, and as a connection in flight on its server."""
    yaml_text = ws_yaml(ws_upstream).replace(
        "servers:\n  - listen:", "servers:\n  - limit_conn: one\n    listen:"
    )
    proxy = await start_proxy("limits: {one: {connections: 1}}\n" + yaml_text)
    (peer,) = proxy.worker.pools["app"].peers
    async with ws_connect(proxy.port, "/echo") as ws:
        await ws.send("x")
        assert await recv(ws) == "x"
        assert peer.active == 1
        client = await Client.connect(proxy.port)  # a second connection from this address
        assert (await client.response()).status == 503
        client.close()
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnel released")
    async with ws_connect(proxy.port, "/echo") as ws:  # its slot is free again
        await ws.send("y")
        assert await recv(ws) == "y"


async def test_a_graceful_stop_closes_open_tunnels_at_its_deadline(
    start_proxy, ws_upstream
) -> None:
    proxy = await start_proxy(ws_yaml(ws_upstream))
    async with ws_connect(proxy.port, "/echo") as ws:
        await ws.send("x")
        assert await recv(ws) == "x"
        await asyncio.wait_for(proxy.worker.stop(timeout=0.5), TIMEOUT)
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    await async_wait_until(lambda: bool(ws_upstream.closed), TIMEOUT, "the server saw the close")


async def test_a_101_to_another_protocol_than_asked_is_502(start_proxy, recorder) -> None:
    recorder.response = (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    )
    proxy = await start_proxy(proxy_yaml([recorder.address], upstream="keepalive: 0"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert response.status == 502
    (sent,) = recorder.requests
    assert b"\r\nupgrade: websocket\r\n" in sent.lower()
    client.close()
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "nothing left open")


async def test_a_websocket_over_tls(start_proxy, ws_upstream, tmp_path) -> None:
    from tests.tls_certs import TestCA

    ca = TestCA(tmp_path)
    pair = ca.issue("a.example")
    yaml_text = ws_yaml(ws_upstream).replace(
        "    locations:", f"    server_name: [a.example]\n    tls: {pair.yaml()}\n    locations:", 1
    )
    proxy = await start_proxy(yaml_text)
    async with connect(
        f"wss://127.0.0.1:{proxy.port}/echo", ssl=ca.client_context(), server_hostname="a.example",
        max_size=None, ping_interval=None, compression=None,
        open_timeout=TIMEOUT, close_timeout=TIMEOUT,
    ) as ws:  # fmt: skip
        large = os.urandom(8 * MIB)
        await ws.send(large)
        assert await recv(ws) == large
        await ws.send("hello")
        assert await recv(ws) == "hello"
    (request,) = ws_upstream.requests
    assert request.headers["X-Forwarded-Proto"] == "https"
    await async_wait_until(lambda: tunnels_released(proxy), TIMEOUT, "the tunnel released")
