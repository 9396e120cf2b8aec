"""Nothing outside the root, ever: each attack against a secret planted just beside it.

Requests go out through raw sockets, so no client library normalises the target first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.server.static import cache
from tests.integration.raw_http import Client, RawResponse
from tests.integration.static_tree import SECRET, Tree, make_tree

CONFIG = """
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - {{path: /static/, root: "{root}"}}
      - {{path: /assets/, alias: "{root}/static/"}}
      - {{path: /nolinks/, alias: "{root}/static/", disable_symlinks: "on"}}
      - {{path: /anylinks/, alias: "{root}/static/", disable_symlinks: "off"}}
      - {{path: /, return: {{status: 200, body: "app"}}}}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return make_tree(tmp_path / "files")


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any], tree: Tree) -> Any:
    return await start_proxy(CONFIG.format(root=tree.root))


async def raw_get(proxy: Any, target: bytes) -> RawResponse:
    client = await Client.connect(proxy.port)
    try:
        await client.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await client.response()
    finally:
        client.close()


ATTACKS = [
    b"/static/../secret.txt",
    b"/static/../../secret.txt",
    b"/static/%2e%2e/%2e%2e/secret.txt",
    b"/static/%2E%2E%2F%2E%2E%2Fsecret.txt",
    b"/static/..%2f..%2fsecret.txt",
    b"/static/%252e%252e/%252e%252e/secret.txt",  # double encoding
    b"/static/..%5c..%5csecret.txt",
    b"/static/..\\..\\secret.txt",
    b"/static/%00../../secret.txt",
    b"/static/a.css%00.png",
    b"/static/%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt",  # overlong UTF-8 dots
    b"/static/%c0%af../secret.txt",  # overlong UTF-8 slash
    b"/assets/../../secret.txt",
    b"/assets/%2e%2e/%2e%2e/secret.txt",
    b"/assets/..%2f..%2froot-sibling/secret.txt",
    b"/static/link-outside.txt",  # a relative symlink leaving the root
    b"/static/link-absolute.txt",
    b"/static/link-up/secret.txt",
    b"/static/link-dir-outside/secret.txt",
    b"/assets/link-outside.txt",
    b"/nolinks/link-inside.txt",  # `on`: no symlink at all
    b"/static/.env",
    b"/static/.htpasswd",
    b"/static/%2ehtpasswd",
    b"/static/.git/config",
    b"/static/%2eenv",
    b"/static/%2egit/config",
    b"/static/./.env",
    b"http://x/static/../../secret.txt",
]


@pytest.mark.parametrize("target", ATTACKS, ids=[t.decode("latin-1") for t in ATTACKS])
async def test_nothing_outside_the_root(proxy: Any, target: bytes) -> None:
    response = await raw_get(proxy, target)
    assert SECRET not in response.body
    assert response.status in (400, 403, 404) or (
        response.status == 200 and response.body == b"app"  # routed away from the files
    ), response


async def test_symlinks_inside_the_root_work_by_default(proxy: Any) -> None:
    response = await raw_get(proxy, b"/static/link-inside.txt")
    assert response.status == 200
    assert response.body == b"inside\n"


async def test_refused_symlinks_are_403(proxy: Any) -> None:
    assert (await raw_get(proxy, b"/static/link-outside.txt")).status == 403
    assert (await raw_get(proxy, b"/nolinks/link-inside.txt")).status == 403


async def test_disable_symlinks_off_follows_any(proxy: Any) -> None:
    response = await raw_get(proxy, b"/anylinks/link-outside.txt")
    assert response.status == 200
    assert response.body == SECRET  # what `off` means: the operator asked for it


async def test_a_file_swapped_for_a_symlink_is_refused(proxy: Any, tree: Tree) -> None:
    path = tree.root / "static" / "sub" / "inside.txt"
    assert (await raw_get(proxy, b"/static/sub/inside.txt")).status == 200
    path.unlink()
    path.symlink_to(tree.base / "secret.txt")
    # The open-file cache may answer with the old file (its fd, inside the root) for up to
    # cache.VALID seconds; the secret never, and the symlink is refused once resolved again.
    deadline = time.monotonic() + cache.VALID + 5.0
    while True:
        response = await raw_get(proxy, b"/static/sub/inside.txt")
        assert SECRET not in response.body
        if response.status == 403:
            break
        assert response.body == b"inside\n"
        assert time.monotonic() < deadline, "the symlink was never refused"
        await asyncio.sleep(0.05)


async def test_a_directory_swapped_for_a_symlink_is_refused(proxy: Any, tree: Tree) -> None:
    sub = tree.root / "static" / "sub"
    (sub / "inside.txt").unlink()
    sub.rmdir()
    sub.symlink_to(tree.base / "root-sibling")
    response = await raw_get(proxy, b"/static/sub/secret.txt")
    assert response.status == 403
    assert SECRET not in response.body
