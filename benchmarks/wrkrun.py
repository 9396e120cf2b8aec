"""Running wrk and reading the figures it prints."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import Children

THREADS = 1
CONNECTIONS = 50

# wrk prints times with the unit that keeps the number short: 812.00us, 1.52ms, 2.10s, 1.20m.
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"


class WrkError(RuntimeError):
    """wrk failed or printed something we cannot read."""


@dataclass(frozen=True)
class WrkResult:
    requests_per_sec: float
    p99_ms: float
    requests: int
    seconds: float
    non_2xx: int  # wrk's "Non-2xx or 3xx responses"
    socket_errors: int  # connect + read + write + timeout

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p99 = re.search(rf"^\s*99(?:\.0+)?%\s+{_TIME}", text, re.M)
    total = re.search(rf"^\s*(\d+) requests in {_TIME}", text, re.M)
    if not (rps and p99 and total):
        raise WrkError(f"cannot read wrk output (was --latency given?):\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        requests_per_sec=float(rps.group(1)),
        p99_ms=_ms(p99.group(1), p99.group(2)),
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1000.0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sock.groups()) if sock else 0,
    )


def run_wrk(
    children: Children,
    wrk: str,
    url: str,
    duration_s: int,
    log: Path,
    *,
    lua_script: Path | None = None,
    connections: int = CONNECTIONS,
    threads: int = THREADS,
    on_tick: Callable[[], None] | None = None,
) -> WrkResult:
    """wrk for `duration_s` seconds; `on_tick()` is called every 50 ms while it runs."""
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    if lua_script is not None:
        argv += ["-s", str(lua_script)]
    argv.append(url)
    log.write_bytes(b"")
    child = children.spawn("wrk", argv, log)
    # wrk stops itself after -d; the margin covers its start and final report.
    deadline = time.monotonic() + duration_s + 30
    try:
        while child.proc.poll() is None:
            if time.monotonic() > deadline:
                raise WrkError(f"wrk did not finish within {duration_s + 30}s")
            if on_tick is not None:
                on_tick()
            time.sleep(0.05)
    finally:
        children.stop(child)
    text = log.read_text(errors="replace")
    if child.proc.returncode != 0:
        raise WrkError(f"wrk exited with {child.proc.returncode}:\n{text}")
    return parse_wrk(text)
