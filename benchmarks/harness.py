"""Child processes of the benchmark: each in its own process group, always stopped.

Every server and every wrk run is started through `Children`, so one `stop_all()` in a
`finally` block ends all of them, also on Ctrl-C, an exception or SIGTERM.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


def log(msg: str) -> None:
    """Progress goes to stderr; stdout holds only the table."""
    print(msg, file=sys.stderr, flush=True)


class StartupError(RuntimeError):
    """A server did not come up, or answered wrongly; the message says why."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Children:
    """The processes one scenario started, stopped together."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Child:
        with open(log, "ab") as out:
            # A session of its own: the terminal's Ctrl-C reaches only us, and we stop the
            # child's whole group (nginx master + worker, edgeproxy master + workers) ourselves.
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self._children.append(child)
        return child

    def stop(self, child: Child, grace: float = 5.0) -> None:
        if child in self._children:
            self._children.remove(child)
        _stop_group(child.proc, grace)

    def stop_all(self) -> None:
        # A second Ctrl-C must not cut the clean-up short: hold SIGINT/SIGTERM until every
        # group is stopped; a held signal is then raised as usual.
        held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            # Newest first: clients and proxies go before the backends they talk to.
            while self._children:
                child = self._children.pop()
                with contextlib.suppress(Exception):
                    _stop_group(child.proc, 5.0)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _leader_exited(pid: int) -> bool:
    """True once the group leader has exited, without reaping it.

    While the leader is an unreaped zombie its pid (= the group id) cannot be reused, so a
    later killpg() can only reach processes we started.
    """
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.EPERM):
            raise


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.returncode is not None:
        return  # already reaped: its group id may belong to someone else by now
    pgid = proc.pid
    if not _leader_exited(pgid):
        _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not _leader_exited(pgid):
            time.sleep(0.02)
    # Whatever is left of the group (a worker that outlived its master, a hung leader).
    _killpg(pgid, signal.SIGKILL)
    proc.wait()


def free_port() -> int:
    """A port that was free a moment ago (the small race is fine on a quiet loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(child: Child, host: str, port: int, timeout: float = 20.0) -> None:
    """Poll until `host:port` accepts a connection; fail fast if the child died."""
    deadline = time.monotonic() + timeout
    while True:
        if _leader_exited(child.proc.pid):
            raise StartupError(
                f"{child.name} exited before listening on {host}:{port}; "
                f"last lines of {child.log}:\n{child.log_tail()}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise StartupError(
                f"{child.name} did not accept connections on {host}:{port} within "
                f"{timeout:.0f}s; last lines of {child.log}:\n{child.log_tail()}"
            )
        time.sleep(0.02)


def http_request(
    host: str, port: int, method: str = "GET", path: str = "/", body: bytes | None = None
) -> tuple[int, bytes]:
    """One request, to check a server answers correctly before it is measured."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@contextlib.contextmanager
def scenario_tmp(name: str, keep: bool) -> Iterator[Path]:
    """A temp dir for one scenario's configs and logs.

    Removed afterwards unless `keep`; always kept (and named) after a failure, so its logs
    can be read; removed after Ctrl-C, when there is nothing to look into.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f"edgeproxy-bench-{name}-"))
    # nginx started as root runs its worker as nobody, which must reach its temp paths.
    tmp.chmod(0o755)
    try:
        yield tmp
    except Exception:
        log(f"  configs and logs kept in {tmp}")
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep:
        log(f"  configs and logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    """Poll `predicate` every 50 ms; StartupError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise StartupError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(0.05)


def ratio_verdict(errors: int, ratio: float | None, min_ratio: float) -> tuple[bool | None, str]:
    """(met?, why) of a ratio target: any error fails it; no reference figure: None."""
    if errors:
        return False, f"no ({errors} errors)"
    if ratio is None:
        return None, "n/a (no nginx)"
    met = ratio >= min_ratio
    return met, "yes" if met else "no"
