"""What the limit phases count with: an instance's own zone (edgeproxy.limits.zones) or one
shared across instances (edgeproxy.limits.shared), interchangeably."""

from __future__ import annotations

from typing import Protocol

from edgeproxy.config.model import ZoneConfig
from edgeproxy.limits.leaky import Outcome


class RateCounter(Protocol):
    @property
    def config(self) -> ZoneConfig: ...

    def take(self, key: str, now: int) -> Outcome:
        """Account one request of `key` at millisecond `now` (nginx's leaky bucket)."""
        ...


class ConnectionCounter(Protocol):
    @property
    def config(self) -> ZoneConfig: ...

    def acquire(self, key: str, now: int) -> int:
        """Count one more connection of `key` unless it has `connections` already: the
        count it had (>= the limit: refused, nothing counted unless dry_run), or -1 when
        the zone has no room (refused)."""
        ...

    def release(self, key: str) -> None: ...
