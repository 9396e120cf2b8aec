"""Handlers that answer on their own: `return:`, and the 404 of an unmatched path.

A `return` whose location or body uses variables ($scheme, $host, $request_uri, as
nginx's) is split once, at startup, into literal bytes and the variables between them;
each request only joins the pieces. One without variables is one Answer, built once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from edgeproxy.config.model import ReturnAction
from edgeproxy.server.request import Client, Request, Responder
from edgeproxy.server.response import Answer

_TEXT: Final = (b"Content-Type", b"text/plain; charset=utf-8")


class AnswerHandler:
    """Always the same complete response, built once."""

    __slots__ = ("answer",)

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def start(self, request: Request, client: Client) -> Responder | None:
        client.out.send_answer(self.answer)
        return None


# The names config.locations accepts (RETURN_VARIABLES there; a unit test checks they agree).
_VARIABLE_RE: Final = re.compile(r"\$(scheme|host|request_uri)\b")


def _scheme(request: Request) -> bytes:
    return request.route.scheme


def _host(request: Request) -> bytes:
    """nginx's $host: the request's host (already checked by the codec's rules), without
    its port, lowercased; the server's first name when the request names none."""
    host = request.head.host
    if not host:
        return request.route.default_host
    if host[-1:] != b"]" and b":" in host:  # a port, not the inside of an [IPv6]
        host = host.rsplit(b":", 1)[0]
    return host.lower()


def _request_uri(request: Request) -> bytes:
    return request.head.target  # as the client sent it, with its query


_READ: Final[dict[str, Callable[[Request], bytes]]] = {
    "scheme": _scheme,
    "host": _host,
    "request_uri": _request_uri,
}

Piece = bytes | Callable[[Request], bytes]


def _template(text: bytes) -> tuple[Piece, ...]:
    pieces: list[Piece] = []
    at = 0
    decoded = text.decode("utf-8", "surrogateescape")
    for found in _VARIABLE_RE.finditer(decoded):
        if found.start() > at:
            pieces.append(decoded[at : found.start()].encode("utf-8", "surrogateescape"))
        pieces.append(_READ[found.group(1)])
        at = found.end()
    if at < len(decoded):
        pieces.append(decoded[at:].encode("utf-8", "surrogateescape"))
    return tuple(pieces)


def _fill(pieces: tuple[Piece, ...], request: Request) -> bytes:
    parts = []
    for piece in pieces:
        parts.append(piece if isinstance(piece, bytes) else piece(request))
    return b"".join(parts)


def has_variables(action: ReturnAction) -> bool:
    return bool(
        _VARIABLE_RE.search(action.location or "")
        or _VARIABLE_RE.search(action.body.decode("utf-8", "surrogateescape"))
    )


class TemplateHandler:
    """A `return` with variables: its answer is filled in per request."""

    __slots__ = ("body", "location", "status")

    def __init__(self, action: ReturnAction) -> None:
        self.status = action.status
        self.location = _template(action.location.encode()) if action.location else None
        self.body = _template(action.body)

    def start(self, request: Request, client: Client) -> Responder | None:
        headers = []
        if self.location is not None:
            headers.append((b"Location", _fill(self.location, request)))
        body = _fill(self.body, request)
        if body:
            headers.append(_TEXT)
        client.out.send_answer(Answer(self.status, headers, body))
        return None


def return_answer(action: ReturnAction) -> Answer:
    headers = []
    if action.location is not None:
        headers.append((b"Location", action.location.encode()))
    if action.body:
        headers.append(_TEXT)
    return Answer(action.status, headers, action.body)
