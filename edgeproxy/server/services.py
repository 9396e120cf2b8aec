"""What every connection and handler of one worker shares, built once per worker."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from edgeproxy.config.model import Config
from edgeproxy.http.codec import HeadCodec
from edgeproxy.logging import AccessLog
from edgeproxy.metrics.binding import WorkerMetrics
from edgeproxy.server.request_id import RequestIds
from edgeproxy.upstream.pool import UpstreamPool


class ServedConnection(Protocol):
    """What the worker does with its open client connections when it stops."""

    def close_if_idle(self) -> None: ...

    def abort(self) -> None: ...


class WorkerServices:
    __slots__ = (
        "access_log",
        "codec",
        "config",
        "connections",
        "loop",
        "metrics",
        "pools",
        "request_ids",
        "stopping",
        "time_requests",
        "times_upstream",
        "traffic",
    )

    def __init__(
        self,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        codec: HeadCodec,
        pools: Mapping[str, UpstreamPool],
        access_log: AccessLog,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self.codec = codec
        self.pools = pools
        self.access_log = access_log
        # Read once: requests measure their upstream's times only for a log that shows them.
        self.times_upstream = access_log.times_upstream
        self.request_ids = RequestIds()  # X-Request-ID of the requests no trusted proxy named
        self.connections: set[ServedConnection] = set()
        self.stopping = False  # a graceful stop began: answer with `Connection: close`
        self.metrics = metrics
        self.traffic = metrics.traffic if metrics is not None else None
        # Whether a request's start time is read (the access log and the metrics need it).
        self.time_requests = access_log.enabled or metrics is not None
