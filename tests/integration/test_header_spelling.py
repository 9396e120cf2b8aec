"""Response field names reach clients spelled as the upstream spelled them (as nginx and
HAProxy pass them on), and the fields edgeproxy writes itself in their canonical case.

Read through raw sockets: httpx would hide the spelling. Once per codec (conftest's
http_parser), since each codec reads upstream response heads itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import Gunicorn, Proxy
from tests.integration.fake_upstreams import proxy_yaml
from tests.integration.raw_http import TIMEOUT
from tests.integration.static_tree import make_tree


async def field_names(port: int, path: str) -> tuple[int, list[str]]:
    """The status and the field names, as spelled on the wire, of one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    finally:
        writer.close()
    lines = head[:-4].decode("latin-1").split("\r\n")
    return int(lines[0].split(" ")[1]), [line.partition(":")[0] for line in lines[1:]]


async def test_upstream_field_names_keep_their_spelling(start_proxy, gunicorn_a: Gunicorn) -> None:
    proxy: Proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    status, names = await field_names(proxy.port, "/spelled")
    assert status == 200
    # gunicorn's own Server and Date are replaced by ours; the framing fields are ours too
    # (the app's "content-length" comes out canonical).
    assert names == [
        "Server", "Date", "X-Custom-Header", "Content-Type", "x-all-lower", "ETag",
        "X-Request-ID", "Content-Length", "Connection",
    ]  # fmt: skip


async def test_static_files_and_refusals_name_our_fields_canonically(
    start_proxy, tmp_path: Path
) -> None:
    tree = make_tree(tmp_path / "tree")
    proxy: Proxy = await start_proxy(f"""
limits:
  once: {{rate: 1r/m, nodelay: true}}
  once_503: {{rate: 1r/m, nodelay: true, status: 503}}
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - {{path: /static/, root: "{tree.root}", expires: 1h}}
      - {{path: /limited/, return: {{status: 200, body: "ok"}}, limit_req: once}}
      - {{path: /busy/, return: {{status: 200, body: "ok"}}, limit_req: once_503}}
""")
    status, names = await field_names(proxy.port, "/static/a.css")
    assert status == 200
    assert names == [
        "Server", "Date", "Content-Type", "ETag", "Last-Modified", "Cache-Control",
        "Accept-Ranges", "X-Request-ID", "Content-Length", "Connection",
    ]  # fmt: skip
    for path, refused in (("/limited/", 429), ("/busy/", 503)):
        # One request a minute: the first or second is refused (the zone may outlive a
        # proxy started earlier in this process).
        answers = [await field_names(proxy.port, path) for _ in range(2)]
        status, names = answers[-1]
        assert status == refused
        assert names == [
            "Server", "Date", "Retry-After", "RateLimit-Policy", "RateLimit", "Content-Type",
            "X-Request-ID", "Content-Length", "Connection",
        ]  # fmt: skip
