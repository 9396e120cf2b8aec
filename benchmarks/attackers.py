"""The slow-client attackers of slow.py: slowhttptest, kept at ~300 connections.

One slowhttptest opens its connections once (at -r per second) and exits when the server
has closed them all; the Attacker starts another for the missing ones when too few are
connected, as a real attacker reconnecting would, counts them twice a second, and keeps
its CPU out of the way of the servers measured (cpu_sched.py).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import procfs
import sockdiag
from cpu_sched import IdleCpuGroup
from harness import Child, StartupError
from servers import Endpoint, Workspace

ATTACKERS = 300
RATE = 100  # attacker connections opened per second (300 in 3 s)
SAMPLE_EVERY_S = 0.5  # attackers counted (and topped up) this often


@dataclass(frozen=True)
class Attack:
    flags: tuple[str, ...]
    path: str  # what the attackers ask for


ATTACKS = {
    # Headers never end: one 24-byte header line every 10 s.
    "slowloris": Attack(("-H", "-i", "10", "-x", "24", "-t", "GET"), "/"),
    # A POST declaring 8 KiB of body, sent 10 bytes every 10 s.
    "slow_body": Attack(("-B", "-i", "10", "-x", "10", "-s", "8192", "-t", "POST"), "/"),
    # A 4 MiB answer read 32 bytes every 5 s through a 512-1024 byte receive window.
    "slow_read": Attack(
        ("-X", "-w", "512", "-y", "1024", "-n", "5", "-z", "32", "-k", "1"), "/large"
    ),
}


class Attacker:
    """slowhttptest against one target, topped up so that ~300 attackers stay connected.

    One slowhttptest opens its connections once and exits only when all of them are
    closed; a server that times attackers out would otherwise see the attack fade away
    until the last one is gone. A real attacker reconnects: when fewer than 80 % are
    connected (and the last launch has had time to ramp up, and the count has stopped
    rising), another slowhttptest is started for the missing ones.
    """

    MAX_INSTANCES = 6
    TOP_UP_BELOW = 0.8

    def __init__(
        self,
        ws: Workspace,
        name: str,
        attack: Attack,
        target: Endpoint,
        length_s: int,
        cpu_group: IdleCpuGroup | None = None,
    ):
        exe = shutil.which("slowhttptest")
        assert exe is not None
        self.ws = ws
        self.target = target
        self.cpu_group = cpu_group
        self.argv = [
            # slowhttptest polls its sockets in a tight loop and burns up to a whole core;
            # on a 2-core box that is CPU taken from the proxy under test. It opens its
            # connections at nice 19 (and its scheduler autogroup too, see _launch()), then
            # holds them from an idle CPU group when there is one (see tick()).
            "nice",
            "-n",
            "19",
            # Its status lines reach the log even when it is killed.
            "stdbuf",
            "-oL",
            exe,
            *attack.flags,
            "-r",
            str(RATE),
            "-p",
            "3",
            "-l",
            str(length_s),
            "-u",
            f"http://{target.host}:{target.port}{attack.path}",
        ]
        self.log_stem = f"slowhttptest-{name}-{target.name}"
        self.instances: list[tuple[Child, float]] = []  # (child, launch time)
        self.launches = 0
        self.quick_exits = 0
        self.last_launch = 0.0
        self.last_count = 0
        self.samples: list[int] = []
        self._next_sample = 0.0
        self._cpu_seen: dict[int, float] = {}  # CPU seconds of each instance, last seen
        self._idle: set[int] = set()  # instances moved into the idle CPU group
        self._last_seen = 0  # attackers counted at the last tick
        self._last_rise = 0.0  # when that count last went up

    def _launch(self, count: int) -> None:
        argv = [*self.argv, "-c", str(count)]
        # A log per launch: each one's status lines, whole.
        log_path = self.ws.dir / f"{self.log_stem}-{self.launches + 1}.log"
        child = self.ws.children.spawn("slowhttptest", argv, log_path)
        self.launches += 1
        self.last_launch = time.monotonic()
        self.last_count = count
        self.instances.append((child, self.last_launch))
        # Each child runs in a session of its own, hence (with the kernel's scheduler
        # autogroups on) in a CPU group of its own that competes with the proxy's group
        # as an equal whatever its nice value: the group itself is made nice 19.
        with contextlib.suppress(OSError):
            Path(f"/proc/{child.proc.pid}/autogroup").write_text("19")

    def _opening(self, attackers: int, now: float) -> bool:
        """The newest instance may still be opening connections: it started less than
        the time its -r rate needs (plus 1 s) ago, or the count of attackers rose within
        the last second (on a busy machine it opens them late). Topping up meanwhile
        would overshoot the 300."""
        if attackers > self._last_seen:
            self._last_rise = now
        self._last_seen = attackers
        if now - self.last_launch < self.last_count / RATE + 1.0:
            return True
        return now - self._last_rise < 1.0

    def cpu_seconds(self) -> float:
        """CPU used by every instance so far (an exited one as last seen alive)."""
        for child, _ in self.instances:
            used = procfs.cpu_seconds([child.proc.pid])
            if used:
                self._cpu_seen[child.proc.pid] = used
        return sum(self._cpu_seen.values())

    def start(self) -> None:
        self._launch(ATTACKERS)

    def connected(self) -> int:
        return sockdiag.established_to(self.target.port)

    def tick(self, normal_clients: int = 0) -> None:
        """Reap the instances that exited; twice a second, count the attackers, top up
        if needed and take a sample (counting costs the machine a few ms of CPU)."""
        now = time.monotonic()
        for child, launched in list(self.instances):
            if child.proc.poll() is None:
                continue
            self.instances.remove((child, launched))
            self.ws.children.stop(child)
            if now - launched < 1.0:
                self.quick_exits += 1
                if self.quick_exits > 5:
                    raise StartupError(
                        f"slowhttptest keeps exiting at once; last lines of {child.log}:\n"
                        f"{child.log_tail()}"
                    )
        if now < self._next_sample:
            return
        self._next_sample = now + SAMPLE_EVERY_S
        attackers = max(0, self.connected() - normal_clients)
        opening = self._opening(attackers, now)
        if (
            attackers < ATTACKERS * self.TOP_UP_BELOW
            and len(self.instances) < self.MAX_INSTANCES
            and not opening
        ):
            self._launch(ATTACKERS - attackers)
        elif not opening and self.cpu_group is not None:
            # Connections opened: from here on the instances only hold them and send or
            # read a few bytes every few seconds, which idle cores are plenty for. In the
            # idle group they no longer delay the proxy's and the backend's wake-ups.
            # Opening stays at nice 19: on a machine with no idle core an idle-group
            # slowhttptest would not open its 300 connections at all.
            for child, _ in self.instances:
                pid = child.proc.pid
                if pid not in self._idle and self.cpu_group.add(pid):
                    self._idle.add(pid)
        self.samples.append(attackers)
        self.cpu_seconds()  # seen before an instance exits

    def stop(self) -> None:
        while self.instances:
            self.ws.children.stop(self.instances.pop()[0])
