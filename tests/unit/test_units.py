"""The value notations: sizes, durations, rates, addresses."""

from __future__ import annotations

import pytest

from edgeproxy.config.model import Address
from edgeproxy.config.units import parse_address, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        (512, 512),
        (0, 0),
        ("0", 0),
        ("64k", 64 * 1024),
        ("64K", 64 * 1024),
        ("10m", 10 * 1024 * 1024),
        ("1g", 1024**3),
        (" 8k ", 8 * 1024),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "k", "1.5m", "10 m", "10mb", "-1", "1t", "١٢", -1, True])
def test_parse_size_rejects(bad: str | int) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 7 * 86400.0),
        ("1h30m", 5400.0),
        ("1m30s500ms", 90.5),
        ("1.5s", 1.5),
        ("30", 30.0),
        (30, 30.0),
        (0.5, 0.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "bad", ["", "s", "10x", "30s1m", "1m1m", "1 h", "-5s", -1, float("inf"), float("nan"), True]
)
def test_parse_duration_rejects(bad: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "expected"), [("10r/s", 10.0), ("600r/m", 10.0), ("1r/m", 1 / 60), ("0.5r/s", 0.5)]
)
def test_parse_rate(text: str, expected: float) -> None:
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["", "10", "10r/h", "10/s", "r/s", "0r/s", "-1r/s"])
def test_parse_rate_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8001", Address("tcp", host="127.0.0.1", port=8001)),
        ("localhost:80", Address("tcp", host="localhost", port=80)),
        ("App-1.Internal:80", Address("tcp", host="app-1.internal", port=80)),
        ("[::1]:8080", Address("tcp", host="::1", port=8080)),
        ("[0:0::1]:8080", Address("tcp", host="::1", port=8080)),
        ("unix:/run/app.sock", Address("unix", path="/run/app.sock")),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text, listen=False) == expected
    assert parse_address(text, listen=True) == expected


@pytest.mark.parametrize("text", ["*:8080", ":8080", "0.0.0.0:8080"])
def test_listen_wildcards_mean_all_ipv4(text: str) -> None:
    assert parse_address(text, listen=True) == Address("tcp", host="0.0.0.0", port=8080)


def test_listen_allows_port_zero_but_a_peer_does_not() -> None:
    assert parse_address("127.0.0.1:0", listen=True).port == 0
    with pytest.raises(ValueError, match=r"port must be a number 1\.\.65535"):
        parse_address("127.0.0.1:0", listen=False)


def test_address_str_round_trips() -> None:
    for text in ("127.0.0.1:80", "[::1]:80", "unix:/run/a.sock"):
        assert str(parse_address(text, listen=False)) == text


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("8080", "expected host:port"),
        ("127.0.0.1", "expected host:port"),
        ("127.0.0.1:65536", "port must be a number"),
        ("127.0.0.1:http", "port must be a number"),
        ("127.0.0.1:", "port must be a number"),
        ("::1:80", "needs brackets"),
        ("[::1]80", r"expected \[v6-address\]:port"),
        ("[nope]:80", "bad IPv6 address"),
        ("1.2.3.999:80", "bad IPv4 address"),
        ("bad host:80", "bad host name"),
        ("unix:run/app.sock", "must be absolute"),
        ("*:80", "needs a host"),
    ],
)
def test_parse_address_rejects(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(bad, listen=False)
