"""Optional compiled build: with EDGEPROXY_COMPILE=1, the modules every request runs through
are compiled to C extensions with mypyc (from the type hints they already carry).

    EDGEPROXY_COMPILE=1 pip install .        # production install, compiled
    make test                                  # runs the suite pure, then compiled

Everything else (config, CLI, master) stays pure Python: it runs once, not per request.
Project metadata lives in pyproject.toml; this file only adds the extension modules.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

# The per-request path: the wire, serving, upstreams, and the timer wheel they share.
COMPILED_PACKAGES = ("edgeproxy/http", "edgeproxy/server", "edgeproxy/upstream")
COMPILED_MODULES = ("edgeproxy/timer.py",)


def compiled_modules() -> list[str]:
    root = Path(__file__).resolve().parent
    return sorted(
        [
            str(path.relative_to(root))
            for package in COMPILED_PACKAGES
            for path in (root / package).glob("*.py")
            if path.name != "__init__.py"
        ]
        + list(COMPILED_MODULES)
    )


if __name__ == "__main__":
    ext_modules = []
    if os.environ.get("EDGEPROXY_COMPILE") == "1":
        from mypyc.build import mypycify

        ext_modules = mypycify(compiled_modules(), opt_level="3")
    setup(ext_modules=ext_modules)
