"""Installing edgeproxy as the README says, in fresh virtualenvs with pip's build isolation:
`pip install .` gives the compiled build where a C compiler and Python's headers exist, the
pure-Python build with EDGEPROXY_COMPILE=0 or without a compiler (with a warning), and the
sdist builds a compiled wheel. Slow (mypyc builds): `make test-install` runs it, once."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from edgeproxy import __version__
from tests.packaging.setup_script import ROOT
from tests.packaging.venvs import (
    edgeproxy_version,
    fresh_venv,
    install_tests,
    metrics_recorder_kind,
    run,
    source_tree,
    zone_lock_kind,
)

pytestmark = install_tests


def test_pip_install_of_a_checkout_gives_the_compiled_build(compiled_install: Path) -> None:
    venv = compiled_install
    assert edgeproxy_version(venv) == f"edgeproxy {__version__} (compiled)"
    assert zone_lock_kind(venv) == "spin"
    assert metrics_recorder_kind(venv) == "c"
    check = run([venv / "bin" / "edgeproxy", "-t", "-c", ROOT / "conf" / "proxy.yaml"], venv)
    assert check.stdout.strip() == "configuration ok"


def test_the_sdist_builds_a_compiled_wheel(tmp_path: Path) -> None:
    source = source_tree(tmp_path / "checkout")
    dist = tmp_path / "dist"
    run([sys.executable, "setup.py", "-q", "sdist", "-d", dist], cwd=source)
    (sdist,) = dist.glob("edgeproxy-*.tar.gz")
    venv = fresh_venv(tmp_path / "venv")
    run([venv / "bin" / "pip", "wheel", "--no-deps", "-w", dist, sdist], cwd=tmp_path)
    (wheel,) = dist.glob("edgeproxy-*.whl")
    assert "-py3-none-any" not in wheel.name  # a platform wheel: it holds extensions
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("edgeproxy/server/connection.") and n.endswith(".so") for n in names)
    assert any(n.startswith("edgeproxy/http/_fields.") and n.endswith(".so") for n in names)
    assert any(n.startswith("edgeproxy/limits/_spinlock.") and n.endswith(".so") for n in names)
    assert any(n.startswith("edgeproxy/metrics/_rowstats.") and n.endswith(".so") for n in names)
    assert any(n.startswith("edgeproxy/upstream/_stream.") and n.endswith(".so") for n in names)
    assert not any(n.startswith("edgeproxy/config/") and n.endswith(".so") for n in names)
    run([venv / "bin" / "pip", "install", wheel], cwd=tmp_path)
    assert edgeproxy_version(venv) == f"edgeproxy {__version__} (compiled)"


def test_compile_zero_gives_the_pure_build(tmp_path: Path) -> None:
    source = source_tree(tmp_path / "checkout")
    venv = fresh_venv(tmp_path / "venv")
    run([venv / "bin" / "pip", "install", "."], cwd=source, EDGEPROXY_COMPILE="0")
    assert edgeproxy_version(venv) == f"edgeproxy {__version__} (pure Python)"
    assert zone_lock_kind(venv) == "record"
    assert metrics_recorder_kind(venv) == "shadow"


def test_without_a_c_compiler_the_install_is_pure_and_says_so(tmp_path: Path) -> None:
    source = source_tree(tmp_path / "checkout")
    venv = fresh_venv(tmp_path / "venv")
    # CC=false: a compiler that fails, as a missing one or missing headers do. pip shows
    # the build's own output only with -v, on its stderr.
    result = run([venv / "bin" / "pip", "install", "-v", "."], cwd=source, CC="false")
    warnings = [line for line in result.stderr.splitlines() if "edgeproxy: warning" in line]
    assert len(warnings) == 1, result.stderr
    assert "pure-Python build" in warnings[0]
    assert edgeproxy_version(venv) == f"edgeproxy {__version__} (pure Python)"
    assert zone_lock_kind(venv) == "record"
    assert metrics_recorder_kind(venv) == "shadow"
