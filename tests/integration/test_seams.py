"""Each seam of the request path takes a new room without touching the connection: a
handler, a request phase, a connection phase, a body written from a file region, and an
upstream protocol, each registered here from the outside and driven through real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from edgeproxy.config import Config, HttpSettings, Location, ServerConfig, parse_config
from edgeproxy.http.codec import HeadCodec, ResponseParser
from edgeproxy.http.events import RequestHead
from edgeproxy.server import routes
from edgeproxy.server.listeners import bind
from edgeproxy.server.request import (
    Client,
    ConnectionPhase,
    Delay,
    Request,
    RequestPhase,
    Responder,
    Verdict,
)
from edgeproxy.server.response import Answer
from edgeproxy.server.worker import Worker
from edgeproxy.upstream import protocols
from edgeproxy.upstream.http1 import Http1Protocol
from edgeproxy.upstream.protocol import UpstreamProtocol
from tests.conftest import Gunicorn, async_wait_until

TIMEOUT = httpx.Timeout(10.0)
CONFIG = """
upstreams:
  app: {{servers: ["{upstream}"]}}
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - {{path: /file/, return: {{status: 200}}}}
      - {{path: /, proxy_pass: app}}
"""


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """A handler spec the config loader does not know: a file, sent whole."""

    path: str
    chunked: bool = False  # announce no length, so the chunked writer frames the file


class FileResponder:
    """Sends a file region by region, as far as the client takes it."""

    def __init__(self, client: Client, fd: int, size: int) -> None:
        self.client = client
        self.fd = fd
        self.offset = 0
        self.size = size

    def send(self) -> bool:
        """Write while the client keeps up; True when the whole file is out."""
        out = self.client.out
        while self.offset < self.size and out.writable:
            self.offset += out.write_file(self.fd, self.offset, self.size - self.offset)
        if self.offset < self.size:
            return False
        out.finish()
        os.close(self.fd)
        self.fd = -1
        return True

    def on_client_writable(self) -> None:
        if self.fd >= 0 and self.send():
            self.client.handler_done()

    def on_client_full(self) -> None:
        pass

    def client_gone(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileHandler:
    def __init__(self, spec: FileSpec) -> None:
        self.spec = spec
        self.started = 0

    def start(self, request: Request, client: Client) -> Responder | None:
        self.started += 1
        fd = os.open(self.spec.path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        length = None if self.spec.chunked else size
        client.out.send_head(200, [(b"content-type", b"application/octet-stream")], length)
        responder = FileResponder(client, fd, size)
        return None if responder.send() else responder


class HeaderGate:
    """A request phase: `x-deny` gets 403, `x-wait: SECONDS` delays the handler."""

    name = "header gate"

    def __init__(self) -> None:
        self.checked = 0

    def check(self, request: Request) -> Verdict:
        self.checked += 1
        for name, value in request.head.headers:
            if name == b"x-deny":
                return Answer(403, [(b"x-denied-by", b"gate")])
            if name == b"x-wait":
                return Delay(float(value))
        return None


class OneConnectionPerIp:
    """A connection phase: one open connection per client address."""

    name = "one connection per ip"

    def __init__(self) -> None:
        self.open: dict[str, int] = {}
        self.released = 0

    def accept(self, peer_ip: str) -> Answer | None:
        if self.open.get(peer_ip, 0) >= 1:
            return Answer(503)
        self.open[peer_ip] = self.open.get(peer_ip, 0) + 1
        return None

    def release(self, peer_ip: str) -> None:
        self.open[peer_ip] -= 1
        self.released += 1


class TaggingProtocol:
    """An upstream protocol of our own: HTTP/1.1 plus a field that says it was used."""

    name = "tagging"

    def __init__(self, codec: HeadCodec) -> None:
        self.http1 = Http1Protocol(codec)

    def encode_request_head(
        self,
        head: RequestHead,
        default_host: bytes,
        peer_ip: str,
        client_ip: str,
        body_size: int,
        keepalive: bool,
        ports: Callable[[], tuple[int, int]],
        scheme: bytes,
        request_id: bytes,
    ) -> bytes:
        encoded = self.http1.encode_request_head(
            head, default_host, peer_ip, client_ip, body_size, keepalive, ports, scheme,
            request_id,
        )  # fmt: skip
        return encoded[:-2] + b"x-protocol: tagging\r\n\r\n"

    def response_parser(self) -> ResponseParser:
        return self.http1.response_parser()


def with_file_location(config: Config, spec: FileSpec) -> Config:
    """The config with its /file/ location handled by `spec` (no YAML key makes one)."""
    server = config.servers[0]
    locations = tuple(
        dataclasses.replace(loc, handler=spec) if loc.pattern == "/file/" else loc
        for loc in server.locations
    )
    server = dataclasses.replace(server, locations=locations)
    return dataclasses.replace(config, servers=(server,))


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """Register the test's handler, phases and protocol in the tables, for this test only."""
    made: dict[str, object] = {}

    def file_handler(spec: FileSpec, services: object) -> FileHandler:
        handler = made["handler"] = FileHandler(spec)
        return handler

    gate = made["gate"] = HeaderGate()
    limit = made["limit"] = OneConnectionPerIp()

    def gate_phase(server: ServerConfig, location: Location | None) -> RequestPhase | None:
        return gate

    def limit_phase(servers: Sequence[ServerConfig]) -> ConnectionPhase | None:
        return limit

    monkeypatch.setitem(routes.HANDLERS, FileSpec, file_handler)
    monkeypatch.setattr(routes, "REQUEST_PHASES", [*routes.REQUEST_PHASES, gate_phase])
    monkeypatch.setattr(routes, "CONNECTION_PHASES", [*routes.CONNECTION_PHASES, limit_phase])

    def tagging(codec: HeadCodec) -> UpstreamProtocol:
        return TaggingProtocol(codec)

    monkeypatch.setitem(protocols.PROTOCOLS, "tagging", tagging)
    yield made


