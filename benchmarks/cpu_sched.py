"""The CPU scheduler's side of a scenario (Linux only): how long a process waited for a
core, and an idle-priority CPU group for a load generator that must not compete with
what is measured.

Why the group: slowhttptest polls its sockets in a busy loop. At nice 19 it still takes
whatever core is idle for a moment, and the kernel's scheduler (EEVDF, Linux 6.6+) lets
it finish a short slice before a proxy or backend process that just woke up gets the
core back: every such wake-up waits. In a CPU group marked `cpu.idle`, its tasks run only
when no other task wants the core, and any waking task takes the core from them at once.
The attackers' sockets and what they send are the same; only the CPU they would take from
the server, which a real attacker spends on machines of its own, is gone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

# Where a CPU group can be made: cgroup v1's cpu hierarchy (named "cpu" or "cpu,cpuacct"),
# then cgroup v2's unified tree.
_CGROUP_ROOTS = ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup")


def run_queue_wait_s(pids: list[int]) -> float:
    """Seconds the processes `pids` spent runnable but waiting for a core, so far
    (/proc/PID/schedstat's second field; gone processes count 0)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


class IdleCpuGroup:
    """A CPU cgroup with `cpu.idle` set; processes added to it run on idle cores only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def make(cls, name: str) -> tuple[IdleCpuGroup | None, str]:
        """The group, or None and why it could not be made (not root, no cgroup with a cpu
        controller, a kernel without cpu.idle: before Linux 5.15)."""
        why = "no cgroup file system with a cpu controller"
        for root in map(Path, _CGROUP_ROOTS):
            if not (root / "cgroup.procs").exists():
                continue
            path = root / name
            try:
                path.mkdir(exist_ok=True)
                idle = path / "cpu.idle"
                if not idle.exists():
                    why = f"{root} has no cpu.idle (Linux 5.15+, cgroup v2: the cpu controller)"
                    path.rmdir()
                    continue
                idle.write_text("1")
            except OSError as exc:
                why = f"cannot make a CPU group in {root}: {exc.strerror or exc}"
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            return cls(path), ""
        return None, why

    def add(self, pid: int) -> bool:
        """Move `pid` into the group (its children are born there); False if it is gone."""
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except OSError:
            return False
        return True

    def remove(self) -> None:
        """Remove the group; processes still in it go back to the root group first."""
        with contextlib.suppress(OSError):
            pids = (self.path / "cgroup.procs").read_text().split()
            for pid in pids:
                with contextlib.suppress(OSError):
                    (self.path.parent / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            self.path.rmdir()


@contextlib.contextmanager
def idle_cpu_group(label: str) -> Iterator[tuple[IdleCpuGroup | None, str]]:
    """An idle CPU group for this run (removed at the end), or None and why not."""
    group, why = IdleCpuGroup.make(f"edgeproxy-bench-{label}-{os.getpid()}")
    try:
        yield group, why
    finally:
        if group is not None:
            group.remove()
