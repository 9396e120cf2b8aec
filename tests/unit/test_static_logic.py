"""The pure parts of static files: paths, types, conditionals, ranges, the opener."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeproxy.server.static import opener
from edgeproxy.server.static.encodings import choose
from edgeproxy.server.static.paths import Refused, decode_segments, relative_segments, target_path
from edgeproxy.server.static.types import TypeTable
from edgeproxy.server.static.validators import (
    MAX_RANGES,
    check_conditions,
    http_date,
    if_range_holds,
    parse_http_date,
    parse_range,
)


def test_segments() -> None:
    assert decode_segments(b"/static/a%20b.css") == (["static", "a b.css"], False)
    assert decode_segments(b"/static/./x//y/") == (["static", "x", "y"], True)
    assert target_path(b"http://h:1/a/b?q") == b"/a/b"
    assert target_path(b"/a?b/../c") == b"/a"
    assert relative_segments(["assets", "a.css"], ["assets"]) == ["a.css"]


def test_the_well_known_prefix_is_the_one_dot_name_served() -> None:
    token = ["acme-challenge", "Rk3x_-9"]
    assert decode_segments(b"/.well-known/acme-challenge/Rk3x_-9") == (
        [".well-known", *token],
        False,
    )
    assert decode_segments(b"/%2ewell-known/acme-challenge/Rk3x_-9") == (
        [".well-known", *token],
        False,
    )
    assert decode_segments(b"/./.well-known/") == ([".well-known"], True)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (b"/a/../b", 404),
        (b"/a/%2e%2e/b", 404),
        (b"/a%2fb", 404),
        (b"/a%5Cb", 404),
        (b"/a\\b", 404),
        (b"/a%00b", 404),
        (b"/.env", 404),
        (b"/x/.git/config", 404),
        (b"/%2egit/config", 404),
        (b"/.git/config", 404),
        (b"/.well-known/.git/config", 404),  # only the first segment may be .well-known
        (b"/.well-known/acme-challenge/.env", 404),
        (b"/x/.well-known/acme-challenge/t", 404),
        (b"/.Well-Known/acme-challenge/t", 404),
        (b"/.well-known/../.env", 404),
        (b"/%c0%ae%c0%ae/x", 400),
        (b"/%ff", 400),
    ],
)
def test_refused_paths(path: bytes, status: int) -> None:
    with pytest.raises(Refused) as info:
        decode_segments(path)
    assert info.value.status == status


def test_alias_prefix_must_match() -> None:
    with pytest.raises(Refused):
        relative_segments(["assetsx", "a.css"], ["assets"])


def test_types_table() -> None:
    table = TypeTable([("css", "text/x-css"), ("new", "application/x-new")], "utf-8")
    assert table.content_type("a.CSS") == b"text/x-css; charset=utf-8"
    assert table.content_type("a.new") == b"application/x-new"
    assert table.content_type("a.json") == b"application/json; charset=utf-8"
    assert table.content_type("a.png") == b"image/png"
    assert table.content_type("README") == b"application/octet-stream"
    assert TypeTable((), None).content_type("a.html") == b"text/html"


TAG = b'"1-2-3"'
MTIME = 1_000_000_000


def conditions(get: bool = True, **fields: str) -> int:
    encoded = {k.replace("_", "-").encode(): v.encode() for k, v in fields.items()}
    return check_conditions(encoded, TAG, MTIME, get)


def test_conditionals_in_rfc_order() -> None:
    date = http_date(MTIME).decode()
    later = http_date(MTIME + 10).decode()
    earlier = http_date(MTIME - 10).decode()
    assert conditions() == 0
    assert conditions(if_match='"x"') == 412
    assert conditions(if_match=f'"x", {TAG.decode()}') == 0
    assert conditions(if_match=f"W/{TAG.decode()}") == 412  # If-Match compares strongly
    assert conditions(if_unmodified_since=earlier) == 412
    assert conditions(if_unmodified_since=date) == 0
    assert conditions(if_match="*", if_unmodified_since=earlier) == 0  # If-Match wins
    assert conditions(if_none_match=TAG.decode()) == 304
    assert conditions(False, if_none_match=TAG.decode()) == 412
    assert conditions(if_none_match=f"W/{TAG.decode()}") == 304  # weak comparison
    assert conditions(if_modified_since=date) == 304
    assert conditions(if_modified_since=later) == 304
    assert conditions(if_modified_since=earlier) == 0
    assert conditions(if_none_match='"x"', if_modified_since=later) == 0  # INM wins
    assert conditions(if_modified_since="garbage") == 0


def test_http_dates() -> None:
    assert parse_http_date(http_date(MTIME)) == MTIME
    assert parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    assert parse_http_date(b"nonsense") is None


def test_if_range() -> None:
    assert if_range_holds(TAG, TAG, MTIME)
    assert not if_range_holds(b'"other"', TAG, MTIME)
    assert not if_range_holds(b"W/" + TAG, TAG, MTIME)
    assert if_range_holds(http_date(MTIME), TAG, MTIME)
    assert not if_range_holds(http_date(MTIME - 1), TAG, MTIME)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"bytes=0-4", [(0, 5)]),
        (b"bytes=5-", [(5, 5)]),
        (b"bytes=-3", [(7, 3)]),
        (b"bytes=-30", [(0, 10)]),
        (b"bytes=8-100", [(8, 2)]),
        (b"bytes=0-0, 2-3 ,-1", [(0, 1), (2, 2), (9, 1)]),
        (b"BYTES=1-1", [(1, 1)]),
        (b"bytes=10-", []),  # unsatisfiable
        (b"bytes=20-30", []),
        (b"bytes=20-30, 1-1", [(1, 1)]),
        (b"items=0-1", None),  # not bytes: ignored
        (b"bytes=5-1", None),
        (b"bytes=a-b", None),
        (b"bytes=1", None),
        (b"bytes=", None),
        (b"bytes=-", None),
        (b"bytes=" + b",".join([b"0-0"] * (MAX_RANGES + 1)), None),
    ],
)
def test_ranges(value: bytes, expected: list[tuple[int, int]] | None) -> None:
    assert parse_range(value, 10) == expected


@pytest.fixture
def rooted(tmp_path: Path) -> tuple[int, Path]:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.txt").write_bytes(b"f")
    (tmp_path / "secret").write_bytes(b"s")
    os.symlink("../secret", root / "out")
    os.symlink("d/f.txt", root / "in")
    fd = os.open(root, opener.O_DIR)
    yield fd, root  # type: ignore[misc]
    os.close(fd)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 10)
    finally:
        os.close(fd)


@pytest.mark.parametrize("have_openat2", [True, False])
def test_opener(
    rooted: tuple[int, Path], have_openat2: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if have_openat2 and not opener.HAVE_OPENAT2:
        pytest.skip("this kernel has no openat2")
    monkeypatch.setattr(opener, "HAVE_OPENAT2", have_openat2)
    dir_fd, _ = rooted
    assert _read(opener.open_beneath(dir_fd, "d/f.txt", "outside_root")) == b"f"
    assert _read(opener.open_beneath(dir_fd, "d/f.txt", "on")) == b"f"
    with pytest.raises(OSError):
        opener.open_beneath(dir_fd, "out", "outside_root")
    with pytest.raises(OSError):
        opener.open_beneath(dir_fd, "in", "on")
    if have_openat2:  # the fallback refuses every symlink
        assert _read(opener.open_beneath(dir_fd, "in", "outside_root")) == b"f"
    assert _read(opener.open_beneath(dir_fd, "out", "off")) == b"s"
    os.close(opener.open_beneath(dir_fd, "d", "outside_root", directory=True))


@pytest.mark.parametrize(
    ("accept", "available", "chosen"),
    [
        (b"gzip, br", (b"br", b"gzip"), b"br"),
        (b"gzip;q=1.0, br;q=0.9", (b"br", b"gzip"), b"gzip"),
        (b"br;q=0", (b"br", b"gzip"), None),
        (b"gzip;q=abc", (b"gzip",), None),
        (b"gzip;q=2", (b"gzip",), None),
        (b"*;q=0.1", (b"gzip",), b"gzip"),
        (b"GZIP", (b"gzip",), b"gzip"),
        (b"deflate", (b"br", b"gzip"), None),
        (None, (b"gzip",), None),
        (b"gzip", (), None),
    ],
)
def test_choose_encoding(
    accept: bytes | None, available: tuple[bytes, ...], chosen: bytes | None
) -> None:
    assert choose(accept, available) == chosen
