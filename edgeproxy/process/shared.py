"""State shared by the master and every worker: one anonymous shared mapping.

The master maps it before it forks anything, so every worker of every generation sees the
same bytes, and it outlives any one worker. It holds float64 fields only, and no lock: a
worker killed in the middle of an update cannot leave anything held. Every field is one
aligned 8-byte store (a single instruction on the 64-bit machines we run on), so a reader
never sees half a value; what concurrent writers can do is overwrite each other, and each
table below says why that is harmless for it.

- The worker table: one row per live worker process (pid, heartbeat, ready). Only that
  worker writes its row; the master clears a row before handing it to a new worker.
- The peer table: one row per (upstream name, peer address), the passive health of
  edgeproxy.upstream.peer (fails, first_fail_at, failed_until). Any worker may write; a
  lost update costs at most one extra failure before a peer is marked, and two workers
  marking at once write nearly the same `failed_until`. Rows are keyed by name + address,
  so a reload keeps the state of every peer it keeps; a row is cleared and reused only once
  no live worker's config names it any more.
  The row's last field, probed_down, is the verdict of the active health checks: only the
  health prober process (edgeproxy.process.prober) writes it, and the workers read it.

Beside the mapping, a lock file (edgeproxy.upstream.slots) counts each peer's requests in
flight for `max_conns`, one byte-range lock per request, per peer row.
"""

from __future__ import annotations

import logging
import mmap
import time
from collections.abc import Iterable

from edgeproxy.config.model import Address, Config
from edgeproxy.metrics.store import MetricsStore
from edgeproxy.upstream.peer import HEALTH_FIELDS
from edgeproxy.upstream.slots import PeerSlots, slot_file

log = logging.getLogger("edgeproxy.master")

WORKER_ROWS = 1024  # live worker processes, old generations included
PEER_ROWS = 8192  # distinct (upstream, address) pairs; more fall back to per-worker state
PID, HEARTBEAT, READY = range(3)
WORKER_FIELDS = 4  # one spare, so a row is 32 bytes


def _key(upstream: str, address: Address) -> str:
    return f"{upstream}\0{address}"


class WorkerTable:
    """Heartbeats and readiness: each worker writes its own row, the master reads them all."""

    def __init__(self, fields: memoryview[float], rows: int) -> None:
        self._fields = fields
        self._free = list(range(rows - 1, -1, -1))  # master-side bookkeeping (pop -> row 0 first)

    def allocate(self) -> int | None:
        """A cleared row for a worker about to be forked, or None when all are in use."""
        if not self._free:
            return None
        row = self._free.pop()
        self.clear(row)
        return row

    def release(self, row: int) -> None:
        self.clear(row)
        self._free.append(row)

    def clear(self, row: int) -> None:
        base = row * WORKER_FIELDS
        for i in range(WORKER_FIELDS):
            self._fields[base + i] = 0.0

    # --- written by the worker that owns the row ---

    def beat(self, row: int, pid: int) -> None:
        base = row * WORKER_FIELDS
        self._fields[base + PID] = pid
        self._fields[base + HEARTBEAT] = time.monotonic()  # CLOCK_MONOTONIC: one per machine

    def set_ready(self, row: int) -> None:
        self._fields[row * WORKER_FIELDS + READY] = 1.0

    # --- read by the master ---

    def heartbeat(self, row: int) -> float:
        """The worker's last heartbeat (monotonic), 0.0 before the first."""
        return self._fields[row * WORKER_FIELDS + HEARTBEAT]

    def ready(self, row: int) -> bool:
        return self._fields[row * WORKER_FIELDS + READY] != 0.0


class PeerTable:
    """Peer health rows keyed by upstream name + address.

    The key -> row map lives in the master's memory and reaches each worker through the
    fork, so workers never search the shared bytes: they get their rows at startup.
    """

    def __init__(self, fields: memoryview[float], rows: int) -> None:
        self._fields = fields
        self._rows: dict[str, int] = {}
        self._free = list(range(rows - 1, -1, -1))
        self._warned = False

    def __len__(self) -> int:
        return len(self._rows)

    def assign(self, config: Config) -> None:
        """Give every peer of `config` a row, keeping the rows (and state) of known peers."""
        for upstream in config.upstreams.values():
            for server in upstream.servers:
                key = _key(upstream.name, server.address)
                if key in self._rows:
                    continue
                if not self._free:
                    if not self._warned:
                        log.warning("peer table full: peers beyond %d keep per-worker state",
                                    len(self._rows))  # fmt: skip
                        self._warned = True
                    continue
                row = self._free.pop()
                self._clear(row)
                self._rows[key] = row

    def retain(self, configs: Iterable[Config]) -> None:
        """Free the rows of peers that none of `configs` (those of live workers) names."""
        keep = {
            _key(upstream.name, server.address)
            for config in configs
            for upstream in config.upstreams.values()
            for server in upstream.servers
        }
        for key in [k for k in self._rows if k not in keep]:
            row = self._rows.pop(key)
            self._clear(row)
            self._free.append(row)

    def row(self, upstream: str, address: Address) -> int | None:
        return self._rows.get(_key(upstream, address))

    def view(self, upstream: str, address: Address) -> memoryview[float] | None:
        """The health row of a peer (a writable view into shared memory), None if it has none."""
        row = self._rows.get(_key(upstream, address))
        if row is None:
            return None
        return self._fields[row * HEALTH_FIELDS : (row + 1) * HEALTH_FIELDS]

    def _clear(self, row: int) -> None:
        for i in range(row * HEALTH_FIELDS, (row + 1) * HEALTH_FIELDS):
            self._fields[i] = 0.0


class SharedState:
    """The mapping and its two tables. Create it in the master before the first fork."""

    def __init__(self, worker_rows: int = WORKER_ROWS, peer_rows: int = PEER_ROWS) -> None:
        worker_size = worker_rows * WORKER_FIELDS
        size = 8 * (worker_size + peer_rows * HEALTH_FIELDS)
        # MAP_SHARED|MAP_ANONYMOUS: no file, no name to clean up; pages are touched lazily.
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        fields = memoryview(self._map).cast("d")
        self.workers = WorkerTable(fields[:worker_size], worker_rows)
        self.peers = PeerTable(fields[worker_size:], peer_rows)
        # max_conns across workers: byte-range locks, one range per peer row (slots.py).
        self.slot_fd = slot_file()
        # The metrics' rows: mapped by the master once a config asks for metrics, before
        # that config's workers are forked (edgeproxy.process.exporter).
        self.metrics: MetricsStore | None = None

    def peer_slots(self, upstream: str, address: Address) -> PeerSlots | None:
        row = self.peers.row(upstream, address)
        return None if row is None else PeerSlots(self.slot_fd, row)
