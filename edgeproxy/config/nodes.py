"""Typed readers over YAML nodes, so every value is checked where its line is still known.

The loader composes the file into nodes (not Python objects) and reads them with these
helpers (through the readers of schema.py); each failure is an `Invalid(node, key_path,
message)` that the loader turns into a ConfigError located at `file:line`.

A file is read to its end whatever it holds, so that one run reports every error: an
Invalid leaves out the value it is about (the key, the list item), `Problems` keeps it, and
reading goes on with the next value.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from types import TracebackType

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from edgeproxy.config.model import Address
from edgeproxy.config.units import parse_address, parse_duration, parse_size

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))

# Stateless for scalars: used only to turn `0x10`, `1_000`, `.5` etc. into numbers as YAML does.
_CONSTRUCT = SafeConstructor()


class Invalid(Exception):
    """A bad value at a node; `what` already starts with the key path.

    `depends_on` is the key path of another value this check needs (the upstream a
    proxy_pass names): when that value had an error of its own, this one is only its echo,
    and is not reported.
    """

    def __init__(self, node: Node, path: str, message: str, *, depends_on: str = "") -> None:
        super().__init__(message)
        self.line = node.start_mark.line + 1 if node.start_mark else 0
        self.column = node.start_mark.column if node.start_mark else 0
        self.path = path
        self.what = f"{path}: {message}" if path else message
        self.depends_on = depends_on


class Skipped(Exception):
    """A value left out because of errors inside it, which are in the Problems already (a
    block with a bad key is left out as a whole: its checks across keys would only echo)."""


def _within(path: str, outer: str) -> bool:
    return path == outer or path.startswith((outer + ".", outer + "["))


class Problems:
    """Every error found in one file so far: `found` to report, in the order found, and
    `echoes`, the errors of checks whose value they depend on had an error already."""

    def __init__(self) -> None:
        self.found: list[Invalid] = []
        self.echoes: list[Invalid] = []

    @property
    def count(self) -> int:
        """Every error, echoes included: each one left a value out."""
        return len(self.found) + len(self.echoes)

    def add(self, error: Invalid) -> None:
        echo = error.depends_on and self.failed(error.depends_on)
        (self.echoes if echo else self.found).append(error)

    def failed(self, path: str) -> bool:
        """Whether an error was found at `path`, within it, or at a value that holds it."""
        return any(
            _within(error.path, path) or (error.path and _within(path, error.path))
            for error in (*self.found, *self.echoes)
        )

    def collect(self) -> Problems:
        """`with problems.collect():` around the reading of one value: an error leaves the
        value out and is kept, and reading goes on after the `with`."""
        return self  # a plain context manager: a generator one costs more, once per key

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(error, Invalid):
            self.add(error)
            return True
        return isinstance(error, Skipped)  # its errors are kept already


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def describe(node: Node) -> str:
    """How a wrong value is shown in `expected X, got Y`."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == NULL:
        return "nothing"
    return repr(node.value) if node.tag == STR else str(node.value)  # 'abc' but 12


