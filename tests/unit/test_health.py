"""Active health checks, the pure parts: the config, the fails/passes state machine, the
prober's schedule with an injected clock, the probe requests, and how a pool selects."""

from __future__ import annotations

import asyncio
import textwrap
from collections import Counter

import pytest

from edgeproxy.config import parse_config
from edgeproxy.config.model import Address, HealthCheckConfig, PeerConfig, UpstreamConfig
from edgeproxy.errors import ConfigError
from edgeproxy.http.codec import CODECS
from edgeproxy.upstream.health import (
    PeerCheck,
    Prober,
    Target,
    http_probe_request,
    parse_status_line,
    probe_target,
    targets_of,
    uwsgi_probe_request,
)
from edgeproxy.upstream.peer import HEALTH_FIELDS, PROBED_DOWN, private_health
from edgeproxy.upstream.pool import UpstreamPool
from edgeproxy.upstream.uwsgi import decode_packet

SERVERS = """\
servers:
  - listen: "127.0.0.1:0"
    locations:
      - {path: /, proxy_pass: app}
"""


def upstream_with(check: str, extra: str = "") -> str:
    return (
        textwrap.dedent(f"""\
        upstreams:
          app:
            servers: ['127.0.0.1:1', '127.0.0.1:2']
            health_check: {check}
        {extra}""")
        + SERVERS
    )


def check_of(text: str) -> HealthCheckConfig | None:
    return parse_config(text, "t.yaml").upstreams["app"].health_check


# --- config ---


def test_defaults_are_nginx_plus_and_haproxy_ones() -> None:
    check = check_of(upstream_with("{}"))
    assert check == HealthCheckConfig()
    assert (check.path, check.interval, check.timeout) == ("/", 5.0, 2.0)
    assert (check.fails, check.passes, check.status) == (3, 2, ((200, 399),))


