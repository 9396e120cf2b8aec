"""Precompressed siblings (gzip_static): which of `file.br` / `file.gz` a client accepts."""

from __future__ import annotations

# Sibling suffixes in order of preference when the client weighs them equally: brotli is
# the smaller of the two for the same text.
SIBLINGS: tuple[tuple[str, bytes], ...] = ((".br", b"br"), (".gz", b"gzip"))
VARY = (b"Vary", b"Accept-Encoding")


def weights(accept_encoding: bytes) -> dict[bytes, float]:
    """Coding -> q of an Accept-Encoding field (a malformed q counts as 0: not accepted)."""
    found: dict[bytes, float] = {}
    for item in accept_encoding.lower().split(b","):
        name, _, params = item.partition(b";")
        name = name.strip()
        if not name:
            continue
        q = 1.0
        for param in params.split(b";"):
            key, _, value = param.strip().partition(b"=")
            if key == b"q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        if name == b"x-gzip":
            name = b"gzip"
        found[name] = q
    return found


def choose(accept_encoding: bytes | None, available: tuple[bytes, ...]) -> bytes | None:
    """The coding of `available` (in preference order) the client weighs highest; None for
    the file as it is."""
    if accept_encoding is None or not available:
        return None
    found = weights(accept_encoding)
    star = found.get(b"*", 0.0)
    best: bytes | None = None
    best_q = 0.0
    for coding in available:
        q = found.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    return best
