"""try_files (static first, then the app or a fallback file) and autoindex, through real
sockets, with a real gunicorn app behind `@app`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gunicorn
from tests.integration.static_tree import SECRET

SPA = b"<!doctype html><title>spa</title>\n"

CONFIG = """
upstreams:
  app: {{servers: ["{upstream}"]}}
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - {{path: /spa/, root: "{root}", try_files: [$uri, $uri/, /spa/index.html]}}
      - {{path: /, root: "{root}/public", try_files: [$uri, $uri/index.html, "@app"]}}
      - {{path: /gone/, root: "{root}", try_files: [$uri, "=410"]}}
      - {{path: /list/, alias: "{root}/listed/", autoindex: true}}
      - {{path: /nolist/, alias: "{root}/listed/"}}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "files"
    root = base / "root"
    (root / "spa" / "assets").mkdir(parents=True)
    (root / "spa" / "index.html").write_bytes(SPA)
    (root / "spa" / "assets" / "app.js").write_bytes(b"js")
    (root / "spa" / "docs").mkdir()
    (root / "spa" / "docs" / "index.html").write_bytes(b"docs")
    (root / "public" / "blog").mkdir(parents=True)
    (root / "public" / "robots.txt").write_bytes(b"robots")
    (root / "public" / "blog" / "index.html").write_bytes(b"blog")
    listed = root / "listed"
    (listed / "sub dir").mkdir(parents=True)
    (listed / "a&b <x>.txt").write_bytes(b"1")
    (listed / "<img src=x onerror=alert(1)>.txt").write_bytes(b"1")
    (listed / ".hidden").write_bytes(SECRET)
    (base / "secret.txt").write_bytes(SECRET)
    return root


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any], root: Path, gunicorn_a: Gunicorn) -> Any:
    return await start_proxy(CONFIG.format(root=root, upstream=gunicorn_a.address))


async def fetch(proxy: Any, path: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10.0) as client:
        return await client.request(method, path)


async def test_spa_files_then_the_fallback_file(proxy: Any) -> None:
    assert (await fetch(proxy, "/spa/assets/app.js")).content == b"js"
    assert (await fetch(proxy, "/spa/docs/")).content == b"docs"  # $uri/ with its index
    deep = await fetch(proxy, "/spa/some/client/route")
    assert deep.status_code == 200
    assert deep.content == SPA
    assert deep.headers["content-type"] == "text/html"


async def test_static_first_then_the_app(proxy: Any) -> None:
    assert (await fetch(proxy, "/robots.txt")).content == b"robots"
    assert (await fetch(proxy, "/blog/")).content == b"blog"  # $uri/index.html
    response = await fetch(proxy, "/echo?x=1")
    assert response.status_code == 200
    echoed = json.loads(response.content)
    assert echoed["path"] == "/echo"
    assert echoed["query"] == "x=1"
    assert (await fetch(proxy, "/anything")).content == b"hello from a\n"


async def test_other_methods_go_to_the_app(proxy: Any) -> None:
    response = await fetch(proxy, "/echo", "POST")
    assert response.status_code == 200
    assert json.loads(response.content)["method"] == "POST"


async def test_paths_that_name_no_file_go_to_the_app(proxy: Any) -> None:
    well_known = await fetch(proxy, "/.well-known/acme-challenge/token")
    assert well_known.content == b"hello from a\n"  # the app's, not a file
    response = await fetch(proxy, "/.%2e/secret.txt")
    assert SECRET not in response.content
    dotfile = await fetch(proxy, "/nolist/.hidden")  # no fallback there: refused
    assert dotfile.status_code == 404
    assert SECRET not in dotfile.content


async def test_code_fallback(proxy: Any) -> None:
    assert (await fetch(proxy, "/gone/nothing")).status_code == 410


async def test_autoindex_lists_escaped_names(proxy: Any) -> None:
    response = await fetch(proxy, "/list/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html"
    page = response.text
    assert "a&amp;b &lt;x&gt;.txt" in page
    assert 'href="a%26b%20%3Cx%3E.txt"' in page
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in page
    assert 'href="sub%20dir/"' in page
    assert ".hidden" not in page
    assert (await fetch(proxy, "/list/sub%20dir/")).status_code == 200
    assert (await fetch(proxy, "/nolist/")).status_code == 403
