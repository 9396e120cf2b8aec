"""Side-by-side benchmark of edgeproxy against nginx, as /work/shared/BENCHMARKS.md describes.

    python benchmarks/run.py [--rounds 3] [--duration 10] [--parser auto|httptools|h11]
                             [--scenarios proxy_small,idle_conns,slowloris,...]
                             [--idle-conns 10000]

For most scenarios: start a backend, nginx as the reference proxy and edgeproxy in front
of it, warm both up, then run wrk against them in turn for N rounds and compare medians.
idle_conns (idle.py) and the slow-client attacks (slow.py) measure in their own way.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from harness import Children, StartupError, http_request, log, scenario_tmp
from machine import machine_info
from procfs import cpu_seconds, descendants
from report import fmt_ms, render_table, table_row
from scenarios import PLANNED, SCENARIOS, Scenario
from servers import (
    BENCH_DIR,
    REPO_ROOT,
    Endpoint,
    RunOptions,
    Tools,
    Workspace,
    start_edgeproxy,
    start_nginx_proxy,
)
from slow import CLIENTS as ATTACK_CLIENTS
from slow import SLOWHTTPTEST_HINT, slowhttptest_missing
from wrkrun import CONNECTIONS, THREADS, WrkError, WrkResult, run_wrk

WARMUP_S = 1
INSTALL_HINT = "apt-get install -y nginx wrk"
IDLE_CONNS = 10_000


# --- set-up ------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    # nginx lives in /usr/sbin, which a non-root PATH often lacks.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def resolve_codec(parser: str) -> str:
    """The codec edgeproxy will use; the target depends on it.

    edgeproxy is asked first (its own `auto` order decides); if that fails (say the module
    moved), `auto` is taken to mean httptools when it is installed, else h11.
    """
    if parser != "auto":
        return parser
    probe = "from edgeproxy.http.codec import resolve_codec as r; print(r('auto').name)"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=20
        )
        name = out.stdout.strip()
        if out.returncode == 0 and name in ("httptools", "h11"):
            return name
    except (OSError, subprocess.SubprocessError):
        pass
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP take the same path as Ctrl-C, so every `finally` stops our children.
    raise KeyboardInterrupt


# --- one scenario ------------------------------------------------------------------------


def check_answer(proxy: Endpoint, sc: Scenario) -> None:
    """One request by hand: a proxy that answers 502 fast must not look fast."""
    try:
        status, body = http_request(
            proxy.host, proxy.port, sc.check_method, "/", body=sc.check_body
        )
    except OSError as exc:
        raise StartupError(f"{proxy.name}: test request failed: {exc}") from exc
    if status != 200 or body != b"ok":
        raise StartupError(f"{proxy.name}: test request got {status} {body[:200]!r}")


def measure(
    sc: Scenario, tools: Tools, rounds: int, duration: int, keep_tmp: bool
) -> dict[str, Any]:
    assert tools.wrk is not None and sc.start_backend is not None
    wrk_bin = tools.wrk
    with scenario_tmp(sc.name, keep_tmp) as tmp, Children() as children:
        ws = Workspace(tmp, children, tools)
        backend = sc.start_backend(ws)
        proxies: list[Endpoint] = []
        if tools.nginx is not None:
            proxies.append(start_nginx_proxy(ws, backend))
        proxies.append(start_edgeproxy(ws, backend))
        lua: Path | None = None
        if sc.wrk_lua is not None:
            lua = tmp / f"{sc.name}.lua"
            lua.write_text(sc.wrk_lua)
        for proxy in proxies:
            check_answer(proxy, sc)

        def wrk(proxy: Endpoint, seconds: int) -> tuple[WrkResult, float | None]:
            """wrk's figures, and the proxy's CPU time per request (master + workers)."""
            wrk_log = tmp / f"wrk-{proxy.name}.log"
            pids = descendants(proxy.child.proc.pid) if proxy.child is not None else []
            cpu_before = cpu_seconds(pids)
            res = run_wrk(children, wrk_bin, proxy.url, seconds, wrk_log, lua_script=lua)
            cpu_used = cpu_seconds(pids) - cpu_before
            return res, (cpu_used / res.requests * 1e6 if pids and res.requests else None)

        for proxy in proxies:
            wrk(proxy, WARMUP_S)
        per_round: list[dict[str, Any]] = []
        for n in range(1, rounds + 1):
            entry: dict[str, Any] = {"round": n}
            # Alternate, so drift in the machine's load hits both proxies alike.
            for proxy in proxies:
                res, cpu_us = wrk(proxy, duration)
                entry[proxy.name] = {**res.to_json(), "cpu_us_per_request": cpu_us}
                log(
                    f"  {sc.name} round {n}/{rounds} {proxy.name:9} "
                    f"{res.requests_per_sec:10,.0f} req/s  p99 {fmt_ms(res.p99_ms)}"
                    + (f"  CPU {cpu_us:.0f} us/request" if cpu_us is not None else "")
                    + (f"  errors {res.errors}" if res.errors else "")
                )
            per_round.append(entry)
    summary = summarize(per_round, [p.name for p in proxies])
    cpu = {
        name: figures["cpu_us_per_request"]
        for name, figures in summary["median"].items()
        if "cpu_us_per_request" in figures
    }
    if cpu:
        # Where a req/s gap comes from: each proxy's own CPU per request, master + workers.
        summary["notes"] = [
            f"{sc.name}: CPU time per request (medians): "
            + ", ".join(f"{name} {us:.0f} us" for name, us in cpu.items())
        ]
    return {"rounds": per_round, **summary}


def summarize(per_round: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    medians: dict[str, dict[str, float]] = {}
    errors: dict[str, int] = {}
    for name in names:
        runs = [r[name] for r in per_round]
        medians[name] = {
            "requests_per_sec": statistics.median(r["requests_per_sec"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        }
        cpu = [r["cpu_us_per_request"] for r in runs if r.get("cpu_us_per_request") is not None]
        if cpu:
            medians[name]["cpu_us_per_request"] = statistics.median(cpu)
        errors[name] = sum(r["non_2xx"] + r["socket_errors"] for r in runs)
    out: dict[str, Any] = {"median": medians, "errors": errors}

    if "nginx" in medians:
        edge, ref = medians["edgeproxy"], medians["nginx"]
        out["ratio"] = edge["requests_per_sec"] / ref["requests_per_sec"]
        out["p99_ratio"] = edge["p99_ms"] / ref["p99_ms"] if ref["p99_ms"] else None
    return out


def verdict(sc: Scenario, codec: str, result: dict[str, Any]) -> tuple[bool | None, str]:
    """(met?, why). None when there is no nginx figure to compare with."""
    errs = result["errors"].get("edgeproxy", 0)
    if errs:
        return False, f"no ({errs} errors)"
    if "ratio" not in result:
        return None, "n/a (no nginx)"
    misses = []
    if result["ratio"] < sc.min_ratio(codec):
        misses.append("rps")
    p99_ratio = result.get("p99_ratio")
    if sc.max_p99_ratio is not None and p99_ratio is not None and p99_ratio > sc.max_p99_ratio:
        misses.append("p99")
    return (False, f"no ({', '.join(misses)})") if misses else (True, "yes")


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark edgeproxy against nginx, side by side (see benchmarks/README.md)."
    )
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds per proxy (3)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk round (10)")
    ap.add_argument(
        "--parser",
        choices=["auto", "httptools", "h11"],
        default="auto",
        help="edgeproxy's http_parser (auto)",
    )
    ap.add_argument(
        "--scenarios",
        nargs="+",
        default=list(SCENARIOS),
        help=f"comma- or space-separated (default: {','.join(SCENARIOS)})",
    )
    ap.add_argument(
        "--idle-conns",
        type=int,
        default=IDLE_CONNS,
        help=f"idle connections opened in idle_conns ({IDLE_CONNS:,})",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of each proxy, edgeproxy and nginx alike (1)",
    )
    ap.add_argument(
        "--compiled",
        action="store_true",
        help="run edgeproxy's mypyc-compiled build (made with `make compile`)",
    )
    ap.add_argument(
        "--no-build",
        action="store_true",
        help="with --compiled: run the compiled copy as it is, without rebuilding it",
    )
    ap.add_argument("--output", type=Path, help="JSON file (default: benchmarks/results/...)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.duration < 1:
        ap.error("--rounds and --duration must be at least 1")
    if args.idle_conns < 100:
        ap.error("--idle-conns must be at least 100")
    args.scenarios = [s for item in args.scenarios for s in item.split(",") if s]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.name:16} {sc.summary}")
        for name in PLANNED:
            print(f"{name:16} (not implemented yet)")
        return 0

    edgeproxy_root = REPO_ROOT
    if args.compiled:
        edgeproxy_root = REPO_ROOT / "build" / "compiled"
        if not args.no_build:
            log("building the compiled copy (make compile) ...")
            subprocess.run(["make", "-s", "compile"], cwd=REPO_ROOT, check=True)
        elif not (edgeproxy_root / "edgeproxy").is_dir():
            log(f"--no-build: there is no compiled copy in {edgeproxy_root} (make compile)")
            return 2
    tools = Tools(
        nginx=find_tool("nginx"),
        wrk=find_tool("wrk"),
        parser=args.parser,
        workers=args.workers,
        edgeproxy_root=edgeproxy_root,
    )
    missing = [n for n, path in (("nginx", tools.nginx), ("wrk", tools.wrk)) if path is None]
    if missing:
        log(f"missing: {', '.join(missing)}; install with: {INSTALL_HINT}")
    if tools.wrk is None:
        log("wrk is the load generator: only idle_conns can be measured without it.")
    if tools.nginx is None:
        log("without nginx: edgeproxy is measured alone, against a Python fallback backend.")
    if slowhttptest_missing() and any(
        s in args.scenarios for s in ("slowloris", "slow_body", "slow_read")
    ):
        log(f"missing: slowhttptest (the slow-client attacks); install: {SLOWHTTPTEST_HINT}")

    codec = resolve_codec(args.parser)
    opts = RunOptions(
        tools=tools,
        codec=codec,
        rounds=args.rounds,
        duration=args.duration,
        keep_tmp=args.keep_tmp,
        idle_conns=args.idle_conns,
    )
    results: dict[str, dict[str, Any]] = {}
    scenarios: dict[str, Scenario] = {}
    for name in args.scenarios:
        sc = SCENARIOS.get(name)
        if sc is None:
            known = ", ".join(SCENARIOS)
            status = "not implemented yet" if name in PLANNED else f"unknown (known: {known})"
            log(f"{name}: {status}")
            results[name] = {"status": status}
            continue
        reason = sc.unavailable()
        if reason is None and sc.needs_wrk and tools.wrk is None:
            reason = f"wrk is not installed ({INSTALL_HINT})"
        if reason:
            log(f"{name}: skipped: {reason}")
            results[name] = {"status": f"skipped: {reason}"}
            continue
        scenarios[name] = sc
    if not scenarios:
        log("no scenario to run; --list shows them")
        return 2

    # SIGINT too: a shell starting us in the background ignores it, and we want clean-up.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    started = dt.datetime.now().astimezone()
    machine = machine_info(tools)
    log(
        f"edgeproxy (http_parser {args.parser} -> {codec}) vs "
        f"{'nginx' if tools.nginx else 'no reference'}; wrk -t{THREADS} -c{CONNECTIONS} "
        f"(-c{ATTACK_CLIENTS} beside slow-client attacks), {args.rounds} round(s) of "
        f"{args.duration}s"
    )
    try:
        for name, sc in scenarios.items():
            log(f"{name}: {sc.summary}")
            try:
                if sc.measure is not None:
                    result = sc.measure(opts)
                else:
                    result = measure(sc, tools, args.rounds, args.duration, args.keep_tmp)
                    met, text = verdict(sc, codec, result)
                    result.update(met=met, met_text=text, target=sc.target_text(codec))
            except (StartupError, WrkError, OSError) as exc:
                log(f"{name}: failed: {exc}")
                results[name] = {"status": f"failed: {str(exc).splitlines()[0]}"}
                continue
            result["status"] = "ok"
            results[name] = result
    except KeyboardInterrupt:
        log("interrupted; every process started here has been stopped")
        return 130

    report_ref = "nginx" if tools.nginx else "no reference (nginx missing)"
    rows = [table_row(n, SCENARIOS.get(n), codec, r) for n, r in results.items()]
    print(
        f"\nedgeproxy (http_parser {args.parser} -> {codec}, {args.workers} worker(s)) vs "
        f"{report_ref}, wrk -t{THREADS} "
        f"-c{CONNECTIONS} (-c{ATTACK_CLIENTS} beside slow-client attacks), medians of "
        f"{args.rounds} round(s) x {args.duration}s\n"
    )
    print(render_table(rows))
    notes = [note for r in results.values() for note in r.get("notes", [])]
    if notes:
        print()
        print("\n".join(f"- {note}" for note in notes))

    ran = [n for n, r in results.items() if r.get("status") == "ok"]
    label = ran[0] if len(args.scenarios) == 1 and ran else "run"
    out = args.output or BENCH_DIR / "results" / f"{started:%Y-%m-%d}-{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine,
        "parser": args.parser,
        "codec": codec,
        "workers": args.workers,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "wrk": {"threads": THREADS, "connections": CONNECTIONS, "warmup_s": WARMUP_S},
        "idle_conns": args.idle_conns,
        "reference": "nginx" if tools.nginx else None,
        "scenarios": results,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsaved {out}")

    if any(r["status"].startswith("failed") for r in results.values()):
        return 1
    if args.check and any(r.get("met") is False for r in results.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
