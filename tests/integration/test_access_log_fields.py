"""The access log's fields through the real CLI in front of real gunicorn: the json record
(upstream address, status and times, bytes sent, request id, client IP source), a template
of nginx's variables, and the request id as the client and the app see it.

Clients connect from 127.0.0.1 (not trusted) or 127.0.0.2 (the trusted proxy), both on
the loopback interface.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Gunicorn, can_connect, free_port, run_cli, wait_until
from tests.integration.cli_proxy import CliProxy

HEX_ID = re.compile(r"[0-9a-f]{32}")
TRUSTED = "127.0.0.2"
TEMPLATE = (
    '$remote_addr $client_ip_source "$request" $status $body_bytes_sent $bytes_sent '
    "$request_id [$upstream_addr] [$upstream_status] [$upstream_connect_time] "
    "[$upstream_header_time] [$upstream_response_time] $request_time $http_x_custom "
    "$host $request_method $request_uri $args $server_protocol $time_iso8601 $msec"
)


class Proxy(CliProxy):
    """Two listen addresses (one with proxy_protocol), the access log in `log_format`, no
    error log file (the CLI's stderr takes it)."""

    def __init__(self, tmp_path: Path, log_format: str, gunicorn: Gunicorn) -> None:
        # A port bound but not listening: connecting is refused, and while it is held no
        # other process can take it. Bound first, so that the ports chosen below are not it.
        self.dead = socket.socket()
        self.dead.bind(("127.0.0.1", 0))
        self.dead_address = f"127.0.0.1:{self.dead.getsockname()[1]}"
        super().__init__(tmp_path, free_port())
        # The listen address with proxy_protocol (a port freed just now may come back).
        self.proxy_port = next(port for port in iter(free_port, None) if port != self.port)
        self.config.write_text(
            f"""access_log: {{path: {self.access_log}, format: {json.dumps(log_format)}, flush: 0}}
temp_path: {tmp_path}
upstreams:
  app: {{servers: ["{gunicorn.address}"]}}
  flaky: {{servers: ["{self.dead_address}", "{gunicorn.address}"]}}
servers:
  - listen:
      - "127.0.0.1:{self.port}"
      - {{address: "127.0.0.1:{self.proxy_port}", proxy_protocol: true}}
    trusted_proxies: ["{TRUSTED}/32"]
    locations:
      - {{exact: /healthz, return: {{status: 200, body: "ok"}}}}
      - {{path: /flaky/, proxy_pass: flaky}}
      - {{path: /, proxy_pass: app}}
"""
        )
        self.launch()
        wait_until(
            lambda: (
                can_connect(f"127.0.0.1:{self.port}")
                and can_connect(f"127.0.0.1:{self.proxy_port}")
            ),
            15,
            "edgeproxy up on both addresses",
        )

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", transport=transport)

    def lines(self, count: int) -> list[str]:
        """The log's lines once it has `count` of them (`flush: 0`: written as each ends)."""

        def written() -> bool:
            return len(self.access_lines()) >= count

        wait_until(written, 10, f"{count} access log lines")
        return self.access_lines()

    def stop(self) -> int | None:
        self.dead.close()
        status = super().stop()
        assert status == 0, self.stderr
        return status


@pytest.fixture
def json_proxy(tmp_path: Path, gunicorn_a: Gunicorn) -> Iterator[Proxy]:
    proxy = Proxy(tmp_path, "json", gunicorn_a)
    yield proxy
    proxy.stop()


@pytest.fixture
def template_proxy(tmp_path: Path, gunicorn_a: Gunicorn) -> Iterator[Proxy]:
    proxy = Proxy(tmp_path, TEMPLATE, gunicorn_a)
    yield proxy
    proxy.stop()


def test_json_records_the_upstream_and_the_request_id(json_proxy: Proxy, gunicorn_a) -> None:
    with json_proxy.client() as client:
        response = client.get("/echo?x=1")
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert HEX_ID.fullmatch(request_id)
    assert response.json()["headers"]["x-request-id"] == request_id  # gunicorn got it
    (line,) = json_proxy.lines(1)
    record = json.loads(line)
    assert record["request_id"] == request_id
    assert (record["client_ip"], record["client_ip_source"]) == ("127.0.0.1", "peer")
    assert record["upstream_addr"] == gunicorn_a.address
    assert record["upstream_status"] == 200
    assert record["status"] == 200
    assert record["body_bytes_sent"] == len(response.content)
    # The head's bytes too: more than the body, less than body and a generous head.
    assert len(response.content) < record["bytes_sent"] < len(response.content) + 1024
    connect = record["upstream_connect_time"]
    header = record["upstream_header_time"]
    total = record["upstream_response_time"]
    assert 0 <= connect <= header <= total
    assert record["request_time"] >= 0
    assert "upstream_tries" not in record  # one attempt


def test_json_answers_of_edgeproxy_itself_have_no_upstream(json_proxy: Proxy) -> None:
    with json_proxy.client() as client:
        response = client.get("/healthz")
    (line,) = json_proxy.lines(1)
    record = json.loads(line)
    assert record["request_id"] == response.headers["x-request-id"]
    assert record["upstream_addr"] is None and record["upstream_status"] is None
    assert record["upstream_connect_time"] is None and record["upstream_response_time"] is None


def test_request_ids_kept_from_a_trusted_proxy_and_replaced_from_others(
    json_proxy: Proxy,
) -> None:
    with json_proxy.client() as client:
        untrusted = client.get("/echo", headers={"X-Request-ID": "made-by-the-client"})
        second = client.get("/echo")
    with json_proxy.client(TRUSTED) as client:
        trusted = client.get(
            "/echo", headers={"X-Request-ID": "lb-1234", "X-Forwarded-For": "203.0.113.5"}
        )
    # Not trusted: replaced by ours, for the app and the client alike.
    replaced = untrusted.headers["x-request-id"]
    assert HEX_ID.fullmatch(replaced)
    assert untrusted.json()["headers"]["x-request-id"] == replaced
    assert second.headers["x-request-id"] not in (replaced, "made-by-the-client")
    # From the trusted proxy: kept, sent on, returned.
    assert trusted.headers["x-request-id"] == "lb-1234"
    assert trusted.json()["headers"]["x-request-id"] == "lb-1234"
    records = [json.loads(line) for line in json_proxy.lines(3)]
    assert [r["request_id"] for r in records] == [
        replaced,
        second.headers["x-request-id"],
        "lb-1234",
    ]
    assert (records[2]["client_ip"], records[2]["client_ip_source"]) == ("203.0.113.5", "xff")


def test_json_names_a_client_from_the_proxy_protocol(json_proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", json_proxy.proxy_port), timeout=10) as sock:
        sock.sendall(
            b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 80\r\n"
            b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    (line,) = json_proxy.lines(1)
    record = json.loads(line)
    assert (record["client_ip"], record["client_ip_source"]) == ("198.51.100.7", "proxy_protocol")


def test_json_lists_every_peer_tried(json_proxy: Proxy, gunicorn_a: Gunicorn) -> None:
    # The dead peer is tried once (then it is down for fail_timeout): within two requests,
    # round robin sends one of them there first.
    with json_proxy.client() as client:
        for _ in range(2):
            assert client.get("/flaky/").status_code == 200
    records = [json.loads(line) for line in json_proxy.lines(2)]
    retried = [r for r in records if "upstream_tries" in r]
    assert len(retried) == 1, records
    (record,) = retried
    dead, alive = record["upstream_tries"]
    assert (dead["addr"], dead["status"]) == (json_proxy.dead_address, 502)
    assert dead["response_time"] is not None and dead["header_time"] is None
    assert (alive["addr"], alive["status"]) == (gunicorn_a.address, 200)
    assert (record["upstream_addr"], record["upstream_status"]) == (gunicorn_a.address, 200)


def test_a_template_of_nginx_variables(template_proxy: Proxy, gunicorn_a: Gunicorn) -> None:
    with template_proxy.client() as client:
        response = client.get("/echo?x=1", headers={"X-Custom": "hello", "Host": "Shop.Example:81"})
        client.get("/flaky/a")
        client.get("/flaky/b")
    fields = template_proxy.lines(3)[0].split(" ")
    request_id = response.headers["x-request-id"]
    assert fields[:4] == ["127.0.0.1", "peer", '"GET', "/echo?x=1"]
    assert fields[4:7] == ['HTTP/1.1"', "200", str(len(response.content))]
    assert int(fields[7]) > len(response.content)  # $bytes_sent: with the head
    assert fields[8] == request_id
    assert fields[9:11] == [f"[{gunicorn_a.address}]", "[200]"]
    times = [float(value.strip("[]")) for value in fields[11:14]]
    assert 0 <= times[0] <= times[1] <= times[2]
    assert float(fields[14]) >= 0
    assert fields[15:22] == ["hello", "shop.example", "GET", "/echo?x=1", "x=1", "HTTP/1.1",
                             fields[21]]  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", fields[21])
    assert re.fullmatch(r"\d+\.\d{3}", fields[22])
    # Several peers tried: every one, in order, as nginx's "a, b".
    retried = [line for line in template_proxy.lines(3)[1:] if "502" in line]
    assert len(retried) == 1, template_proxy.lines(3)
    assert f"[{template_proxy.dead_address}, {gunicorn_a.address}]" in retried[0]
    assert "[502, 200]" in retried[0]


def test_check_refuses_an_unknown_variable_at_its_line(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "access_log:\n  path: stdout\n  format: '$remote_addr $upstream_adr'\n"
        "servers:\n  - listen: ['127.0.0.1:8080']\n"
        "    locations: [{path: /, return: {status: 200}}]\n"
    )
    result = run_cli("-t", "-c", str(config))
    assert result.returncode == 1
    assert (
        f"{config}:3: access_log.format: unknown variable $upstream_adr in the template "
        "'$remote_addr $upstream_adr'"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_refused_request_has_an_id_too(json_proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", json_proxy.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head = received.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert head[0].startswith("HTTP/1.1 400")
    (request_id,) = [line.split(": ")[1] for line in head if line.startswith("X-Request-ID:")]
    (line,) = json_proxy.lines(1)
    record = json.loads(line)
    assert (record["status"], record["request_id"]) == (400, request_id)
    assert record["bytes_sent"] == len(received)
