"""The small WSGI app that integration tests and the demo put behind edgeproxy.

GET  /            -> "hello from <name>"          (name from $APP_NAME, default the pid)
ANY  /echo[/...]  -> JSON: method, path, query, headers, body length and sha256, some CGI variables
GET  /bytes/N     -> N bytes (Content-Length)
GET  /stream/N    -> N bytes, no Content-Length (gunicorn closes or chunks)
GET  /sleep/S     -> sleeps S seconds then answers "slept"
GET  /status/N    -> answers status N
GET  /spelled     -> fields spelled in several ways: X-Custom-Header, x-all-lower, ETag
GET  /pid         -> this worker's pid
GET  /health      -> the status the file $HEALTH_FILE holds (200 without one); each call
                     appends its time (CLOCK_MONOTONIC) to $HEALTH_FILE.log
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
NAME = os.environ.get("APP_NAME", "")
# The server's variables /echo reports besides the HTTP_* ones (None when not set).
CGI_VARIABLES = (
    *("REQUEST_URI", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL"),
    *("REMOTE_ADDR", "REMOTE_PORT", "CONTENT_TYPE", "CONTENT_LENGTH"),
)


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    chunks = []
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    name = NAME or str(os.getpid())
    if path == "/echo" or path.startswith("/echo/"):
        body = _read_body(environ)
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_LENGTH"):
            headers["content-length"] = environ["CONTENT_LENGTH"]
        payload = json.dumps(
            {
                "server": name,
                "method": environ["REQUEST_METHOD"],
                "path": path,
                "query": environ.get("QUERY_STRING", ""),
                "headers": headers,
                "body_length": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "cgi": {key: environ.get(key) for key in CGI_VARIABLES},
                "url_scheme": environ["wsgi.url_scheme"],
            }
        ).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [payload]
    if path.startswith("/bytes/"):
        size = int(path.split("/")[2])
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        )
        return _pattern(size)
    if path.startswith("/stream/"):
        size = int(path.split("/")[2])
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _pattern(size)
    if path.startswith("/sleep/"):
        time.sleep(float(path.split("/")[2]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path.startswith("/status/"):
        status = int(path.split("/")[2])
        start_response(f"{status} Status", [("Content-Type", "text/plain")])
        return [f"status {status} from {name}".encode()]
    if path.startswith("/accel/"):  # X-Accel-Redirect: the app decides, the proxy sends
        big = "big=1" in environ.get("QUERY_STRING", "")
        body = b"app body, never sent" * (50_000 if big else 1)
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("X-Accel-Redirect", "/protected/" + path[len("/accel/") :]),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]
    if path == "/spelled":  # a proxy passes names on as spelled here
        start_response(
            "200 OK",
            [
                ("X-Custom-Header", "custom"),
                ("Content-Type", "text/plain"),
                ("x-all-lower", "lower"),
                ("ETag", '"v1"'),
                ("content-length", "7"),
            ],
        )
        return [b"spelled"]
    if path == "/pid":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    if path == "/health":  # a test flips the status and counts the probes
        health = os.environ.get("HEALTH_FILE", "")
        status = 200
        if health:
            with open(health + ".log", "a") as calls:
                calls.write(f"{time.monotonic()}\n")
            with contextlib.suppress(FileNotFoundError, ValueError), open(health) as wanted:
                status = int(wanted.read())
        start_response(f"{status} Health", [("Content-Type", "text/plain")])
        return [f"health {status} from {name}".encode()]
    _read_body(environ)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"hello from {name}\n".encode()]


def _pattern(size: int) -> Iterable[bytes]:
    """Deterministic bytes (tests compare hashes), yielded in 64 KiB pieces."""
    block = bytes(range(256)) * 256
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        sent += len(piece)
        yield piece
