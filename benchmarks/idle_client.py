"""Open N keep-alive connections to a server, make one request on each, then hold them idle.

Usage: python idle_client.py HOST PORT N [--concurrency C] [--timeout S] [--path /]

Each connection sends one complete `GET` (HTTP/1.1, keep-alive) and reads the whole
response, then stays open and silent. When every connection is done (or has failed
three times) it prints `ready OK FAILED` on stdout and sleeps until it is killed: the
benchmark then reads the server's memory with the connections idle.

It raises its own RLIMIT_NOFILE to fit N sockets (as far as the hard limit allows, or
beyond it when run as root).
"""

from __future__ import annotations

import argparse
import errno
import resource
import selectors
import signal
import socket
import sys
import time

MAX_ATTEMPTS = 3


class Conn:
    __slots__ = ("attempts", "buf", "need", "sock")

    def __init__(self, attempts: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.need = -1  # total bytes of the response, once its head is in
        self.attempts = attempts


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def response_length(buf: bytearray) -> int:
    """Bytes of the whole response once its head is in `buf`, else -1."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return -1
    length = 0
    for line in bytes(buf[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return end + 4 + length


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--concurrency", type=int, default=200, help="connects in flight (200)")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up after S seconds")
    ap.add_argument("--path", default="/")
    args = ap.parse_args()
    raise_nofile(args.count + 256)
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        "User-Agent: edgeproxy-bench-idle\r\nAccept: */*\r\n\r\n"
    ).encode()
    addr = (args.host, args.port)
    sel = selectors.DefaultSelector()
    idle: list[socket.socket] = []
    failed = 0
    to_start = args.count
    retries: list[int] = []  # attempts made so far, for connections to start again
    in_flight = 0
    deadline = time.monotonic() + args.timeout
    last_report = 0.0

    def start(attempts: int) -> None:
        nonlocal in_flight, failed
        try:
            conn = Conn(attempts + 1)
        except OSError as exc:  # out of fds: no use trying again
            print(f"socket() failed: {exc}", flush=True)
            failed += 1
            return
        rc = conn.sock.connect_ex(addr)
        if rc not in (0, errno.EINPROGRESS):
            conn.sock.close()
            give_up_or_retry(conn, errno.errorcode.get(rc, str(rc)))
            return
        sel.register(conn.sock, selectors.EVENT_WRITE, conn)
        in_flight += 1

    def give_up_or_retry(conn: Conn, why: str) -> None:
        nonlocal failed
        if conn.attempts >= MAX_ATTEMPTS:
            failed += 1
            print(f"connection failed {conn.attempts} times, last: {why}", flush=True)
        else:
            retries.append(conn.attempts)

    def drop(conn: Conn, why: str) -> None:
        nonlocal in_flight
        sel.unregister(conn.sock)
        conn.sock.close()
        in_flight -= 1
        give_up_or_retry(conn, why)

    while to_start or retries or in_flight:
        now = time.monotonic()
        if now > deadline:
            failed += to_start + len(retries) + in_flight
            print(f"timed out after {args.timeout:.0f}s", flush=True)
            break
        while in_flight < args.concurrency and (to_start or retries):
            if retries:
                start(retries.pop())
            else:
                to_start -= 1
                start(0)
        for key, mask in sel.select(timeout=0.5):
            conn = key.data
            if mask & selectors.EVENT_WRITE:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    drop(conn, errno.errorcode.get(err, str(err)))
                    continue
                try:
                    conn.sock.send(request)  # a few hundred bytes: fits the socket buffer
                except OSError as exc:
                    drop(conn, str(exc))
                    continue
                sel.modify(conn.sock, selectors.EVENT_READ, conn)
            elif mask & selectors.EVENT_READ:
                try:
                    data = conn.sock.recv(65536)
                except OSError as exc:
                    drop(conn, str(exc))
                    continue
                if not data:
                    drop(conn, "closed by the server before the response ended")
                    continue
                conn.buf += data
                if conn.need < 0:
                    conn.need = response_length(conn.buf)
                if 0 <= conn.need <= len(conn.buf):
                    sel.unregister(conn.sock)
                    in_flight -= 1
                    if not conn.buf.startswith(b"HTTP/1.1 200 "):
                        print(f"unexpected answer: {bytes(conn.buf[:80])!r}", flush=True)
                        conn.sock.close()
                        failed += 1
                        continue
                    idle.append(conn.sock)
        if now - last_report >= 1.0:
            last_report = now
            print(f"progress {len(idle)}/{args.count} idle, {failed} failed", flush=True)

    print(f"ready {len(idle)} {failed}", flush=True)
    # Hold the connections, silent, until the benchmark stops us.
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
