"""Handlers that answer without an upstream: `return:` and the 404 of an unmatched path."""

from __future__ import annotations

from edgeproxy.config.model import ReturnAction
from edgeproxy.http.status import error_page
from edgeproxy.server.response import ResponseWriter

_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_HTML = (b"content-type", b"text/html")


def send_return(action: ReturnAction, out: ResponseWriter) -> None:
    headers = []
    body = action.body
    if action.location is not None:
        headers.append((b"location", action.location.encode()))
    if body:
        headers.append(_TEXT)
    elif action.status >= 400:
        # As nginx: `return 404;` without a body answers with the standard error page.
        body = error_page(action.status)
        headers.append(_HTML)
    out.send_head(action.status, headers, len(body), body=body)
