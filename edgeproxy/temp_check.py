"""Whether the workers can create temp files in `temp_path`.

Checked by `-t`, at start-up and before a reload (edgeproxy.check): a temp_path that is
missing or not writable is then a config error naming the key, not a 500 at the first
large body. The check creates an anonymous temp file, as the workers do, with the
workers' identity: when the master is root and the config sets `user` or `group`, a
short-lived child process drops to that identity first (so permissions, ACLs and
read-only mounts answer exactly as they will for the workers).
"""

from __future__ import annotations

import errno
import os
import tempfile

import yaml
from yaml.nodes import MappingNode

from edgeproxy.config import Config
from edgeproxy.errors import ConfigError

UNKNOWN = 255  # the checking child's exit status when it failed otherwise than with an errno


def check_temp_path(config: Config) -> None:
    """Raise a ConfigError (at temp_path's line) when the workers could not create a temp
    file in `config.temp_path`."""
    # The workers switch identity only when the master is root (process.workers).
    as_user = os.geteuid() == 0 and (config.user is not None or config.group is not None)
    code = _in_child(config) if as_user else _create_in(config.temp_path)
    if code == 0:
        return
    if code in errno.errorcode:
        why = f"{os.strerror(code)} ({errno.errorcode[code]})"
    else:
        why = f"the check failed (exit status {code})"
    who = f" as {_identity(config)}" if as_user else ""
    raise ConfigError(
        _where(config.source, "temp_path"),
        f"temp_path: cannot create a temp file in {config.temp_path}{who}: {why}",
    )


def _create_in(directory: str) -> int:
    """0 when an anonymous temp file can be created in `directory`, else the errno."""
    try:
        with tempfile.TemporaryFile(dir=directory, prefix="edgeproxy-check-"):
            pass
    except OSError as exc:
        return exc.errno or UNKNOWN
    return 0


def _in_child(config: Config) -> int:
    """`_create_in` run by a child process with the workers' identity."""
    from edgeproxy.process.workers import drop_privileges  # here: it imports the server

    pid = os.fork()
    if pid == 0:  # the child: nothing but the check, then out without any cleanup
        code = UNKNOWN
        try:
            drop_privileges(config)
            code = _create_in(config.temp_path)
        except OSError as exc:
            code = exc.errno or UNKNOWN
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _identity(config: Config) -> str:
    if config.user and config.group:
        return f"user {config.user!r}, group {config.group!r}"
    return f"user {config.user!r}" if config.user else f"group {config.group!r}"


def _where(source: str, key: str) -> str:
    """`source:LINE` of a top-level key's value, or `source` when it is not written there
    (its default applies) or the file cannot be read again."""
    try:
        with open(source, encoding="utf-8") as fh:
            root = yaml.compose(fh, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return source
    if isinstance(root, MappingNode):
        for name, value in root.value:
            if name.value == key:
                return f"{source}:{value.start_mark.line + 1}"
    return source
