"""slowloris, slow_body, slow_read: normal clients' throughput while slow clients attack.

gunicorn (2 sync workers) sits behind nginx and behind edgeproxy. For each proxy, each
round: `wrk -c10` alone (the unattacked figure), then the same wrk while 300 slowhttptest
connections attack the same proxy (the attacked figure). What counts is edgeproxy's
attacked req/s against nginx's attacked req/s under the same attack (the ratio column):
the target is at least 0.85 x, with no error (non-2xx or socket error) for the normal
clients. Each proxy's attacked / unattacked share is reported beside it; it is the target
(>= 90 %) only when nginx is missing, since a proxy slow to begin with keeps a high share
of a low figure.

slowhttptest opens its connections once (at -r per second) and exits when the server has
closed them all: a proxy that times slow clients out (slowloris after client_header_timeout)
would see the attack fade halfway through the wrk run. Another slowhttptest is started for
the missing ones whenever fewer than 80 % are connected, so that ~300 attackers press for
the whole run, as a real attacker reconnecting would. How many were connected is sampled
twice a second and reported.

Both proxies run with edgeproxy's default client timeouts (nginx is set to the same:
client_header_timeout 10s, client_body_timeout 30s, send_timeout 30s, keepalive 75s).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import time
from collections.abc import Callable
from typing import Any

import procfs
import sockdiag
from attackers import ATTACKERS, ATTACKS, RATE, Attacker
from cpu_sched import IdleCpuGroup, idle_cpu_group, run_queue_wait_s
from harness import Children, StartupError, http_request, log, scenario_tmp
from servers import (
    LARGE_BODY,
    NGINX_EDGEPROXY_TIMEOUTS,
    Endpoint,
    RunOptions,
    Workspace,
    start_edgeproxy,
    start_gunicorn,
    start_nginx_proxy,
)
from wrkrun import WrkResult, run_wrk

CLIENTS = 10  # wrk -c10: the normal clients
MIN_RATIO = 0.85  # of nginx's attacked req/s under the same attack
MIN_SHARE = 0.9  # of its own unattacked req/s, the target when there is no nginx
RAMP_TIMEOUT_S = ATTACKERS / RATE + 10
DRAIN_TIMEOUT_S = 15
SETTLE_TIMEOUT_S = 60
WARMUP_S = 1
SLOWHTTPTEST_HINT = "apt-get install -y slowhttptest"


def slowhttptest_missing() -> str | None:
    if shutil.which("slowhttptest") is None:
        return f"slowhttptest is not installed ({SLOWHTTPTEST_HINT})"
    return None


def _quiet(ep: Endpoint, for_s: float, timeout: float, tick: Callable[[], None]) -> float:
    """Wait until no connection to `ep` has been open for `for_s`; returns the time waited."""
    started = time.monotonic()
    quiet_since = started
    while time.monotonic() - started < timeout:
        tick()
        if sockdiag.established_to(ep.port):
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= for_s:
            break
        time.sleep(0.1)
    return time.monotonic() - started


def _measured_wrk(
    ws: Workspace,
    target: Endpoint,
    duration: int,
    wrk_bin: str,
    log_name: str,
    attacker: Attacker | None = None,
) -> tuple[WrkResult, dict[str, Any]]:
    """wrk -c10 against `target`, with what the target's processes spent per request: CPU
    time, and time waiting for a core (what other processes, the attackers' included,
    cost them); and, under attack, the share of a core the attackers took meanwhile."""
    pids = procfs.descendants(target.child.proc.pid) if target.child is not None else []
    cpu = procfs.cpu_seconds(pids)
    waited = run_queue_wait_s(pids)
    attacker_cpu = attacker.cpu_seconds() if attacker is not None else 0.0
    harness_cpu = _own_cpu_s()
    res = run_wrk(
        ws.children,
        wrk_bin,
        f"http://{target.host}:{target.port}/",
        duration,
        ws.dir / log_name,
        connections=CLIENTS,
        on_tick=(lambda: attacker.tick(CLIENTS)) if attacker is not None else None,
    )
    harness_cpu = _own_cpu_s() - harness_cpu
    per_request = 1e6 / res.requests if pids and res.requests else 0.0
    stats: dict[str, Any] = {
        # This process, which watches the attack meanwhile: its CPU is taken from the
        # machine too (counting through /proc/net/tcp once took most of a core).
        "harness_cpu_share": round(harness_cpu / res.seconds, 3) if res.seconds else 0.0,
        "cpu_us_per_request": round((procfs.cpu_seconds(pids) - cpu) * per_request, 1),
        "run_queue_wait_us_per_request": round((run_queue_wait_s(pids) - waited) * per_request, 1),
    }
    if attacker is not None and res.seconds:
        used = attacker.cpu_seconds() - attacker_cpu
        stats["slowhttptest_cpu_share"] = round(used / res.seconds, 3)
    return res, stats


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _under_attack(
    ws: Workspace,
    name: str,
    target: Endpoint,
    duration: int,
    wrk_bin: str,
    backend: Endpoint | None,
    cpu_group: IdleCpuGroup | None,
) -> tuple[WrkResult, dict[str, Any]]:
    """wrk against `target` while the attack holds ~300 connections to it.

    wrk starts once the attackers are connected and, behind a proxy, once the backend
    has gone quiet: the slow readers' 4 MiB answers take gunicorn and the proxy a few
    seconds to fetch, a one-off burst; what is measured is the state that follows, with
    the attackers' connections held open.
    """
    length_s = duration + int(RAMP_TIMEOUT_S) + 60
    attacker = Attacker(ws, name, ATTACKS[name], target, length_s, cpu_group)
    attacker.start()
    try:
        ramp_started = time.monotonic()
        deadline = ramp_started + RAMP_TIMEOUT_S
        while attacker.connected() < ATTACKERS * 0.9 and time.monotonic() < deadline:
            attacker.tick()
            time.sleep(0.05)
        at_start = attacker.connected()
        ramp_s = time.monotonic() - ramp_started
        if at_start < ATTACKERS * 0.9:
            log(f"  only {at_start} attackers connected to {target.name} after {ramp_s:.0f}s")
        settle_s = 0.0
        if backend is not None:
            settle_s = _quiet(backend, 1.0, SETTLE_TIMEOUT_S, attacker.tick)
            if settle_s >= SETTLE_TIMEOUT_S:
                log(f"  {backend.name} still busy {settle_s:.0f}s after the attack started")
            at_start = attacker.connected()
        attacker.samples.clear()
        log_name = f"wrk-{name}-{target.name}-attacked.log"
        res, cpu = _measured_wrk(ws, target, duration, wrk_bin, log_name, attacker)
    finally:
        attacker.stop()
    # The attackers' sockets are closed by now; let the server see it before the next run.
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while attacker.connected() > 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    samples = attacker.samples or [0]
    stats = {
        "attackers_at_start": at_start,
        "ramp_s": round(ramp_s, 1),
        "settle_s": round(settle_s, 1),
        "attackers_min": min(samples),
        "attackers_median": statistics.median(samples),
        "attackers_max": max(samples),
        "slowhttptest_launches": attacker.launches,
        **cpu,
    }
    return res, stats


def _check(ep: Endpoint) -> None:
    """The normal clients' page and the slow readers' page both come through whole."""
    for path, want in (("/", 2), ("/large", LARGE_BODY)):
        try:
            status, body = http_request(ep.host, ep.port, path=path)
        except OSError as exc:
            raise StartupError(f"{ep.name}: test request for {path} failed: {exc}") from exc
        if status != 200 or len(body) != want:
            raise StartupError(f"{ep.name}: {path} got {status} with {len(body)} bytes")


def _fmt(res: WrkResult) -> str:
    errs = f", {res.errors} errors" if res.errors else ""
    return f"{res.requests_per_sec:,.0f} req/s (p99 {res.p99_ms:.1f}ms{errs})"


def _attackers_cpu_group(stack: contextlib.ExitStack, name: str) -> IdleCpuGroup | None:
    """The idle CPU group slowhttptest runs in (cpu_sched.py), or None (then it runs at
    nice 19): EDGEPROXY_BENCH_ATTACKER_CPU=nice asks for the latter, to compare."""
    if os.environ.get("EDGEPROXY_BENCH_ATTACKER_CPU", "idle") == "nice":
        log("  slowhttptest runs at nice 19 (EDGEPROXY_BENCH_ATTACKER_CPU=nice)")
        return None
    group, why = stack.enter_context(idle_cpu_group(name))
    if group is None:
        log(f"  slowhttptest runs at nice 19, not in an idle CPU group: {why}")
    return group


def measure_attack(name: str, opts: RunOptions) -> dict[str, Any]:
    wrk_bin = opts.tools.wrk
    assert wrk_bin is not None
    per_round: list[dict[str, Any]] = []
    alone: dict[str, Any] | None = None
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(scenario_tmp(name, opts.keep_tmp))
        cpu_group = _attackers_cpu_group(stack, name)
        children = stack.enter_context(Children())  # stopped before the CPU group goes
        ws = Workspace(tmp, children, opts.tools)
        backend = start_gunicorn(ws)
        proxies: list[Endpoint] = []
        if opts.tools.nginx is not None:
            proxies.append(start_nginx_proxy(ws, backend, NGINX_EDGEPROXY_TIMEOUTS))
        proxies.append(start_edgeproxy(ws, backend))
        for ep in [*proxies, backend]:
            _check(ep)

        for ep in [*proxies, backend]:
            path = tmp / f"wrk-{name}-{ep.name}-warmup.log"
            run_wrk(children, wrk_bin, ep.url, WARMUP_S, path, connections=CLIENTS)
        for r in range(1, opts.rounds + 1):
            entry: dict[str, Any] = {"round": r}
            for ep in proxies:
                clean_log = f"wrk-{name}-{ep.name}-clean.log"
                clean, clean_cpu = _measured_wrk(ws, ep, opts.duration, wrk_bin, clean_log)
                attacked, stats = _under_attack(
                    ws, name, ep, opts.duration, wrk_bin, backend, cpu_group
                )
                share = attacked.requests_per_sec / clean.requests_per_sec
                entry[ep.name] = {
                    "unattacked": {**clean.to_json(), **clean_cpu},
                    "attacked": attacked.to_json(),
                    "share": share,
                    "attack": stats,
                }
                log(
                    f"  {name} round {r}/{opts.rounds} {ep.name:9} {_fmt(clean)} -> "
                    f"{_fmt(attacked)} under attack = {share:.0%}; attackers "
                    f"{stats['attackers_min']}-{stats['attackers_max']} "
                    f"(median {stats['attackers_median']:.0f}), wrk started "
                    f"{stats['ramp_s'] + stats['settle_s']:.0f}s into the attack; "
                    f"CPU {clean_cpu['cpu_us_per_request']:.0f} -> "
                    f"{stats['cpu_us_per_request']:.0f} us/request, waiting for a core "
                    f"{clean_cpu['run_queue_wait_us_per_request']:.0f} -> "
                    f"{stats['run_queue_wait_us_per_request']:.0f} us/request; slowhttptest "
                    f"{stats.get('slowhttptest_cpu_share', 0):.0%} of a core, this harness "
                    f"{clean_cpu['harness_cpu_share']:.0%} -> {stats['harness_cpu_share']:.0%}"
                )
            per_round.append(entry)
        # gunicorn alone, last: the attack may leave its workers stuck or killed.
        clean, clean_cpu = _measured_wrk(ws, backend, opts.duration, wrk_bin, "wrk-alone.log")
        attacked, stats = _under_attack(ws, name, backend, opts.duration, wrk_bin, None, cpu_group)
        alone = {
            "unattacked": {**clean.to_json(), **clean_cpu},
            "attacked": attacked.to_json(),
            "attack": stats,
        }
        log(f"  {name} gunicorn alone  {_fmt(clean)} -> {_fmt(attacked)} under attack")
    return _summarize(name, per_round, [p.name for p in proxies], alone)


def _summarize(
    name: str,
    per_round: list[dict[str, Any]],
    names: list[str],
    alone: dict[str, Any] | None,
) -> dict[str, Any]:
    median: dict[str, dict[str, float]] = {}
    errors: dict[str, int] = {}
    for proxy in names:
        runs = [r[proxy] for r in per_round]
        median[proxy] = {
            "share": statistics.median(x["share"] for x in runs),
            "unattacked_rps": statistics.median(x["unattacked"]["requests_per_sec"] for x in runs),
            "attacked_rps": statistics.median(x["attacked"]["requests_per_sec"] for x in runs),
            "unattacked_p99_ms": statistics.median(x["unattacked"]["p99_ms"] for x in runs),
            "attacked_p99_ms": statistics.median(x["attacked"]["p99_ms"] for x in runs),
            "attackers_median": statistics.median(x["attack"]["attackers_median"] for x in runs),
            "unattacked_cpu_us": statistics.median(
                x["unattacked"]["cpu_us_per_request"] for x in runs
            ),
            "attacked_cpu_us": statistics.median(x["attack"]["cpu_us_per_request"] for x in runs),
            "unattacked_wait_us": statistics.median(
                x["unattacked"]["run_queue_wait_us_per_request"] for x in runs
            ),
            "attacked_wait_us": statistics.median(
                x["attack"]["run_queue_wait_us_per_request"] for x in runs
            ),
        }
        errors[proxy] = sum(
            x[kind]["non_2xx"] + x[kind]["socket_errors"]
            for x in runs
            for kind in ("unattacked", "attacked")
        )
    edge = median["edgeproxy"]
    ref = median.get("nginx")
    # Attacked req/s against nginx's attacked req/s: what a user under attack gets.
    ratio = edge["attacked_rps"] / ref["attacked_rps"] if ref and ref["attacked_rps"] else None
    share_ratio = edge["share"] / ref["share"] if ref and ref["share"] else None
    p99_ratio = (
        edge["attacked_p99_ms"] / ref["attacked_p99_ms"] if ref and ref["attacked_p99_ms"] else None
    )
    misses = []
    if ratio is not None:
        if ratio < MIN_RATIO:
            misses.append("rps")
        target = f">={MIN_RATIO:.2g}x nginx attacked, 0 errors"
    else:
        if edge["share"] < MIN_SHARE:
            misses.append("rps")
        target = f">={MIN_SHARE:.0%} of own unattacked, 0 errors"
    if errors["edgeproxy"]:
        misses.append(f"{errors['edgeproxy']} errors")
    met_text = f"no ({', '.join(misses)})" if misses else "yes"

    def attacked(m: dict[str, float]) -> str:
        return f"{m['attacked_rps']:,.0f} ({m['share']:.0%})"

    def figures(proxy: str) -> str:
        m = median[proxy]
        return (
            f"{proxy} {m['unattacked_rps']:,.0f} -> {m['attacked_rps']:,.0f} "
            f"({errors[proxy]} errors, ~{m['attackers_median']:.0f} attackers connected)"
        )

    def cpu(proxy: str) -> str:
        m = median[proxy]
        return (
            f"{proxy} CPU {m['unattacked_cpu_us']:.0f} -> {m['attacked_cpu_us']:.0f}, "
            f"waiting {m['unattacked_wait_us']:.0f} -> {m['attacked_wait_us']:.0f}"
        )

    notes = [
        f"{name}: wrk -c{CLIENTS} req/s unattacked -> under {ATTACKERS} attackers (medians): "
        + "; ".join(figures(p) for p in names),
        f"{name}: us per request unattacked -> attacked (medians), of the proxy's processes: "
        + "; ".join(cpu(p) for p in names),
    ]
    if alone is not None:
        a, c = alone["attacked"], alone["unattacked"]
        silent = " (no answer at all)" if a["requests"] == 0 else ""
        notes.append(
            f"{name}: gunicorn alone (1 round): {c['requests_per_sec']:,.0f} -> "
            f"{a['requests_per_sec']:,.0f} req/s under attack{silent}, "
            f"{a['non_2xx'] + a['socket_errors']} errors"
        )
    return {
        "rounds": per_round,
        "median": median,
        "errors": errors,
        "ratio": ratio,
        "share_ratio": share_ratio,
        "p99_ratio": p99_ratio,
        "gunicorn_alone": alone,
        "attack": {
            "attackers": ATTACKERS,
            "rate_per_s": RATE,
            "slowhttptest_flags": list(ATTACKS[name].flags),
            "path": ATTACKS[name].path,
            "normal_clients": CLIENTS,
        },
        "met": not misses,
        "met_text": met_text,
        "target": target,
        "notes": notes,
        "row": {
            "unit": "attacked req/s (% of own unattacked)",
            "edgeproxy": attacked(edge),
            "nginx": attacked(ref) if ref else "n/a (no nginx)",
            "ratio": f"{ratio:.2f}x" if ratio is not None else "-",
            "edgeproxy p99": f"{edge['attacked_p99_ms']:.2f}ms",
            "nginx p99": f"{ref['attacked_p99_ms']:.2f}ms" if ref else "-",
            "p99 ratio": f"{p99_ratio:.2f}x" if p99_ratio is not None else "-",
        },
    }
