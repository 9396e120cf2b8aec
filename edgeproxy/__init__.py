"""edgeproxy: an asyncio reverse proxy and load balancer for Python web deployments."""

from __future__ import annotations

__version__ = "0.1.0"

PURE_BUILD_WARNING = (
    "this is the pure-Python build, slower than the compiled one: reinstall where a C "
    "compiler and Python's headers exist (README, Compiled build)"
)


def build_kind() -> str:
    """ "compiled" when the request path runs as mypyc-built extensions (see setup.py)."""
    from edgeproxy.server import connection

    return "pure Python" if connection.__file__.endswith(".py") else "compiled"


def warn_if_pure_build() -> None:
    """At start: a pure-Python build is a working but slower install, so say it once."""
    # Imported here: at module level, the submodule edgeproxy.logging would shadow the name.
    import logging

    if build_kind() != "compiled":
        logging.getLogger("edgeproxy").warning(PURE_BUILD_WARNING)
