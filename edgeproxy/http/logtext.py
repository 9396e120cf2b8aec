"""Bytes from the wire as they appear in the error log: text a person can read.

A request line is quoted as nginx's error log quotes it (`"GET /d3 HTTP/1.1"`), never as a
Python repr (`b'/d3'`). What is not printable ASCII (bytes a client may put in a target, a
hostile control character) is shown as `\\xHH`, so a log line stays one line of text.
Only called when a line is logged.
"""

from __future__ import annotations

import ast
import re
from typing import Final

from edgeproxy.http.events import RequestHead

# A bytes repr inside a library's message (h11: "illegal request line: bytearray(b'...')").
_LITERAL: Final = r"b'(?:[^'\\]|\\.)*'" + r'|b"(?:[^"\\]|\\.)*"'
_BYTES_REPR: Final = re.compile(rf"bytearray\(({_LITERAL})\)|(?<!\w)({_LITERAL})")


def printable(raw: bytes | bytearray) -> str:
    """`raw` as ASCII text, anything else escaped as `\\xHH`."""
    text = raw.decode("ascii", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)


def request_line(head: RequestHead) -> str:
    """The request line of `head`, quoted: `"GET /d3 HTTP/1.1"`."""
    return f'"{printable(head.method)} {printable(head.target)} HTTP/{printable(head.version)}"'


def readable(message: str) -> str:
    """`message` with each bytes repr in it shown as quoted text (`"GET /x HTTP/1.1"`)."""
    return _BYTES_REPR.sub(_quoted, message)


def _quoted(found: re.Match[str]) -> str:
    try:
        value = ast.literal_eval(found[1] or found[2])
    except (ValueError, SyntaxError):
        return found[0]
    return f'"{printable(value)}"' if isinstance(value, bytes) else found[0]
