"""What /proc says about the processes and sockets of a scenario (Linux only).

Resident memory of a process, the processes of a group, the TCP connections established
to a port, and which process of a group holds a given accepted connection.
"""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

_ESTABLISHED = "01"


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])  # "VmRSS:   123456 kB"
    raise OSError(f"no VmRSS for pid {pid} (a zombie?)")


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by the processes `pids` (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICKS


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (an nginx master and its worker, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _tcp_rows() -> list[list[str]]:
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)  # header
            rows.extend(line.split() for line in f)
    return rows


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def established_to(port: int) -> int:
    """Server-side TCP connections established on local port `port`.

    This counts connections the kernel has completed, accepted by the server or not yet.
    """
    return sum(1 for r in _tcp_rows() if r[3] == _ESTABLISHED and _port(r[1]) == port)


def socket_fds(pid: int) -> int:
    """How many sockets process `pid` has open."""
    count = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            if os.readlink(f"{fd_dir}/{fd}").startswith("socket:"):
                count += 1
    return count


def holder_of_connection(pids: list[int], server_port: int, client_port: int) -> int | None:
    """Which of `pids` holds the accepted socket of the connection client_port -> server_port.

    Used to find the process that serves (the worker), whatever the server's process
    layout: a single process, or a master with workers.
    """
    inode = None
    for r in _tcp_rows():
        if _port(r[1]) == server_port and _port(r[2]) == client_port and r[3] == _ESTABLISHED:
            inode = r[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{fd}") == target:
                        return pid
    return None


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE to at least `wanted` if it can.

    Children started afterwards inherit it. Returns the previous (soft, hard) limits so
    they can be put back. Raising the hard limit needs root (CAP_SYS_RESOURCE); without it
    the soft limit goes up to the hard one.
    """
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = old
    if soft >= wanted:
        return old
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return old
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return old


def nofile_soft_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
