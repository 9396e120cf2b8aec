"""Parsers for the value notations of the config: sizes, durations, rates, addresses.

Each raises ValueError with a short human message; the loader adds the file, line and
key path to turn it into a ConfigError.
"""

from __future__ import annotations

import ipaddress
import math
import re

from edgeproxy.config.model import Address

_SIZE_RE = re.compile(r"(\d+)([kmg]?)", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}  # nginx: binary multiples

# nginx allows compound durations ("1h30m"); units must then go from largest to smallest.
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)
_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_ORDER = list(_DURATION_UNITS)

_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)r/([sm])", re.ASCII)

# A DNS name (labels of letters, digits, '-' and '_'), checked loosely: resolution is later.
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")


def parse_size(value: str | int) -> int:
    """`512`, `"64k"`, `"10m"`, `"1g"` -> bytes."""
    if isinstance(value, bool):  # bool is an int subclass; `true` is never a size
        raise ValueError(f"expected a size like 512, 64k, 10m or 1g, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    m = _SIZE_RE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"expected a size like 512, 64k, 10m or 1g, got {value!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def parse_duration(value: str | float) -> float:
    """`"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"7d"`, `"1h30m"`, or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 250ms, 30s, 5m or 1h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        seconds = _parse_duration_text(value.strip())
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite number >= 0, got {value!r}")
    return seconds


def _parse_duration_text(text: str) -> float:
    bad = ValueError(f"expected a duration like 250ms, 30s, 5m or 1h, got {text!r}")
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):  # a bare number means seconds, as in nginx
        return float(text)
    total, pos, last_rank = 0.0, 0, -1
    while pos < len(text):
        m = _DURATION_PART_RE.match(text, pos)
        if m is None:
            raise bad
        rank = _DURATION_ORDER.index(m.group(2))
        if rank <= last_rank:  # "30s1m" or "1m1m" is a typo, not a duration
            raise bad
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos, last_rank = m.end(), rank
    if pos == 0:
        raise bad
    return total


def parse_rate(value: str) -> float:
    """`"10r/s"`, `"600r/m"` -> requests per second."""
    m = _RATE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"expected a rate like 10r/s or 600r/m, got {value!r}")
    rate = float(m.group(1)) / (60.0 if m.group(2) == "m" else 1.0)
    if rate <= 0:
        raise ValueError(f"rate must be above zero, got {value!r}")
    return rate


def parse_address(text: str, *, listen: bool) -> Address:
    """`host:port`, `[v6]:port` or `unix:/abs/path`.

    For listen addresses `*:port` and `:port` mean all IPv4 interfaces and port 0 is
    allowed (the OS picks one; tests rely on it); a peer needs a real port.
    """
    if text.startswith("unix:"):
        path = text[5:]
        if not path.startswith("/"):
            raise ValueError(f"unix socket path must be absolute, got {text!r}")
        return Address("unix", path=path)
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [v6-address]:port, got {text!r}")
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"bad IPv6 address in {text!r}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port, [v6]:port or unix:/path, got {text!r}")
        if ":" in host:
            raise ValueError(f"an IPv6 address needs brackets, as [::1]:80, got {text!r}")
        host = _check_host(host, text, listen=listen)
    return Address("tcp", host=host, port=_check_port(port_text, text, listen=listen))


def _check_host(host: str, text: str, *, listen: bool) -> str:
    if host in ("", "*"):
        if not listen:
            raise ValueError(f"a peer address needs a host, got {text!r}")
        return "0.0.0.0"
    if re.fullmatch(r"[0-9.]+", host):  # looks like IPv4: must be one
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"bad IPv4 address in {text!r}") from None
    if not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"bad host name in {text!r}")
    return host.lower()


def _check_port(port_text: str, text: str, *, listen: bool) -> int:
    low = 0 if listen else 1
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not low <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number {low}..65535, got {text!r}")
    return int(port_text)
