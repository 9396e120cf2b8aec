"""Counting established TCP connections on a port through the kernel's sock_diag netlink
interface (what `ss` uses), Linux only.

/proc/net/tcp lists every socket, TIME_WAIT ones included: behind gunicorn's sync workers
(a new upstream connection per request) it holds tens of thousands of lines after a few
seconds of wrk, and reading it took about 0.2 s of CPU. The attack's monitor counts its
attackers every 50 ms while wrk runs: it took most of a core from the machine, in the
attacked runs only. sock_diag is asked for established sockets alone, so the kernel
skips the rest.
"""

from __future__ import annotations

import socket
import struct

import procfs

_NETLINK_SOCK_DIAG = 4  # NETLINK_INET_DIAG
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_ESTABLISHED = 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid.
_REQUEST = struct.Struct("=BBBBI48x")
# In an inet_diag_msg (after nlmsghdr): family, state, timer, retrans, then the sockid,
# which starts with the source port in network byte order.
_SPORT_OFFSET = _HEADER.size + 4
_PORT = struct.Struct("!H")


def _count(family: int, port: int) -> int:
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_ESTABLISHED)
    header = _HEADER.pack(
        _HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
    )
    count = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.sendto(header + request, (0, 0))
        while True:
            data = nl.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
                if kind == _NLMSG_DONE:
                    return count
                if kind == _NLMSG_ERROR or length < _HEADER.size:
                    raise OSError("sock_diag refused the request")
                (sport,) = _PORT.unpack_from(data, offset + _SPORT_OFFSET)
                if sport == port:
                    count += 1
                offset += (length + 3) & ~3  # messages are 4-byte aligned
            if not data:
                return count


def established_to(port: int) -> int:
    """Server-side TCP connections established on local port `port` (as
    procfs.established_to, which is the fallback where netlink is not allowed)."""
    try:
        return _count(socket.AF_INET, port) + _count(socket.AF_INET6, port)
    except OSError:
        return procfs.established_to(port)
