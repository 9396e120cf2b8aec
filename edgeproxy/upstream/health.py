"""Active health checks: probe each server of the pools that have a `health_check`.

One Prober runs for the whole instance (edgeproxy.process.prober forks it from the master),
never one per worker. It probes every server that is not `down`, each on its own schedule
(at once, then every `interval`), with an HTTP GET of `path` (a uwsgi packet for uwsgi
pools), and counts a probe good when the status line arrives within `timeout` with a status
in `status`. A server goes out after `fails` bad probes in a row and comes back after
`passes` good ones; the verdict is the PROBED_DOWN field of the server's shared health row,
which every worker's pool reads when it selects (edgeproxy.upstream.pool).

The state machine (PeerCheck) and the scheduling take an injected probe, clock and sleep,
so that they are tested without sockets or waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from edgeproxy.config.model import Address, Config, HealthCheckConfig
from edgeproxy.upstream.peer import PROBED_DOWN, HealthLookup
from edgeproxy.upstream.uwsgi import encode_packet

log = logging.getLogger("edgeproxy.health")

USER_AGENT = b"edgeproxy-health-check"
MAX_STATUS_LINE = 8192  # a longer first line is not an HTTP status line: a failed probe


class PeerCheck:
    """Consecutive results of one server's probes, and the verdict they give."""

    __slots__ = ("bad_streak", "fails", "good_streak", "healthy", "passes")

    def __init__(self, fails: int, passes: int, healthy: bool = True) -> None:
        self.fails = fails
        self.passes = passes
        self.healthy = healthy  # a new server starts healthy until proven otherwise
        self.good_streak = 0
        self.bad_streak = 0

    def record(self, ok: bool) -> bool:
        """Count one probe's result; True when it changes the verdict."""
        if ok:
            self.bad_streak = 0
            self.good_streak += 1
            if not self.healthy and self.good_streak >= self.passes:
                self.healthy = True
                return True
        else:
            self.good_streak = 0
            self.bad_streak += 1
            if self.healthy and self.bad_streak >= self.fails:
                self.healthy = False
                return True
        return False


def good_status(check: HealthCheckConfig, status: int) -> bool:
    return any(low <= status <= high for low, high in check.status)


def parse_status_line(line: bytes) -> int | None:
    """`HTTP/1.1 200 OK` -> 200; None for anything that is not a status line."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        return None
    return int(parts[1]) if parts[1].isdigit() else None


def _host(address: Address) -> bytes:
    if address.kind == "unix":
        return b"localhost"
    return str(address).encode("ascii", "replace")


def http_probe_request(check: HealthCheckConfig, address: Address) -> bytes:
    return (
        b"GET " + check.path.encode() + b" HTTP/1.1\r\nHost: " + _host(address)
        + b"\r\nUser-Agent: " + USER_AGENT + b"\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )  # fmt: skip


def uwsgi_probe_request(check: HealthCheckConfig, address: Address) -> bytes:
    """The same GET as one uwsgi packet (the variables a WSGI app needs)."""
    target = check.path.encode()
    path, _, query = target.partition(b"?")
    port = b"80" if address.kind == "unix" else str(address.port).encode()
    name = b"localhost" if address.kind == "unix" else address.host.encode("ascii", "replace")
    return encode_packet(
        [
            (b"REQUEST_METHOD", b"GET"),
            (b"REQUEST_URI", target),
            (b"PATH_INFO", unquote_to_bytes(path)),
            (b"QUERY_STRING", query),
            (b"SERVER_NAME", name),
            (b"SERVER_PORT", port),
            (b"SERVER_PROTOCOL", b"HTTP/1.1"),
            (b"REMOTE_ADDR", b"127.0.0.1"),
            (b"REMOTE_PORT", b"0"),
            (b"HTTP_HOST", _host(address)),
            (b"HTTP_USER_AGENT", USER_AGENT),
        ]
    )


async def probe_status(address: Address, request: bytes) -> int | None:
    """Send `request` on a new connection and read the status of the answer; None when the
    answer is not a status line. Connection errors raise OSError; the caller bounds the time."""
    if address.kind == "unix":
        reader, writer = await asyncio.open_unix_connection(address.path)
    else:
        reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        writer.write(request)
        line = await reader.readuntil(b"\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    finally:
        writer.transport.abort()  # the rest of the answer is not wanted
    return parse_status_line(line[:MAX_STATUS_LINE])


@dataclass(eq=False)
class Target:
    """One server to probe, and where its verdict goes."""

    upstream: str
    address: Address
    check: HealthCheckConfig
    request: bytes
    row: memoryview[float]
    state: PeerCheck


Probe = Callable[[Target], Awaitable[bool]]


async def probe_target(target: Target) -> bool:
    """The real probe: good when a good status arrives within the check's timeout."""
    try:
        async with asyncio.timeout(target.check.timeout):
            status = await probe_status(target.address, target.request)
    except (OSError, TimeoutError):
        return False
    return status is not None and good_status(target.check, status)


