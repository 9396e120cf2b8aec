from __future__ import annotations

import asyncio
import os
from pathlib import Path

from edgeproxy.server.body import RequestBody, ResponseBuffer


def open_fds_under(directory: Path) -> list[str]:
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [link for link in links if link.startswith(str(directory))]


def test_request_body_spools_past_the_memory_limit_and_rereads(tmp_path: Path) -> None:
    body = RequestBody(memory_limit=10, temp_dir=str(tmp_path))
    body.write(b"0123456789")
    assert not body.spooled and body.in_memory() == b"0123456789"
    body.write(b"abcdef")
    assert body.spooled and body.in_memory() is None
    assert open_fds_under(tmp_path)  # an anonymous file in temp_path is open
    assert b"".join(body.chunks()) == b"0123456789abcdef"
    assert b"".join(body.chunks()) == b"0123456789abcdef"  # a retry reads it again
    body.close()
    assert not open_fds_under(tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_response_buffer_keeps_order_across_memory_and_file(tmp_path: Path) -> None:
    resumed = []
    buffer = ResponseBuffer(8, 1 << 20, str(tmp_path), lambda: resumed.append(True))
    pieces = [bytes([65 + i]) * 5 for i in range(6)]
    for piece in pieces[:4]:
        buffer.put(piece)
    assert open_fds_under(tmp_path)  # spilled
    first = await buffer.get()
    buffer.put(pieces[4])
    buffer.put(pieces[5])
    buffer.finish()
    out = [first]
    while (chunk := await buffer.get()) is not None:
        out.append(chunk)
    assert b"".join(out) == b"".join(pieces)
    buffer.close()
    assert not open_fds_under(tmp_path)


async def test_response_buffer_without_file_is_full_at_its_window(tmp_path: Path) -> None:
    resumed: list[bool] = []
    buffer = ResponseBuffer(10, 0, str(tmp_path), lambda: resumed.append(True))
    buffer.put(b"x" * 6)
    assert not buffer.full
    buffer.put(b"y" * 6)
    assert buffer.full and not open_fds_under(tmp_path)
    assert await buffer.get() == b"x" * 6
    assert resumed == [True]  # the producer is told to read on


async def test_response_buffer_get_waits_for_data_and_raises_errors(tmp_path: Path) -> None:
    buffer = ResponseBuffer(10, 0, str(tmp_path), lambda: None)
    waiter = asyncio.ensure_future(buffer.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    buffer.put(b"late")
    assert await asyncio.wait_for(waiter, 5) == b"late"
    buffer.fail(RuntimeError("upstream broke"))
    try:
        await buffer.get()
    except RuntimeError as exc:
        assert str(exc) == "upstream broke"
    else:
        raise AssertionError("the producer's error was not raised")
