"""The servers a scenario starts: backends, the reference nginx proxy and edgeproxy.

Each `start_*` writes its config into the scenario's temp dir, starts the process through
`Children`, waits until it accepts connections and returns where it listens.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from harness import Child, Children, free_port, wait_for_port

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


@dataclass(frozen=True)
class Tools:
    """Paths of the external programs, or None where one is not installed."""

    nginx: str | None
    wrk: str | None
    parser: str  # the http_parser value written into edgeproxy's config
    workers: int = 1  # worker processes of each proxy (the backend keeps one)
    # Where the edgeproxy package is run from: the work tree, or its compiled copy.
    edgeproxy_root: Path = REPO_ROOT


@dataclass(frozen=True)
class RunOptions:
    """The command line, as a scenario with its own `measure` function needs it."""

    tools: Tools
    codec: str  # the codec edgeproxy resolves its http_parser to
    rounds: int
    duration: int
    keep_tmp: bool
    idle_conns: int


@dataclass
class Workspace:
    """What a scenario's setup needs: its temp dir, its processes and the tools."""

    dir: Path
    children: Children
    tools: Tools


@dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int
    # The process serving it (its group leader), for scenarios that look at its memory.
    child: Child | None = field(default=None, compare=False, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


# --- nginx -------------------------------------------------------------------------------


def _nginx_conf(
    ws: Workspace, name: str, http_body: str, worker_connections: int, processes: int = 1
) -> str:
    d = ws.dir
    # Every path nginx writes lives in the temp dir, so no root-owned default is touched.
    temp_paths = "\n".join(
        f"    {kind}_temp_path {d}/{name}-{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes {processes};
worker_rlimit_nofile {worker_connections + 64};
pid {d}/{name}.pid;
error_log {d}/{name}.error.log warn;
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
{temp_paths}
{http_body}
}}
"""


def start_nginx_with(
    ws: Workspace,
    name: str,
    http_body: str,
    worker_connections: int = 4096,
    processes: int = 1,
) -> Endpoint:
    assert ws.tools.nginx is not None
    port = free_port()
    conf = ws.dir / f"{name}.conf"
    body = http_body.replace("PORT", str(port))
    conf.write_text(_nginx_conf(ws, name, body, worker_connections, processes))
    argv = [
        ws.tools.nginx,
        "-p",
        str(ws.dir),
        "-c",
        str(conf),
        # -e: even errors met before the config is read go to the temp dir.
        "-e",
        str(ws.dir / f"{name}.error.log"),
        "-g",
        "daemon off;",
    ]
    child = ws.children.spawn(name, argv, ws.dir / f"{name}.out.log")
    wait_for_port(child, HOST, port)
    return Endpoint(name, HOST, port, child)


def start_nginx_backend(ws: Workspace) -> Endpoint:
    """The fast backend: a fixed two-byte answer, so the proxy is what is measured."""
    if ws.tools.nginx is None:
        return start_tiny_backend(ws)
    body = f"""\
    server {{
        listen {HOST}:PORT;
        location / {{
            default_type text/plain;
            return 200 "ok";
        }}
    }}"""
    return start_nginx_with(ws, "backend-nginx", body)


# nginx set to edgeproxy's defaults for the client-facing timeouts (nginx's own are 60s for
# the first three), for the slow-client scenarios: like against like.
NGINX_EDGEPROXY_TIMEOUTS = """\
        client_header_timeout 10s;
        client_body_timeout 30s;
        send_timeout 30s;
        keepalive_timeout 75s;"""


# What edgeproxy tells every upstream by default (the client's Host, X-Forwarded-For,
# -Proto and -Host, X-Real-IP, X-Request-ID), asked of nginx too, as gunicorn's deployment
# guide sets nginx up: both proxies then send the backend the same request, and a gunicorn
# worker, which parses every field in Python, has the same work behind either.
NGINX_FORWARDED_HEADERS = """\
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Request-ID $request_id;"""


def start_nginx_proxy(ws: Workspace, backend: Endpoint, server_extra: str = "") -> Endpoint:
    """The reference proxy, set up as BENCHMARKS.md says; `server_extra`: more directives."""
    body = f"""\
    upstream backend {{
        server {backend.address};
        keepalive 32;
    }}
    server {{
        listen {HOST}:PORT;
        # Hold a 64 KiB request body in memory, as edgeproxy's default
        # client_body_buffer_size (64k) does, rather than in a temp file.
        client_body_buffer_size 128k;
        client_max_body_size 10m;
{server_extra}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{NGINX_FORWARDED_HEADERS}
        }}
    }}"""
    return start_nginx_with(ws, "nginx", body, processes=ws.tools.workers)


# --- other backends ----------------------------------------------------------------------


def start_tiny_backend(ws: Workspace) -> Endpoint:
    """Fallback fast backend when nginx is not installed (see tiny_backend.py)."""
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "tiny_backend.py"), HOST, str(port)]
    child = ws.children.spawn("backend-tiny", argv, ws.dir / "backend-tiny.log")
    wait_for_port(child, HOST, port)
    return Endpoint("backend-tiny", HOST, port, child)


# Size of the /large answer, the resource the slow_read attack asks for: larger than what
# the kernel buffers for one loopback connection (its send buffer grows to ~1.3 MiB), so a
# server writing it to a slow reader blocks unless it buffers the response itself.
LARGE_BODY = 4 * 1024 * 1024

_WSGI_APP = f"""\
LARGE = b"x" * {LARGE_BODY}


