"""Room in RLIMIT_NOFILE for `worker_connections`: the master raises its soft limit (the
workers inherit it) as far as the hard limit allows, as nginx's worker_rlimit_nofile
would have to be set by hand."""

from __future__ import annotations

import logging
import resource

from edgeproxy.config.model import Config

log = logging.getLogger("edgeproxy.master")

# Besides each client connection: its upstream connection, spool files, listening
# sockets, logs. nginx's advice: twice worker_connections for a proxy.
SPARE = 256


def descriptors_wanted(config: Config) -> int:
    return 2 * config.worker_connections + SPARE


def raise_fd_limit(config: Config) -> None:
    wanted = descriptors_wanted(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if new > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open files limit to %d: %s", new, exc)
            return
    if new < wanted:
        log.warning("open files limit %d (hard) is below the %d that worker_connections %d "
                    "wants: a worker may run out of descriptors before it stops accepting",
                    new, wanted, config.worker_connections)  # fmt: skip
