"""idle_conns: resident memory per idle keep-alive client connection, on one worker.

For each server (nginx, then edgeproxy, fresh processes every round): start it with a
`return 200` location and long idle timeouts, warm it up, read the serving process's RSS,
let `idle_client.py` (another process) open N connections that each make one keep-alive
request and then stay idle, wait until the server holds all N, read the RSS again.
KiB per connection = (after - before) / N.
"""

from __future__ import annotations

import resource
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import procfs
from harness import Children, StartupError, log, scenario_tmp, wait_until
from idle_client import response_length
from servers import (
    BENCH_DIR,
    HOST,
    Endpoint,
    RunOptions,
    Workspace,
    start_edgeproxy_with,
    start_nginx_with,
)

TARGET_KIB = 4.0
# Long enough that no connection is closed while the memory is read.
IDLE_TIMEOUT = "300s"
SETTLE_S = 1.0  # after the last connection is held, before RSS is read
WARMUP_CONNS = 16
WARMUP_REQUESTS = 20  # per warm-up connection


def _nginx_idle(ws: Workspace, n: int) -> Endpoint:
    body = f"""\
    keepalive_timeout {IDLE_TIMEOUT};
    client_header_timeout {IDLE_TIMEOUT};
    keepalive_requests 1000;
    server {{
        listen {HOST}:PORT;
        location / {{
            default_type text/plain;
            return 200 "ok";
        }}
    }}"""
    # Twice N: with fewer than 1/16 of its connections free, nginx closes idle keep-alive
    # connections to make room (ngx_drain_connections), which would spoil the count.
    return start_nginx_with(ws, "nginx", body, worker_connections=2 * n + 256)


def _edgeproxy_idle(ws: Workspace, n: int) -> Endpoint:
    def config(port: int) -> dict[str, Any]:
        return {
            "workers": 1,
            # As nginx's above: the default 10,000 is a cap the N idle connections plus the
            # measuring one would reach, and past it the worker rightly stops accepting.
            "worker_connections": 2 * n + 256,
            "http_parser": ws.tools.parser,
            "pid_file": str(ws.dir / "edgeproxy.pid"),
            "temp_path": str(ws.dir),
            "access_log": {"path": "/dev/null", "format": "off"},
            "error_log": {"path": "stderr", "level": "warning"},
            "http": {"keepalive_timeout": IDLE_TIMEOUT, "client_header_timeout": IDLE_TIMEOUT},
            "servers": [
                {
                    "listen": [f"{HOST}:{port}"],
                    "locations": [{"path": "/", "return": {"status": 200, "body": "ok"}}],
                }
            ],
        }

    return start_edgeproxy_with(ws, config)


def _get(sock: socket.socket) -> None:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    buf = bytearray()
    need = -1
    while need < 0 or len(buf) < need:
        data = sock.recv(65536)
        if not data:
            raise StartupError("warm-up: connection closed before the response ended")
        buf += data
        need = response_length(buf) if need < 0 else need
    if not buf.startswith(b"HTTP/1.1 200 ") or not buf.endswith(b"ok"):
        raise StartupError(f"warm-up: unexpected answer {bytes(buf[:200])!r}")


def _warm_up_and_find_worker(ep: Endpoint) -> int:
    """A few keep-alive connections and requests; returns the pid that serves them."""
    assert ep.child is not None
    socks = [socket.create_connection((ep.host, ep.port), timeout=10) for _ in range(WARMUP_CONNS)]
    try:
        for _ in range(WARMUP_REQUESTS):
            for s in socks:
                _get(s)
        # The process holding an accepted connection is the one whose memory counts
        # (nginx's worker, not its master; edgeproxy's worker if it has any).
        client_port = socks[0].getsockname()[1]
        pid = procfs.holder_of_connection(
            procfs.descendants(ep.child.proc.pid), ep.port, client_port
        )
    finally:
        for s in socks:
            s.close()
    if pid is None:
        raise StartupError(f"{ep.name}: cannot tell which process holds its connections")
    return pid


def _read_ready(client_log: str) -> tuple[int, int] | None:
    for line in client_log.splitlines():
        if line.startswith("ready "):
            ok, failed = line.split()[1:3]
            return int(ok), int(failed)
    return None


