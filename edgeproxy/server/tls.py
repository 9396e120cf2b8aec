"""TLS contexts: one per server with `tls:`, and per TLS listen address the context a
handshake starts with, whose SNI callback switches to the server the name picks.

The policy is Mozilla's "intermediate" configuration: TLS 1.2 and 1.3, ECDHE with AEAD
ciphers for 1.2 (1.3's suites are all fine), the client's cipher preference (every offered
suite is strong), no compression, no renegotiation. ALPN offers http/1.1 only.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from edgeproxy.config.model import Address, Config, ServerConfig, TlsConfig

# Mozilla "intermediate" (v5.7) for TLS 1.2, without the DHE suites (no DH parameters are
# configured, so OpenSSL would never pick them).
INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))  # fmt: skip
ALPN = ["http/1.1"]


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """A context serving `tls`'s certificate (chain) and key with the intermediate policy."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(ALPN)
    context.load_cert_chain(tls.certificate, tls.key)
    return context


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


class AddressContexts:
    """The TLS side of one listen address: the context its handshakes start with (the
    default server's certificate, for a missing or unknown SNI), and which server a
    finished handshake chose (`chosen`), read from the context SNI switched to."""

    def __init__(
        self,
        servers: Sequence[ServerConfig],
        default: ServerConfig,
        contexts: dict[int, ssl.SSLContext],  # by id() of the server
    ) -> None:
        assert default.tls is not None
        self.initial = server_context(default.tls)
        self.initial.sni_callback = self._on_sni
        # Exact names first, then wildcards longest first: the router's precedence.
        exact = [(n, s) for s in servers for n in s.server_name if not n.startswith("*.")]
        wild = [(n, s) for s in servers for n in s.server_name if n.startswith("*.")]
        wild.sort(key=lambda item: -len(item[0]))
        self.names = [(name, contexts[id(server)]) for name, server in exact + wild]
        self._cache: dict[str, ssl.SSLContext | None] = {}
        self.server_of = {id(contexts[id(s)]): s for s in servers}
        self.server_of[id(self.initial)] = default

    def _on_sni(self, ssl_object: ssl.SSLObject, name: str | None, initial: ssl.SSLContext) -> None:
        if name is None:
            return None  # no SNI: the default server's certificate
        name = name.lower().rstrip(".")
        cache = self._cache
        if name in cache:
            context = cache[name]
        else:
            context = next((c for p, c in self.names if _name_matches(p, name)), None)
            if len(cache) < 1024:  # bounded: names are chosen by clients
                cache[name] = context
        if context is not None:
            ssl_object.context = context
        return None

    def chosen(self, ssl_object: ssl.SSLObject | None) -> ServerConfig | None:
        """The server whose certificate the handshake used."""
        if ssl_object is None:
            return None
        return self.server_of.get(id(ssl_object.context))


def _build(config: Config) -> dict[Address, AddressContexts]:
    by_address: dict[Address, list[ServerConfig]] = {}
    for server in config.servers:
        for address in server.listen:
            by_address.setdefault(address, []).append(server)
    contexts: dict[int, ssl.SSLContext] = {}
    found: dict[Address, AddressContexts] = {}
    for address, servers in by_address.items():
        if servers[0].tls is None:
            continue
        for server in servers:
            if id(server) not in contexts:
                assert server.tls is not None
                contexts[id(server)] = server_context(server.tls)
        # nginx's default server, as the router chooses it: no names, else the first.
        default = next((s for s in servers if not s.server_name), servers[0])
        found[address] = AddressContexts(servers, default, contexts)
    return found


# The contexts of the configs most recently served, by id: the master builds them before it
# forks the workers of a config, so that every worker has the same session ticket keys
# (OpenSSL makes them at random with each context) and a client resumes its session on
# whichever worker the kernel gives its next connection. A reload builds new contexts,
# which reads the certificates afresh and rotates the ticket keys (as nginx does without
# ssl_session_ticket_key files).
_PREPARED: dict[int, tuple[Config, dict[Address, AddressContexts]]] = {}
_KEEP = 2  # the generation serving and the one a reload is starting


def tls_contexts(config: Config) -> dict[Address, AddressContexts]:
    """Each TLS listen address's contexts (one context per server, whatever its addresses)."""
    found = _PREPARED.get(id(config))
    if found is not None and found[0] is config:
        return found[1]
    contexts = _build(config)
    if contexts:
        while len(_PREPARED) >= _KEEP:
            del _PREPARED[next(iter(_PREPARED))]
        _PREPARED[id(config)] = (config, contexts)
    return contexts
