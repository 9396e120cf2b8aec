"""Zones counted across instances in one Redis (`shared: true`, `shared_state:`).

A request is never held for Redis: each worker decides from its own view of a key's shared
state, at once, as for a local zone, and a background task sends what it let through to
Redis in batches (one script call per zone per round trip, edgeproxy.limits.redis_scripts)
and takes back the shared state. At most one call per zone is in flight: the requests
that arrive meanwhile make the next batch, so the busier the worker, the larger the batch
and the fewer calls per request.

The price is staleness of one round trip: per key, a worker may let through what arrives
while its batch is in flight, and a first request of a key it has no view of, beyond what
one instance alone would. What is let through too much stays in the shared bucket, so
every instance refuses the key until it has leaked away (see the README for the bound).

A worker is one holder of connection slots: its lease key in Redis is renewed every third
of `lease`; a worker that dies stops renewing, and its slots are free once the lease runs
out. When Redis fails or answers slower than `timeout`, the zones follow `on_error`
(`local`: the instance's own zone, which is kept counting connections all along; `allow`;
`deny`) until a probe finds Redis again, logging each change once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import urllib.parse
from typing import Any

from edgeproxy.config.model import SharedStateConfig, ZoneConfig
from edgeproxy.limits.counters import ConnectionCounter, RateCounter
from edgeproxy.limits.leaky import PASS, REJECT, Bucket, Outcome, take
from edgeproxy.limits.redis_scripts import CONNECTIONS, RATE
from edgeproxy.limits.zones import now_ms

log = logging.getLogger("edgeproxy.limits")

PROBE_INTERVAL = 0.5  # seconds between probes of a Redis found down
# Calls of one zone start at least this far apart (seconds): a busy worker then makes at
# most a few hundred calls a second per zone, however many requests they carry.
SYNC_INTERVAL = 0.002
BATCH_KEYS = 256  # keys per script call: a long script would stall Redis for everyone
MAX_VIEWS = 65536  # keys a worker keeps a view of per zone; idle ones go first past this
_DENIED = Outcome(REJECT, 0, 0, 1000)  # on_error deny: Retry-After 1


def shown_url(url: str) -> str:
    """The URL without its password, for the log."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + netloc))


class RedisLink:
    """One worker's connection to the Redis of a `shared_state`, and whether it is up."""

    def __init__(self, config: SharedStateConfig) -> None:
        # Imported here: an instance without shared_state never loads the client.
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self.config = config
        self.url = shown_url(config.redis)
        # What a failed call raises (TimeoutError: slower than `timeout`).
        self.errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        # No retries inside the client: a failed call is the zone's on_error until a probe
        # succeeds, and every call is bounded by `timeout` here.
        self.client: Any = redis.asyncio.from_url(
            config.redis, socket_connect_timeout=config.timeout, retry=Retry(NoBackoff(), 0)
        )
        self.up = True  # until a call fails: start-up never waits for Redis
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.lease_prefix = f"{config.prefix}:lease:"
        self.connection_zones: list[SharedConnectionZone] = []
        self.rate_zones: list[SharedRateZone] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewing = False
        self._started = False

    def start(self) -> None:
        """Say at start-up whether Redis answers (from the first request if no loop runs
        yet), and renew this worker's lease while it has connection zones."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if not self._started:
            self._started = True
            self.spawn(self._hello())
        if self.connection_zones and not self._renewing:
            self._renewing = True
            self.spawn(self._renew())

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # a task nobody holds may be collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def pace(self, zone: SharedRateZone | SharedConnectionZone) -> None:
        """Wait until SYNC_INTERVAL has passed since `zone`'s previous call started."""
        loop = asyncio.get_running_loop()
        wait = zone.last_call + SYNC_INTERVAL - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        zone.last_call = loop.time()

    async def call(self, script: Any, keys: list[str], args: list[int | str]) -> list[int]:
        async with asyncio.timeout(self.config.timeout):
            result: list[int] = await script(keys=keys, args=args)
            return result

    async def _hello(self) -> None:
        try:
            async with asyncio.timeout(self.config.timeout):
                await self.client.ping()
        except self.errors as e:
            self.failed(e)
            return
        log.info("shared zones count in Redis at %s", self.url)

    def failed(self, error: BaseException) -> None:
        if not self.up:
            return
        self.up = False
        log.warning("Redis at %s failed (%s): shared zones use on_error=%s until it answers",
                    self.url, type(error).__name__ if not str(error) else error,
                    self.config.on_error)  # fmt: skip
        for zone in self.rate_zones:
            zone.forget()
        for connections in self.connection_zones:
            connections.forget()
        self.spawn(self._probe())

    async def _probe(self) -> None:
        while not self.up:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                async with asyncio.timeout(self.config.timeout):
                    await self.client.ping()
            except self.errors:
                continue
            self.up = True
            log.warning("Redis at %s answers again: shared zones count in it", self.url)
            for connections in self.connection_zones:
                connections.resend()

    async def _renew(self) -> None:
        # Re-sending the held counts renews the lease and keeps the keys from expiring.
        while True:
            await asyncio.sleep(self.config.lease / 3)
            if self.up:
                for connections in self.connection_zones:
                    connections.resend()


