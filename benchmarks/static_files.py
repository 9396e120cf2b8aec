"""static_small / static_large: one file served by edgeproxy and by nginx (sendfile on),
side by side under wrk. Each response is the whole file, so bytes/s is req/s x size."""

from __future__ import annotations

import statistics
from typing import Any

from harness import Children, StartupError, http_request, log, ratio_verdict, scenario_tmp
from servers import Endpoint, RunOptions, Workspace, start_edgeproxy_static, start_nginx_static
from wrkrun import run_wrk

WARMUP_S = 1
MIN_RATIO = 0.5  # BENCHMARKS.md / issue 10: at least 0.5x nginx (the aim is 0.7x)


def fmt_ms(ms: float) -> str:  # as report.fmt_ms (report imports the scenarios: no cycle)
    return f"{ms / 1000:.2f}s" if ms >= 1000 else f"{ms:.2f}ms"


def measure_static(name: str, size: int, opts: RunOptions) -> dict[str, Any]:
    assert opts.tools.wrk is not None
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    with scenario_tmp(name, opts.keep_tmp) as tmp, Children() as children:
        root = tmp / "www"
        root.mkdir()
        (root / "file.bin").write_bytes(data)
        ws = Workspace(tmp, children, opts.tools)
        servers: list[Endpoint] = []
        if opts.tools.nginx is not None:
            servers.append(start_nginx_static(ws, root))
        servers.append(start_edgeproxy_static(ws, root))
        for server in servers:
            status, body = http_request(server.host, server.port, "GET", "/file.bin")
            if status != 200 or body != data:
                raise StartupError(f"{server.name}: test request got {status}, {len(body)} bytes")
        url = "/file.bin"
        for server in servers:
            run_wrk(children, opts.tools.wrk, server.url + url[1:], WARMUP_S, tmp / "warmup.log")
        per_round: list[dict[str, Any]] = []
        for n in range(1, opts.rounds + 1):
            entry: dict[str, Any] = {"round": n}
            for server in servers:  # alternate, so the machine's drift hits both alike
                res = run_wrk(
                    children,
                    opts.tools.wrk,
                    server.url + url[1:],
                    opts.duration,
                    tmp / f"wrk-{server.name}.log",
                )
                entry[server.name] = {**res.to_json(), "bytes_per_sec": res.requests_per_sec * size}
                log(
                    f"  {name} round {n}/{opts.rounds} {server.name:9} "
                    f"{res.requests_per_sec:10,.0f} req/s  "
                    f"{res.requests_per_sec * size / 2**20:10,.1f} MiB/s  p99 {fmt_ms(res.p99_ms)}"
                    + (f"  errors {res.errors}" if res.errors else "")
                )
            per_round.append(entry)
    return _summarize(name, size, per_round, [s.name for s in servers])


def _summarize(
    name: str, size: int, per_round: list[dict[str, Any]], names: list[str]
) -> dict[str, Any]:
    median = {
        n: {
            key: statistics.median(r[n][key] for r in per_round)
            for key in ("requests_per_sec", "bytes_per_sec", "p99_ms")
        }
        for n in names
    }
    errors = sum(r["edgeproxy"]["non_2xx"] + r["edgeproxy"]["socket_errors"] for r in per_round)
    edge = median["edgeproxy"]
    ref = median.get("nginx")
    ratio = edge["requests_per_sec"] / ref["requests_per_sec"] if ref else None
    large = size >= 1024 * 1024
    unit = "MiB/s" if large else "req/s"

    def cell(figures: dict[str, float]) -> str:
        if large:
            return f"{figures['bytes_per_sec'] / 2**20:,.1f}"
        return f"{figures['requests_per_sec']:,.0f}"

    met, met_text = ratio_verdict(errors, ratio, MIN_RATIO)
    p99_ratio = edge["p99_ms"] / ref["p99_ms"] if ref and ref["p99_ms"] else None
    return {
        "file_size": size,
        "rounds": per_round,
        "median": median,
        "ratio": ratio,
        "met": met,
        "met_text": met_text,
        "target": f">={MIN_RATIO:g}x {unit}",
        "notes": [f"{name}: one {size:,}-byte file, nginx with sendfile on; ratio of medians"],
        "row": {
            "unit": unit,
            "edgeproxy": cell(edge),
            "nginx": cell(ref) if ref else "n/a (no nginx)",
            "ratio": f"{ratio:.2f}x" if ratio is not None else "-",
            "edgeproxy p99": fmt_ms(edge["p99_ms"]),
            "nginx p99": fmt_ms(ref["p99_ms"]) if ref else "-",
            "p99 ratio": f"{p99_ratio:.2f}x" if p99_ratio is not None else "-",
        },
    }