class Fields:
    """A YAML mapping checked for duplicate, unknown and not-yet-supported keys (`unsupported`
    maps each such key to its refusal). Each bad key goes to `problems` and is left out; the
    other keys are kept.

    `allowed=None` accepts any key (the mapping of upstream names). Keys are read as the
    text written, so `on:` is the key "on", not the boolean YAML 1.1 would make of it.
    """

    def __init__(
        self,
        node: Node,
        path: str,
        allowed: Collection[str] | None,
        problems: Problems,
        unsupported: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(node, MappingNode):
            raise Invalid(node, path, f"expected a mapping, got {describe(node)}")
        self.node, self.path = node, path
        self.keys: dict[str, Node] = {}
        self.values: dict[str, Node] = {}
        # known key -> the path of an unknown key that looks like a misspelling of it: that
        # key being "required" is the same mistake, and is not reported twice.
        self.misspelt: dict[str, str] = {}
        for key_node, value_node in node.value:
            with problems.collect():
                key = self._check_key(key_node, allowed, unsupported)
                self.keys[key], self.values[key] = key_node, value_node

    def _check_key(
        self, node: Node, allowed: Collection[str] | None, unsupported: Mapping[str, str] | None
    ) -> str:
        if not isinstance(node, ScalarNode) or node.tag == NULL:
            raise Invalid(node, self.path, f"keys must be words, got {describe(node)}")
        key = str(node.value)
        if key in self.keys:
            raise Invalid(node, self.sub(key), "duplicate key")
        if unsupported and key in unsupported:
            raise Invalid(node, self.sub(key), unsupported[key])
        if allowed is not None and key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            if near:
                self.misspelt.setdefault(near[0], self.sub(key))
                raise Invalid(node, self.sub(key), f"unknown key; did you mean {near[0]!r}?")
            raise Invalid(node, self.sub(key), "unknown key")
        return key

    def sub(self, key: str) -> str:
        return join(self.path, key)

    def get(self, key: str) -> Node | None:
        return self.values.get(key)

    def required(self, key: str) -> Node:
        if key not in self.values:
            misspelt = self.misspelt.get(key, "")
            raise Invalid(self.node, self.sub(key), "required", depends_on=misspelt)
        return self.values[key]

    def key_error(self, key: str, message: str) -> Invalid:
        return Invalid(self.keys[key], self.sub(key), message)


def items(node: Node, path: str, *, single_ok: bool = False) -> list[tuple[Node, str]]:
    """A list's items with their key paths; `single_ok` also takes one scalar as a list."""
    if single_ok and isinstance(node, ScalarNode) and node.tag != NULL:
        return [(node, path)]
    if not isinstance(node, SequenceNode):
        raise Invalid(node, path, f"expected a list, got {describe(node)}")
    return [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]


def nonempty_items(node: Node, path: str, *, single_ok: bool = False) -> list[tuple[Node, str]]:
    found = items(node, path, single_ok=single_ok)
    if not found:
        raise Invalid(node, path, "must not be empty")
    return found


def string(node: Node, path: str) -> str:
    if not isinstance(node, ScalarNode) or node.tag != STR:
        raise Invalid(node, path, f"expected a string, got {describe(node)}")
    return str(node.value)


def word(node: Node, path: str, choices: Collection[str]) -> str:
    # The written text, not the resolved value: YAML 1.1 reads a bare `off` as false.
    text = str(node.value) if isinstance(node, ScalarNode) else None
    if text is None or text not in choices:
        raise Invalid(node, path, f"expected one of {', '.join(choices)}, got {describe(node)}")
    return text


def integer(node: Node, path: str, minimum: int, maximum: int | None = None) -> int:
    if not isinstance(node, ScalarNode) or node.tag != INT:
        raise Invalid(node, path, f"expected an integer, got {describe(node)}")
    value = _CONSTRUCT.construct_yaml_int(node)
    if maximum is not None and not minimum <= value <= maximum:
        raise Invalid(node, path, f"must be {minimum}..{maximum}, got {value}")
    if value < minimum:
        raise Invalid(node, path, f"must be >= {minimum}, got {value}")
    return value


def boolean(node: Node, path: str) -> bool:
    if not isinstance(node, ScalarNode) or node.tag != BOOL:
        raise Invalid(node, path, f"expected true or false, got {describe(node)}")
    return _CONSTRUCT.construct_yaml_bool(node)


def size(node: Node, path: str, *, zero_ok: bool = False) -> int:
    """A size in bytes, written as `512` or `"64k"`."""
    if isinstance(node, ScalarNode) and node.tag in (INT, STR):
        raw: str | int = _CONSTRUCT.construct_yaml_int(node) if node.tag == INT else node.value
        try:
            value = parse_size(raw)
        except ValueError as e:
            raise Invalid(node, path, str(e)) from None
        if value == 0 and not zero_ok:
            raise Invalid(node, path, f"must be above zero, got {describe(node)}")
        return value
    raise Invalid(node, path, f"expected a size like 64k or 10m, got {describe(node)}")


def duration(node: Node, path: str, *, zero_ok: bool = False) -> float:
    """A duration in seconds, written as `30s`, `250ms` or a bare number of seconds."""
    if isinstance(node, ScalarNode) and node.tag in (INT, FLOAT, STR):
        raw: str | float = node.value
        if node.tag == INT:
            raw = _CONSTRUCT.construct_yaml_int(node)
        elif node.tag == FLOAT:
            raw = _CONSTRUCT.construct_yaml_float(node)
        try:
            value = parse_duration(raw)
        except ValueError as e:
            raise Invalid(node, path, str(e)) from None
        if value == 0 and not zero_ok:
            raise Invalid(node, path, f"must be above zero, got {describe(node)}")
        return value
    raise Invalid(node, path, f"expected a duration like 30s or 250ms, got {describe(node)}")


def address(node: Node, path: str, *, listen: bool) -> Address:
    try:
        return parse_address(string(node, path), listen=listen)
    except ValueError as e:
        raise Invalid(node, path, str(e)) from None
