"""The shared mapping the metrics live in: a row of slots per worker, and the retired row.

The master maps it before it forks the workers that count, as the peer table and the zones
(edgeproxy.process.shared, edgeproxy.limits.table). Each worker adds to its own row only,
so no lock is needed: one writer per row, and every slot is one aligned float64 store. A
scrape sums the rows in use.

A worker that exits, however it exits (kill -9 included), leaves its row as it was: the
master, when it reaps it, adds the row's counters to the retired row and clears it, so
nothing counted is lost and the sums stay monotonic. Its gauges (connections, requests in
flight) are dropped: they described a process that is gone. The master is the only writer
of the retired row and of SEQ; SEQ is odd while it folds or clears, and a scrape that saw
it odd or changed reads again (a seqlock), so no scrape sees a row counted twice or not at
all.
"""

from __future__ import annotations

import mmap
from typing import cast

from edgeproxy.metrics.layout import SeriesRegistry

CAPACITY = 8192  # slots per row: enough for about 1500 locations
ROWS = 512  # workers that count at once (old generations included); more count privately
# The header: the seqlock, and what the master itself counts. RELOAD_OK is 1.0 while the
# last reload (or the start) succeeded, LOADED_AT the Unix time of the last good one.
SEQ, RELOADS, RESTARTS, WORKERS, RELOAD_FAILURES, RELOAD_OK, LOADED_AT = range(7)
HEADER = 8


class MetricsStore:
    def __init__(self, capacity: int = CAPACITY, rows: int = ROWS) -> None:
        self.capacity = capacity
        self.rows = rows
        self.registry = SeriesRegistry(capacity)
        self._flags = HEADER  # one per row: 1.0 while a worker owns it
        self._retired = HEADER + rows
        self._first = self._retired + capacity
        size = 8 * (self._first + rows * capacity)
        # Pages are touched lazily: rows beyond the live workers cost no memory.
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.fields = memoryview(self._map).cast("d")

    def _row_start(self, row: int) -> int:
        return self._first + row * self.capacity

    # --- the worker's side ---

    def row(self, row: int) -> memoryview[float] | None:
        """The slots of worker table row `row` (None beyond ROWS: that worker counts in
        private memory, not scraped)."""
        if row >= self.rows:
            return None
        start = self._row_start(row)
        return self.fields[start : start + self.capacity]

    # --- the master's side ---

    def open_row(self, row: int) -> None:
        """Before forking a worker into `row`: a cleared row, counted from now on."""
        if row >= self.rows:
            return
        self._clear(self._row_start(row), self.capacity)
        self.fields[self._flags + row] = 1.0

    def fold(self, row: int) -> None:
        """The worker of `row` is reaped: its counters go to the retired row."""
        if row >= self.rows or not self.fields[self._flags + row]:
            return
        f = self.fields
        start = self._row_start(row)
        high = self.registry.high
        gauge = self.registry.gauge
        retired = self._retired
        self._begin()
        for i, value in enumerate(f[start : start + high].tolist()):
            if value and not gauge[i]:
                f[retired + i] += value
        self._clear(start, high)
        f[self._flags + row] = 0.0
        self._end()

    def clear_blocks(self, blocks: list[tuple[int, int]]) -> None:
        """Blocks the registry freed (no live config names them): zero them everywhere."""
        if not blocks:
            return
        self._begin()
        for base, size in blocks:
            self._clear(self._retired + base, size)
            for row in range(self.rows):
                self._clear(self._row_start(row) + base, size)
        self._end()

    def add(self, field: int, amount: float = 1.0) -> None:
        self.fields[field] += amount

    def set(self, field: int, value: float) -> None:
        if self.fields[field] != value:
            self.fields[field] = value

    def _begin(self) -> None:
        self.fields[SEQ] += 1.0  # odd: a fold is under way

    def _end(self) -> None:
        self.fields[SEQ] += 1.0

    def _clear(self, start: int, size: int) -> None:
        self.fields[start : start + size] = _zeros(size)

    # --- the scrape's side ---

    def header(self, field: int) -> float:
        return self.fields[field]

    def snapshot(self, consistent: bool = True) -> list[float] | None:
        """Every slot summed over the retired row and the rows in use; None when the
        master folded meanwhile (read again), unless not `consistent`."""
        f = self.fields
        seq = f[SEQ]
        if seq % 2 and consistent:
            return None
        high = self.registry.high
        total = cast(list[float], f[self._retired : self._retired + high].tolist())
        flags = f[self._flags : self._flags + self.rows].tolist()
        for row, used in enumerate(flags):
            if used:
                start = self._row_start(row)
                total = [
                    a + b for a, b in zip(total, f[start : start + high].tolist(), strict=True)
                ]
        if f[SEQ] != seq and consistent:
            return None
        return total


def _zeros(size: int) -> memoryview[float]:
    return memoryview(bytes(8 * size)).cast("d")
