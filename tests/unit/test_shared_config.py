"""`shared_state:` and a zone's `shared: true`: read, defaulted, and refused where wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeproxy.config.model import SharedStateConfig
from tests.conftest import run_cli
from tests.unit.test_config import EXAMPLE, SERVERS, error, parse

ZONES = "limits:\n  per_ip: {rate: 10r/s, shared: true}\n  local: {rate: 10r/s}\n"


def test_shared_state_with_its_defaults_and_a_shared_zone() -> None:
    config = parse("shared_state: {redis: 'redis://127.0.0.1:6379/0'}\n" + ZONES + SERVERS)
    shared = SharedStateConfig(redis="redis://127.0.0.1:6379/0")
    assert config.shared_state == shared
    assert (shared.timeout, shared.on_error, shared.prefix, shared.lease) == (
        0.05, "local", "edgeproxy", 10.0
    )  # fmt: skip
    assert config.limits["per_ip"].shared == shared
    assert config.limits["local"].shared is None


def test_every_shared_state_key() -> None:
    config = parse(
        "shared_state: {redis: 'rediss://:pw@redis.example:6380/2', timeout: 20ms,"
        " on_error: deny, prefix: site1, lease: 3s}\n" + SERVERS
    )
    assert config.shared_state == SharedStateConfig(
        "rediss://:pw@redis.example:6380/2", 0.02, "deny", "site1", 3.0
    )


def test_the_contract_example_reads_its_shared_state(tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    text = yaml.safe_dump({"shared_state": doc["shared_state"]}) + ZONES + SERVERS
    assert parse(text).shared_state == SharedStateConfig("redis://127.0.0.1:6379/0", 0.05, "local")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            ZONES + SERVERS,
            "t.yaml:2: limits.per_ip.shared: needs shared_state (a Redis) at the top level",
        ),
        (
            "shared_state: {timeout: 1s}\n" + SERVERS,
            "t.yaml:1: shared_state.redis: required",
        ),
        (
            "shared_state: {redis: 'http://127.0.0.1:6379'}\n" + SERVERS,
            "t.yaml:1: shared_state.redis: expected redis://HOST:PORT/DB, rediss://... or "
            "unix:///PATH, got 'http://127.0.0.1:6379'",
        ),
        (
            "shared_state: {redis: 'redis://127.0.0.1:63a79'}\n" + SERVERS,
            "t.yaml:1: shared_state.redis: bad Redis URL 'redis://127.0.0.1:63a79': "
            "Port could not be cast to integer value as '63a79'",
        ),
        (
            "shared_state: {redis: 'redis:///0'}\n" + SERVERS,
            "t.yaml:1: shared_state.redis: a redis:// URL needs a host: 'redis:///0'",
        ),
        (
            "shared_state: {redis: 'redis://h/x'}\n" + SERVERS,
            "t.yaml:1: shared_state.redis: the database is a number, got 'x' in 'redis://h/x'",
        ),
        (
            "shared_state: {redis: 'unix://run/r.sock'}\n" + SERVERS,
            "t.yaml:1: shared_state.redis: a unix:// URL needs an absolute socket path: "
            "'unix://run/r.sock'",
        ),
        (
            "shared_state: {redis: 'unix:///r.sock', on_error: fail}\n" + SERVERS,
            "t.yaml:1: shared_state.on_error: expected one of local, allow, deny, got 'fail'",
        ),
        (
            "shared_state: {redis: 'unix:///r.sock', prefix: 'a b'}\n" + SERVERS,
            "t.yaml:1: shared_state.prefix: a key prefix is one word, got 'a b'",
        ),
    ],
)
def test_shared_state_errors(text: str, expected: str) -> None:
    assert error(text) == expected


def test_check_mode_checks_the_url_shape_and_needs_no_redis(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text("shared_state: {redis: 'redis://127.0.0.1:1/0'}\n" + ZONES + SERVERS)
    result = run_cli("-t", "-c", str(path))
    assert result.returncode == 0, result.stderr  # nothing listens on port 1: not asked
    path.write_text("shared_state: {redis: 'redis://127.0.0.1:0x/0'}\n" + ZONES + SERVERS)
    result = run_cli("-t", "-c", str(path))
    assert result.returncode != 0 and "shared_state.redis: bad Redis URL" in result.stderr
