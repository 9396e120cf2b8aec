"""The pid file: written by the master, read by `edgeproxy -s` to find it."""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("edgeproxy.master")


class PidFileError(Exception):
    """A pid file that is missing, unreadable, or names no running edgeproxy."""


def write_pid_file(path: str, pid: int) -> None:
    # Written aside, then renamed: a reader never sees an empty or half-written file.
    temp = f"{path}.{pid}.tmp"
    with open(temp, "w") as fh:
        fh.write(f"{pid}\n")
    os.replace(temp, path)


def read_pid_file(path: str) -> int:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except FileNotFoundError:
        raise PidFileError(f"no pid file {path}: is edgeproxy running?") from None
    except OSError as exc:
        raise PidFileError(f"cannot read pid file {path}: {exc.strerror or exc}") from None
    if not text.isdigit() or int(text) <= 1:
        raise PidFileError(f"pid file {path} does not hold a pid (it holds {text[:20]!r})")
    return int(text)


def is_edgeproxy(pid: int) -> bool:
    """Whether `pid` is alive and (where /proc tells) an edgeproxy, not a recycled pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else (root's master, asked by a user)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"edgeproxy" in fh.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc")  # gone, unless there is no /proc to ask
    except OSError:
        return True


def running_master(path: str) -> int:
    """The pid of the running master named by the pid file at `path`."""
    pid = read_pid_file(path)
    if not is_edgeproxy(pid):
        raise PidFileError(f"pid file {path} is stale: no edgeproxy is running as pid {pid}")
    return pid


def remove_pid_file(path: str, pid: int) -> None:
    """Remove the pid file if it still names `pid` (a newer master may own it by now)."""
    with contextlib.suppress(PidFileError):
        if read_pid_file(path) == pid:
            with contextlib.suppress(OSError):
                os.unlink(path)


def other_master(path: str, pid: int) -> int | None:
    """The pid of another running edgeproxy that the pid file at `path` names, if any."""
    with contextlib.suppress(PidFileError):
        other = read_pid_file(path)
        if other != pid and is_edgeproxy(other):
            return other
    return None


class OwnPidFile:
    """The master's own pid file: written once it can serve, moved when a reload names
    another, removed when it exits."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.path: str | None = None

    def write(self, path: str) -> None:
        """OSError if it cannot be written."""
        write_pid_file(path, self.pid)
        self.path = path

    def move(self, path: str | None) -> None:
        """To `path` (None: none any more). One that cannot be written is logged, and the
        old file is kept."""
        if path == self.path:
            return
        try:
            if path:
                write_pid_file(path, self.pid)
        except OSError as exc:
            log.error("cannot write pid_file %s: %s", path, exc)
            return
        self.remove()
        self.path = path

    def remove(self) -> None:
        if self.path:
            remove_pid_file(self.path, self.pid)
