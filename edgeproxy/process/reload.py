"""Reload (HUP): check the new config, start its workers, then retire the old ones.

Nothing of the running setup changes until the new config is valid, its new listen
addresses are bound and every one of its workers is serving; any failure on the way is
logged and leaves the old workers as they were. The old workers are told to stop only once
the new ones accept, and they share each TCP address's per-slot sockets with them, so no
connection goes unanswered in between.

The Reloader owns the state of a reload (the generation being started, a HUP that came
meanwhile); it reaches the master only through the Fleet protocol below, and hands it the
new generation once that generation serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from edgeproxy.check import check_config
from edgeproxy.config.model import Address, Config
from edgeproxy.config.tls import expired_certificates
from edgeproxy.errors import ConfigError
from edgeproxy.limits.zones import store as zone_store
from edgeproxy.process.fd_limit import raise_fd_limit
from edgeproxy.process.shared import SharedState
from edgeproxy.process.sockets import ListenSet
from edgeproxy.process.workers import Generation, WorkerProc, prepare_log_files
from edgeproxy.server.listeners import listen_addresses

log = logging.getLogger("edgeproxy.master")


class Fleet(Protocol):
    """What a reload needs of the master."""

    @property
    def current(self) -> Generation: ...

    @property
    def workers(self) -> Mapping[int, WorkerProc]: ...

    @property
    def listeners(self) -> ListenSet: ...

    @property
    def shared(self) -> SharedState: ...

    def spawn(self, generation: Generation, slot: int) -> WorkerProc | None: ...

    def retire(self, worker: WorkerProc) -> None: ...

    def live_configs(self) -> list[Config]: ...

    def switch_to(self, generation: Generation) -> int:
        """Serve with `generation` from now on; the number of old workers now retiring."""
        ...

    def reload_failed(self) -> None:
        """A reload was refused (counted in the metrics)."""
        ...


@dataclass(eq=False)
class PendingReload:
    generation: Generation
    added: list[Address]  # bound for it; closed again if the reload fails
    deadline: float  # its workers must all be serving by then


class Reloader:
    """One reload at a time; a HUP during one is served after it, with the newest file."""

    def __init__(self, fleet: Fleet, config_path: str) -> None:
        self.fleet = fleet
        self.config_path = config_path
        self.pending: PendingReload | None = None
        self.again = False  # a HUP came during this reload: the file may have changed again

    def request(self) -> None:
        """A HUP: reload now, or after the reload in progress."""
        if self.pending is not None:
            self.again = True
        else:
            self._begin()

    def cancel(self) -> None:
        """Forget the reload in progress (the master is stopping every worker anyway)."""
        self.pending = None
        self.again = False

    def starting(self, worker: WorkerProc) -> bool:
        """Whether `worker` belongs to the generation this reload is starting."""
        return self.pending is not None and worker.generation is self.pending.generation

    def config(self) -> Config | None:
        """The config being started, if any (its peers must keep their shared rows)."""
        return self.pending.generation.config if self.pending is not None else None

    def progress(self, now: float) -> None:
        """Promote the pending generation once all its workers serve; give up at the deadline."""
        pending = self.pending
        if pending is None:
            return
        mine = [w for w in self.fleet.workers.values() if w.generation is pending.generation]
        if len(mine) >= pending.generation.config.workers and all(w.ready for w in mine):
            self._promote(pending)
        elif now > pending.deadline:
            self.abort("its workers did not start in time")

    def abort(self, reason: str) -> None:
        pending = self.pending
        assert pending is not None
        self.pending = None
        log.error("reload failed, still running the previous configuration: %s", reason)
        fleet = self.fleet
        fleet.reload_failed()
        for worker in fleet.workers.values():
            if worker.generation is pending.generation:
                fleet.retire(worker)
        fleet.listeners.close(pending.added)
        fleet.shared.peers.retain(fleet.live_configs())
        self._next()

    def _begin(self) -> None:
        fleet = self.fleet
        log.info("reloading %s", self.config_path)
        try:
            config = check_config(self.config_path)
            prepare_log_files(config)
            fleet.listeners.resize(max(fleet.listeners.slots, config.workers))
            added = fleet.listeners.open(listen_addresses(config))
        except ConfigError as exc:
            for problem in exc.lines:  # one log line each, so that each names its file and line
                log.error("reload failed, still running the previous configuration: %s", problem)
            fleet.reload_failed()
            return
        for what in expired_certificates(config):  # served all the same (see config.tls)
            log.warning("%s", what)
        fleet.shared.peers.assign(config)  # known peers keep their rows, and their state
        zone_store().prepare(config.limits.values())  # known zones keep theirs too
        raise_fd_limit(config)
        generation = Generation(fleet.current.number + 1, config)
        deadline = time.monotonic() + config.worker_heartbeat_timeout
        self.pending = PendingReload(generation, added, deadline)
        for slot in range(config.workers):
            if fleet.spawn(generation, slot) is None:
                self.abort("cannot start its workers")
                return

    def _promote(self, pending: PendingReload) -> None:
        self.pending = None
        retiring = self.fleet.switch_to(pending.generation)
        log.info("reloaded: generation %d serving with %d workers; %d old workers finishing",
                 pending.generation.number, pending.generation.config.workers,
                 retiring)  # fmt: skip
        self._next()

    def _next(self) -> None:
        if self.again:
            self.again = False
            self._begin()
