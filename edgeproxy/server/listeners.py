"""Binding listen sockets. Done before serving starts (by the master, before it forks), so
the serving code only ever receives ready sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import stat

from edgeproxy.config.model import Address, Config

BACKLOG = 511  # nginx's default listen backlog


def listen_addresses(config: Config) -> list[Address]:
    """Every distinct listen address, in config order."""
    seen: dict[Address, None] = {}
    for server in config.servers:
        for address in server.listen:
            seen.setdefault(address, None)
    return list(seen)


def bind(address: Address, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket; `reuse_port` lets several of them share a TCP address, the
    kernel spreading new connections over them (SO_REUSEPORT)."""
    if address.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A stale socket file from a previous run would make bind fail; remove only sockets.
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(address.path).st_mode):
                os.unlink(address.path)
        sock.bind(address.path)
    else:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host, address.port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock
