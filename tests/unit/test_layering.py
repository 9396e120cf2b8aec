"""The import graph of edgeproxy: no cycles, and the layers of DESIGN.md.

A cycle counts whatever kind of import closes it: at the top of a module, inside a function,
or under `if TYPE_CHECKING:` (a type-only cycle still ties two modules into one unit, and a
compiled build sees those imports). The checker reads the source with `ast`, so it needs
nothing beyond this repository, and it is tested below on small packages of its own.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "edgeproxy"

# (importer, forbidden): no module of the first package may import (directly or through
# other modules) any module of the second. A package that does not exist yet breaks nothing.
LAYERS = (
    ("edgeproxy.http", "edgeproxy.server"),
    ("edgeproxy.http", "edgeproxy.upstream"),
    ("edgeproxy.upstream", "edgeproxy.server"),
    ("edgeproxy.logging", "edgeproxy.server"),
    ("edgeproxy.limits", "edgeproxy.server"),
    ("edgeproxy.config", "edgeproxy.server"),
    ("edgeproxy.config", "edgeproxy.upstream"),
    ("edgeproxy.config", "edgeproxy.http"),
    ("edgeproxy.config", "edgeproxy.process"),
    ("edgeproxy.metrics", "edgeproxy.server"),
    ("edgeproxy.metrics", "edgeproxy.upstream"),
    ("edgeproxy.metrics", "edgeproxy.process"),
)

ImportGraph = dict[str, set[str]]


# --- the checker ---


def package_modules(package_dir: Path) -> dict[str, Path]:
    """Every module under `package_dir` by dotted name; a package is named by its __init__."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package_dir.name, *parts))] = path
    return modules


def _known_prefix(dotted: str, modules: Mapping[str, Path]) -> str | None:
    """The longest leading part of `dotted` that is one of `modules` (None: not ours)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _from_base(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a `from ... import` statement reads from."""
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    anchor = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{anchor}.{node.module}" if node.module else anchor


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The modules of ours that `module` imports anywhere in its source.

    `from a import b` counts `a.b` when that is a module, else `a` (b is a name defined in a).
    The parent packages an import also runs are not counted: a package's __init__ that
    re-exports its modules would otherwise tie every one of them into a cycle.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, package)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        found.update(known for target in targets if (known := _known_prefix(target, modules)))
    return found


def import_graph(package_dir: Path) -> ImportGraph:
    modules = package_modules(package_dir)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def import_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Each cycle as its sorted modules: a strongly connected component of more than one
    module, or a module that imports itself (Tarjan's algorithm)."""
    edges = {node: sorted(targets) for node, targets in graph.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, []):
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], order[target])
        if low[node] != order[node]:
            return
        component = []
        while True:
            member = stack.pop()
            on_stack.discard(member)
            component.append(member)
            if member == node:
                break
        if len(component) > 1 or node in edges[node]:
            cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in order:
            visit(node)
    return sorted(cycles)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def import_chain(graph: Mapping[str, Iterable[str]], start: str, target: str) -> list[str]:
    """The shortest chain of imports from `start` to a module of `target` ([] if none)."""
    came_from: dict[str, str] = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node != start and _within(node, target):
            chain = [node]
            while chain[-1] != start:
                chain.append(came_from[chain[-1]])
            return chain[::-1]
        for imported in sorted(graph.get(node, ())):
            if imported not in came_from:
                came_from[imported] = node
                queue.append(imported)
    return []


def broken_layers(
    graph: Mapping[str, Iterable[str]], layers: Iterable[tuple[str, str]]
) -> list[str]:
    """One line per module that reaches a package its layer must not import."""
    broken = []
    for importer, forbidden in layers:
        for module in sorted(graph):
            if _within(module, importer) and (chain := import_chain(graph, module, forbidden)):
                broken.append(f"{importer} must not import {forbidden}: {' -> '.join(chain)}")
    return broken


# --- edgeproxy itself ---


def test_edgeproxy_has_no_import_cycles() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 20, f"too few modules found under {PACKAGE}: {sorted(graph)}"
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_edgeproxy_layers_import_downwards_only() -> None:
    broken = broken_layers(import_graph(PACKAGE), LAYERS)
    assert not broken, "broken layering:\n" + "\n".join(broken)


# --- the checker, on small packages written for it ---


def write_package(root: Path, files: dict[str, str]) -> Path:
    """A package `pkg` under `root` from {relative path: source}; __init__.py files added."""
    package = root / "pkg"
    for relative, source in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    for directory in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return package


def test_a_clean_package_passes(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "base.py": "import os\nVALUE = 1\n",
            "http/codec.py": "from pkg.base import VALUE\nfrom . import events\n",
            "http/events.py": "from ..base import VALUE\n",
            "server/worker.py": "import pkg.http.codec\nfrom pkg.http import events\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg.http.codec"] == {"pkg.base", "pkg.http.events"}
    assert graph["pkg.http.events"] == {"pkg.base"}
    assert graph["pkg.server.worker"] == {"pkg.http.codec", "pkg.http.events"}
    assert import_cycles(graph) == []
    assert broken_layers(graph, [("pkg.http", "pkg.server")]) == []


def test_a_cycle_through_three_modules_is_found(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "a.py": "from pkg import b\n",
            "b.py": "import pkg.c\n",
            "c.py": "from .a import NAME\n",
            "d.py": "from pkg import a\n",  # imports the cycle, is not part of it
        },
    )
    assert import_cycles(import_graph(package)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_a_type_checking_cycle_is_found(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "worker.py": "from pkg.connection import Connection\n",
            "connection.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from pkg.worker import Worker\n"
            ),
        },
    )
    assert import_cycles(import_graph(package)) == [["pkg.connection", "pkg.worker"]]


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "master.py": "def reload():\n    from pkg import reload as r\n    return r\n",
            "reload.py": "from pkg.master import Master\n",
        },
    )
    assert import_cycles(import_graph(package)) == [["pkg.master", "pkg.reload"]]


def test_two_cycles_and_a_self_import_are_each_listed(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "a.py": "import pkg.b\n",
            "b.py": "import pkg.a\n",
            "c.py": "from pkg.d import X\n",
            "d.py": "from pkg.c import Y\n",
            "e.py": "import pkg.e\n",
        },
    )
    assert import_cycles(import_graph(package)) == [
        ["pkg.a", "pkg.b"],
        ["pkg.c", "pkg.d"],
        ["pkg.e"],
    ]


def test_a_broken_layer_is_found_directly_and_through_another_module(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "timer.py": "from pkg.server.worker import Worker\n",
            "upstream/pool.py": "from pkg.timer import Timer\n",
            "upstream/peer.py": "from pkg.server import worker\n",
            "server/worker.py": "",
        },
    )
    assert broken_layers(import_graph(package), [("pkg.upstream", "pkg.server")]) == [
        "pkg.upstream must not import pkg.server: pkg.upstream.peer -> pkg.server.worker",
        "pkg.upstream must not import pkg.server: "
        "pkg.upstream.pool -> pkg.timer -> pkg.server.worker",
    ]
