"""The compiled build: the modules every request runs through are compiled to C extensions
with mypyc, from the type hints they already carry. Compiled is the default wherever it can
be built, so that nobody installing edgeproxy has to know about mypyc:

    pip install .                        # compiled when a C compiler and Python's headers
                                         # work, else pure Python with a one-line warning
    EDGEPROXY_COMPILE=0 pip install .    # pure Python
    EDGEPROXY_COMPILE=1 pip install .    # compiled, or fail (CI, packagers)
    pip install -e .                     # always pure: the work tree never holds built modules

Only the modules in COMPILED are compiled (black's build is the model): what is not on the
request path (config, CLI, master, worker start-up) runs once and stays Python. Every module
of the request-path packages is in COMPILED or in NOT_COMPILED with its reason, so a new
module forces a decision (tests/packaging/test_compiled_modules.py). The few modules written
in C (C_EXTENSIONS) are built with them, and each has a Python fallback for a pure build.
Project metadata and the build requirements live in pyproject.toml; this file only adds the
extension modules.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The request path, file by file. Keep it sorted.
COMPILED = (
    "edgeproxy/http/date.py",
    "edgeproxy/http/events.py",
    "edgeproxy/http/framing.py",
    "edgeproxy/http/h11_codec.py",
    "edgeproxy/http/h11_heads.py",
    "edgeproxy/http/headers.py",
    "edgeproxy/http/httptools_codec.py",
    "edgeproxy/http/httptools_response.py",
    "edgeproxy/http/reader.py",
    "edgeproxy/http/response_reader.py",
    "edgeproxy/http/rules.py",
    "edgeproxy/http/status.py",
    "edgeproxy/limits/access.py",
    "edgeproxy/limits/keys.py",
    "edgeproxy/limits/leaky.py",
    "edgeproxy/limits/table.py",
    "edgeproxy/limits/zones.py",
    "edgeproxy/logging/access.py",  # each request's line, and the writer thread
    "edgeproxy/logging/fields.py",
    "edgeproxy/logging/formats.py",
    "edgeproxy/logging/templates.py",
    "edgeproxy/metrics/recorder.py",
    "edgeproxy/server/body.py",
    "edgeproxy/server/body_writers.py",
    "edgeproxy/server/client_ip.py",
    "edgeproxy/server/connection.py",
    "edgeproxy/server/limit_phases.py",
    "edgeproxy/server/phases.py",
    "edgeproxy/server/proxy.py",
    "edgeproxy/server/proxy_relay.py",
    "edgeproxy/server/request.py",
    "edgeproxy/server/request_id.py",
    "edgeproxy/server/response.py",
    "edgeproxy/server/return_handler.py",
    "edgeproxy/server/router.py",
    "edgeproxy/server/services.py",
    "edgeproxy/server/static/accel.py",
    "edgeproxy/server/static/encodings.py",
    "edgeproxy/server/static/files.py",
    "edgeproxy/server/static/handler.py",
    "edgeproxy/server/static/listing.py",
    "edgeproxy/server/static/lookup.py",
    "edgeproxy/server/static/paths.py",
    "edgeproxy/server/static/responder.py",
    "edgeproxy/server/static/types.py",
    "edgeproxy/server/static/validators.py",
    "edgeproxy/server/tunnel.py",  # every byte of every WebSocket goes through it
    "edgeproxy/timer.py",
    "edgeproxy/upstream/balancers.py",
    "edgeproxy/upstream/connect.py",
    "edgeproxy/upstream/connection.py",
    "edgeproxy/upstream/http1.py",
    "edgeproxy/upstream/peer.py",
    "edgeproxy/upstream/pool.py",
    "edgeproxy/upstream/slots.py",
    "edgeproxy/upstream/uwsgi.py",
)

# Modules of the same packages that stay Python, and why. Empty __init__.py files need no
# entry.
NOT_COMPILED = {
    "edgeproxy/http/codec.py": "interfaces, one exception class and the codec table, "
    "read once per config: nothing here runs per request",
    "edgeproxy/http/interface.py": "the codec interfaces and MalformedResponse: no code runs "
    "per request",
    "edgeproxy/http/logtext.py": "formats bytes for error-log lines: runs only when one is logged",
    "edgeproxy/http/proxy_protocol.py": "runs once per connection, and only on listen "
    "addresses with proxy_protocol",
    "edgeproxy/limits/counters.py": "interfaces only",
    "edgeproxy/limits/locks.py": "makes each zone's lock once, in the master; per request "
    "the compiled zone calls the lock's acquire and release, C functions of _spinlock in "
    "a compiled build",
    "edgeproxy/limits/redis_scripts.py": "the Lua text of the scripts Redis runs",
    "edgeproxy/metrics/binding.py": "builds a worker's recorders once per config",
    "edgeproxy/metrics/endpoint.py": "the scrape's HTTP server, in the exporter process",
    "edgeproxy/metrics/exposition.py": "writes the text format, once per scrape",
    "edgeproxy/metrics/layout.py": "the series of a config and their slots, once per config",
    "edgeproxy/metrics/store.py": "the shared mapping: the master folds and the exporter "
    "sums it; workers only write into it through the recorders",
    "edgeproxy/logging/__init__.py": "sets up the error log, once per config; reopens it on USR1",
    "edgeproxy/limits/shared.py": "asyncio I/O through redis-py; per request it is a dict "
    "lookup and a call of the compiled leaky.take, as a local zone's",
    "edgeproxy/server/accept_gate.py": "per connection only one len() check in a closure; "
    "the rest runs when worker_connections is reached",
    "edgeproxy/server/listeners.py": "binds the sockets once, in the master, before serving",
    "edgeproxy/server/proxy_protocol_front.py": "reads one header per connection on "
    "proxy_protocol addresses, then hands the transport over; its transport wrapper "
    "delegates with __getattr__, which stays simplest as a Python class",
    "edgeproxy/server/worker.py": "starts and stops a worker; per connection it only calls "
    "the compiled connection class",
    "edgeproxy/server/routes.py": "the handler and phase tables, and the builder that reads "
    "them once per config",
    "edgeproxy/server/static/__init__.py": "the package's docstring only",
    "edgeproxy/server/tls.py": "builds the TLS contexts once per worker; per handshake only "
    "the SNI callback's dict lookup (the cryptography is OpenSSL's)",
    "edgeproxy/server/tls_front.py": "runs once per TLS connection (first bytes, then a "
    "hand-over to the loop's TLS protocol); the records are the loop's and OpenSSL's work",
    "edgeproxy/server/static/cache.py": "closes its fds in __del__ when a reload drops "
    "its handler; a hit is a dict lookup and one fstat",
    "edgeproxy/server/static/opener.py": "a ctypes binding of openat2 (a ctypes.Structure "
    "subclass); its time per request is the system call's",
    "edgeproxy/upstream/health.py": "active health checks, run by the prober process on "
    "its own loop: never on the request path",
    "edgeproxy/upstream/protocol.py": "an interface only",
    "edgeproxy/upstream/protocols.py": "the protocol table, read once per pool",
    "edgeproxy/upstream/streams.py": "finds the loop's Poller once per pool and a peer's "
    "address family once per peer; the connections themselves are _stream.c's",
}

# C extension modules written in C (not by mypyc), built with the compiled build. Each has
# a pure-Python fallback that its importer chooses when the module is not there.
C_EXTENSIONS = {
    # A response head's fields in one call (fallback: the same split in Python).
    "edgeproxy.http._fields": "edgeproxy/http/_fields.c",
    # The zones' lock without a system call when uncontended (fallback: an fcntl lock).
    "edgeproxy.limits._spinlock": "edgeproxy/limits/_spinlock.c",
    # The metrics recorders: one C call per event, counts added in place (fallback: the
    # Python recorders of edgeproxy/metrics/recorder.py).
    "edgeproxy.metrics._rowstats": "edgeproxy/metrics/_rowstats.c",
    # Upstream TCP connections on the worker's own epoll, without a loop transport per
    # connection (fallback: the loop's create_connection).
    "edgeproxy.upstream._stream": "edgeproxy/upstream/_stream.c",
}

# The setup.py commands that build extension modules. pip also runs setup.py for metadata
# (egg_info, dist_info); those, sdist and editable installs (editable_wheel: the .py files
# of the work tree must be what runs) do not compile.
BUILD_COMMANDS = frozenset({"build", "build_ext", "bdist_wheel", "install"})


def say(message: str) -> None:
    # pip shows a build's output only with `pip install -v` (or when the build fails).
    print(f"edgeproxy: {message}", file=sys.stderr, flush=True)


def builds_extensions(argv: Sequence[str]) -> bool:
    return not BUILD_COMMANDS.isdisjoint(argv)


def can_compile_extensions() -> bool:
    """A C compiler works and Python's headers are there: compile a file that needs both."""
    # setuptools' own distutils (importing setuptools put it in place), as build_ext uses.
    from distutils.ccompiler import new_compiler
    from distutils.errors import CCompilerError, DistutilsError
    from distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)  # the compiler Python was built with, or $CC
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "probe.c")
        source.write_text("#include <Python.h>\nint edgeproxy_probe(void) { return 0; }\n")
        try:
            compiler.compile(
                [str(source)], output_dir=tmp, include_dirs=[sysconfig.get_paths()["include"]]
            )
        except (CCompilerError, DistutilsError, OSError):
            return False
    return True


