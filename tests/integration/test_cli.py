"""The real CLI in a subprocess: config checks, errors, and serving in front of gunicorn."""

from __future__ import annotations

from pathlib import Path

import httpx

from edgeproxy import __version__, build_kind
from tests.conftest import Gunicorn, can_connect, free_port, run_cli, wait_until
from tests.integration.cli_proxy import CliProxy


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.strip() == f"edgeproxy {__version__} ({build_kind()})"
    help_text = run_cli("-h").stdout
    assert "-c FILE" in help_text and "-t" in help_text


def test_check_ok(tmp_path: Path) -> None:
    config = write(
        tmp_path / "proxy.yaml",
        "servers:\n  - listen: ['127.0.0.1:8080']\n"
        "    locations: [{path: /, return: {status: 200}}]\n",
    )
    result = run_cli("-t", "-c", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "configuration ok"


def test_check_names_file_line_and_key_without_traceback(tmp_path: Path) -> None:
    config = write(
        tmp_path / "proxy.yaml",
        """upstreams:
  app:
    servers: ["127.0.0.1:8001"]
servers:
  - listen: ["127.0.0.1:8080"]
    locations:
      - path: /
        proxy_pass: ap
""",
    )
    result = run_cli("-t", "-c", config)
    assert result.returncode == 1
    assert (
        f"{config}:8: servers[0].locations[0].proxy_pass: no upstream named 'ap'" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_unknown_and_not_yet_supported_keys_are_errors(tmp_path: Path) -> None:
    unknown = write(
        tmp_path / "a.yaml",
        "servers:\n  - listen: ['127.0.0.1:8080']\n    lisen: x\n"
        "    locations: [{path: /, return: {status: 200}}]\n",
    )
    result = run_cli("-t", "-c", unknown)
    assert result.returncode == 1
    assert f"{unknown}:3: servers[0].lisen: unknown key" in result.stderr
    public = write(
        tmp_path / "b.yaml",
        "metrics: {listen: '127.0.0.1:8080'}\nservers:\n  - listen: ['127.0.0.1:8080']\n"
        "    locations: [{path: /, return: {status: 200}}]\n",
    )
    result = run_cli("-t", "-c", public)
    assert result.returncode == 1
    assert f"{public}:1: metrics.listen: 127.0.0.1:8080 is taken by servers[0]" in result.stderr


def test_check_prints_every_error_of_the_file_one_a_line(tmp_path: Path) -> None:
    config = write(
        tmp_path / "proxy.yaml",
        """upstreams:
  app:
    balanse: least_conn
    servers: ["127.0.0.1:8001"]
servers:
  - listen: ["127.0.0.1:8080"]
    send_timeout: 0s
    locations:
      - {path: /, proxy_pass: app}
      - {path: /api, proxy_pass: api}
""",
    )
    result = run_cli("-t", "-c", config)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"edgeproxy: {config}:3: upstreams.app.balanse: unknown key; did you mean 'balance'?",
        f"edgeproxy: {config}:7: servers[0].send_timeout: must be above zero, got '0s'",
        f"edgeproxy: {config}:10: servers[0].locations[1].proxy_pass: no upstream named 'api'",
        f"edgeproxy: configuration file {config} test failed",
    ]
    # and starting with that file says the same, then stops
    started = run_cli("-c", config)
    assert started.returncode == 1
    assert started.stderr.splitlines() == result.stderr.splitlines()[:3]


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "nope.yaml" in result.stderr and "Traceback" not in result.stderr


def test_serves_through_the_cli_and_stops_on_sigterm(tmp_path: Path, gunicorn_a: Gunicorn) -> None:
    proxy = CliProxy(tmp_path, free_port())
    port = proxy.port
    pid_file = tmp_path / "edgeproxy.pid"
    access_log = proxy.access_log
    proxy.config.write_text(
        f"""pid_file: {pid_file}
access_log: {{path: {access_log}, format: combined}}
temp_path: {tmp_path}
upstreams:
  app: {{servers: ["{gunicorn_a.address}"]}}
servers:
  - listen: ["127.0.0.1:{port}"]
    locations:
      - {{exact: /healthz, return: {{status: 200, body: "ok\\n"}}}}
      - {{path: /, proxy_pass: app}}
""",
    )
    proxy.launch()
    try:
        # The master binds before it writes its pid file (as nginx): wait for both.
        wait_until(
            lambda: can_connect(f"127.0.0.1:{port}") and pid_file.exists(), 15, "edgeproxy up"
        )
        assert pid_file.read_text().strip() == str(proxy.pid)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/healthz").text == "ok\n"
            assert client.get("/").text == "hello from a\n"
        wait_until(lambda: access_log.read_text().count("\n") >= 2, 10, "access log lines")
        lines = access_log.read_text().splitlines()
        assert '"GET /healthz HTTP/1.1" 200 3' in lines[0]
        assert '"GET / HTTP/1.1" 200 13' in lines[1]
    finally:
        status = proxy.stop()  # SIGTERM
    assert status == 0, proxy.stderr
    assert not pid_file.exists()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write(
            tmp_path / "proxy.yaml",
            f"servers:\n  - listen: ['127.0.0.1:{port}']\n"
            "    locations: [{path: /, return: {status: 200}}]\n",
        )
        result = run_cli("-c", config)
    assert result.returncode == 1
    assert f"cannot bind 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
