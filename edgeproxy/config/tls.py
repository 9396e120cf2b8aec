"""`tls: {certificate, key}` on a server: read, and checked as far as can be without serving.

Checked at load (so by `-t` and before a reload changes anything): both files can be read,
the certificate file holds a certificate, and the key matches it (OpenSSL loads the pair
as the server will). An expired certificate is found by `expired_certificates`: an error
for `-t`, only a warning when the proxy starts or reloads (refusing would take every other
server down with the one whose renewal failed; nginx starts too).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import ssl
import time

from yaml.nodes import Node

from edgeproxy.config.model import Config, TlsConfig
from edgeproxy.config.nodes import Invalid, string
from edgeproxy.config.schema import Block, Key, Scope

_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)


def _readable_file(node: Node, path: str, scope: Scope) -> str:
    name = string(node, path)
    try:
        with open(name, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise Invalid(node, path, f"cannot read {name}: {exc.strerror or exc}") from None
    return name


TLS = Block(
    Key("certificate", _readable_file, required=True),
    Key("key", _readable_file, required=True),
)


def read_tls(node: Node, path: str, scope: Scope) -> TlsConfig:
    got = TLS.read(node, path, scope)
    where = got.node_of("certificate")
    tls = TlsConfig(**got.values, where=got.sub("certificate"), line=where.start_mark.line + 1)
    with open(tls.certificate, "rb") as f:
        leaf = _first_certificate(f.read())
    if leaf is None:
        raise Invalid(where, got.sub("certificate"), f"no PEM certificate in {tls.certificate}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.certificate, tls.key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            what = f"{tls.key} does not match the certificate {tls.certificate}"
        else:
            what = f"cannot load {tls.key} with {tls.certificate}: {exc.reason or exc}"
        raise Invalid(got.node_of("key"), got.sub("key"), what) from None
    return tls


def expired_certificates(config: Config, now: float | None = None) -> list[str]:
    """`file:line: key: what` for each certificate of `config` that has expired."""
    now = time.time() if now is None else now
    found = []
    seen: set[str] = set()
    for server in config.servers:
        tls = server.tls
        if tls is None or tls.certificate in seen:
            continue
        seen.add(tls.certificate)
        try:
            with open(tls.certificate, "rb") as f:
                leaf = _first_certificate(f.read())
        except OSError:
            continue  # checked at load; a file gone since is the server's to report
        expires = not_after(leaf) if leaf is not None else None
        if expires is not None and expires < now:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires))
            found.append(f"{config.source}:{tls.line}: {tls.where}: "
                         f"{tls.certificate} expired on {when}")  # fmt: skip
    return found


def _first_certificate(pem: bytes) -> bytes | None:
    found = _PEM_CERT_RE.search(pem)
    if found is None:
        return None
    try:
        return base64.b64decode(b"".join(found.group(1).split()), validate=True)
    except binascii.Error:
        return None


# --- just enough DER to read a certificate's notAfter --------------------------------


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """The tag, the start and the end of the value of the DER element at `at`."""
    tag, size = der[at], der[at + 1]
    start = at + 2
    if size & 0x80:
        count = size & 0x7F
        size = int.from_bytes(der[start : start + count], "big")
        start += count
    return tag, start, start + size


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        element = _element(der, start)
        found.append(element)
        start = element[2]
    return found


def not_after(der: bytes) -> float | None:
    """The end of a DER certificate's validity (a Unix time); None if it cannot be read."""
    try:
        _, cert_start, cert_end = _element(der, 0)
        _, tbs_start, tbs_end = _children(der, cert_start, cert_end)[0]
        fields = _children(der, tbs_start, tbs_end)
        if fields[0][0] == 0xA0:  # [0] version: present from v2 on
            fields = fields[1:]
        _, validity_start, validity_end = fields[3]  # serial, signature, issuer, validity
        tag, start, end = _children(der, validity_start, validity_end)[1]
        text = der[start:end].decode("ascii")
        layout = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"  # UTCTime, GeneralizedTime
        return float(calendar.timegm(time.strptime(text, layout)))
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
