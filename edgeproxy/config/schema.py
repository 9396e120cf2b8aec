"""How config keys are declared: one row per key, one table (a Block) per mapping.

The tables: TOP, ERROR_LOG, ACCESS_LOG in loader.py; UPSTREAM, PEER in upstreams.py; HTTP,
SERVER, LISTEN, LOCATION, RETURN in servers.py.

A block lists every key its mapping may hold, in the order the values are read:

    Key(name, reader)            a supported key: the reader parses and checks its value
    Key(name, reader, required=True)
    Later(name, FEATURE)         a key of the contract that a later release implements:
                                 refused at its line, "not supported yet (... in a later release)"
    OneOf(keys, missing, extra)  exactly one of these keys (checked before any value is read)

Any other key is refused as unknown. A key that is absent takes the default of its field in
model.py, which stays the one place for defaults (and their precedents). So adding a key is
a field in model.py, a row in its block's table, and the code that uses it (a test checks
that each table and its model name the same keys).

A reader is called as reader(node, key_path, scope) and raises Invalid for a bad value.
`scope` maps the keys read before it, in its block and in the blocks around it, to their
values (a location's proxy_pass looks up the upstream names read at the top).

One run reports every error of a file: a block reads all its keys even after a bad one,
keeping each error in `scope.problems`, then is left out as a whole (Skipped) if any was
found. A reader that reads several values of its own (list items, named pools) does the
same with `read_each` or `scope.problems.collect()`. A check that needs a value read
elsewhere names it in `Invalid(..., depends_on=key_path)`, so that an error there is not
echoed here.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Collection, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from yaml.nodes import Node

from edgeproxy.config import nodes
from edgeproxy.config.nodes import Fields, Invalid, Problems, Skipped

T = TypeVar("T")


class Scope(ChainMap[str, Any]):
    """The values read so far (see the module docstring), and the problems found so far."""

    def __init__(self, *maps: MutableMapping[str, Any], problems: Problems | None = None) -> None:
        super().__init__(*maps)
        self.problems = Problems() if problems is None else problems

    def within(self, values: MutableMapping[str, Any]) -> Scope:
        """The scope of a nested block: its own values first, then those around it."""
        return Scope(values, *self.maps, problems=self.problems)


Reader = Callable[[Node, str, Scope], Any]

LATER = "not supported yet"

# What a later release brings, in the words of its refusal: "not supported yet (X in a later
# release)". One line per feature; the tables say which keys wait for which.


def later(feature: str) -> str:
    return f"{LATER} ({feature} in a later release)"


@dataclass(frozen=True, slots=True)
class Key:
    """A supported key and the reader of its value."""

    name: str
    read: Reader
    required: bool = False


@dataclass(frozen=True, slots=True)
class Later:
    """A key of the contract that a later release implements; refused at its line."""

    name: str
    feature: str


@dataclass(frozen=True, slots=True)
class OneOf:
    """Exactly one of `keys`: `missing` when none is given; `extra` (with `{}` for the key
    given first) at the second one."""

    keys: tuple[str, ...]
    missing: str
    extra: str

    def check(self, fields: Fields) -> None:
        present = [key for key in fields.values if key in self.keys]
        if not present:
            misspelt = next((fields.misspelt[k] for k in self.keys if k in fields.misspelt), "")
            raise Invalid(fields.node, fields.path, self.missing, depends_on=misspelt)
        if len(present) > 1:
            raise fields.key_error(present[1], self.extra.format(present[0]))


Row = Key | Later | OneOf


class Block:
    """The table of one kind of mapping (see the module docstring)."""

    rows: tuple[Row, ...]

    def __init__(self, *rows: Row | Block) -> None:
        # A block may include another's rows: a server takes every http key.
        flat: list[Row] = []
        for row in rows:
            flat.extend(row.rows if isinstance(row, Block) else (row,))
        self.rows = tuple(flat)
        names = [row.name for row in self.rows if not isinstance(row, OneOf)]
        if len(set(names)) != len(names):
            raise ValueError(f"a key is declared twice: {sorted(names)}")
        self.keys = tuple(row for row in self.rows if isinstance(row, Key))
        self.supported = tuple(key.name for key in self.keys)
        self.later = {row.name: later(row.feature) for row in self.rows if isinstance(row, Later)}
        self.groups = tuple(row for row in self.rows if isinstance(row, OneOf))

    def read(self, node: Node, path: str, scope: Scope) -> Got:
        """The block's values; Skipped (its errors kept in scope.problems) if any is bad."""
        problems = scope.problems
        count_before = problems.count
        fields = Fields(node, path, self.supported, problems, self.later)
        for group in self.groups:
            with problems.collect():
                group.check(fields)
        values: dict[str, Any] = {}
        inner = scope.within(values)
        for key in self.keys:
            if key.required or key.name in fields.values:
                with problems.collect():
                    value = fields.required(key.name)
                    values[key.name] = key.read(value, fields.sub(key.name), inner)
        if problems.count > count_before:
            raise Skipped
        return Got(fields, values)


