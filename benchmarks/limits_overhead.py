"""limits_overhead: proxy_small through edgeproxy with a rate zone and a connection zone
configured on its one location but never hit, against the same edgeproxy without them.

Both run in the same scenario, in front of the same backend, under the same wrk, rounds
alternating so that drift in the machine's load hits both alike. wrk's connections all
come from 127.0.0.1, so every request draws on the same key of each zone: the worst case
for the zones' lock, shared by all the workers. The "nginx" column holds the run without
zones (the reference here is edgeproxy itself).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Children, StartupError, http_request, log, scenario_tmp
from procfs import cpu_seconds, descendants
from servers import (
    Endpoint,
    RunOptions,
    Workspace,
    edgeproxy_config,
    start_edgeproxy_with,
    start_nginx_backend,
)
from wrkrun import run_wrk

TARGET = 0.9  # BENCHMARKS.md: at least 0.9x
WARMUP_S = 1
# Far above anything one machine sends: the zones are consulted, never limit.
ZONES = {
    "rate": {"key": "client_ip", "rate": "1000000r/s", "burst": 1000, "nodelay": True},
    "conns": {"key": "client_ip", "connections": 100000},
}


def _with_zones(config: dict[str, Any]) -> dict[str, Any]:
    config["limits"] = ZONES
    server = config["servers"][0]
    server["limit_conn"] = "conns"
    server["locations"][0]["limit_req"] = "rate"
    return config


# A scenario's zones: given edgeproxy's config without zones and the scenario's temp dir,
# the config with them.
AddZones = Callable[[dict[str, Any], Path], dict[str, Any]]


def _start(ws: Workspace, backend: Endpoint, add_zones: AddZones | None) -> Endpoint:
    zones = add_zones is not None

    def make(port: int) -> dict[str, Any]:
        config = edgeproxy_config(ws, backend, port)
        return add_zones(config, ws.dir) if add_zones is not None else config

    endpoint = start_edgeproxy_with(ws, make)
    name = "zones" if zones else "no_zones"
    status, body = http_request(endpoint.host, endpoint.port, "GET", "/")
    if status != 200 or body != b"ok":  # a proxy that refuses fast must not look fast
        raise StartupError(f"edgeproxy ({name}): test request got {status} {body[:200]!r}")
    return Endpoint(name, endpoint.host, endpoint.port, endpoint.child)


def measure_limits_overhead(opts: RunOptions) -> dict[str, Any]:
    return measure_overhead(opts, "limits_overhead", lambda config, tmp: _with_zones(config))


def measure_overhead(
    opts: RunOptions,
    scenario: str,
    add_zones: AddZones,
    target: float = TARGET,
    start_services: Callable[[Workspace], None] | None = None,
) -> dict[str, Any]:
    """`scenario`: edgeproxy with the zones of `add_zones` against edgeproxy without them;
    `start_services` starts what the zones need (a Redis) before the proxies."""
    assert opts.tools.wrk is not None
    wrk_bin = opts.tools.wrk
    per_round: list[dict[str, Any]] = []
    with scenario_tmp(scenario, opts.keep_tmp) as tmp, Children() as children:
        backend = start_nginx_backend(Workspace(tmp, children, opts.tools))
        if start_services is not None:
            start_services(Workspace(tmp, children, opts.tools))
        proxies = []
        for zones in (False, True):
            sub = tmp / ("zones" if zones else "no_zones")
            sub.mkdir()
            ws = Workspace(sub, children, opts.tools)
            proxies.append(_start(ws, backend, add_zones if zones else None))

        def wrk(proxy: Endpoint, seconds: int) -> dict[str, Any]:
            pids = descendants(proxy.child.proc.pid) if proxy.child is not None else []
            before = cpu_seconds(pids)
            res = run_wrk(children, wrk_bin, proxy.url, seconds, Path(tmp, f"wrk-{proxy.name}.log"))
            used = cpu_seconds(pids) - before
            cpu = used / res.requests * 1e6 if pids and res.requests else None
            return {**res.to_json(), "cpu_us_per_request": cpu}

        for proxy in proxies:
            wrk(proxy, WARMUP_S)
        for n in range(1, opts.rounds + 1):
            entry: dict[str, Any] = {"round": n}
            for proxy in proxies:
                entry[proxy.name] = figures = wrk(proxy, opts.duration)
                log(
                    f"  {scenario} round {n}/{opts.rounds} {proxy.name:9} "
                    f"{figures['requests_per_sec']:10,.0f} req/s  p99 {figures['p99_ms']:.2f}ms"
                )
            per_round.append(entry)
    return _summarize(per_round, scenario, target)


def _summarize(per_round: list[dict[str, Any]], scenario: str, target: float) -> dict[str, Any]:
    names = ("zones", "no_zones")
    median = {
        name: {
            key: statistics.median(r[name][key] for r in per_round)
            for key in ("requests_per_sec", "p99_ms")
        }
        for name in names
    }
    errors = {name: sum(r[name]["non_2xx"] + r[name]["socket_errors"] for r in per_round)
              for name in names}  # fmt: skip
    for name in names:
        cpu = [r[name]["cpu_us_per_request"] for r in per_round if r[name]["cpu_us_per_request"]]
        if cpu:
            median[name]["cpu_us_per_request"] = statistics.median(cpu)
    zones, plain = median["zones"], median["no_zones"]
    ratio = zones["requests_per_sec"] / plain["requests_per_sec"]
    if errors["zones"] or errors["no_zones"]:
        met, met_text = False, f"no ({errors['zones']} + {errors['no_zones']} errors)"
    else:
        met, met_text = ratio >= target, "yes" if ratio >= target else "no"
    p99_ratio = zones["p99_ms"] / plain["p99_ms"] if plain["p99_ms"] else None
    return {
        "rounds": per_round,
        "median": median,
        "errors": errors,
        "ratio": ratio,
        "met": met,
        "met_text": met_text,
        "target": f">={target:g}x rps of edgeproxy without zones",
        "notes": [
            f"{scenario}: the nginx columns hold edgeproxy without zones (the reference); "
            f"with zones {zones['requests_per_sec']:,.0f} req/s, without "
            f"{plain['requests_per_sec']:,.0f} req/s (medians); CPU per request (master + "
            f"workers): with {zones.get('cpu_us_per_request', 0):.1f} us, without "
            f"{plain.get('cpu_us_per_request', 0):.1f} us"
        ],
        "row": {
            "unit": "req/s",
            "edgeproxy": f"{zones['requests_per_sec']:,.0f}",
            "nginx": f"{plain['requests_per_sec']:,.0f} (no zones)",
            "ratio": f"{ratio:.2f}x",
            "edgeproxy p99": f"{zones['p99_ms']:.2f}ms",
            "nginx p99": f"{plain['p99_ms']:.2f}ms",
            "p99 ratio": f"{p99_ratio:.2f}x" if p99_ratio is not None else "-",
        },
    }
