"""The one config check: what `edgeproxy -t` runs, and what a reload runs before it changes
anything. Everything that can be checked without binding a socket or forking."""

from __future__ import annotations

from edgeproxy.config import Config, load_config
from edgeproxy.http.codec import resolve_codec
from edgeproxy.temp_check import check_temp_path


def check_config(path: str) -> Config:
    """The validated config at `path`, or a ConfigError with every problem of the file (its
    `lines`, one `file:line: key.path: what` each); the codec is checked once the file is."""
    config = load_config(path)
    resolve_codec(config.http_parser)  # the codec named is installed
    check_temp_path(config)  # the workers can create temp files there
    return config
