"""Open a path beneath a directory without a race between checking it and opening it.

The choice: Linux's openat2(2) with RESOLVE_BENEATH, called through ctypes (Python has no
binding for it). The kernel resolves the path relative to the directory's fd and fails any
step that would leave it (`..`, a symlink pointing outside, an absolute symlink), in the
same call that opens the file, so nothing can be swapped between a check and the open.
RESOLVE_NO_SYMLINKS refuses every symlink (`disable_symlinks: on`), RESOLVE_NO_MAGICLINKS
keeps /proc-style links out in every mode.

Where openat2 is missing (kernels before 5.6, other systems), the fallback walks the path
one component at a time with openat(O_NOFOLLOW) from the directory's fd: no symlink is
followed at all, so `outside_root` is as strict as `on` there (safe, and documented).

`disable_symlinks: off` follows any symlink (a plain openat from the directory's fd; the
path itself still never holds `..`, paths.py refused it).

One difference from nginx's `outside_root`: an absolute symlink is refused even when it
points inside the root, because RESOLVE_BENEATH cannot tell; use relative links.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

O_FILE = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | getattr(os, "O_NONBLOCK", 0)
O_DIR = os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY

_SYS_OPENAT2 = 437  # the same number on every Linux architecture (the unified table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08

# disable_symlinks value -> openat2 resolve flags (None: plain openat, follow anything)
RESOLVE_FLAGS: dict[str, int | None] = {
    "outside_root": _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS,
    "on": _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_SYMLINKS,
    "off": None,
}

# What a failed open means to the client.
NOT_FOUND_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG})
# A symlink refused (ELOOP from O_NOFOLLOW / NO_SYMLINKS), a path leaving the root (EXDEV),
# a file we may not read: 403, as nginx answers a refused symlink.
FORBIDDEN_ERRNOS = frozenset({errno.ELOOP, errno.EXDEV, errno.EACCES, errno.EPERM})


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_syscall() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    syscall.argtypes = [
        ctypes.c_long,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.POINTER(_OpenHow),
        ctypes.c_size_t,
    ]
    return syscall


_syscall = _load_syscall()


def _openat2(dir_fd: int, path: bytes, flags: int, resolve: int) -> int:
    assert _syscall is not None
    how = _OpenHow(flags, 0, resolve)
    fd = _syscall(_SYS_OPENAT2, dir_fd, path, ctypes.byref(how), ctypes.sizeof(how))  # type: ignore[operator]
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(fd)


def _probe() -> bool:
    """Whether this kernel has openat2 (ENOSYS before 5.6, or a seccomp filter's EPERM)."""
    if _syscall is None:
        return False
    try:
        os.close(_openat2(-100, b".", O_DIR, _RESOLVE_BENEATH))  # -100: AT_FDCWD
    except OSError:
        return False
    return True


HAVE_OPENAT2 = _probe()


def open_beneath(dir_fd: int, path: str, mode: str, directory: bool = False) -> int:
    """Open `path` (relative, no `..`) beneath the directory `dir_fd` as `mode` allows.

    Raises OSError; its errno says what the client gets (NOT_FOUND_ERRNOS, FORBIDDEN_ERRNOS).
    """
    flags = O_DIR if directory else O_FILE
    resolve = RESOLVE_FLAGS[mode]
    encoded = os.fsencode(path) if path else b"."
    if resolve is None:
        return os.open(encoded, flags, dir_fd=dir_fd)
    if HAVE_OPENAT2:
        return _openat2(dir_fd, encoded, flags, resolve)
    return _walk_nofollow(dir_fd, encoded, flags)


def _walk_nofollow(dir_fd: int, path: bytes, flags: int) -> int:
    """The fallback: one openat(O_NOFOLLOW) per component, never following a symlink."""
    parts = [p for p in path.split(b"/") if p and p != b"."]
    if not parts:
        return os.open(b".", flags, dir_fd=dir_fd)
    current = dir_fd
    try:
        for part in parts[:-1]:
            nxt = os.open(part, O_DIR | os.O_NOFOLLOW, dir_fd=current)
            if current != dir_fd:
                os.close(current)
            current = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=current)
    finally:
        if current != dir_fd:
            os.close(current)
