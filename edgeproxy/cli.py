"""The command line: the only place that prints usage errors and exits."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from edgeproxy import __version__
from edgeproxy.config import load_config
from edgeproxy.config.model import Config
from edgeproxy.errors import ConfigError
from edgeproxy.http.codec import resolve_codec

log = logging.getLogger("edgeproxy")

DEFAULT_PATHS = ("proxy.yaml", "/etc/edgeproxy/proxy.yaml")


def default_config_path() -> str:
    env = os.environ.get("EDGEPROXY_CONFIG")
    if env:
        return env
    for path in DEFAULT_PATHS:
        if os.path.exists(path):
            return path
    return DEFAULT_PATHS[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="edgeproxy",
        description="An asyncio reverse proxy and load balancer for Python web deployments.",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (default: $EDGEPROXY_CONFIG, ./proxy.yaml, /etc/edgeproxy/proxy.yaml)",
    )
    parser.add_argument(
        "-t", "--test", action="store_true", help="check the config and exit (0 if it is ok)"
    )
    parser.add_argument(
        "-s",
        "--signal",
        choices=("reload", "quit", "stop", "reopen"),
        help="signal a running master (not built yet: comes with the master/worker release)",
    )
    parser.add_argument("--version", action="version", version=f"edgeproxy {__version__}")
    return parser.parse_args(argv)


def check(path: str) -> Config:
    """Load and validate everything that can be checked without binding sockets."""
    config = load_config(path)
    resolve_codec(config.http_parser)
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = args.config or default_config_path()
    if args.signal:
        print("edgeproxy: -s is not supported yet (it comes with the master/worker release)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        config = check(path)
    except ConfigError as exc:
        print(f"edgeproxy: {exc}", file=sys.stderr)
        if args.test:
            print(f"edgeproxy: configuration file {path} test failed", file=sys.stderr)
        return 1
    if args.test:
        print("configuration ok")
        return 0
    return serve(config)


def serve(config: Config) -> int:
    from edgeproxy.logging import setup_error_log
    from edgeproxy.server.listeners import bind_all
    from edgeproxy.server.worker import run_worker

    setup_error_log(config.error_log)
    try:
        sockets = bind_all(config)
    except ConfigError as exc:
        print(f"edgeproxy: {exc}", file=sys.stderr)
        return 1
    if config.workers != 1:
        log.warning(
            "workers: %d requested; this release serves with one process "
            "(the master/worker model is not built yet)",
            config.workers,
        )
    pid_file = config.pid_file
    if pid_file:
        with open(pid_file, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    try:
        run_worker(config, sockets)
    finally:
        for sock in sockets.values():
            sock.close()
        for address in sockets:
            if address.kind == "unix":
                with contextlib.suppress(OSError):
                    os.unlink(address.path)
        if pid_file:
            with contextlib.suppress(OSError):
                os.unlink(pid_file)
    return 0
