"""Installing edgeproxy as the README says, in fresh virtualenvs with pip's build isolation:
`pip install .` gives the compiled build where a C compiler and Python's headers exist, the
pure-Python build with EDGEPROXY_COMPILE=0 or without a compiler (with a warning), and the
sdist builds a compiled wheel. Slow (mypyc builds): `make test-install` runs it, once.

The C compiler runs at -O0 here (EDGEPROXY_MYPYC_OPT_LEVEL, several times faster to build):
these tests are about packaging; `make compile` builds -O3 and the suite runs on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgeproxy import __version__
from tests.packaging.setup_script import ROOT, load_setup_script

pytestmark = pytest.mark.skipif(
    os.environ.get("EDGEPROXY_TEST_INSTALL") != "1",
    reason="installs in fresh virtualenvs and compiles: `make test-install`",
)

BUILD_TIMEOUT = 600  # a mypyc build on a busy machine; the usual is well under a minute
SOURCE_FILES = ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without what would steer the build or the imports."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"EDGEPROXY_COMPILE", "CC", "PYTHONPATH", "VIRTUAL_ENV"}
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["EDGEPROXY_MYPYC_OPT_LEVEL"] = "0"
    env.update(extra)
    return env


def run(args: list[str | Path], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=clean_env(**extra_env),
        capture_output=True, text=True, timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


def built_files(directory: str, names: list[str]) -> set[str]:
    """What a build leaves in the tree: caches, extension modules, mypyc's C files (not
    the C sources of setup.py's C_EXTENSIONS, which a clone holds)."""
    sources = {Path(s).name for s in load_setup_script().C_EXTENSIONS.values()}
    return {
        n for n in names
        if n == "__pycache__" or n.endswith(".so") or (n.endswith(".c") and n not in sources)
    }  # fmt: skip


def source_tree(dest: Path) -> Path:
    """A checkout of the package: what a clone holds, no built or cached files."""
    shutil.copytree(ROOT / "edgeproxy", dest / "edgeproxy", ignore=built_files)
    for name in SOURCE_FILES:
        shutil.copy2(ROOT / name, dest / name)
    return dest


def fresh_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", path], cwd=path.parent)
    return path


def edgeproxy_version(venv: Path) -> str:
    return run([venv / "bin" / "edgeproxy", "--version"], cwd=venv).stdout.strip()


def zone_lock_kind(venv: Path) -> str:
    """Which lock the installed zones take: "spin" (the C module built) or "record"."""
    code = "from edgeproxy.limits.locks import lock_kind; print(lock_kind())"
    return run([venv / "bin" / "python", "-c", code], cwd=venv).stdout.strip()


def test_pip_install_dot_gives_the_compiled_build(tmp_path: Path) -> None:
    source = source_tree(tmp_path / "checkout")
    venv = fresh_venv(tmp_path / "venv")
    run([venv / "bin" / "pip", "install", "."], cwd=source)
    assert edgeproxy_version(venv) == f"edgeproxy {__version__} (compiled)"
    assert zone_lock_kind(venv) == "spin"
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
    assert any(n.startswith("edgeproxy/limits/_spinlock.") and n.endswith(".so") for n in names)
    assert not any(n.startswith("edgeproxy/config/") and n.endswith(".so") for n in names)
    run([venv / "bin" / "pip", "install", wheel], cwd=tmp_path)
    assert edgeproxy_version(venv) == f"edgeproxy {__version__} (compiled)"


def test_compile_zero_gives_the_pure_build(tmp_path: Path) -> None:
    source = source_tree(tmp_path / "checkout")
    venv = fresh_venv(tmp_path / "venv")
    run([venv / "bin" / "pip", "install", "."], cwd=source, EDGEPROXY_COMPILE="0")
    assert edgeproxy_version(venv) == f"edgeproxy {__version__} (pure Python)"
    assert zone_lock_kind(venv) == "record"


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
