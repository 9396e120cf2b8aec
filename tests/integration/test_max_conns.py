"""`max_conns` is one count per server for the whole instance, whatever worker a request
reaches: the real CLI with two workers, in front of an upstream that holds its requests."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until
from tests.integration.test_master import Edge, get


class HoldingUpstream:
    """Answers each request only once `release` is set; counts requests in flight."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.seen = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            with self.lock:
                self.seen += 1
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
            self.release.wait(30)
            with self.lock:
                self.in_flight -= 1
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nheld")

    def close(self) -> None:
        self.release.set()
        self.sock.close()


@pytest.fixture
def holding() -> Iterator[HoldingUpstream]:
    upstream = HoldingUpstream()
    yield upstream
    upstream.close()


def answer_pids(edge: Edge, status: int) -> set[int]:
    lines = edge.access_log.read_text().splitlines() if edge.access_log.exists() else []
    return {json.loads(line)["pid"] for line in lines if json.loads(line)["status"] == status}


def test_max_conns_counts_every_worker_together(tmp_path: Path, holding: HoldingUpstream) -> None:
    edge = Edge(tmp_path, free_port(), holding.address)
    try:
        edge.start(
            workers=2,
            upstream=f'{{keepalive: 0, servers: [{{address: "{holding.address}", max_conns: 2}}]}}',
        )
        workers = edge.workers()
        with ThreadPoolExecutor(2) as held_pool:
            held = [held_pool.submit(get, edge.url, "/", 30) for _ in range(2)]
            wait_until(lambda: holding.in_flight == 2, 15, "two requests held upstream")
            # Every further request, whichever worker takes it, finds the server full,
            # including a worker that holds fewer than two of its requests itself.
            refused = []
            for _ in range(40):
                refused.append(get(edge.url).status_code)
                if answer_pids(edge, 502) == workers:
                    break
            assert set(refused) == {502}
            wait_until(lambda: answer_pids(edge, 502) == workers, 10, "a 502 from each worker")
            holding.release.set()
            assert [future.result(30).text for future in held] == ["held", "held"]
        assert (holding.most, holding.seen) == (2, 2)
        # The slots came back: the server takes requests again.
        assert get(edge.url).text == "held"
    finally:
        edge.stop()
