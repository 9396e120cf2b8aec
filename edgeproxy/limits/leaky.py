"""nginx's leaky bucket (ngx_http_limit_req_module), in its own integer units.

State per key: `excess`, in thousandths of a request, and `last`, the millisecond of the
last accounted request. The rate is in thousandths of a request per second, truncated as
nginx truncates it (1r/m is 16, not 16.67). A request first lets the bucket leak for the
milliseconds since `last`, then adds one request (1000):

- more than `burst` in the bucket: rejected, and the state is left as it was;
- otherwise accounted; it waits (excess - delay) / rate seconds when the bucket holds more
  than `delay` (nodelay: `delay` is the whole burst, so it never waits).

A key seen for the first time starts empty and passes. Pure: the caller gives the clock.
"""

from __future__ import annotations

from typing import Final

PASS: Final = 0
DELAY: Final = 1
REJECT: Final = 2
NO_DELAY: Final = 1 << 62  # nodelay's `delay`: more than any burst


class Bucket:
    """A zone's parameters, in nginx's units."""

    __slots__ = ("burst", "delay", "rate")

    def __init__(self, rate: float, burst: int, delay: int, nodelay: bool) -> None:
        # nginx: rate = n * 1000 / scale (60 for r/m) in integers; `rate` here is per second.
        self.rate = max(1, int(rate * 1000 + 1e-6))
        self.burst = burst * 1000
        self.delay = NO_DELAY if nodelay else delay * 1000


class Outcome:
    """What one request gets: `kind` (PASS, DELAY, REJECT), the new state to store (only
    for PASS and DELAY), the wait in ms (DELAY) or until a retry can pass (REJECT)."""

    __slots__ = ("excess", "kind", "last", "wait_ms")

    def __init__(self, kind: int, excess: int, last: int, wait_ms: int) -> None:
        self.kind = kind
        self.excess = excess
        self.last = last
        self.wait_ms = wait_ms


def take(bucket: Bucket, excess: int, last: int, now: int, known: bool) -> Outcome:
    """One request at millisecond `now` against the stored (`excess`, `last`) of its key
    (`known` False: the key has no state yet)."""
    if not known:
        return Outcome(PASS, 0, now, 0)
    ms = now - last
    if ms < -60000:  # the clock jumped back a lot: nginx counts one millisecond
        ms = 1
    elif ms < 0:
        ms = 0
    excess = excess - bucket.rate * ms // 1000 + 1000
    if excess < 0:
        excess = 0
    if excess > bucket.burst:
        # Retry once the bucket has leaked below the burst again.
        wait = -(-(excess - bucket.burst) * 1000 // bucket.rate)
        return Outcome(REJECT, excess, last, wait)
    stored_last = now if ms else last
    if excess <= bucket.delay:
        return Outcome(PASS, excess, stored_last, 0)
    return Outcome(DELAY, excess, stored_last, (excess - bucket.delay) * 1000 // bucket.rate)
