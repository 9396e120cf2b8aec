"""tls_small: proxy_small over HTTPS with keep-alive, edgeproxy and nginx terminating TLS
with the same certificate and key, side by side under wrk.

Both use Mozilla's "intermediate" policy (TLS 1.2 and 1.3, the same TLS 1.2 suites); wrk
negotiates TLS 1.3 with both. The connections are kept alive, so what is measured is the
cost of encrypting and decrypting small requests and responses, not handshakes. The
certificate (ECDSA P-256) is made by trustme for the run; no key is kept.
"""

from __future__ import annotations

import importlib.util
import socket
import ssl
import statistics
from typing import Any

from harness import Children, StartupError, log, ratio_verdict, scenario_tmp
from procfs import cpu_seconds, descendants
from servers import (
    HOST,
    NGINX_FORWARDED_HEADERS,
    Endpoint,
    RunOptions,
    Workspace,
    edgeproxy_config,
    start_edgeproxy_with,
    start_nginx_backend,
    start_nginx_with,
)
from wrkrun import run_wrk

WARMUP_S = 1
MIN_RATIO = 0.5  # issue 14: at least 0.5x nginx
NAME = "bench.example"
# Mozilla "intermediate" TLS 1.2 suites without DHE: edgeproxy.server.tls's list.
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


def trustme_missing() -> str | None:
    if importlib.util.find_spec("trustme") is None:
        return "trustme is not importable (pip install trustme): it makes the certificate"
    return None


def fmt_ms(ms: float) -> str:  # as report.fmt_ms (report imports the scenarios: no cycle)
    return f"{ms / 1000:.2f}s" if ms >= 1000 else f"{ms:.2f}ms"


def _https_get(port: int) -> tuple[int, bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((HOST, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=NAME) as sock,
    ):
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {NAME}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _start_nginx_tls(ws: Workspace, backend: Endpoint, cert: str, key: str) -> Endpoint:
    body = f"""\
    upstream backend {{
        server {backend.address};
        keepalive 32;
    }}
    server {{
        listen {HOST}:PORT ssl;
        server_name {NAME};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {CIPHERS};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:SSL:10m;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{NGINX_FORWARDED_HEADERS}
        }}
    }}"""
    return start_nginx_with(ws, "nginx", body, processes=ws.tools.workers)


def _start_edgeproxy_tls(ws: Workspace, backend: Endpoint, cert: str, key: str) -> Endpoint:
    def config(port: int) -> dict[str, Any]:
        made = edgeproxy_config(ws, backend, port)
        made["servers"][0]["server_name"] = [NAME]
        made["servers"][0]["tls"] = {"certificate": cert, "key": key}
        return made

    return start_edgeproxy_with(ws, config)


def measure_tls_small(opts: RunOptions) -> dict[str, Any]:
    import trustme  # only here: the scenario is unavailable without it

    assert opts.tools.wrk is not None
    with scenario_tmp("tls_small", opts.keep_tmp) as tmp, Children() as children:
        issued = trustme.CA().issue_cert(NAME)
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        ws = Workspace(tmp, children, opts.tools)
        backend = start_nginx_backend(ws)
        servers: list[Endpoint] = []
        if opts.tools.nginx is not None:
            servers.append(_start_nginx_tls(ws, backend, str(cert), str(key)))
        servers.append(_start_edgeproxy_tls(ws, backend, str(cert), str(key)))
        for server in servers:
            status, body = _https_get(server.port)
            if status != 200 or body != b"ok":  # a proxy that refuses fast must not look fast
                raise StartupError(f"{server.name}: HTTPS test request got {status} {body[:200]!r}")
        urls = {s.name: f"https://{HOST}:{s.port}/" for s in servers}
        for server in servers:
            run_wrk(children, opts.tools.wrk, urls[server.name], WARMUP_S, tmp / "warmup.log")
        per_round: list[dict[str, Any]] = []
        for n in range(1, opts.rounds + 1):
            entry: dict[str, Any] = {"round": n}
            for server in servers:  # alternate, so the machine's drift hits both alike
                # CPU per request as well: wrk's own TLS work shares the two cores, so
                # req/s may say more about the machine than about either proxy.
                pids = descendants(server.child.proc.pid) if server.child is not None else []
                before = cpu_seconds(pids)
                res = run_wrk(
                    children, opts.tools.wrk, urls[server.name], opts.duration,
                    tmp / f"wrk-{server.name}.log",
                )  # fmt: skip
                used = cpu_seconds(pids) - before
                cpu = used / res.requests * 1e6 if pids and res.requests else None
                entry[server.name] = {**res.to_json(), "cpu_us_per_request": cpu}
                log(
                    f"  tls_small round {n}/{opts.rounds} {server.name:9} "
                    f"{res.requests_per_sec:10,.0f} req/s  p99 {fmt_ms(res.p99_ms)}"
                    + (f"  CPU {cpu:.1f} us/request" if cpu else "")
                    + (f"  errors {res.errors}" if res.errors else "")
                )
            per_round.append(entry)
    return _summarize(per_round, [s.name for s in servers])


_FIGURES = ("requests_per_sec", "p99_ms")


def _summarize(per_round: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    median = {
        n: {
            k: statistics.median(r[n][k] for r in per_round) for k in ("requests_per_sec", "p99_ms")
        }
        for n in names
    }
    for n in names:
        cpu = [r[n]["cpu_us_per_request"] for r in per_round if r[n].get("cpu_us_per_request")]
        if cpu:
            median[n]["cpu_us_per_request"] = statistics.median(cpu)
    errors = sum(r["edgeproxy"]["non_2xx"] + r["edgeproxy"]["socket_errors"] for r in per_round)
    edge, ref = median["edgeproxy"], median.get("nginx")
    ratio = edge["requests_per_sec"] / ref["requests_per_sec"] if ref else None
    met, met_text = ratio_verdict(errors, ratio, MIN_RATIO)
    p99_ratio = edge["p99_ms"] / ref["p99_ms"] if ref and ref["p99_ms"] else None
    return {
        "rounds": per_round,
        "median": median,
        "ratio": ratio,
        "met": met,
        "met_text": met_text,
        "target": f">={MIN_RATIO:g}x rps",
        "notes": [
            "tls_small: proxy_small over HTTPS, keep-alive, the same ECDSA certificate and "
            "the intermediate policy on both; ratio of medians; CPU per request (all the "
            "proxy's processes, medians): "
            + ", ".join(f"{n} {median[n].get('cpu_us_per_request', 0):.1f} us" for n in names)
        ],
        "row": {
            "unit": "req/s",
            "edgeproxy": f"{edge['requests_per_sec']:,.0f}",
            "nginx": f"{ref['requests_per_sec']:,.0f}" if ref else "n/a (no nginx)",
            "ratio": f"{ratio:.2f}x" if ratio is not None else "-",
            "edgeproxy p99": fmt_ms(edge["p99_ms"]),
            "nginx p99": fmt_ms(ref["p99_ms"]) if ref else "-",
            "p99 ratio": f"{p99_ratio:.2f}x" if p99_ratio is not None else "-",
        },
    }
