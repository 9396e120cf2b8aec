"""Static files through real sockets: root and alias, index, types, validators, methods."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.raw_http import Client, get
from tests.integration.static_tree import CSS, INDEX, Tree, make_tree

CONFIG = """
http: {{types: {{webmanifest: application/manifest+json, PNG: image/x-test}}, charset: utf-8}}
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - {{path: /static/, root: "{root}", expires: 7d}}
      - {{path: /assets/, alias: "{root}/static/"}}
      - {{path: /forever/, alias: "{root}/static/", expires: max}}
      - {{exact: /favicon.css, alias: "{root}/static/a.css"}}
      - {{path: /missing-root/, root: "{base}/nope"}}
      - {{path: /custom-index/, alias: "{root}/static/", index: [digits.txt, index.html]}}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return make_tree(tmp_path / "files")


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any], tree: Tree) -> Any:
    return await start_proxy(CONFIG.format(root=tree.root, base=tree.base))


async def fetch(proxy: Any, path: str, method: str = "GET", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10.0) as client:
        return await client.request(method, path, headers=headers)


async def test_root_keeps_the_location_path(proxy: Any) -> None:
    response = await fetch(proxy, "/static/a.css")
    assert response.status_code == 200
    assert response.content == CSS
    assert response.headers["content-type"] == "text/css; charset=utf-8"
    assert response.headers["content-length"] == str(len(CSS))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["cache-control"] == "max-age=604800"


async def test_alias_replaces_the_location_prefix(proxy: Any) -> None:
    response = await fetch(proxy, "/assets/a.css")
    assert response.status_code == 200
    assert response.content == CSS
    assert "cache-control" not in response.headers  # expires off by default
    assert (await fetch(proxy, "/forever/a.css")).headers["cache-control"] == "max-age=315360000"


async def test_exact_alias_names_one_file(proxy: Any) -> None:
    response = await fetch(proxy, "/favicon.css")
    assert response.status_code == 200
    assert response.content == CSS


async def test_missing_files_and_roots_are_404(proxy: Any) -> None:
    assert (await fetch(proxy, "/static/nope.css")).status_code == 404
    assert (await fetch(proxy, "/static/nope/deeper.css")).status_code == 404
    assert (await fetch(proxy, "/static/a.css/x")).status_code == 404  # a file used as a dir
    assert (await fetch(proxy, "/missing-root/a.css")).status_code == 404


async def test_directory_requests_use_the_index_or_get_403(proxy: Any, tree: Tree) -> None:
    response = await fetch(proxy, "/static/")
    assert response.status_code == 200
    assert response.content == INDEX
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    listing = await fetch(proxy, "/static/noindex/")
    assert listing.status_code == 403
    assert b"file.txt" not in listing.content  # never a listing
    first = await fetch(proxy, "/custom-index/")
    assert first.content == b"0123456789"  # the first index name that exists


async def test_a_directory_without_its_slash_is_redirected(proxy: Any) -> None:
    response = await fetch(proxy, "/static/noindex?x=1")
    assert response.status_code == 301
    assert response.headers["location"] == "/static/noindex/?x=1"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/static/app.js", "application/javascript; charset=utf-8"),
        ("/static/logo.png", "image/x-test"),  # http.types overrides the built-in table
        ("/static/data.unknownext", "application/octet-stream"),
        ("/static/site.webmanifest", "application/manifest+json; charset=utf-8"),
        ("/static/digits.txt", "text/plain; charset=utf-8"),
    ],
)
async def test_content_types(proxy: Any, path: str, expected: str) -> None:
    response = await fetch(proxy, path)
    assert response.status_code == 200
    assert response.headers["content-type"] == expected


