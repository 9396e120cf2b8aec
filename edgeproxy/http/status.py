"""Status lines and the small error pages, built once at import."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode() for s in HTTPStatus}
REASONS[499] = b"Client Closed Request"  # nginx's own code, used only in the access log


def status_line(status: int, reason: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, reason or REASONS.get(status, b"Unknown"))


STATUS_LINES: Final[dict[int, bytes]] = {code: status_line(code) for code in REASONS}


def status_line_for(status: int, reason: bytes) -> bytes:
    """The status line, prebuilt when the reason is the standard one (the usual case)."""
    if not reason or reason == REASONS.get(status):
        line = STATUS_LINES.get(status)
        if line is not None:
            return line
    return status_line(status, reason)


def _error_page(status: int) -> bytes:
    title = b"%d %s" % (status, REASONS.get(status, b"Error"))
    return (
        b"<html>\r\n<head><title>"
        + title
        + b"</title></head>\r\n<body>\r\n<center><h1>"
        + title
        + b"</h1></center>\r\n<hr><center>edgeproxy</center>\r\n</body>\r\n</html>\r\n"
    )


ERROR_PAGES: Final[dict[int, bytes]] = {code: _error_page(code) for code in REASONS if code >= 400}


def error_page(status: int) -> bytes:
    page = ERROR_PAGES.get(status)
    return page if page is not None else _error_page(status)