@dataclass(frozen=True, slots=True)
class Got:
    """A block as read: the values of the keys present, and where each one was written
    (for the checks that involve several keys)."""

    fields: Fields
    values: dict[str, Any]

    @property
    def path(self) -> str:
        return self.fields.path

    def sub(self, key: str) -> str:
        return self.fields.sub(key)

    def node_of(self, key: str) -> Node:
        return self.fields.values[key]


@dataclass(frozen=True, slots=True)
class Section(Generic[T]):
    """A nested block whose keys are exactly `model`'s fields: read into a `model`."""

    block: Block
    model: Callable[..., T]

    def __call__(self, node: Node, path: str, scope: Scope) -> T:
        return self.model(**self.block.read(node, path, scope).values)


def read_each(
    pairs: Iterable[tuple[Node, str]], read: Callable[[Node, str], T], scope: Scope
) -> list[T]:
    """read(node, path) for each item of a list. An item with an error does not stop the
    ones after it from being read; the list is Skipped at the end if any had one."""
    problems = scope.problems
    count_before = problems.count
    found = []
    for node, path in pairs:
        with problems.collect():
            found.append(read(node, path))
    if problems.count > count_before:
        raise Skipped
    return found


def read_top(block: Block, node: Node, scope: Scope) -> Got:
    """The whole file's mapping, read with an empty scope (whose problems it fills)."""
    return block.read(node, "", scope)


# --- readers of plain values (nodes.py does the parsing and says what is wrong) ----------


@dataclass(frozen=True, slots=True)
class Text:
    def __call__(self, node: Node, path: str, scope: Scope) -> str:
        return nodes.string(node, path)


@dataclass(frozen=True, slots=True)
class Flag:
    def __call__(self, node: Node, path: str, scope: Scope) -> bool:
        return nodes.boolean(node, path)


@dataclass(frozen=True, slots=True)
class Integer:
    minimum: int
    maximum: int | None = None

    def __call__(self, node: Node, path: str, scope: Scope) -> int:
        return nodes.integer(node, path, self.minimum, self.maximum)


@dataclass(frozen=True, slots=True)
class Size:
    """Bytes, written `512` or `64k`; 0 only when `zero_ok`."""

    zero_ok: bool = False

    def __call__(self, node: Node, path: str, scope: Scope) -> int:
        return nodes.size(node, path, zero_ok=self.zero_ok)


@dataclass(frozen=True, slots=True)
class Duration:
    """Seconds, written `30s`, `250ms` or a number; 0 only when `zero_ok`."""

    zero_ok: bool = False

    def __call__(self, node: Node, path: str, scope: Scope) -> float:
        return nodes.duration(node, path, zero_ok=self.zero_ok)


@dataclass(frozen=True, slots=True)
class Choice:
    """One word of `words`; those in `later` are contract values a later release implements."""

    words: tuple[str, ...]
    later: Mapping[str, str] = field(default_factory=dict)  # word -> its feature

    def __call__(self, node: Node, path: str, scope: Scope) -> str:
        word = nodes.word(node, path, self.words)
        if word in self.later:
            raise Invalid(node, path, later(self.later[word]))
        return word


def names_in(scope: Scope, key: str) -> Collection[str]:
    """The names of a mapping read earlier (the upstreams a proxy_pass may name)."""
    found = scope.get(key)
    return found if isinstance(found, Mapping) else ()
