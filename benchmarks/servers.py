"""The servers a scenario starts: backends, the reference nginx proxy and edgeproxy.

Each `start_*` writes its config into the scenario's temp dir, starts the process through
`Children`, waits until it accepts connections and returns where it listens.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from harness import Children, free_port, wait_for_port

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


@dataclass(frozen=True)
class Tools:
    """Paths of the external programs, or None where one is not installed."""

    nginx: str | None
    wrk: str | None
    parser: str  # the http_parser value written into edgeproxy's config


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

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


# --- nginx -------------------------------------------------------------------------------


def _nginx_conf(ws: Workspace, name: str, http_body: str) -> str:
    d = ws.dir
    # Every path nginx writes lives in the temp dir, so no root-owned default is touched.
    temp_paths = "\n".join(
        f"    {kind}_temp_path {d}/{name}-{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes 1;
pid {d}/{name}.pid;
error_log {d}/{name}.error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
{temp_paths}
{http_body}
}}
"""


def _start_nginx(ws: Workspace, name: str, http_body: str) -> Endpoint:
    assert ws.tools.nginx is not None
    port = free_port()
    conf = ws.dir / f"{name}.conf"
    conf.write_text(_nginx_conf(ws, name, http_body.replace("PORT", str(port))))
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
    return Endpoint(name, HOST, port)


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
    return _start_nginx(ws, "backend-nginx", body)


def start_nginx_proxy(ws: Workspace, backend: Endpoint) -> Endpoint:
    """The reference proxy, set up as BENCHMARKS.md says."""
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
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return _start_nginx(ws, "nginx", body)


# --- other backends ----------------------------------------------------------------------


def start_tiny_backend(ws: Workspace) -> Endpoint:
    """Fallback fast backend when nginx is not installed (see tiny_backend.py)."""
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "tiny_backend.py"), HOST, str(port)]
    child = ws.children.spawn("backend-tiny", argv, ws.dir / "backend-tiny.log")
    wait_for_port(child, HOST, port)
    return Endpoint("backend-tiny", HOST, port)


_WSGI_APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""


def start_gunicorn(ws: Workspace) -> Endpoint:
    """The realistic backend: gunicorn, 2 sync workers, a WSGI app answering "ok"."""
    (ws.dir / "bench_wsgi.py").write_text(_WSGI_APP)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        "2",
        "--worker-class",
        "sync",
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
    return Endpoint("gunicorn", HOST, port)


# --- edgeproxy ---------------------------------------------------------------------------


def edgeproxy_config(ws: Workspace, backend: Endpoint, port: int) -> dict[str, Any]:
    return {
        "workers": 1,
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
    port = free_port()
    conf = ws.dir / "edgeproxy.yaml"
    # safe_dump quotes 'off', which a hand-written YAML 1.1 file would turn into False.
    conf.write_text(yaml.safe_dump(edgeproxy_config(ws, backend, port), sort_keys=False))
    env = dict(os.environ)
    # The work tree's edgeproxy, whether or not it is pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "edgeproxy", "-c", str(conf)]
    child = ws.children.spawn("edgeproxy", argv, ws.dir / "edgeproxy.log", env=env)
    wait_for_port(child, HOST, port)
    return Endpoint("edgeproxy", HOST, port)
