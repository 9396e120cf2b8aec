"""Certificates made by the tests themselves (trustme): a CA, and per name a certificate
chain file and a key file. No key is ever committed."""

from __future__ import annotations

import datetime
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Pair:
    certificate: Path  # the leaf, then the CA's intermediates (a chain file, as nginx takes)
    key: Path
    leaf_pem: bytes

    def yaml(self) -> str:
        return f"{{certificate: {self.certificate}, key: {self.key}}}"


class TestCA:
    __test__ = False  # not a test class, whatever its name

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        # An intermediate CA issues the leaves, so every chain file has two certificates.
        self.root = trustme.CA()
        self.ca = self.root.create_child_ca()

    def issue(
        self, name: str, *more: str, not_after: datetime.datetime | None = None, tag: str = ""
    ) -> Pair:
        cert = self.ca.issue_cert(name, *more, not_after=not_after)
        stem = name.replace("*", "star") + tag
        leaf = cert.cert_chain_pems[0].bytes()
        pair = Pair(self.dir / f"{stem}.pem", self.dir / f"{stem}.key", leaf)
        pair.certificate.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(pair.key))
        return pair

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.root.configure_trust(context)
        return context


def served_certificate(port: int, sni: str | None) -> bytes:
    """The PEM of the leaf certificate a handshake with `sni` (None: no SNI) gets."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=sni) as sock,
    ):
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der).encode()


def first_der(pem: bytes) -> bytes:
    """The DER of the first certificate of a PEM file (the leaf of a chain file)."""
    end = b"-----END CERTIFICATE-----"
    first = pem[: pem.index(end) + len(end)]
    return ssl.PEM_cert_to_DER_cert(first.decode().strip())


def same_certificate(a: bytes, b: bytes) -> bool:
    return first_der(a) == first_der(b)