async def test_head_answers_as_get_without_the_body(proxy: Any) -> None:
    client = await Client.connect(proxy.port)
    try:
        await client.send(b"HEAD /static/a.css HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await client.response(head=True)
        full = await client.exchange(get("/static/a.css"))  # same connection: no stray body
    finally:
        client.close()
    assert head.status == 200
    assert head.get("content-length") == str(len(CSS))
    drop = {"date", "x-request-id"}  # each request has its own id
    assert [h for h in head.headers if h[0] not in drop] == [
        h for h in full.headers if h[0] not in drop
    ]
    assert full.body == CSS


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_other_methods_get_405_with_allow(proxy: Any, method: str) -> None:
    response = await fetch(proxy, "/static/a.css", method)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_validators_and_not_modified(proxy: Any, tree: Tree) -> None:
    first = await fetch(proxy, "/static/a.css")
    etag = first.headers["etag"]
    modified = first.headers["last-modified"]
    assert etag.startswith('"') and not etag.startswith("W/")
    by_tag = await fetch(proxy, "/static/a.css", **{"if-none-match": etag})
    assert by_tag.status_code == 304
    assert by_tag.content == b""
    assert by_tag.headers["etag"] == etag
    assert by_tag.headers["last-modified"] == modified
    assert by_tag.headers["cache-control"] == "max-age=604800"
    weak = await fetch(proxy, "/static/a.css", **{"if-none-match": f'W/{etag}, "other"'})
    assert weak.status_code == 304
    by_date = await fetch(proxy, "/static/a.css", **{"if-modified-since": modified})
    assert by_date.status_code == 304
    older = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await fetch(proxy, "/static/a.css", **{"if-modified-since": older})).status_code == 200
    other = await fetch(proxy, "/static/a.css", **{"if-none-match": '"nope"'})
    assert other.status_code == 200
    # A changed file gets a new validator: the old one no longer matches.
    path = tree.root / "static" / "a.css"
    path.write_bytes(CSS + b"/* v2 */\n")
    os.utime(path, ns=(0, 2_000_000_000_000_000_000))
    changed = await fetch(proxy, "/static/a.css", **{"if-none-match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag


async def test_precondition_failed(proxy: Any) -> None:
    etag = (await fetch(proxy, "/static/a.css")).headers["etag"]
    assert (await fetch(proxy, "/static/a.css", **{"if-match": '"nope"'})).status_code == 412
    assert (await fetch(proxy, "/static/a.css", **{"if-match": etag})).status_code == 200
    assert (await fetch(proxy, "/static/a.css", **{"if-match": "*"})).status_code == 200
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    response = await fetch(proxy, "/static/a.css", **{"if-unmodified-since": old})
    assert response.status_code == 412


async def test_empty_file(proxy: Any) -> None:
    response = await fetch(proxy, "/static/empty.txt")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "0"


async def test_keep_alive_serves_many_files_on_one_connection(proxy: Any) -> None:
    client = await Client.connect(proxy.port)
    try:
        for _ in range(5):
            response = await client.exchange(get("/static/a.css"))
            assert response.status == 200
            assert response.body == CSS
            assert (await client.exchange(get("/static/nope"))).status == 404
    finally:
        client.close()


async def test_pipelined_requests_keep_their_order(proxy: Any, tree: Tree) -> None:
    big = bytes(range(256)) * 2048  # 512 KiB: sent by the responder, sendfile and all
    tree.write("static/big.bin", big)
    client = await Client.connect(proxy.port)
    try:
        await client.send(get("/static/big.bin") + get("/static/a.css") + get("/static/big.bin"))
        first = await client.response()
        second = await client.response()
        third = await client.response()
    finally:
        client.close()
    assert (first.status, first.body == big) == (200, True)
    assert (second.status, second.body) == (200, CSS)
    assert (third.status, third.body == big) == (200, True)


async def test_if_none_match_on_several_lines(proxy: Any) -> None:
    etag = (await fetch(proxy, "/static/a.css")).headers["etag"]
    client = await Client.connect(proxy.port)
    try:
        request = (
            "GET /static/a.css HTTP/1.1\r\nHost: x\r\n"
            f'If-None-Match: "other"\r\nIf-None-Match: {etag}\r\n\r\n'
        )
        response = await client.exchange(request.encode())
    finally:
        client.close()
    assert response.status == 304
