"""shared_zone_overhead: proxy_small through edgeproxy with a rate zone and a connection
zone shared through a Redis (`shared: true`), configured on its one location but never hit,
against the same edgeproxy without zones (BENCHMARKS.md: at least 0.8 x).

The Redis is a local redis-server on a unix socket in the scenario's temp dir (persistence
off). wrk's connections all come from 127.0.0.1, so every request draws on one key: each
worker sends one batch per Redis round trip, whatever the request rate.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness import StartupError, wait_until
from limits_overhead import ZONES, measure_overhead
from servers import RunOptions, Workspace

TARGET = 0.8


def redis_missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    return None


def _socket(tmp: Path) -> Path:
    return tmp.parent / "redis.sock"  # the scenario's dir; the proxies' are below it


def _start_redis(ws: Workspace) -> None:
    server = shutil.which("redis-server")
    assert server is not None
    socket = ws.dir / "redis.sock"
    child = ws.children.spawn(
        "redis",
        [server, "--port", "0", "--unixsocket", str(socket), "--save", "",
         "--appendonly", "no", "--dir", str(ws.dir)],
        ws.dir / "redis.log",
    )  # fmt: skip

    def up() -> bool:
        if child.proc.poll() is not None:
            raise StartupError(f"redis-server exited: see {ws.dir / 'redis.log'}")
        return socket.exists()

    wait_until("redis-server", up, 10)


def _with_shared_zones(config: dict[str, Any], tmp: Path) -> dict[str, Any]:
    config["shared_state"] = {"redis": f"unix://{_socket(tmp)}", "timeout": "50ms"}
    config["limits"] = {name: {**zone, "shared": True} for name, zone in ZONES.items()}
    server = config["servers"][0]
    server["limit_conn"] = "conns"
    server["locations"][0]["limit_req"] = "rate"
    return config


def measure_shared_zone_overhead(opts: RunOptions) -> dict[str, Any]:
    return measure_overhead(
        opts, "shared_zone_overhead", _with_shared_zones, TARGET, start_services=_start_redis
    )