def _measure_server(ws: Workspace, ep: Endpoint, n: int) -> dict[str, Any]:
    pid = _warm_up_and_find_worker(ep)
    # Let the warm-up connections' sockets close on the server side.
    wait_until(
        f"{ep.name}: warm-up connections closed", lambda: procfs.established_to(ep.port) == 0, 10
    )
    time.sleep(0.3)
    rss_before = procfs.rss_kib(pid)
    sockets_before = procfs.socket_fds(pid)
    client_timeout = 60 + n / 200
    argv = [
        sys.executable,
        str(BENCH_DIR / "idle_client.py"),
        ep.host,
        str(ep.port),
        str(n),
        "--timeout",
        f"{client_timeout:.0f}",
    ]
    client_log = ws.dir / f"idle-client-{ep.name}.log"
    client_log.write_bytes(b"")  # no "ready" line left from an earlier round
    started = time.monotonic()
    client = ws.children.spawn("idle-client", argv, client_log)
    try:
        ready: tuple[int, int] | None = None

        def client_ready() -> bool:
            nonlocal ready
            if client.proc.poll() is not None:
                raise StartupError(
                    f"idle_client.py exited with {client.proc.returncode}:\n{client.log_tail()}"
                )
            ready = _read_ready(client_log.read_text(errors="replace"))
            return ready is not None

        wait_until(f"{n} idle connections to {ep.name}", client_ready, client_timeout + 15)
        assert ready is not None
        opened, failed = ready
        open_s = time.monotonic() - started
        # Every connection got its answer, so the server accepted it; wait until the
        # serving process holds all of them (a master/worker split could lag).
        try:
            wait_until(
                f"{ep.name} holding {opened} connections",
                lambda: procfs.socket_fds(pid) - sockets_before >= opened,
                30,
            )
        except StartupError as exc:
            log(f"  {exc}")
        time.sleep(SETTLE_S)
        rss_after = procfs.rss_kib(pid)
        established = procfs.established_to(ep.port)
        accepted = procfs.socket_fds(pid) - sockets_before
    finally:
        ws.children.stop(client)
    return {
        "pid": pid,
        "requested": n,
        "opened": opened,
        "failed": failed,
        "established": established,
        "accepted_sockets": accepted,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "kib_per_conn": (rss_after - rss_before) / opened if opened else float("nan"),
        "open_s": round(open_s, 2),
    }


def measure_idle(opts: RunOptions) -> dict[str, Any]:
    n = opts.idle_conns
    port_range = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    low, high = (int(x) for x in port_range)
    if n > high - low - 1000:
        raise StartupError(f"--idle-conns {n}: more than the local port range {low}-{high} fits")
    old_limit = procfs.raise_nofile(n + 1024)
    try:
        if procfs.nofile_soft_limit() < n + 256:
            raise StartupError(
                f"RLIMIT_NOFILE is {procfs.nofile_soft_limit()} and cannot be raised to "
                f"{n + 1024}: lower --idle-conns or raise the hard limit (ulimit -Hn)"
            )
        return _measure_rounds(opts, n)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old_limit)


def _measure_rounds(opts: RunOptions, n: int) -> dict[str, Any]:
    names = (["nginx"] if opts.tools.nginx else []) + ["edgeproxy"]
    per_round: list[dict[str, Any]] = []
    with scenario_tmp("idle_conns", opts.keep_tmp) as tmp:
        for r in range(1, opts.rounds + 1):
            entry: dict[str, Any] = {"round": r}
            # Fresh processes each round: memory a process once took is not given back.
            for name in names:
                with Children() as children:
                    ws = Workspace(tmp, children, opts.tools)
                    ep = _nginx_idle(ws, n) if name == "nginx" else _edgeproxy_idle(ws, n)
                    res = _measure_server(ws, ep, n)
                entry[name] = res
                log(
                    f"  idle_conns round {r}/{opts.rounds} {name:9} "
                    f"{res['kib_per_conn']:6.2f} KiB/conn  (RSS {res['rss_before_kib']:,} -> "
                    f"{res['rss_after_kib']:,} KiB, {res['opened']:,} opened, "
                    f"{res['accepted_sockets']:,} held, {res['open_s']:.1f}s to open)"
                )
            per_round.append(entry)
    return _summarize(per_round, names, n)


def _summarize(per_round: list[dict[str, Any]], names: list[str], n: int) -> dict[str, Any]:
    median = {
        name: {
            key: statistics.median(r[name][key] for r in per_round)
            for key in ("kib_per_conn", "rss_before_kib", "rss_after_kib")
        }
        for name in names
    }
    edge = median["edgeproxy"]["kib_per_conn"]
    ref = median["nginx"]["kib_per_conn"] if "nginx" in median else None
    ratio = edge / ref if ref and ref > 0 else None
    short = [
        r["edgeproxy"]
        for r in per_round
        if r["edgeproxy"]["opened"] < n or r["edgeproxy"]["accepted_sockets"] < n
    ]
    if short:
        held = min(min(s["opened"], s["accepted_sockets"]) for s in short)
        met, met_text = False, f"no (held {held:,} of {n:,})"
    elif edge <= TARGET_KIB:
        met, met_text = True, "yes"
    else:
        met, met_text = False, "no"
    target = f"<={TARGET_KIB:g} KiB/conn"
    notes = [
        f"idle_conns: RSS of the serving process before -> after {n:,} idle connections: "
        + ", ".join(
            f"{name} {median[name]['rss_before_kib'] / 1024:.1f} -> "
            f"{median[name]['rss_after_kib'] / 1024:.1f} MiB"
            for name in names
        )
        + " (medians); nginx allocates its connection table (worker_connections) at start, "
        "before the first reading."
    ]
    return {
        "connections": n,
        "rounds": per_round,
        "median": median,
        "ratio": ratio,
        "met": met,
        "met_text": met_text,
        "target": target,
        "notes": notes,
        "row": {
            "unit": f"KiB/conn, N={n:,}",
            "edgeproxy": f"{edge:.2f}",
            "nginx": f"{ref:.2f}" if ref is not None else "n/a (no nginx)",
            "ratio": f"{ratio:.1f}x" if ratio is not None else "-",
        },
    }
