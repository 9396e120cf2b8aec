"""The compiled build's module lists and its choice of build (setup.py)."""

from __future__ import annotations

import os
import shutil
import sysconfig
import tomllib
from types import ModuleType

import pytest

from tests.packaging.setup_script import ROOT, load_setup_script

# What runs per request: these packages and modules are compiled or not, module by module.
REQUEST_PATH_PACKAGES = (
    "edgeproxy/http",
    "edgeproxy/logging",
    "edgeproxy/server",
    "edgeproxy/upstream",
)
REQUEST_PATH_MODULES = ("edgeproxy/timer.py",)


@pytest.fixture(scope="module")
def setup_script() -> ModuleType:
    return load_setup_script()


def request_path_modules() -> set[str]:
    modules = {
        path.relative_to(ROOT).as_posix()
        for package in REQUEST_PATH_PACKAGES
        for path in (ROOT / package).glob("*.py")
    }
    modules.update(REQUEST_PATH_MODULES)
    # An empty package marker has nothing to compile; one with code needs a decision too.
    return {m for m in modules if not (m.endswith("__init__.py") and not (ROOT / m).read_text())}


def test_every_request_path_module_is_compiled_or_says_why_not(setup_script: ModuleType) -> None:
    compiled, not_compiled = set(setup_script.COMPILED), set(setup_script.NOT_COMPILED)
    undecided = sorted(request_path_modules() - compiled - not_compiled)
    assert not undecided, (
        f"{undecided}: add each to COMPILED in setup.py if it runs per request, "
        "else to NOT_COMPILED with the reason"
    )
    assert not compiled & not_compiled
    assert all(reason.strip() for reason in setup_script.NOT_COMPILED.values())


def test_the_lists_name_existing_modules_once(setup_script: ModuleType) -> None:
    listed = [*setup_script.COMPILED, *setup_script.NOT_COMPILED]
    assert len(listed) == len(set(listed))
    assert [m for m in listed if not (ROOT / m).is_file()] == []
    assert list(setup_script.COMPILED) == sorted(setup_script.COMPILED)


def test_the_module_that_tells_the_build_kind_is_compiled(setup_script: ModuleType) -> None:
    # build_kind() (the start line, --version) judges the build by this module's file.
    assert "edgeproxy/server/connection.py" in setup_script.COMPILED


def test_the_build_type_checks_against_what_lint_sees() -> None:
    """mypyc type-checks in pip's isolated build environment: without the typed runtime
    dependencies and the yaml stubs there, it fails (yaml) or compiles other code than
    `make compile` does (h11, httptools, uvloop seen as Any)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build_requires = pyproject["build-system"]["requires"]
    for dependency in pyproject["project"]["dependencies"]:
        assert dependency in build_requires
    assert "types-PyYAML" in build_requires
    assert any(r.startswith("mypy==") for r in build_requires)  # pinned: see pyproject.toml


@pytest.mark.parametrize(
    ("argv", "builds"),
    [
        (["egg_info"], False),  # pip asks for metadata before it builds
        (["dist_info", "--output-dir", "x"], False),
        (["sdist", "-d", "dist"], False),
        (["editable_wheel", "--dist-dir", "x"], False),  # pip install -e: always pure
        (["bdist_wheel", "--dist-info-dir", "x"], True),
        (["build_ext", "--inplace"], True),  # make compile
    ],
)
def test_only_build_commands_compile(
    setup_script: ModuleType, argv: list[str], builds: bool
) -> None:
    assert setup_script.builds_extensions(argv) is builds


def test_compile_zero_is_pure_without_looking_for_a_compiler(
    setup_script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_probe() -> bool:
        raise AssertionError("EDGEPROXY_COMPILE=0 must not look for a compiler")

    monkeypatch.setattr(setup_script, "can_compile_extensions", no_probe)
    assert setup_script.want_compiled("0", building=True) is False
    assert setup_script.want_compiled(None, building=False) is False


def test_without_a_compiler_the_build_is_pure_with_a_one_line_warning(
    setup_script: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CC", "false")  # a compiler that fails, as a missing one does
    assert setup_script.want_compiled(None, building=True) is False
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "pure-Python build" in lines[0] and "warning" in lines[0]


def test_compile_one_fails_without_a_compiler(
    setup_script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "false")
    with pytest.raises(SystemExit, match="EDGEPROXY_COMPILE=1"):
        setup_script.want_compiled("1", building=True)


def test_an_unknown_setting_is_refused(setup_script: ModuleType) -> None:
    with pytest.raises(SystemExit, match="must be 0 or 1"):
        setup_script.want_compiled("yes", building=True)


def test_a_working_compiler_with_python_headers_is_found(setup_script: ModuleType) -> None:
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if shutil.which(compiler) is None or not os.path.exists(headers):
        pytest.skip("no C compiler or no Python headers here")
    assert setup_script.can_compile_extensions() is True


def test_the_c_extensions_are_built_with_the_compiled_build_and_shipped_in_the_sdist(
    setup_script: ModuleType,
) -> None:
    manifest = (ROOT / "MANIFEST.in").read_text().split()
    extensions = setup_script.c_extensions("3")
    assert [e.name for e in extensions] == list(setup_script.C_EXTENSIONS)
    for name, source in setup_script.C_EXTENSIONS.items():
        assert (ROOT / source).is_file()
        assert source in manifest  # sdist does not build, so it would leave the source out
        # The stub mypy and mypyc type-check the importer against.
        assert (ROOT / source).with_suffix(".pyi").is_file()
        assert name.replace(".", "/") == source.removesuffix(".c")
    assert "edgeproxy.http._fields" in setup_script.C_EXTENSIONS
    assert "edgeproxy.limits._spinlock" in setup_script.C_EXTENSIONS
    assert "edgeproxy.metrics._rowstats" in setup_script.C_EXTENSIONS
    assert "edgeproxy.upstream._stream" in setup_script.C_EXTENSIONS