class SharedRateZone:
    """A request-rate zone counted in Redis; decisions from this worker's view of it."""

    def __init__(self, config: ZoneConfig, link: RedisLink, local: RateCounter) -> None:
        self._config = config
        self.bucket = Bucket(config.rate, config.burst, config.delay, config.nodelay)
        self.link = link
        self.local = local
        self.prefix = f"{link.config.prefix}:rate:{config.name}:"
        self.script = link.client.register_script(RATE)
        # key -> [excess, last]: the shared bucket as last seen, plus what was let through since
        self.views: dict[str, list[int]] = {}
        self.unsent: dict[str, int] = {}  # requests let through, not yet sent to Redis
        self.flushing = False
        self.last_call = 0.0  # loop time the previous call started
        link.rate_zones.append(self)

    @property
    def config(self) -> ZoneConfig:
        return self._config

    def take(self, key: str, now: int) -> Outcome:
        link = self.link
        if not link.up:
            on_error = link.config.on_error
            if on_error == "local":
                return self.local.take(key, now)
            return Outcome(PASS, 0, now, 0) if on_error == "allow" else _DENIED
        view = self.views.get(key)
        if view is None:
            if len(self.views) >= MAX_VIEWS:
                self._prune(now)
            outcome = take(self.bucket, 0, 0, now, False)
            view = self.views[key] = [0, now]
        else:
            outcome = take(self.bucket, view[0], view[1], now, True)
        if outcome.kind != REJECT:
            view[0] = outcome.excess
            view[1] = outcome.last
            self.unsent[key] = self.unsent.get(key, 0) + 1
            if not self.flushing:
                self.flushing = True
                link.start()
                link.spawn(self._flush())
        return outcome

    async def _flush(self) -> None:
        link = self.link
        rate = self.bucket.rate
        try:
            while link.up and self.unsent:
                await link.pace(self)
                batch = list(self.unsent.items())[:BATCH_KEYS]
                for key, _ in batch:
                    del self.unsent[key]
                keys = [self.prefix + key for key, _ in batch]
                try:
                    replies = await link.call(self.script, keys, [rate, 0, *(n for _, n in batch)])
                except link.errors as e:
                    link.failed(e)
                    return
                now = now_ms()
                views, unsent = self.views, self.unsent
                for (key, _), excess in zip(batch, replies, strict=True):
                    view = views.get(key)
                    if view is not None:
                        # The shared excess now, plus what this worker let through meanwhile.
                        view[0] = int(excess) + 1000 * unsent.get(key, 0)
                        view[1] = now
        finally:
            self.flushing = False

    def _prune(self, now: int) -> None:
        """Forget views that have leaked empty (a forgotten key starts empty anyway)."""
        rate = self.bucket.rate
        idle = [k for k, (e, last) in self.views.items() if e <= rate * (now - last) // 1000]
        for key in idle if idle else list(self.views)[: MAX_VIEWS // 2]:
            if key not in self.unsent:
                del self.views[key]

    def forget(self) -> None:
        """Redis failed: what was not sent is dropped, and the views are stale."""
        self.views.clear()
        self.unsent.clear()


class SharedConnectionZone:
    """A connection zone counted in Redis: this worker's own count per key is exact, the
    other holders' total is as of the last reply."""

    def __init__(self, config: ZoneConfig, link: RedisLink, local: ConnectionCounter) -> None:
        self._config = config
        self.link = link
        self.local = local
        self.prefix = f"{link.config.prefix}:conn:{config.name}:"
        self.script = link.client.register_script(CONNECTIONS)
        self.mine: dict[str, int] = {}  # this worker's open connections per key
        self.others: dict[str, int] = {}  # the other live holders' total, as last seen
        # Connections the instance's own zone counted too, per key: released there as well.
        self.counted_locally: dict[str, int] = {}
        self.dirty: set[str] = set()
        self.flushing = False
        self.last_call = 0.0
        link.connection_zones.append(self)

    @property
    def config(self) -> ZoneConfig:
        return self._config

    def acquire(self, key: str, now: int) -> int:
        config = self._config
        limit = config.connections
        # The instance's own zone counts too, so that on_error=local has the count at hand.
        held_locally = self.local.acquire(key, now)
        local_ok = held_locally >= 0 and (held_locally < limit or config.dry_run)
        link = self.link
        if link.up:
            result = self.others.get(key, 0) + self.mine.get(key, 0)
            admitted = result < limit or config.dry_run
            if not admitted:
                self.dirty.add(key)  # refused on a view: refresh it (a holder may be gone)
        elif link.config.on_error == "local":
            result, admitted = held_locally, local_ok
        elif link.config.on_error == "allow":
            result, admitted = 0, True
        else:
            result, admitted = limit, config.dry_run
        if admitted:
            self.mine[key] = self.mine.get(key, 0) + 1
            self.dirty.add(key)
            if local_ok:
                self.counted_locally[key] = self.counted_locally.get(key, 0) + 1
        elif local_ok:
            self.local.release(key)
        self._kick()
        return result

    def release(self, key: str) -> None:
        held = self.mine.get(key, 0)
        if held > 1:
            self.mine[key] = held - 1
        elif held == 1:
            del self.mine[key]
        if held:
            self.dirty.add(key)
            self._kick()
        counted = self.counted_locally.get(key, 0)
        if counted:
            if counted > 1:
                self.counted_locally[key] = counted - 1
            else:
                del self.counted_locally[key]
            self.local.release(key)

    def _kick(self) -> None:
        if self.dirty and not self.flushing and self.link.up:
            self.flushing = True
            self.link.start()
            self.link.spawn(self._flush())

    async def _flush(self) -> None:
        link = self.link
        lease_ms = max(1, int(link.config.lease * 1000))
        lease_key = link.lease_prefix + link.holder
        try:
            while link.up and self.dirty:
                await link.pace(self)
                batch = list(self.dirty)[:BATCH_KEYS]
                self.dirty.difference_update(batch)
                counts = [self.mine.get(key, 0) for key in batch]
                keys = [lease_key, *(self.prefix + key for key in batch)]
                args: list[int | str] = [link.holder, lease_ms, link.lease_prefix, *counts]
                try:
                    replies = await link.call(self.script, keys, args)
                except link.errors as e:
                    link.failed(e)
                    return
                for key, others in zip(batch, replies, strict=True):
                    if others or key in self.mine:
                        self.others[key] = int(others)
                    else:
                        self.others.pop(key, None)
        finally:
            self.flushing = False

    def resend(self) -> None:
        """Send every count this worker holds again (lease renewal, Redis back)."""
        self.dirty.update(self.mine)
        self._kick()

    def forget(self) -> None:
        """Redis failed: the other holders' counts are unknown until it answers again."""
        self.others.clear()
        self.dirty.clear()


# This worker's links and zones, for the event loop that uses them (a client's connections
# belong to one loop; a process that runs another loop, as tests do, starts afresh).
_links: dict[SharedStateConfig, RedisLink] = {}
_rate_zones: dict[ZoneConfig, SharedRateZone] = {}
_connection_zones: dict[ZoneConfig, SharedConnectionZone] = {}
_loop: list[asyncio.AbstractEventLoop | None] = [None]


def _for_this_loop() -> None:
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not _loop[0]:
        _links.clear()
        _rate_zones.clear()
        _connection_zones.clear()
        _loop[0] = loop


def _link(config: SharedStateConfig) -> RedisLink:
    link = _links.get(config)
    if link is None:
        link = _links[config] = RedisLink(config)
    return link


def shared_rate(config: ZoneConfig, local: RateCounter) -> SharedRateZone:
    """This worker's counter of a shared rate zone (one per zone, whatever uses it)."""
    assert config.shared is not None
    _for_this_loop()
    zone = _rate_zones.get(config)
    if zone is None:
        zone = _rate_zones[config] = SharedRateZone(config, _link(config.shared), local)
    zone.link.start()
    return zone


def shared_connections(config: ZoneConfig, local: ConnectionCounter) -> SharedConnectionZone:
    assert config.shared is not None
    _for_this_loop()
    zone = _connection_zones.get(config)
    if zone is None:
        zone = _connection_zones[config] = SharedConnectionZone(config, _link(config.shared), local)
    zone.link.start()
    return zone
