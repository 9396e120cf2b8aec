"""Errors that carry blame: the config, the client, or an upstream."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(Exception):
    """A config problem, located as `file:line: key.path: what`.

    A file with several problems raises one ConfigError for them all: `where` and `what`
    are the first one's, `more` holds the others as (where, what), and `lines` has each
    one as a line of its own (str() is those lines).
    """

    def __init__(self, where: str, what: str, more: Sequence[tuple[str, str]] = ()) -> None:
        self.where = where
        self.what = what
        self.lines = tuple(f"{w}: {x}" if w else x for w, x in ((where, what), *more))
        super().__init__("\n".join(self.lines))


class ClientError(Exception):
    """The client sent something we refuse; answer `status` and close the connection."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"{status} {reason}".strip())
        self.status = status
        self.reason = reason


class UpstreamError(Exception):
    """Talking to a peer failed.

    kind: "error" (refused, reset, malformed) or "timeout" -- the words of next_upstream.
    retryable: whether the request may be replayed on another peer regardless of its method
    (true when nothing reached the peer, e.g. the connect itself failed).
    """

    def __init__(self, kind: str, detail: str, *, retryable: bool = False) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retryable = retryable

    @property
    def status(self) -> int:
        return 504 if self.kind == "timeout" else 502
