"""From a request target to a path beneath the location's directory, or a refusal.

The rules are strict on purpose: a static location never needs `..`, encoded slashes,
backslashes, NUL bytes or names starting with a dot, and refusing them here means the file
system only ever sees plain names. The one dot-name let through is `.well-known` as the
path's first segment (RFC 8615's well-known URIs: ACME HTTP-01 challenges, security.txt),
so that certbot's webroot can be served; every other dot-name, below it too, stays refused.
The opener (opener.py) then makes sure the name stays beneath the directory whatever
symlinks it meets.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote_to_bytes

# RFC 8615's prefix: the only dot-name served, and only as a path's first segment.
WELL_KNOWN: Final = ".well-known"

# Percent-encoded `/` and `\`: a name with them in it would be a different path than the
# one the router matched.
_ENCODED_SEPARATORS = (b"%2f", b"%5c")


class Refused(Exception):
    """The target cannot name a static file; `status` is the answer (400, 403 or 404)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def target_path(target: bytes) -> bytes:
    """The path of a request target: without its query, and without scheme and authority
    for an absolute-form target."""
    path = target.split(b"?", 1)[0]
    if path[:1] != b"/":
        scheme_end = path.find(b"://")
        if scheme_end < 0:
            raise Refused(400)
        slash = path.find(b"/", scheme_end + 3)
        path = path[slash:] if slash >= 0 else b"/"
    return path


def decode_segments(path: bytes) -> tuple[list[str], bool]:
    """The decoded segments of a path, and whether it ends with `/`.

    Refused: encoded separators, backslashes, NUL, bytes that are not UTF-8 (which refuses
    overlong forms too), `..` anywhere, and any segment starting with a dot (`.git/`,
    `.env`, `.htpasswd`), encoded or not, except a first segment `.well-known`. Empty and
    `.` segments are dropped.
    """
    if b"%" in path:
        lowered = path.lower()
        if any(sep in lowered for sep in _ENCODED_SEPARATORS):
            raise Refused(404)
        path = unquote_to_bytes(path)
    if b"\\" in path or b"\x00" in path:
        raise Refused(404)
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400) from None
    return split_segments(text)


def split_segments(text: str) -> tuple[list[str], bool]:
    """The segments of a decoded path (a try_files entry with `$uri` put in), refused as
    decode_segments refuses them, and whether it ends with `/`."""
    if "\\" in text or "\x00" in text:
        raise Refused(404)
    segments: list[str] = []
    for segment in text.split("/"):
        if segment in ("", "."):
            continue
        if segment[0] == "." and (segments or segment != WELL_KNOWN):  # `..`, dotfiles
            raise Refused(404)
        segments.append(segment)
    return segments, text.endswith("/")


def relative_segments(segments: list[str], strip: list[str]) -> list[str]:
    """`segments` below the location prefix `strip` (alias); 404 when they are not below it."""
    count = len(strip)
    if segments[:count] != strip:
        raise Refused(404)
    return segments[count:]


def prefix_segments(prefix: str) -> list[str]:
    """The segments of a location prefix, as decode_segments splits a path."""
    return [s for s in prefix.split("/") if s not in ("", ".")]
