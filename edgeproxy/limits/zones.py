"""The zones of an instance: each a SharedTable and its lock, made once by the master
before it forks (edgeproxy.process), found by every worker through `store()`.

A zone is kept by (name, kind, size) for as long as the master lives: a reload that keeps
a zone keeps its state (a new rate or burst applies to the state already there, as in
nginx); one that changes its size starts it afresh.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Final

from edgeproxy.config.model import ZoneConfig
from edgeproxy.limits.leaky import REJECT, Bucket, Outcome, take
from edgeproxy.limits.locks import LockMaker, ZoneLock
from edgeproxy.limits.table import FIELDS, SharedTable

log = logging.getLogger("edgeproxy.limits")

# Row fields after the tag: rate zones (excess, last), connection zones (pid, count).
EXCESS: Final = 1
LAST: Final = 2
STAMP: Final = 3
PID: Final = 1
COUNT: Final = 2

_monotonic: Final = time.monotonic  # a Final: no module attribute lookup per call


def now_ms() -> int:
    """CLOCK_MONOTONIC in milliseconds: one clock for every process of the machine."""
    return int(_monotonic() * 1000)


def tag_of(key: str) -> int:
    # Every worker is forked from the master, so they share its string hash seed.
    return hash(key) | 1  # never 0, which marks an empty row


class RateZone:
    """A request-rate zone: nginx's leaky bucket per key, in shared rows."""

    __slots__ = ("_acquire", "_release", "bucket", "config", "lock", "table")

    def __init__(self, config: ZoneConfig, table: SharedTable, lock: ZoneLock) -> None:
        self.config = config
        self.bucket = Bucket(config.rate, config.burst, config.delay, config.nodelay)
        self.table = table
        self.lock = lock
        # Bound once: a call per request without looking the method up.
        self._acquire: Callable[[], None] = lock.acquire
        self._release: Callable[[], None] = lock.release

    def take(self, key: str, now: int) -> Outcome:
        """Account one request of `key` at millisecond `now`."""
        tag = tag_of(key)
        table = self.table
        f = table.fields
        self._acquire()
        try:
            row, known = table.find(tag)
            base = row * FIELDS
            if known:
                outcome = take(self.bucket, f[base + EXCESS], f[base + LAST], now, True)
            else:
                outcome = take(self.bucket, 0, 0, now, False)
                f[base] = tag
            if outcome.kind != REJECT:
                f[base + EXCESS] = outcome.excess
                f[base + LAST] = outcome.last
            f[base + STAMP] = now
        finally:
            self._release()
        return outcome


class ConnectionZone:
    """A connection zone: per key, one row per worker process holding its connections.

    A key's count is the sum over its rows. Each worker changes only its own row, so the
    master can give back a dead worker's slots by clearing the rows of its pid
    (`ZoneStore.reclaim`), and a key's rows with a zero count are free for others.
    """

    __slots__ = ("config", "lock", "table")

    def __init__(self, config: ZoneConfig, table: SharedTable, lock: ZoneLock) -> None:
        self.config = config
        self.table = table
        self.lock = lock

    def acquire(self, key: str, now: int) -> int:
        """Count one more connection of `key` unless it has `connections` already: the
        count it had (>= the limit: refused, nothing counted), or -1 when no row is free
        (the zone is full: refused, as nginx does)."""
        tag = tag_of(key)
        pid = os.getpid()
        f = self.table.fields
        limit = self.config.connections
        self.lock.acquire()
        try:
            total = 0
            mine = free = -1
            for row in self.table.window(tag):
                base = row * FIELDS
                found = f[base]
                if found == tag:
                    total += f[base + COUNT]
                    if f[base + PID] == pid:
                        mine = row
                elif free < 0 and (found == 0 or f[base + COUNT] == 0):
                    free = row
            if total >= limit and not self.config.dry_run:
                return total
            if mine < 0:
                if free < 0:
                    return -1
                mine = free
                base = mine * FIELDS
                f[base], f[base + PID], f[base + COUNT] = tag, pid, 0
            base = mine * FIELDS
            f[base + COUNT] += 1
            f[base + STAMP] = now
            return total
        finally:
            self.lock.release()

    def release(self, key: str) -> None:
        tag = tag_of(key)
        pid = os.getpid()
        f = self.table.fields
        self.lock.acquire()
        try:
            for row in self.table.window(tag):
                base = row * FIELDS
                if f[base] == tag and f[base + PID] == pid:
                    if f[base + COUNT] > 0:
                        f[base + COUNT] -= 1
                    return
        finally:
            self.lock.release()

    def count(self, key: str) -> int:
        tag = tag_of(key)
        f = self.table.fields
        self.lock.acquire()
        try:
            return sum(
                f[row * FIELDS + COUNT] for row in self.table.window(tag) if f[row * FIELDS] == tag
            )
        finally:
            self.lock.release()


class ZoneStore:
    """Every zone of the instance, by (name, kind, size)."""

    def __init__(self, lock_kind: str | None = None) -> None:
        self._locks = LockMaker(lock_kind)
        self._tables: dict[tuple[str, str, int], tuple[SharedTable, ZoneLock]] = {}

    def prepare(self, zones: Iterable[ZoneConfig]) -> None:
        """Map the tables of `zones` (in the master, before forking the workers that use them)."""
        for zone in zones:
            self._table(zone)

    def _table(self, zone: ZoneConfig) -> tuple[SharedTable, ZoneLock]:
        ident = (zone.name, zone.kind, zone.size)
        found = self._tables.get(ident)
        if found is None:
            lock = self._locks.new()
            found = self._tables[ident] = (SharedTable(zone.size), lock)
        return found

    def rate(self, zone: ZoneConfig) -> RateZone:
        return RateZone(zone, *self._table(zone))

    def connections(self, zone: ZoneConfig) -> ConnectionZone:
        return ConnectionZone(zone, *self._table(zone))

    def reclaim(self, pid: int) -> int:
        """Give back the connection slots a dead worker held; how many keys had some. Its
        zone locks too, should it have died holding one (its pid may be reused now)."""
        cleared = 0
        for (_, kind, _), (table, lock) in self._tables.items():
            lock.force_release(pid)
            if kind != "connections":
                continue
            lock.acquire()
            try:
                cleared += table.clear_where(PID, pid)
            finally:
                lock.release()
        return cleared


_store: ZoneStore | None = None


def store() -> ZoneStore:
    """This process's store: the master's, inherited through fork, in a worker; made on
    first use elsewhere (a worker started in-process by a test)."""
    global _store
    if _store is None:
        _store = ZoneStore()
    return _store