def want_compiled(setting: str | None, building: bool) -> bool:
    """EDGEPROXY_COMPILE: "0" pure, "1" compiled or fail, unset compiled when possible."""
    if setting not in (None, "", "0", "1"):
        raise SystemExit(f"edgeproxy: EDGEPROXY_COMPILE must be 0 or 1, not {setting!r}")
    if not building:
        return False
    if setting == "0":
        say("EDGEPROXY_COMPILE=0: building the pure-Python package")
        return False
    if can_compile_extensions():
        say("compiling the request path with mypyc (EDGEPROXY_COMPILE=0 skips it)")
        return True
    if setting == "1":
        raise SystemExit(
            "edgeproxy: EDGEPROXY_COMPILE=1, but no working C compiler or no Python headers"
            " (Python.h)"
        )
    say(
        "warning: no working C compiler or no Python headers (Python.h), so this is the "
        "slower pure-Python build; install gcc and python3-dev, then reinstall"
    )
    return False


class FreshBuildExt(build_ext):
    """build_ext that first drops extension modules an earlier build left in build/.

    pip builds a local directory in place, in its build/: a module taken off COMPILED
    would otherwise keep its old compiled copy there, and that copy would be installed
    and imported instead of the .py file."""

    def run(self) -> None:
        build_lib = Path(self.build_lib)
        current = {build_lib / self.get_ext_filename(ext.name) for ext in self.extensions}
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        for path in build_lib.rglob(f"*{suffix}"):
            if path not in current:
                path.unlink()
        super().run()


def opt_level(setting: str | None) -> str:
    """The C compiler's optimisation level, 3 unless EDGEPROXY_MYPYC_OPT_LEVEL says: 0 builds
    several times faster, for tests of the packaging itself (tests/packaging)."""
    if setting in (None, ""):
        return "3"
    if setting not in ("0", "1", "2", "3"):
        raise SystemExit(f"edgeproxy: EDGEPROXY_MYPYC_OPT_LEVEL must be 0-3, not {setting!r}")
    return setting


def extension_modules() -> list[Extension]:
    from mypyc.build import mypycify

    level = opt_level(os.environ.get("EDGEPROXY_MYPYC_OPT_LEVEL"))
    return list(mypycify(list(COMPILED), opt_level=level)) + c_extensions(level)


def c_extensions(level: str) -> list[Extension]:
    return [
        Extension(name, [source], extra_compile_args=[f"-O{level}"])
        for name, source in C_EXTENSIONS.items()
    ]


if __name__ == "__main__":
    compiled = want_compiled(os.environ.get("EDGEPROXY_COMPILE"), builds_extensions(sys.argv[1:]))
    setup(
        ext_modules=extension_modules() if compiled else [],
        cmdclass={"build_ext": FreshBuildExt},
    )
