"""The master's listening sockets, which outlive every worker.

Each TCP address gets one SO_REUSEPORT socket per worker slot, and worker N accepts only
on socket N: the kernel hashes each new connection to one socket of the group, which
spreads them evenly, where one shared socket lets the busiest worker win most wake-ups
(and so take more than its share of the connections). The master keeps every
socket open, so connections queued on a slot while its worker is replaced or reloaded
wait for the next worker of that slot instead of being reset. A unix socket cannot be
shared that way; its one socket is inherited by every worker.

Closing a slot (fewer workers) resets the connections still queued on it, unless the
kernel migrates them (Linux >= 5.14 with net.ipv4.tcp_migrate_req=1).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from dataclasses import replace

from edgeproxy.config.model import Address
from edgeproxy.errors import ConfigError
from edgeproxy.server.listeners import bind


def _bind(address: Address, *, reuse_port: bool = False) -> socket.socket:
    try:
        return bind(address, reuse_port=reuse_port)
    except OSError as exc:
        raise ConfigError("listen", f"cannot bind {address}: {exc.strerror or exc}") from None


def _probe(address: Address) -> None:
    """Fail if anyone listens on `address`: an SO_REUSEPORT bind alone would quietly share
    the port with another edgeproxy of the same user instead of reporting it in use."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address.host, address.port))
        except OSError as exc:
            raise ConfigError("listen", f"cannot bind {address}: {exc.strerror or exc}") from None


class ListenSet:
    def __init__(self, slots: int = 1) -> None:
        self.slots = slots  # sockets per TCP address
        self._tcp: dict[Address, list[socket.socket]] = {}
        self._ports: dict[Address, int] = {}  # the bound port (differs when the config says 0)
        self._unix: dict[Address, socket.socket] = {}

    def __contains__(self, address: Address) -> bool:
        return address in self._tcp or address in self._unix

    @property
    def addresses(self) -> list[Address]:
        return [*self._tcp, *self._unix]

    def open(self, addresses: Iterable[Address]) -> list[Address]:
        """Bind each address not bound yet; the new ones. All or nothing: ConfigError."""
        new: list[Address] = []
        try:
            for address in addresses:
                if address not in self and address not in new:
                    self._open(address)
                    new.append(address)
        except BaseException:
            self.close(new)
            raise
        return new

    def _open(self, address: Address) -> None:
        if address.kind == "unix":
            self._unix[address] = _bind(address)
            return
        if address.port:
            _probe(address)
        first = _bind(address, reuse_port=True)
        self._tcp[address] = [first]
        self._ports[address] = first.getsockname()[1]
        self._grow(address, self.slots)

    def _grow(self, address: Address, slots: int) -> None:
        socks = self._tcp[address]
        bound = replace(address, port=self._ports[address])
        while len(socks) < slots:
            socks.append(_bind(bound, reuse_port=True))

    def resize(self, slots: int) -> None:
        """Keep `slots` sockets per TCP address (ConfigError if one more cannot be bound)."""
        for address, socks in self._tcp.items():
            if len(socks) < slots:
                self._grow(address, slots)
            while len(socks) > slots:
                socks.pop().close()
        self.slots = slots

    def sockets_for(self, addresses: Iterable[Address], slot: int) -> dict[Address, socket.socket]:
        """What the worker in `slot` serves: its own socket of each TCP address, the unix ones."""
        result = {}
        for address in addresses:
            if address.kind == "unix":
                result[address] = self._unix[address]
            else:
                result[address] = self._tcp[address][slot]
        return result

    def all_sockets(self) -> list[socket.socket]:
        return [s for socks in self._tcp.values() for s in socks] + list(self._unix.values())

    def port(self, address: Address) -> int:
        return self._ports.get(address, address.port)

    def close(self, addresses: Iterable[Address]) -> None:
        for address in list(addresses):
            for sock in self._tcp.pop(address, []):
                sock.close()
            self._ports.pop(address, None)
            unix = self._unix.pop(address, None)
            if unix is not None:
                unix.close()
                with contextlib.suppress(OSError):
                    os.unlink(address.path)

    def close_all(self) -> None:
        self.close(self.addresses)
