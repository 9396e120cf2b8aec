"""The C upstream transport (edgeproxy.upstream._stream) against real sockets.

The proxy's integration tests run it behind gunicorn in the compiled suite; these cover
the transport's own edges: flow control both ways, partial writes, EOF, closing with bytes
still buffered, a failing protocol, a refused connect, and the descriptors it must give
back. A pure tree has no such module (its upstream connections are the loop's).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edgeproxy.upstream import streams

HOST = "127.0.0.1"
DEADLINE = 10.0

try:
    from edgeproxy.upstream._stream import Poller, Stream
except ImportError:
    BUILT = False
else:
    BUILT = True
needs_c = pytest.mark.skipif(
    not BUILT, reason="the C module edgeproxy.upstream._stream is not built (a pure-Python tree)"
)


class Recorder(asyncio.Protocol):
    """Records what the transport tells it, with futures to wait on."""

    def __init__(self, keep_open_on_eof: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.eof = loop.create_future()
        self.lost: asyncio.Future[Exception | None] = loop.create_future()
        self.keep_open_on_eof = keep_open_on_eof
        self.pauses = 0
        self.resumes = 0
        self.resumed = asyncio.Event()
        self.wanted = 0
        self.got_wanted = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.wanted and len(self.data) >= self.wanted:
            self.got_wanted.set()

    def eof_received(self) -> bool:
        self.eof.set_result(True)
        return self.keep_open_on_eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.pauses += 1

    def resume_writing(self) -> None:
        self.resumes += 1
        self.resumed.set()


@pytest.fixture
async def listener() -> AsyncIterator[socket.socket]:
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
async def poller() -> Poller:
    found = streams.poller_for(asyncio.get_running_loop())
    assert found is not None
    return found


async def connect(poller: Poller, port: int, protocol: asyncio.Protocol) -> tuple[Stream, int]:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    stream = poller.connect(socket.AF_INET, HOST, port, done.set_result)
    stream.set_protocol(protocol)
    return stream, await asyncio.wait_for(done, DEADLINE)


async def accept(listener: socket.socket) -> socket.socket:
    peer, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(listener), DEADLINE)
    return peer


async def open_pair(
    poller: Poller, listener: socket.socket, protocol: asyncio.Protocol
) -> tuple[Stream, socket.socket]:
    """A stream connected to `listener` for `protocol`, and the peer's end of it."""
    stream, error = await connect(poller, listener.getsockname()[1], protocol)
    assert error == 0
    return stream, await accept(listener)


async def receive_all(peer: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    while len(got) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(peer, 1 << 20), DEADLINE)
        assert chunk, f"EOF after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


@needs_c
async def test_a_stream_sends_receives_and_reports_the_peers_close(
    poller: Poller, listener: socket.socket
) -> None:
    protocol = Recorder()
    stream, error = await connect(poller, listener.getsockname()[1], protocol)
    assert error == 0
    assert poller.open_streams == 1
    peer = await accept(listener)
    stream.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await receive_all(peer, 18) == b"GET / HTTP/1.1\r\n\r\n"
    protocol.wanted = 5
    peer.sendall(b"hello")
    await asyncio.wait_for(protocol.got_wanted.wait(), DEADLINE)
    peer.close()
    assert await asyncio.wait_for(protocol.eof, DEADLINE)
    assert await asyncio.wait_for(protocol.lost, DEADLINE) is None
    assert bytes(protocol.data) == b"hello"
    assert stream.is_closing()
    assert poller.open_streams == 0


@needs_c
async def test_a_refused_connect_reports_its_errno_and_gives_the_socket_back(
    poller: Poller,
) -> None:
    closed = socket.socket()
    closed.bind((HOST, 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    protocol = Recorder()
    try:
        _, error = await connect(poller, port, protocol)
    except ConnectionRefusedError:
        error = errno.ECONNREFUSED  # (refused within connect() itself)
    assert error == errno.ECONNREFUSED
    assert poller.open_streams == 0
    assert not protocol.lost.done()  # never made, so never lost


@needs_c
async def test_an_abort_while_connecting_is_silent(poller: Poller, listener: socket.socket) -> None:
    called: list[int] = []
    stream = poller.connect(socket.AF_INET, HOST, listener.getsockname()[1], called.append)
    protocol = Recorder()
    stream.set_protocol(protocol)
    stream.abort()
    assert poller.open_streams == 0
    await accept(listener)  # the kernel completed it; we closed it before hearing so
    await asyncio.sleep(0)
    assert called == [] and not protocol.lost.done()


@needs_c
async def test_a_large_write_pauses_the_protocol_until_the_peer_reads(
    poller: Poller, listener: socket.socket
) -> None:
    protocol = Recorder()
    stream, peer = await open_pair(poller, listener, protocol)
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than the socket buffers take
    stream.write(body[:100])
    stream.write(body[100:])
    assert protocol.pauses == 1
    assert stream.get_write_buffer_size() > 0
    received = await receive_all(peer, len(body))
    await asyncio.wait_for(protocol.resumed.wait(), DEADLINE)
    assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
    assert stream.get_write_buffer_size() == 0
    assert protocol.resumes == 1
    stream.abort()
    assert await asyncio.wait_for(protocol.lost, DEADLINE) is None


@needs_c
async def test_writelines_sends_many_pieces_in_order(
    poller: Poller, listener: socket.socket
) -> None:
    protocol = Recorder()
    stream, peer = await open_pair(poller, listener, protocol)
    pieces = [b"%05d," % i for i in range(300)]  # more than one sendmsg's iovecs
    pieces.append(b"x" * (4 << 20))  # and more than the socket takes at once
    stream.writelines([pieces[0], bytearray(pieces[1]), memoryview(pieces[2]), *pieces[3:]])
    expected = b"".join(pieces)
    assert await receive_all(peer, len(expected)) == expected
    stream.close()
    assert await asyncio.wait_for(protocol.lost, DEADLINE) is None


@needs_c
async def test_discard_closes_at_once_and_says_nothing_more(
    poller: Poller, listener: socket.socket
) -> None:
    protocol = Recorder()
    stream, peer = await open_pair(poller, listener, protocol)
    stream.discard()
    assert stream.is_closing() and stream.get_protocol() is None
    assert poller.open_streams == 0
    loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(loop.sock_recv(peer, 10), DEADLINE) == b""  # closed
    for _ in range(5):
        await asyncio.sleep(0)
    assert not protocol.lost.done()


@needs_c
async def test_close_writes_what_is_buffered_first(poller: Poller, listener: socket.socket) -> None:
    protocol = Recorder()
    stream, peer = await open_pair(poller, listener, protocol)
    body = b"y" * (6 << 20)
    stream.write(body)
    stream.close()
    assert stream.is_closing()
    stream.write(b"ignored after close")
    assert await receive_all(peer, len(body)) == body
    assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(peer, 10), DEADLINE) == b""
    assert await asyncio.wait_for(protocol.lost, DEADLINE) is None
    assert poller.open_streams == 0


@needs_c
async def test_paused_reading_holds_the_bytes_until_resumed(
    poller: Poller, listener: socket.socket
) -> None:
    protocol = Recorder()
    stream, peer = await open_pair(poller, listener, protocol)
    stream.pause_reading()
    assert not stream.is_reading()
    peer.sendall(b"while paused")
    # A round trip through the peer proves the bytes were there to be read meanwhile.
    stream.write(b"ping")
    assert await receive_all(peer, 4) == b"ping"
    for _ in range(5):
        await asyncio.sleep(0)
    assert protocol.data == b""
    protocol.wanted = len(b"while paused")
    stream.resume_reading()
    await asyncio.wait_for(protocol.got_wanted.wait(), DEADLINE)
    assert bytes(protocol.data) == b"while paused"
    stream.abort()


@needs_c
async def test_a_large_response_arrives_whole_across_loop_iterations(
    poller: Poller, listener: socket.socket
) -> None:
    protocol = Recorder()
    _stream, peer = await open_pair(poller, listener, protocol)
    body = hashlib.sha256(b"seed").digest() * (5 << 15)  # 5 MiB: more than a turn's reads
    protocol.wanted = len(body)
    await asyncio.get_running_loop().sock_sendall(peer, body)
    peer.close()
    await asyncio.wait_for(protocol.got_wanted.wait(), DEADLINE)
    assert await asyncio.wait_for(protocol.lost, DEADLINE) is None
    assert bytes(protocol.data) == body


@needs_c
async def test_write_eof_half_closes_and_the_answer_still_comes(
    poller: Poller, listener: socket.socket
) -> None:
    protocol = Recorder()
    stream, peer = await open_pair(poller, listener, protocol)
    assert stream.can_write_eof()
    stream.write(b"question")
    stream.write_eof()
    loop = asyncio.get_running_loop()
    assert await receive_all(peer, 8) == b"question"
    assert await asyncio.wait_for(loop.sock_recv(peer, 10), DEADLINE) == b""
    protocol.wanted = 6
    peer.sendall(b"answer")
    await asyncio.wait_for(protocol.got_wanted.wait(), DEADLINE)
    assert bytes(protocol.data) == b"answer"
    stream.abort()


@needs_c
async def test_a_failing_protocol_is_reported_and_its_stream_closed(
    poller: Poller, listener: socket.socket
) -> None:
    class Failing(Recorder):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("broken protocol")

    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        protocol = Failing()
        stream, peer = await open_pair(poller, listener, protocol)
        peer.sendall(b"anything")
        lost = await asyncio.wait_for(protocol.lost, DEADLINE)
    finally:
        loop.set_exception_handler(None)
    assert isinstance(lost, RuntimeError)
    assert [type(context["exception"]) for context in reported] == [RuntimeError]
    assert reported[0]["transport"] is stream
    assert poller.open_streams == 0


@needs_c
async def test_it_answers_for_its_socket(poller: Poller, listener: socket.socket) -> None:
    protocol = Recorder()
    stream, peer = await open_pair(poller, listener, protocol)
    assert stream.get_extra_info("peername") == listener.getsockname()
    assert stream.get_extra_info("sockname") == peer.getpeername()
    assert stream.get_extra_info("nothing such", "default") == "default"
    sock = stream.get_extra_info("socket")
    assert sock.family == socket.AF_INET
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    stream.set_write_buffer_limits(high=1000)
    assert stream.get_write_buffer_limits() == (250, 1000)
    with pytest.raises(ValueError):
        stream.set_write_buffer_limits(high=10, low=20)
    assert stream.get_protocol() is protocol
    stream.abort()
    assert stream.get_extra_info("peername") is None  # closed: nothing to ask


@needs_c
async def test_a_poller_of_a_closed_loop_is_closed_when_the_next_loop_wants_one() -> None:
    old_loop = asyncio.new_event_loop()
    try:
        old = streams.poller_for(old_loop)
        assert old is not None and old.fileno() >= 0
    finally:
        old_loop.close()
    current = streams.poller_for(asyncio.get_running_loop())
    assert current is not None and current is not old
    assert old.fileno() == -1
    assert streams.poller_for(asyncio.get_running_loop()) is current


def test_only_an_ip_literal_goes_through_the_poller() -> None:
    from edgeproxy.config.model import Address

    assert streams.ip_family(Address("tcp", "127.0.0.1", 80)) == socket.AF_INET
    assert streams.ip_family(Address("tcp", "::1", 80)) == socket.AF_INET6
    assert streams.ip_family(Address("tcp", "localhost", 80)) == 0
    assert streams.ip_family(Address("tcp", "fe80::1%eth0", 80)) == 0  # (inet_pton: no zone)
    assert streams.ip_family(Address("unix", path="/run/app.sock")) == 0
    assert streams.stream_kind() == ("epoll" if BUILT else "loop")


def test_the_environment_can_ask_for_the_loops_transports() -> None:
    # A fresh interpreter: the choice is made once, at import.
    code = "from edgeproxy.upstream.streams import stream_kind; print(stream_kind())"
    env = {**os.environ, "EDGEPROXY_UPSTREAM_TRANSPORT": "loop"}
    asked = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert asked.stdout.strip() == "loop"
    env.pop("EDGEPROXY_UPSTREAM_TRANSPORT")
    default = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert default.stdout.strip() == ("epoll" if BUILT else "loop")
