from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from edgeproxy.server.body import RequestBody, ResponseSpool, SpoolError


def temp_fd(directory: Path) -> int:
    """The one fd of this process open on a file in `directory`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(directory)):
                found.append(int(fd))
        except OSError:
            continue  # the listdir's own fd, closed meanwhile
    (fd,) = found
    return fd


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
    assert not body.spooled and b"".join(body.in_memory() or []) == b"0123456789"
    body.write(b"abcdef")
    assert body.spooled and body.in_memory() is None
    assert open_fds_under(tmp_path)  # an anonymous file in temp_path is open
    assert b"".join(body.chunks()) == b"0123456789abcdef"
    assert b"".join(body.chunks()) == b"0123456789abcdef"  # a retry reads it again
    body.close()
    assert not open_fds_under(tmp_path)
    assert list(tmp_path.iterdir()) == []


def drain(spool: ResponseSpool) -> bytes:
    out = []
    while spool.pending:
        out.append(spool.pop())
    return b"".join(out)


def test_spool_keeps_order_across_memory_and_file(tmp_path: Path) -> None:
    spool = ResponseSpool(8, 1 << 20, str(tmp_path))
    pieces = [bytes([65 + i]) * 5 for i in range(6)]
    for piece in pieces[:4]:
        spool.put(piece)
    assert open_fds_under(tmp_path)  # spilled past 8 bytes of memory
    first = spool.pop()
    spool.put(pieces[4])
    spool.put(pieces[5])
    assert first + drain(spool) == b"".join(pieces)
    spool.close()
    assert not open_fds_under(tmp_path)


def test_spool_file_cap_makes_it_full(tmp_path: Path) -> None:
    spool = ResponseSpool(4, 10, str(tmp_path))
    spool.put(b"abcd")  # memory
    spool.put(b"efghi")  # file: 5 of 10
    assert not spool.full
    spool.put(b"jklmn")  # file: 10 of 10
    assert spool.full
    assert drain(spool) == b"abcdefghijklmn"
    assert not spool.full and not spool.pending
    spool.close()


def test_spool_without_file_is_full_at_its_window(tmp_path: Path) -> None:
    spool = ResponseSpool(10, 0, str(tmp_path))
    spool.put(b"x" * 6)
    assert not spool.full
    spool.put(b"y" * 6)
    assert spool.full and not open_fds_under(tmp_path)
    assert spool.pop() == b"x" * 6
    assert not spool.full


# --- temp files that fail ---


def test_a_temp_file_that_cannot_be_created_is_a_spool_error(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    body = RequestBody(memory_limit=4, temp_dir=str(missing))
    body.write(b"0123")  # in memory: no file needed yet
    with pytest.raises(SpoolError) as caught:
        body.write(b"4")
    assert str(caught.value) == (
        f"cannot create a temp file in {missing}: No such file or directory (ENOENT)"
    )
    assert caught.value.code == errno.ENOENT
    spool = ResponseSpool(4, 1 << 20, str(missing))
    with pytest.raises(SpoolError, match=r"cannot create a temp file in .*ENOENT"):
        spool.put(b"012345")


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write may take part of the data (a disk about to be full): the rest must follow."""
    real_pwrite = os.pwrite

    def three_bytes_at_most(fd: int, data: bytes, offset: int) -> int:
        return real_pwrite(fd, bytes(data[:3]), offset)

    monkeypatch.setattr(os, "pwrite", three_bytes_at_most)
    body = RequestBody(memory_limit=4, temp_dir=str(tmp_path))
    for piece in (b"0123", b"456789", b"abcdefghij"):
        body.write(piece)
    assert b"".join(body.chunks()) == b"0123456789abcdefghij"
    body.close()
    spool = ResponseSpool(2, 1 << 20, str(tmp_path))
    spool.put(b"ab")
    spool.put(b"cdefghij")
    assert drain(spool) == b"abcdefghij"
    spool.close()


def test_a_failing_write_is_a_spool_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    body = RequestBody(memory_limit=2, temp_dir=str(tmp_path))
    monkeypatch.setattr(os, "pwrite", disk_full)
    with pytest.raises(SpoolError) as caught:
        body.write(b"abc")
    assert str(caught.value) == (
        f"cannot write a temp file in {tmp_path}: No space left on device (ENOSPC)"
    )
    body.close()
    assert not open_fds_under(tmp_path)


def test_a_temp_file_shorter_than_its_body_is_a_spool_error(tmp_path: Path) -> None:
    body = RequestBody(memory_limit=2, temp_dir=str(tmp_path))
    body.write(b"abcdef")
    os.ftruncate(temp_fd(tmp_path), 2)  # as if the file lost its end
    with pytest.raises(SpoolError, match=r"cannot read a temp file in .*\(EIO\)"):
        b"".join(body.chunks())
    body.close()
