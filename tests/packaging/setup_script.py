"""setup.py, imported as a module (its `setup()` call only runs as a script)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_setup_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("edgeproxy_setup_script", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
