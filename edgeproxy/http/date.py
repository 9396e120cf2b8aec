"""The Date header value, formatted once per second rather than once per response."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Final


class DateCache:
    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def value(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


DATE: Final = DateCache()
