from __future__ import annotations

import pytest

from edgeproxy.config import Location, ReturnAction, ServerConfig, parse_config
from edgeproxy.server.request import Route
from edgeproxy.server.response import Answer
from edgeproxy.server.return_handler import AnswerHandler
from edgeproxy.server.router import CACHE_SIZE, CACHED_KEY_MAX, Router, normalize_path

_UNUSED = AnswerHandler(Answer(500))  # these tests only match; no request is answered


def plain_route(server: ServerConfig, location: Location | None) -> Route:
    return Route(server, location, _UNUSED, (), b"")


CONFIG = """
upstreams:
  app: {servers: ["127.0.0.1:9"]}
servers:
  - listen: ["127.0.0.1:8080"]
    server_name: [example.com, www.example.com]
    locations:
      - {path: /, return: {status: 200, body: "prefix /"}}
      - {path: /static/, return: {status: 200, body: "prefix /static/"}}
      - {path: /static/img/, return: {status: 200, body: "prefix /static/img/"}}
      - {regex: "\\\\.(php|asp)$", return: {status: 200, body: "regex php"}}
      - {regex: "^/static/.*\\\\.php$", return: {status: 200, body: "regex static php"}}
      - {exact: /static/, return: {status: 200, body: "exact /static/"}}
  - listen: ["127.0.0.1:8080"]
    server_name: ["*.example.org", "*.a.example.org"]
    locations:
      - {path: /, return: {status: 200, body: "wildcard"}}
  - listen: ["127.0.0.1:8080"]
    server_name: _
    locations:
      - {path: /, return: {status: 200, body: "default"}}
"""


@pytest.fixture
def router() -> Router:
    config = parse_config(CONFIG, "test.yaml")
    return Router(list(config.servers), plain_route)


def answer(router: Router, host: bytes, path: str) -> str:
    location = router.server_for(host).location_for(path).location
    assert location is not None and isinstance(location.handler, ReturnAction)
    return location.handler.body.decode()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/static/", "exact /static/"),  # exact beats every prefix and regex
        ("/static/a.php", "regex php"),  # regexes in file order, before prefixes
        ("/static/img/a.png", "prefix /static/img/"),  # the longest prefix
        ("/static/a.css", "prefix /static/"),
        ("/other", "prefix /"),
    ],
)
def test_location_precedence(router: Router, path: str, expected: str) -> None:
    assert answer(router, b"example.com", path) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"example.com", "prefix /"),
        (b"WWW.Example.com:8080", "prefix /"),  # case and port do not matter
        (b"b.example.org", "wildcard"),
        (b"x.a.example.org", "wildcard"),
        (b"example.org", "default"),  # *.example.org does not match the bare domain
        (b"unknown.test", "default"),
        (b"", "default"),  # HTTP/1.0 without Host
        (b"[::1]:8080", "default"),
    ],
)
def test_virtual_server_by_host(router: Router, host: bytes, expected: str) -> None:
    assert answer(router, host, "/x") == expected


def test_first_server_is_default_when_none_is_marked() -> None:
    config = parse_config(
        """
servers:
  - listen: ["127.0.0.1:8080"]
    server_name: a.test
    locations: [{path: /, return: {status: 200, body: "a"}}]
  - listen: ["127.0.0.1:8080"]
    server_name: b.test
    locations: [{path: /, return: {status: 200, body: "b"}}]
""",
        "t.yaml",
    )
    router = Router(list(config.servers), plain_route)
    assert answer(router, b"nomatch", "/x") == "a"
    assert answer(router, b"b.test", "/x") == "b"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/a/b?x=1", "/a/b"),
        (b"/a/./b", "/a/b"),
        (b"/a/../b", "/b"),
        (b"/static/%2e%2e/app", "/app"),
        (b"//a///b/", "/a/b/"),
        (b"/%41", "/A"),
        (b"/..", None),
        (b"/a/%2e%2e/%2e%2e/x", None),
        (b"/a%00b", None),
    ],
)
def test_normalize_path(target: bytes, expected: str | None) -> None:
    assert normalize_path(target) == expected


def test_cached_answers_match_fresh_ones_and_the_cache_stays_bounded(router: Router) -> None:
    targets = [b"/static/a.php", b"/static/%2e%2e/x.php", b"/static/", b"/x/../../etc", b"*"]
    targets += [b"/page/%d?q=1" % i for i in range(CACHE_SIZE + 10)]
    targets += [b"/long/" + b"x" * CACHED_KEY_MAX]  # answered, never kept
    for host in [b"www.example.com", b"b.a.example.org:8080", b"other"]:
        for _ in range(2):  # the second round is answered from the caches
            for target in targets:
                routes = router.server_for(host)
                path = normalize_path(target) if target[:1] == b"/" else target.decode()
                expected = routes.location_for(path) if path is not None else routes.not_found
                assert routes.route(target) == (path, expected)
                assert len(routes._cache) <= CACHE_SIZE
                assert all(len(key) <= CACHED_KEY_MAX for key in routes._cache)
    assert router.server_for(b"WWW.Example.COM.").config.server_name[0] == "example.com"
