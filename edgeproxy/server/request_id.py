"""Request ids (X-Request-ID): 32 hex digits, as nginx's $request_id.

Not random per request (a getrandom system call each) but a random prefix per worker
process followed by a counter: unique across the workers and their restarts, and a few
instructions per request. Unlike nginx's, the ids of one worker are therefore in sequence:
an id identifies a request, it is no secret.
"""

from __future__ import annotations

import os
from typing import Final

# The counter's last two hex digits, formatted once: the rest changes every 256 requests,
# so a request costs one concatenation instead of a formatting of the whole number.
_LOW_DIGITS: Final = tuple(b"%02x" % n for n in range(256))


class RequestIds:
    __slots__ = ("count", "head", "prefix")

    def __init__(self) -> None:
        # Built in the worker process (after the fork): each worker has its own prefix.
        self.prefix = os.urandom(8).hex().encode()  # 16 digits
        self.count = 0
        self.head = self.prefix + b"0" * 14  # the prefix and the counter but its low byte

    def next(self) -> bytes:
        count = self.count + 1
        self.count = count
        low = count & 0xFF
        if low == 0:
            self.head = self.prefix + b"%014x" % (count >> 8)
        return self.head + _LOW_DIGITS[low]
