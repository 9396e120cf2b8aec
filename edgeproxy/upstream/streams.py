"""Upstream TCP connections on the worker's own epoll (edgeproxy.upstream._stream).

A compiled build connects to a peer whose address is an IP literal through a Poller: one
epoll instance per event loop, which the loop watches with a single add_reader. A pure
install (no C compiler), a peer named by a host name (resolved by the loop at each
connect, as before) and a unix socket use the loop's create_connection instead;
edgeproxy.upstream.connect drives either. EDGEPROXY_UPSTREAM_TRANSPORT=loop in the
environment makes a compiled build use the loop's too (to rule this module out when
something looks wrong, without reinstalling).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from edgeproxy.config.model import Address

if TYPE_CHECKING:
    from edgeproxy.upstream._stream import Poller


def _poller_type() -> Callable[[asyncio.AbstractEventLoop], Poller] | None:
    if os.environ.get("EDGEPROXY_UPSTREAM_TRANSPORT") == "loop":
        return None
    try:
        from edgeproxy.upstream._stream import Poller
    except ImportError:  # a pure install: the loop's transports serve
        return None
    return Poller


_MAKE_POLLER: Final = _poller_type()
_POLLERS: dict[asyncio.AbstractEventLoop, Poller] = {}


def stream_kind() -> str:
    """ "epoll" when upstream connections use a Poller, "loop" when the loop's transports."""
    return "loop" if _MAKE_POLLER is None else "epoll"


def ip_family(address: Address) -> int:
    """AF_INET or AF_INET6 for a TCP address given as an IP literal, else 0: such an
    address can go through a Poller (which does not resolve names)."""
    if address.kind != "tcp":
        return 0
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        return 0
    if isinstance(ip, ipaddress.IPv6Address):
        # A zone (fe80::1%eth0) is for the loop's connect, which resolves it.
        return 0 if ip.scope_id else int(socket.AF_INET6)
    return int(socket.AF_INET)


def poller_for(loop: asyncio.AbstractEventLoop) -> Poller | None:
    """The loop's Poller, made and watched on first use; None without the C module."""
    if _MAKE_POLLER is None:
        return None
    poller = _POLLERS.get(loop)
    if poller is None:
        for old_loop in [old for old in _POLLERS if old.is_closed()]:
            _POLLERS.pop(old_loop).close()  # (tests make a loop each; their epolls go)
        poller = _POLLERS[loop] = _MAKE_POLLER(loop)
        loop.add_reader(poller.fileno(), poller.dispatch)
    return poller