def targets_of(config: Config, rows: HealthLookup, *, fresh: bool) -> list[Target]:
    """Every server (not `down`) of every pool with a health_check that has a shared row.

    `fresh`: a new config (start or reload), whose servers all start healthy; otherwise (a
    prober restarted after a crash) each server keeps the verdict its row holds.
    """
    found = []
    for upstream in config.upstreams.values():
        check = upstream.health_check
        if check is None:
            continue
        encode = uwsgi_probe_request if upstream.protocol == "uwsgi" else http_probe_request
        for server in upstream.servers:
            row = rows(upstream.name, server.address)
            if server.down or row is None:
                continue
            if fresh:
                row[PROBED_DOWN] = 0.0
            state = PeerCheck(check.fails, check.passes, healthy=row[PROBED_DOWN] == 0.0)
            request = encode(check, server.address)
            found.append(Target(upstream.name, server.address, check, request, row, state))
    return found


class Prober:
    """Runs the checks of `targets` forever; the verdicts go to their shared rows."""

    def __init__(
        self,
        targets: list[Target],
        probe: Probe = probe_target,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.targets = targets
        self.probe = probe
        self.clock = clock
        self.sleep = sleep
        self._all_down: set[str] = set()  # pools whose every server fails its checks

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for target in self.targets:
                group.create_task(self.watch(target))

    async def watch(self, target: Target, rounds: int | None = None) -> None:
        """Probe `target` at once, then every interval (`rounds` times, or forever)."""
        interval = target.check.interval
        done = 0
        while rounds is None or done < rounds:
            started = self.clock()
            await self.check_once(target)
            done += 1
            # The next probe an interval after this one started (a probe's timeout is below
            # the interval, so probes of one server never overlap).
            await self.sleep(max(0.0, started + interval - self.clock()))

    async def check_once(self, target: Target) -> None:
        ok = await self.probe(target)
        if not target.state.record(ok):
            return
        target.row[PROBED_DOWN] = 0.0 if target.state.healthy else 1.0
        if target.state.healthy:
            log.warning("upstream %s: server %s passes its health checks again",
                        target.upstream, target.address)  # fmt: skip
        else:
            log.warning("upstream %s: server %s fails its health checks (%s %d in a row); "
                        "taken out", target.upstream, target.address, target.check.path,
                        target.check.fails)  # fmt: skip
        self._note_pool(target.upstream)

    def _note_pool(self, upstream: str) -> None:
        """Log once when every server of a pool fails its checks (and when that ends)."""
        every = all(not t.state.healthy for t in self.targets if t.upstream == upstream)
        if every and upstream not in self._all_down:
            self._all_down.add(upstream)
            log.error("upstream %s: every server fails its health checks; requests are sent "
                      "to all of them anyway, as if none were checked", upstream)  # fmt: skip
        elif not every and upstream in self._all_down:
            self._all_down.discard(upstream)
            log.warning("upstream %s: a server passes its health checks again", upstream)
