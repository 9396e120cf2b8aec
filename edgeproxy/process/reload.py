"""Reload (HUP): check the new config, start its workers, then retire the old ones.

Nothing of the running setup changes until the new config is valid, its new listen
addresses are bound and every one of its workers is serving; any failure on the way is
logged and leaves the old workers as they were. The old workers are told to stop only once
the new ones accept, and they share each TCP address's per-slot sockets with them, so no
connection goes unanswered in between.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeproxy.config.check import check_config
from edgeproxy.config.model import Address
from edgeproxy.errors import ConfigError
from edgeproxy.logging import setup_error_log
from edgeproxy.process.pidfile import remove_pid_file, write_pid_file
from edgeproxy.process.workers import Generation, prepare_log_files
from edgeproxy.server.listeners import listen_addresses

if TYPE_CHECKING:
    from edgeproxy.process.master import Master

log = logging.getLogger("edgeproxy.master")


@dataclass(eq=False)
class PendingReload:
    generation: Generation
    added: list[Address]  # bound for it; closed again if the reload fails
    deadline: float  # its workers must all be serving by then


def begin(master: Master) -> None:
    log.info("reloading %s", master.config_path)
    try:
        config = check_config(master.config_path)
        prepare_log_files(config)
        master.listeners.resize(max(master.listeners.slots, config.workers))
        added = master.listeners.open(listen_addresses(config))
    except ConfigError as exc:
        log.error("reload failed, still running the previous configuration: %s", exc)
        return
    master.shared.peers.assign(config)  # known peers keep their rows, and their state
    generation = Generation(master.current.number + 1, config)
    deadline = time.monotonic() + config.worker_heartbeat_timeout
    master.pending = PendingReload(generation, added, deadline)
    for slot in range(config.workers):
        if master.spawn(generation, slot) is None:
            abort(master, "cannot start its workers")
            return


def progress(master: Master, now: float) -> None:
    """Promote the pending generation once all its workers serve; give up at the deadline."""
    pending = master.pending
    assert pending is not None
    mine = [w for w in master.workers.values() if w.generation is pending.generation]
    if len(mine) >= pending.generation.config.workers and all(w.ready for w in mine):
        _promote(master, pending)
    elif now > pending.deadline:
        abort(master, "its workers did not start in time")


def abort(master: Master, reason: str) -> None:
    pending = master.pending
    assert pending is not None
    master.pending = None
    log.error("reload failed, still running the previous configuration: %s", reason)
    for worker in master.workers.values():
        if worker.generation is pending.generation:
            master.retire(worker)
    master.listeners.close(pending.added)
    master.shared.peers.retain(master.live_configs())
    _next(master)


def _promote(master: Master, pending: PendingReload) -> None:
    old = master.current.config
    new = pending.generation.config
    master.current = pending.generation
    master.pending = None
    master.target = new.workers  # as nginx: a reload resets TTIN/TTOU to `workers`
    retiring = 0
    for worker in master.workers.values():
        if worker.generation is not master.current and not worker.retiring:
            master.retire(worker)
            retiring += 1
    keep = set(listen_addresses(new))
    master.listeners.close([a for a in master.listeners.addresses if a not in keep])
    if new.error_log != old.error_log:
        setup_error_log(new.error_log)
    if new.pid_file != master.pid_file:
        _move_pid_file(master, new.pid_file)
    log.info("reloaded: generation %d serving with %d workers; %d old workers finishing",
             master.current.number, new.workers, retiring)  # fmt: skip
    _next(master)


def _move_pid_file(master: Master, path: str | None) -> None:
    try:
        if path:
            write_pid_file(path, master.pid)
    except OSError as exc:
        log.error("cannot write pid_file %s: %s", path, exc)
        return
    if master.pid_file:
        remove_pid_file(master.pid_file, master.pid)
    master.pid_file = path


def _next(master: Master) -> None:
    if master.reload_again:  # a HUP came during this reload: the file may have changed again
        master.reload_again = False
        begin(master)
