"""Fresh virtualenvs with edgeproxy installed from a copy of this checkout, as a user
installs it (test_install.py, test_deploy.py), with pip's build isolation. Slow (mypyc
builds): these tests run only under `make test-install`, once.

The C compiler runs at -O0 here (EDGEPROXY_MYPYC_OPT_LEVEL, several times faster to build):
these tests are about packaging; `make compile` builds -O3 and the suite runs on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.setup_script import ROOT, load_setup_script

install_tests = pytest.mark.skipif(
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


def metrics_recorder_kind(venv: Path) -> str:
    """Which metrics recorders the install makes: "c" (the C module built) or "shadow"."""
    code = "from edgeproxy.metrics.binding import recorder_kind; print(recorder_kind())"
    return run([venv / "bin" / "python", "-c", code], cwd=venv).stdout.strip()


def pip_install_checkout(base: Path) -> Path:
    """docs/deploy.md's step 2 (`python3 -m venv VENV; VENV/bin/pip install CHECKOUT`) in
    `base`: the virtualenv."""
    source = source_tree(base / "checkout")
    venv = fresh_venv(base / "venv")
    run([venv / "bin" / "pip", "install", source], cwd=base)
    return venv
