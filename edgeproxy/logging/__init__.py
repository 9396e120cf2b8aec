"""The access log (edgeproxy.logging.access, its formats in .formats) and the error log."""

from __future__ import annotations

import logging
import sys

from edgeproxy.config.model import ErrorLogConfig
from edgeproxy.logging.access import FLUSH_LINES, AccessLog

__all__ = ["FLUSH_LINES", "AccessLog", "reopen_error_log", "setup_error_log"]


def setup_error_log(config: ErrorLogConfig) -> None:
    """Route the `edgeproxy` loggers to the configured target, nginx-style lines."""
    logger = logging.getLogger("edgeproxy")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    target: logging.Handler
    if config.path == "stderr":
        target = logging.StreamHandler(sys.stderr)
    elif config.path == "stdout":
        target = logging.StreamHandler(sys.stdout)
    else:
        target = logging.FileHandler(config.path)
    target.setFormatter(
        logging.Formatter(
            "%(asctime)s [%(levelname)s] %(process)d: %(message)s", "%Y/%m/%d %H:%M:%S"
        )
    )
    logger.addHandler(target)
    logger.setLevel(config.level.upper())
    logger.propagate = False


def reopen_error_log() -> None:
    """Reopen the error log file, if it is one, at its configured path (logrotate)."""
    for handler in logging.getLogger("edgeproxy").handlers:
        if isinstance(handler, logging.FileHandler):
            stream = open(handler.baseFilename, "a", encoding=handler.encoding)  # noqa: SIM115
            old = handler.setStream(stream)
            if old is not None:
                old.close()
