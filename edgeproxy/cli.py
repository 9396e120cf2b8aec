"""The command line: the only place that prints usage errors and exits."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from edgeproxy import __version__, build_kind, warn_if_pure_build
from edgeproxy.check import check_config
from edgeproxy.config.model import Config
from edgeproxy.config.tls import expired_certificates
from edgeproxy.errors import ConfigError

DEFAULT_PATHS = ("proxy.yaml", "/etc/edgeproxy/proxy.yaml")
SIGNALS = {  # edgeproxy -s NAME, as nginx -s
    "reload": signal.SIGHUP,
    "quit": signal.SIGQUIT,
    "stop": signal.SIGTERM,
    "reopen": signal.SIGUSR1,
}


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
        choices=tuple(SIGNALS),
        help="signal the running master (found through pid_file): reload the config, "
        "quit gracefully, stop fast, reopen the log files",
    )
    parser.add_argument(
        "--version", action="version", version=f"edgeproxy {__version__} ({build_kind()})"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = args.config or default_config_path()
    if args.signal:
        return send_signal(args.signal, path)
    try:
        config = check_config(path)
    except ConfigError as exc:
        print_error(exc)
        if args.test:
            print(f"edgeproxy: configuration file {path} test failed", file=sys.stderr)
        return 1
    if args.test:
        expired = expired_certificates(config)  # only a warning when serving
        for what in expired:
            print(f"edgeproxy: {what}", file=sys.stderr)
        if expired:
            print(f"edgeproxy: configuration file {path} test failed", file=sys.stderr)
            return 1
        print("configuration ok")
        return 0
    return serve(config, path)


def print_error(exc: Exception) -> None:
    """`edgeproxy: ` and the error, once per line: a ConfigError has a line per problem."""
    for line in str(exc).splitlines():
        print(f"edgeproxy: {line}", file=sys.stderr)


def _raw_pid_file(path: str) -> str | None:
    """`pid_file` read from a config that does not validate (to stop a master anyway)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    value = raw.get("pid_file") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def send_signal(name: str, path: str) -> int:
    from edgeproxy.process.pidfile import PidFileError, running_master

    try:
        pid_file = check_config(path).pid_file
    except ConfigError as exc:
        # The master would refuse to reload an invalid config; say why here and now. The
        # other signals only need the pid file, which a broken config may still name.
        pid_file = None if name == "reload" else _raw_pid_file(path)
        if pid_file is None:
            print_error(exc)
            print(f"edgeproxy: {path} is invalid; no signal sent", file=sys.stderr)
            return 1
    if not pid_file:
        print(f"edgeproxy: {path} sets no pid_file, so no running master can be found",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        pid = running_master(pid_file)
        os.kill(pid, SIGNALS[name])
    except PidFileError as exc:
        print(f"edgeproxy: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"edgeproxy: cannot signal the master: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def serve(config: Config, path: str) -> int:
    from edgeproxy.logging import setup_error_log
    from edgeproxy.process.master import Master, MasterError

    setup_error_log(config.error_log)
    warn_if_pure_build()
    for what in expired_certificates(config):
        logging.getLogger("edgeproxy").warning("%s", what)
    master = Master(config, path)
    try:
        master.start()
    except (ConfigError, MasterError) as exc:
        master.close()
        print_error(exc)
        return 1
    try:
        return master.run()
    except MasterError as exc:
        if config.error_log.path != "stderr":  # else the error log already said it there
            print(f"edgeproxy: {exc}", file=sys.stderr)
        return 1
