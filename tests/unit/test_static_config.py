"""The static keys in the config: what they read into, and what they refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeproxy.config import load_config, parse_config
from edgeproxy.config.model import StaticFiles
from tests.unit.test_config import EXAMPLE, error, location, parse


def static(body: str) -> StaticFiles:
    spec = parse(location(body)).servers[0].locations[0].handler
    assert isinstance(spec, StaticFiles)
    return spec


def test_root_and_defaults() -> None:
    spec = static("path: /static/\nroot: /srv/app")
    assert spec == StaticFiles("/srv/app")
    assert spec.index == ("index.html",)
    assert spec.gzip_static is True
    assert spec.disable_symlinks == "outside_root"
    assert spec.expires is None
    assert spec.autoindex is False


def test_alias_strips_the_location_prefix() -> None:
    assert static("path: /assets/v1/\nalias: /srv/x/").strip == ("assets", "v1")
    exact = static("exact: /favicon.ico\nalias: /srv/x/favicon.ico")
    assert exact.alias_file is True


@pytest.mark.parametrize(
    ("value", "seconds"), [("7d", 7 * 86400.0), ("off", None), ("max", 315360000.0), ("0", 0.0)]
)
def test_expires(value: str, seconds: float | None) -> None:
    assert static(f"path: /s/\nroot: /srv\nexpires: {value}").expires == seconds


def test_symlink_modes_and_index() -> None:
    assert static("path: /s/\nroot: /srv\ndisable_symlinks: on").disable_symlinks == "on"
    assert static("path: /s/\nroot: /srv\ndisable_symlinks: off").disable_symlinks == "off"
    assert static("path: /s/\nroot: /srv\nindex: [a.html, b.htm]").index == ("a.html", "b.htm")


def test_try_files_and_autoindex() -> None:
    spec = static("path: /\nroot: /a\ntry_files: [$uri, $uri/, '@app']\nautoindex: true")
    assert spec.try_files == ("$uri", "$uri/", "@app")
    assert spec.autoindex is True


def test_types_and_charset() -> None:
    config = parse_config(
        "http:\n  types: {WebManifest: application/manifest+json}\n  charset: utf-8\n"
        "servers:\n  - listen: '127.0.0.1:0'\n    charset: off\n"
        "    locations: [{path: /, root: /srv}]\n",
        "t.yaml",
    )
    http = config.servers[0].http
    assert http.types == (("webmanifest", "application/manifest+json"),)
    assert http.charset is None  # the server turned it off


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("path: /\nroot: srv", "t.yaml:8: servers[0].locations[0].root: must be an absolute path"),
        ("path: /\nroot: /a\nalias: /b", "servers[0].locations[0].alias: only one handler"),
        ("path: /\nproxy_pass: app\nroot: /a", "servers[0].locations[0].root: only one handler"),
        ("path: /\nproxy_pass: app\nexpires: 7d", "locations[0].expires: only with root or alias"),
        ("path: /\nproxy_pass: app\nindex: [a]", "locations[0].index: only with root or alias"),
        ("path: /\nroot: /a\nindex: [../x]", "locations[0].index[0]: expected a file name"),
        ("path: /\nroot: /a\ndisable_symlinks: yes", "disable_symlinks: expected one of"),
        ("path: /\nroot: /a\nexpires: soon", "locations[0].expires:"),
        ('regex: "x$"\nalias: /a', "locations[0].alias: not with a regex location"),
        ("path: /\nroot: /a\ntry_files: [$uri]", "try_files: needs at least two entries"),
        ("path: /\nroot: /a\ntry_files: ['@app', $uri]", "try_files[0]: an @upstream entry"),
        ("path: /\nroot: /a\ntry_files: [$uri, '@nope']", "no upstream named 'nope'"),
        ("path: /\nroot: /a\ntry_files: [$uri, '=200']", "try_files[1]: expected =CODE"),
        ("path: /\nroot: /a\ntry_files: ['=404', $uri]", "try_files[0]: an =CODE entry"),
        ("path: /\nroot: /a\ntry_files: [x, $uri]", "expected a path starting with / or $uri"),
        ("path: /\nproxy_pass: app\nautoindex: true", "autoindex: only with root or alias"),
        ("path: /p/\ninternal: true\nproxy_pass: app", "internal: only with root or alias"),
    ],
)
def test_static_errors(body: str, expected: str) -> None:
    assert expected in error(location(body))


def test_bad_types_are_refused() -> None:
    text = "http:\n  types: {js: 'not a type'}\nservers:\n  - listen: '127.0.0.1:0'\n"
    assert "http.types.js: bad content type" in error(
        text + "    locations: [{path: /, root: /a}]\n"
    )


def test_the_contract_static_keys_load(tmp_path: Path) -> None:
    """The example's http.types, http.charset and its static locations, as written."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    statics = [loc for loc in doc["servers"][0]["locations"] if "root" in loc or "alias" in loc]
    http = {key: doc["http"][key] for key in ("types", "charset")}
    path = tmp_path / "static.yaml"
    path.write_text(
        yaml.safe_dump(
            {"http": http, "servers": [{"listen": ["127.0.0.1:0"], "locations": statics}]}
        )
    )
    config = load_config(str(path))
    server = config.servers[0]
    assert server.http.types == (("webmanifest", "application/manifest+json"),)
    assert server.http.charset == "utf-8"
    specs = [loc.handler for loc in server.locations]
    assert specs == [
        StaticFiles("/srv/app", expires=7 * 86400.0),
        StaticFiles("/srv/spa", try_files=("$uri", "$uri/", "/index.html")),
        StaticFiles("/srv/private/", ("protected",), internal=True),
    ]
