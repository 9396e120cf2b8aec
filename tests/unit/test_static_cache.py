"""The open-file cache's rules, on a Locator over a real directory (no sockets)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from edgeproxy.config.model import StaticFiles
from edgeproxy.server.static import cache, lookup
from edgeproxy.server.static.types import TypeTable

TYPES = TypeTable((), None)


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the locator opens beneath its root."""
    seen: list[str] = []
    real = lookup.open_beneath

    def counting(dir_fd: int, path: str, mode: str, directory: bool = False) -> int:
        seen.append(path)
        return real(dir_fd, path, mode, directory)

    monkeypatch.setattr(lookup, "open_beneath", counting)
    return seen


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(lookup.time, "monotonic", lambda: now[0])
    return now


def test_a_hit_opens_nothing_until_the_bound(
    tmp_path: Path, opens: list[str], clock: list[float]
) -> None:
    (tmp_path / "a.css").write_bytes(b"a")
    (tmp_path / "a.css.gz").write_bytes(b"gz")
    locator = lookup.Locator(StaticFiles(str(tmp_path)))
    first = locator.find(b"/a.css", b"gzip", TYPES)
    assert first.encoding == b"gzip"
    opened = len(opens)
    assert opened == 3  # the file, .br (missing), .gz
    for accept in (b"gzip", None, b"br"):
        found = locator.find(b"/a.css", accept, TYPES)
        assert found.file is not None
        found.file.release()
    assert len(opens) == opened
    clock[0] += cache.VALID
    locator.find(b"/a.css", None, TYPES)
    assert len(opens) == 2 * opened  # resolved again from the root


def test_fds_close_when_dropped_and_released(tmp_path: Path, clock: list[float]) -> None:
    (tmp_path / "a.css").write_bytes(b"a")
    locator = lookup.Locator(StaticFiles(str(tmp_path), gzip_static=False))
    found = locator.find(b"/a.css", None, TYPES)
    file = found.file
    assert file is not None
    fd = file.fd
    locator.cache.clear()  # dropped while a response still sends it
    os.fstat(fd)  # still open
    file.release()
    assert file.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)


def test_the_cache_is_bounded(tmp_path: Path, clock: list[float]) -> None:
    locator = lookup.Locator(StaticFiles(str(tmp_path), gzip_static=False))
    for i in range(cache.MAX_ENTRIES + 5):
        (tmp_path / f"{i}.txt").write_bytes(b"x")
        found = locator.find(b"/%d.txt" % i, None, TYPES)
        assert found.file is not None
        found.file.release()
    assert len(locator.cache.entries) == cache.MAX_ENTRIES


def test_a_dropped_handler_closes_its_cached_files(tmp_path: Path, clock: list[float]) -> None:
    """A reload builds new handlers: the old ones' cached fds must not stay open."""
    (tmp_path / "a.css").write_bytes(b"a")
    locator = lookup.Locator(StaticFiles(str(tmp_path), gzip_static=False))
    found = locator.find(b"/a.css", None, TYPES)
    file = found.file
    assert file is not None
    file.release()
    assert file.fd >= 0  # held by the cache
    del locator, found
    gc.collect()
    assert file.fd == -1  # closed with the cache