def app(environ, start_response):
    if environ.get("CONTENT_LENGTH"):
        environ["wsgi.input"].read()  # as a real app reads a form or JSON body
    body = LARGE if environ["PATH_INFO"] == "/large" else b"ok"
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
"""


def _start_gunicorn_with(ws: Workspace, worker_options: list[str]) -> Endpoint:
    """gunicorn with 2 workers of the kind `worker_options` says, the app answering "ok"."""
    (ws.dir / "bench_wsgi.py").write_text(_WSGI_APP)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        "2",
        *worker_options,
        "--bind",
        f"{HOST}:{port}",
        "--chdir",
        str(ws.dir),
        "--log-level",
        "warning",
        "bench_wsgi:app",
    ]
    child = ws.children.spawn("gunicorn", argv, ws.dir / "gunicorn.log")
    wait_for_port(child, HOST, port)
    return Endpoint("gunicorn", HOST, port, child)


def start_gunicorn(ws: Workspace) -> Endpoint:
    """The realistic backend: gunicorn, 2 sync workers (a connection per request: sync
    workers answer `Connection: close` whatever the proxy asks)."""
    return _start_gunicorn_with(ws, ["--worker-class", "sync"])


def start_gunicorn_gthread(ws: Workspace) -> Endpoint:
    """gunicorn's threaded workers, 2 x 4 threads, as many deployments run them: they keep
    connections alive (gunicorn's --keep-alive, 2 s by default), so both proxies reuse
    their upstream connections (each keeps 32 idle ones)."""
    return _start_gunicorn_with(ws, ["--worker-class", "gthread", "--threads", "4"])


# --- edgeproxy ---------------------------------------------------------------------------


def edgeproxy_config(ws: Workspace, backend: Endpoint, port: int) -> dict[str, Any]:
    return {
        "workers": ws.tools.workers,
        "http_parser": ws.tools.parser,
        # pid file and temp files in the temp dir: nothing lands in the work tree.
        "pid_file": str(ws.dir / "edgeproxy.pid"),
        "temp_path": str(ws.dir),
        "access_log": {"path": "/dev/null", "format": "off"},
        "error_log": {"path": "stderr", "level": "warning"},
        "upstreams": {"backend": {"keepalive": 32, "servers": [backend.address]}},
        "servers": [
            {
                "listen": [f"{HOST}:{port}"],
                "locations": [{"path": "/", "proxy_pass": "backend"}],
            }
        ],
    }


def start_edgeproxy(ws: Workspace, backend: Endpoint) -> Endpoint:
    return start_edgeproxy_with(ws, lambda port: edgeproxy_config(ws, backend, port))


def start_edgeproxy_with(ws: Workspace, make_config: Callable[[int], dict[str, Any]]) -> Endpoint:
    """edgeproxy with the config `make_config(port)` returns."""
    port = free_port()
    conf = ws.dir / "edgeproxy.yaml"
    # safe_dump quotes 'off', which a hand-written YAML 1.1 file would turn into False.
    conf.write_text(yaml.safe_dump(make_config(port), sort_keys=False))
    env = dict(os.environ)
    # The work tree's edgeproxy (or its compiled copy), whether or not it is pip-installed;
    # run from there too, as `-m` puts the current directory first on the path.
    root = ws.tools.edgeproxy_root
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "edgeproxy", "-c", str(conf)]
    child = ws.children.spawn("edgeproxy", argv, ws.dir / "edgeproxy.log", cwd=root, env=env)
    wait_for_port(child, HOST, port)
    return Endpoint("edgeproxy", HOST, port, child)


# --- static files ------------------------------------------------------------------------


def start_nginx_static(ws: Workspace, root: Path) -> Endpoint:
    """nginx serving `root` itself, with sendfile, as a static front tier is set up."""
    body = f"""\
    sendfile on;
    tcp_nopush on;
    server {{
        listen {HOST}:PORT;
        location / {{
            root {root};
        }}
    }}"""
    return start_nginx_with(ws, "nginx", body, processes=ws.tools.workers)


def start_edgeproxy_static(ws: Workspace, root: Path) -> Endpoint:
    """edgeproxy serving `root` itself (defaults otherwise: gzip_static, the file cache)."""

    def config(port: int) -> dict[str, Any]:
        return {
            "workers": ws.tools.workers,
            "http_parser": ws.tools.parser,
            "pid_file": str(ws.dir / "edgeproxy.pid"),
            "temp_path": str(ws.dir),
            "access_log": {"path": "/dev/null", "format": "off"},
            "error_log": {"path": "stderr", "level": "warning"},
            "servers": [
                {"listen": [f"{HOST}:{port}"], "locations": [{"path": "/", "root": str(root)}]}
            ],
        }

    return start_edgeproxy_with(ws, config)
