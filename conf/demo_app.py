"""The demo's WSGI app: says which gunicorn server answered, and echoes uploads."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

NAME = os.environ.get("DEMO_SERVER", "demo")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    size = 0
    stream = environ["wsgi.input"]
    while chunk := stream.read(65536):
        size += len(chunk)
    body = (
        f"hello from gunicorn {NAME} (pid {os.getpid()})\n"
        f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '/')}, "
        f"{size} body bytes, client {environ.get('HTTP_X_REAL_IP', '?')}\n"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