async def serve(config: Config) -> tuple[Worker, int]:
    address = config.servers[0].listen[0]
    sock = bind(address)
    worker = Worker(config)
    await worker.start({address: sock})
    return worker, sock.getsockname()[1]


def tagged(config: Config) -> Config:
    upstream = dataclasses.replace(config.upstreams["app"], protocol="tagging")
    return dataclasses.replace(config, upstreams={"app": upstream})


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_a_registered_handler_sends_a_file_through_the_body_writers(
    registered: dict[str, object], gunicorn_a: Gunicorn, tmp_path: Path, chunked: bool
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than the transport takes at once
    path = tmp_path / "blob"
    path.write_bytes(data)
    config = parse_config(CONFIG.format(upstream=gunicorn_a.address), "t.yaml")
    worker, port = await serve(with_file_location(config, FileSpec(str(path), chunked)))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as c:
            response = await c.get("/file/x")
            assert response.status_code == 200 and response.content == data
            if chunked:
                assert response.headers["transfer-encoding"] == "chunked"
            else:
                assert response.headers["content-length"] == str(len(data))
            head = await c.head("/file/x")
            assert head.status_code == 200 and head.content == b""
            # The same connection goes on to the next request, to another handler.
            assert (await c.get("/echo")).json()["path"] == "/echo"
    finally:
        await worker.stop(timeout=0)
    handler = registered["handler"]
    assert isinstance(handler, FileHandler) and handler.started == 2


async def test_a_registered_phase_answers_or_delays_before_the_handler(
    registered: dict[str, object], gunicorn_a: Gunicorn
) -> None:
    config = parse_config(CONFIG.format(upstream=gunicorn_a.address), "t.yaml")
    worker, port = await serve(config)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as c:
            denied = await c.get("/echo", headers={"x-deny": "1"})
            assert denied.status_code == 403 and denied.headers["x-denied-by"] == "gate"
            assert "403" in denied.text  # the standard error page
            # A bodiless request answered by a phase keeps its connection.
            assert (await c.get("/echo")).status_code == 200
            # With a body still to come, the answer closes the connection instead.
            posted = await c.post("/echo", content=b"x" * 1000, headers={"x-deny": "1"})
            assert posted.status_code == 403 and posted.headers["connection"] == "close"
            started = time.monotonic()
            delayed = await c.get("/echo", headers={"x-wait": "0.5"})
            assert delayed.status_code == 200 and time.monotonic() - started >= 0.5
    finally:
        await worker.stop(timeout=0)
    gate = registered["gate"]
    assert isinstance(gate, HeaderGate) and gate.checked == 4


async def test_a_delayed_request_whose_client_leaves_is_dropped(
    registered: dict[str, object], gunicorn_a: Gunicorn
) -> None:
    config = parse_config(CONFIG.format(upstream=gunicorn_a.address), "t.yaml")
    worker, port = await serve(config)
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /echo HTTP/1.1\r\nhost: t\r\nx-wait: 30\r\n\r\n")
        await async_wait_until(lambda: bool(worker.connections), 10, "the connection")
        (conn,) = worker.connections
        await async_wait_until(lambda: conn.delayed is not None, 10, "the delay")  # type: ignore[attr-defined]
        # A reset, not a FIN: a FIN after a request is a half-close, and is answered.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        await async_wait_until(lambda: not worker.connections, 10, "the connection gone")
        assert conn.delayed is None and conn.request is None  # type: ignore[attr-defined]
    finally:
        await worker.stop(timeout=0)


async def test_a_registered_connection_phase_refuses_and_releases(
    registered: dict[str, object], gunicorn_a: Gunicorn
) -> None:
    config = parse_config(CONFIG.format(upstream=gunicorn_a.address), "t.yaml")
    worker, port = await serve(config)
    limit = registered["limit"]
    assert isinstance(limit, OneConnectionPerIp)
    try:
        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        await async_wait_until(lambda: limit.open.get("127.0.0.1") == 1, 10, "admitted")
        second = socket.create_connection(("127.0.0.1", port), timeout=10)
        refused = await asyncio.to_thread(read_all, second)
        assert refused.startswith(b"HTTP/1.1 503 ") and b"connection: close" in refused.lower()
        second.close()
        first.close()
        await async_wait_until(lambda: limit.open["127.0.0.1"] == 0, 10, "released")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as c:
            assert (await c.get("/echo")).status_code == 200
        await async_wait_until(lambda: limit.open["127.0.0.1"] == 0, 10, "released")
        assert limit.released == 2  # the first and the last; the refused one took no slot
    finally:
        await worker.stop(timeout=0)


async def test_a_registered_upstream_protocol_encodes_the_request(
    registered: dict[str, object], gunicorn_a: Gunicorn
) -> None:
    config = tagged(parse_config(CONFIG.format(upstream=gunicorn_a.address), "t.yaml"))
    assert isinstance(config.servers[0].http, HttpSettings)
    worker, port = await serve(config)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as c:
            echoed = (await c.get("/echo")).json()
            assert echoed["headers"]["x-protocol"] == "tagging"
            assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1"
    finally:
        await worker.stop(timeout=0)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
