"""Request ids (X-Request-ID): 32 hex digits, as nginx's $request_id.

Not random per request (a getrandom system call each) but a random prefix per worker
process followed by a counter: unique across the workers and their restarts, and a few
instructions per request. Unlike nginx's, the ids of one worker are therefore in sequence:
an id identifies a request, it is no secret.
"""

from __future__ import annotations

import os


class RequestIds:
    __slots__ = ("count", "prefix")

    def __init__(self) -> None:
        # Built in the worker process (after the fork): each worker has its own prefix.
        self.prefix = os.urandom(8).hex().encode()
        self.count = 0

    def next(self) -> bytes:
        self.count += 1
        return self.prefix + b"%016x" % self.count
