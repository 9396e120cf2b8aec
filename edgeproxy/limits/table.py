"""A bounded hash table of fixed rows in shared memory.

The master maps each zone's table before it forks (MAP_SHARED|MAP_ANONYMOUS), so every
worker of every generation updates the same bytes. A row is four int64 fields: a tag (the
key's hash, never 0; 0 = an empty row), two fields of the zone's own, and the millisecond
the key was last seen. A key lives within PROBE rows of its home row; when those are all
taken, the least recently seen of them gives way (nginx evicts its LRU too), so a zone
never holds more than its `size`, whatever the number of distinct keys.

Callers hold the zone's lock (edgeproxy.limits.locks) while they read and write its rows.
"""

from __future__ import annotations

import mmap
from typing import Final

FIELDS: Final = 4  # tag, a, b, stamp
ROW_BYTES: Final = 8 * FIELDS
PROBE: Final = 8  # rows searched for a key; LRU eviction happens among these


class SharedTable:
    """The rows of one zone. Call its methods with the zone's lock held."""

    __slots__ = ("_map", "fields", "rows")

    def __init__(self, size: int) -> None:
        self.rows = max(PROBE, size // ROW_BYTES)
        # Pages are touched lazily: an unused zone costs address space, not memory.
        self._map = mmap.mmap(-1, self.rows * ROW_BYTES, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.fields = memoryview(self._map).cast("q")

    def home(self, tag: int) -> int:
        return tag % self.rows

    def find(self, tag: int) -> tuple[int, bool]:
        """The row of `tag` and True, or the row it may take (an empty one, else the least
        recently seen of its probe window) and False."""
        f = self.fields
        rows = self.rows
        row = self.home(tag)
        free = -1
        oldest = -1
        oldest_stamp = 1 << 62
        for _ in range(PROBE):
            base = row * FIELDS
            found = f[base]
            if found == tag:
                return row, True
            if found == 0:
                if free < 0:
                    free = row
            elif f[base + 3] < oldest_stamp:
                oldest, oldest_stamp = row, f[base + 3]
            row += 1
            if row == rows:
                row = 0
        return (free if free >= 0 else oldest), False

    def window(self, tag: int) -> list[int]:
        """The rows a key of `tag` may occupy."""
        start = self.home(tag)
        return [(start + i) % self.rows for i in range(PROBE)]

    def used(self) -> int:
        """Rows holding a key (for tests and the error log)."""
        return sum(1 for tag in self.fields[0::FIELDS].tolist() if tag)

    def clear_where(self, field: int, value: int) -> int:
        """Empty every row whose `field` holds `value`; how many were."""
        f = self.fields
        cleared = 0
        for row, found in enumerate(f[field::FIELDS].tolist()):
            if found == value and f[row * FIELDS]:
                base = row * FIELDS
                for i in range(FIELDS):
                    f[base + i] = 0
                cleared += 1
        return cleared