def test_every_key_is_read() -> None:
    check = check_of(
        upstream_with(
            "{path: /healthz, interval: 200ms, timeout: 100ms, fails: 2, passes: 1,"
            " status: [200, '204-206']}"
        )
    )
    assert check == HealthCheckConfig("/healthz", 0.2, 0.1, 2, 1, ((200, 200), (204, 206)))
    assert check_of(upstream_with("{status: 200}")) == HealthCheckConfig(status=((200, 200),))


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ("{interval: 1s, timeout: 1s}", "health_check.timeout: must be below interval (1s)"),
        ("{interval: 1s}", "below interval (1s), so that probes never overlap; the default is 2s"),
        ("{status: '300-200'}", "health_check.status: expected statuses within 100-599"),
        ("{status: [200, 'x-y']}", "health_check.status[1]: expected a status or a range"),
        ("{status: 99}", "health_check.status: must be 100..599, got 99"),
        ("{status: []}", "health_check.status: must not be empty"),
        ("{path: healthz}", "health_check.path: must start with /"),
        ("{fails: 0}", "health_check.fails: must be >= 1"),
        ("{rise: 2}", "health_check.rise: unknown key"),
    ],
)
def test_bad_checks_are_refused_at_their_line(check: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(upstream_with(check), "t.yaml")
    assert str(info.value).startswith("t.yaml:4: upstreams.app.")
    assert message in str(info.value), str(info.value)


# --- the state machine ---


def test_out_after_fails_in_a_row_back_after_passes_in_a_row() -> None:
    state = PeerCheck(fails=3, passes=2)
    assert state.healthy  # a new server starts healthy
    # Two failures, then a success: the streak is broken, still healthy.
    assert [state.record(ok) for ok in (False, False, True)] == [False, False, False]
    assert state.healthy
    assert [state.record(ok) for ok in (False, False, False)] == [False, False, True]
    assert not state.healthy
    # One success, then a failure: the passes streak starts again.
    assert [state.record(ok) for ok in (True, False, True)] == [False, False, False]
    assert not state.healthy
    assert state.record(True) is True
    assert state.healthy
    assert state.record(True) is False  # no change to report


def test_fails_one_and_passes_one_switch_at_once() -> None:
    state = PeerCheck(fails=1, passes=1)
    assert state.record(False) and not state.healthy
    assert state.record(True) and state.healthy


# --- the prober's schedule, with an injected clock and probe ---


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_target(upstream: str = "app", port: int = 1, **check: object) -> Target:
    config = HealthCheckConfig(**check)  # type: ignore[arg-type]
    address = Address("tcp", "127.0.0.1", port)
    row = private_health()
    return Target(upstream, address, config, b"", row, PeerCheck(config.fails, config.passes))


async def test_the_verdict_reaches_the_shared_row_and_probes_keep_the_interval() -> None:
    clock = FakeClock()
    target = make_target(interval=5.0, timeout=1.0, fails=2, passes=2)
    results = iter([True, False, False, False, True, True, True])
    seen: list[float] = []
    rows: list[float] = []

    async def probe(t: Target) -> bool:
        seen.append(clock.now)
        rows.append(t.row[PROBED_DOWN])
        clock.now += 0.5  # a probe takes some time: the next one still starts on schedule
        return next(results)

    await Prober([target], probe, clock, clock.sleep).watch(target, rounds=7)
    assert seen == [100.0 + 5.0 * i for i in range(7)]
    assert clock.sleeps == [4.5] * 7
    # Row before each probe: out after the 2nd failure (3rd probe), back after 2 passes.
    assert rows == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert target.row[PROBED_DOWN] == 0.0


async def test_every_server_failing_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    first, second = make_target(port=1, fails=1, passes=1), make_target(port=2, fails=1, passes=1)
    other = make_target("other", port=3, fails=1, passes=1)
    verdicts = {1: [False, False, True], 2: [False, False, False], 3: [True, True, True]}

    async def probe(t: Target) -> bool:
        return verdicts[t.address.port].pop(0)

    prober = Prober([first, second, other], probe, clock, clock.sleep)
    for _ in range(3):
        for target in (first, second, other):
            await prober.check_once(target)
    every = [r for r in caplog.records if "every server fails" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in every] == ["upstream app"]
    assert any("a server passes its health checks again" in r.getMessage() for r in caplog.records)


def test_targets_start_healthy_on_a_new_config_and_keep_the_row_after_a_crash() -> None:
    config = parse_config(
        textwrap.dedent("""\
            upstreams:
              app:
                servers: ['127.0.0.1:1', {address: '127.0.0.1:2', down: true}, 'unix:/s']
                protocol: uwsgi
                health_check: {path: /h}
              plain: {servers: ['127.0.0.1:3']}
            """)
        + SERVERS,
        "t.yaml",
    )
    rows = {str(s.address): private_health() for u in config.upstreams.values() for s in u.servers}
    for row in rows.values():
        row[PROBED_DOWN] = 1.0
    kept = targets_of(config, lambda up, addr: rows[str(addr)], fresh=False)
    assert [str(t.address) for t in kept] == ["127.0.0.1:1", "unix:/s"]  # not down, checked
    assert not any(t.state.healthy for t in kept)
    fresh = targets_of(config, lambda up, addr: rows[str(addr)], fresh=True)
    assert all(t.state.healthy for t in fresh)
    assert rows["127.0.0.1:1"][PROBED_DOWN] == 0.0 and rows["unix:/s"][PROBED_DOWN] == 0.0
    assert rows["127.0.0.1:3"][PROBED_DOWN] == 1.0  # not this prober's
    assert fresh[0].request.startswith(b"\x00")  # a uwsgi packet


# --- the probe requests and the real probe ---


def test_probe_requests() -> None:
    check = HealthCheckConfig(path="/health%20z?full=1")
    address = Address("tcp", "127.0.0.1", 8001)
    http = http_probe_request(check, address)
    assert http.startswith(b"GET /health%20z?full=1 HTTP/1.1\r\nHost: 127.0.0.1:8001\r\n")
    assert http.endswith(b"Connection: close\r\n\r\n")
    variables, body = decode_packet(uwsgi_probe_request(check, address))
    found = dict(variables)
    assert found[b"REQUEST_METHOD"] == b"GET"
    assert found[b"PATH_INFO"] == b"/health z"
    assert found[b"QUERY_STRING"] == b"full=1"
    assert found[b"SERVER_PORT"] == b"8001"
    assert body == b""


@pytest.mark.parametrize(
    ("line", "status"),
    [(b"HTTP/1.1 200 OK\r\n", 200), (b"HTTP/1.0 503\r\n", 503), (b"SSH-2.0\r\n", None),
     (b"HTTP/1.1 2000 x\r\n", None), (b"", None)],
)  # fmt: skip
def test_parse_status_line(line: bytes, status: int | None) -> None:
    assert parse_status_line(line) == status


async def test_the_real_probe_against_a_socket() -> None:
    answers = iter([b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 500 Oops\r\n\r\n", b"junk"])
    hang = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        answer = next(answers, None)
        if answer is None:
            await hang.wait()  # never answers: the probe times out
        else:
            writer.write(answer)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = make_target(port=port, interval=1.0, timeout=0.3)
    target.request = http_probe_request(target.check, target.address)
    try:
        results = [await probe_target(target) for _ in range(4)]
    finally:
        hang.set()
        server.close()
    assert results == [True, False, False, False]
    target.address = Address("tcp", "127.0.0.1", port)  # now closed: refused
    assert await probe_target(target) is False


# --- the pool's selection ---


def pool(*ports: int, checked: bool = True, backup: int | None = None) -> UpstreamPool:
    peers = tuple(PeerConfig(Address("tcp", "127.0.0.1", p), backup=p == backup) for p in ports)
    config = UpstreamConfig(
        "app", servers=peers, health_check=HealthCheckConfig() if checked else None
    )
    return UpstreamPool(config, CODECS["h11"]())


def picks(upstream: UpstreamPool, count: int = 30) -> Counter[int]:
    chosen = [upstream.select((), f"k{n}") for n in range(count)]
    return Counter(p.address.port for p in chosen if p is not None)


async def test_a_probed_down_peer_is_not_a_candidate() -> None:
    upstream = pool(1, 2, 3)
    upstream.peers[1].health[PROBED_DOWN] = 1.0
    assert set(picks(upstream)) == {1, 3}
    assert upstream.select({upstream.peers[0], upstream.peers[2]}, "k") is None
    assert not upstream.has_candidate({upstream.peers[0], upstream.peers[2]})
    upstream.peers[1].health[PROBED_DOWN] = 0.0  # passes again: at once
    assert set(picks(upstream)) == {1, 2, 3}


async def test_a_probed_down_primary_sends_requests_to_the_backup() -> None:
    upstream = pool(1, 2, backup=2)
    upstream.peers[0].health[PROBED_DOWN] = 1.0
    assert set(picks(upstream)) == {2}


async def test_with_every_server_probed_down_all_are_tried_anyway() -> None:
    upstream = pool(1, 2, 3)
    for peer in upstream.peers:
        peer.health[PROBED_DOWN] = 1.0
    assert set(picks(upstream)) == {1, 2, 3}
    assert upstream.has_candidate(())


async def test_a_pool_without_checks_ignores_the_field() -> None:
    upstream = pool(1, 2, checked=False)
    upstream.peers[0].health[PROBED_DOWN] = 1.0  # left over from an older config
    assert set(picks(upstream)) == {1, 2}


def test_the_row_has_room_for_the_verdict() -> None:
    assert PROBED_DOWN < HEALTH_FIELDS
