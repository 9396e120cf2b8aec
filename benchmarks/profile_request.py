"""The Python cost of one request, without sockets: for profiling the request path.

Drives a real Worker's DownstreamConnection and an UpstreamConnection with in-memory
transports, so only edgeproxy's own code runs (no syscalls, no load generator noise).

    python benchmarks/profile_request.py --requests 20000            # us per request
    python benchmarks/profile_request.py --path return --cprofile    # top functions
    python benchmarks/profile_request.py --limits    # with limits_overhead's zones (never hit)
    python benchmarks/profile_request.py --metrics                   # counting metrics too
    python benchmarks/profile_request.py --log json    # with an access log: combined, json,
                                                       # template (TEMPLATE below)
    # Instructions per request (repeatable on a noisy machine): run under callgrind with
    # N and 3N requests and divide the difference by 2N:
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        "$(python -c 'import sys; print(sys.executable)')" benchmarks/profile_request.py -n 500
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from edgeproxy.config import parse_config
from edgeproxy.metrics.binding import WorkerMetrics
from edgeproxy.metrics.store import MetricsStore
from edgeproxy.server.connection import DownstreamConnection
from edgeproxy.server.worker import Worker
from edgeproxy.upstream.connection import UpstreamConnection

CONFIG = """
http_parser: {parser}
access_log: {{format: {log}, path: /dev/null}}
http: {{keepalive_requests: 1000000000}}
upstreams:
  app: {{keepalive: 64, servers: ["127.0.0.1:9"]}}
{limits}
servers:
  - listen: ["127.0.0.1:0"]
    {limit_conn}
    locations:
      - {{exact: /r, return: {{status: 200, body: "ok"}}, {limit_req}}}
      - {{path: /, proxy_pass: app, {limit_req}}}
"""
# --log template: nginx's `main` format, plus the upstream's time and the request id.
TEMPLATE = (
    '\'$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$http_x_forwarded_for" '
    "$upstream_response_time $request_id'"
)
# --limits: the zones of benchmarks/limits_overhead.py, consulted by every request, never hit.
LIMITS = {
    "limits": "limits:\n"
    "  rate: {key: client_ip, rate: 1000000r/s, burst: 1000, nodelay: true}\n"
    "  conns: {key: client_ip, connections: 100000}",
    "limit_conn": "limit_conn: conns",
    "limit_req": "limit_req: rate",
}
NO_LIMITS = {"limits": "", "limit_conn": "", "limit_req": ""}
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
RETURN_REQUEST = b"GET /r HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
POST_BODY = b"x" * 65536  # as the proxy_post_64k scenario; arrives in 16 KiB reads below
POST_REQUEST = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: %d\r\n"
    b"Content-Type: application/octet-stream\r\n\r\n" % len(POST_BODY)
) + POST_BODY
POST_READS = [POST_REQUEST[i : i + 16384] for i in range(0, len(POST_REQUEST), 16384)]
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)


class MemoryTransport:
    """Collects writes; enough of a transport for both connection classes."""

    def __init__(self, keep: bool = True) -> None:
        self.out: list[bytes] = []
        self.keep = keep  # False: count the bytes only (request bodies would pile up)
        self.written = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.keep:
            self.out.append(data)

    def writelines(self, data: Any) -> None:
        for piece in data:
            self.write(piece)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


async def run(args: argparse.Namespace) -> None:
    limits = LIMITS if args.limits else NO_LIMITS
    log = TEMPLATE if args.log == "template" else args.log
    text = CONFIG.format(parser=args.parser, log=log, **limits)
    config = parse_config(text, "profile.yaml")
    metrics = None
    if args.metrics:  # as a worker under the master: a row of the shared store
        store = MetricsStore(rows=1)
        store.registry.assign(config)
        store.open_row(0)
        row = store.row(0)
        assert row is not None
        metrics = WorkerMetrics(row, store.registry)
    worker = Worker(config, metrics=metrics)
    router = next(iter(worker.routers.values()))
    pool = worker.pools["app"]
    (peer,) = pool.primary
    upstream = UpstreamConnection(peer, pool.protocol, pool.release, worker.loop)
    upstream_transport = MemoryTransport(keep=False)
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    peer.active += 1
    pool.release(upstream, True)  # idle in the pool, as after a first request
    client = DownstreamConnection(worker.services, router)
    client_transport = MemoryTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    path = args.path

    def one() -> None:
        if path == "proxy":
            client.data_received(REQUEST)
            upstream.data_received(RESPONSE)
        elif path == "post":
            for piece in POST_READS:
                client.data_received(piece)
            upstream.data_received(RESPONSE)
        else:
            client.data_received(RETURN_REQUEST)

    for _ in range(1000):  # warm up (a fixed count, so callgrind runs of N and 3N differ by 2N)
        one()
    client_transport.out.clear()
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    for _ in range(args.requests):
        one()
    elapsed = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    answered = sum(1 for piece in client_transport.out if piece.endswith(b"ok"))
    assert answered == args.requests, f"{answered} of {args.requests} requests answered"
    if path == "post":
        sent = upstream_transport.written / (args.requests + 1000)
        assert sent > len(POST_BODY), "the request bodies reached the upstream"
    if metrics is not None:
        counted = store.snapshot()
        assert counted is not None and sum(counted) > args.requests, "the metrics counted"
    what = f"{args.path} ({args.parser}{', metrics' if args.metrics else ''})"
    print(f"{what}: {elapsed / args.requests * 1e6:.1f} us per request")
    worker.access_log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=20000)
    parser.add_argument("--path", choices=("proxy", "post", "return"), default="proxy")
    parser.add_argument("--parser", choices=("httptools", "h11"), default="httptools")
    parser.add_argument("--log", choices=("off", "combined", "json", "template"), default="off")
    parser.add_argument("--metrics", action="store_true", help="count the metrics too")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions")
    parser.add_argument("--limits", action="store_true", help="with a rate and a connection zone")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
