"""YAML config -> validated, frozen dataclasses (see proxy.example.yaml for the contract)."""

from edgeproxy.config.loader import load_config, parse_config
from edgeproxy.config.model import (
    AccessLogConfig,
    Address,
    Config,
    ErrorLogConfig,
    HandlerSpec,
    HttpSettings,
    IPNetwork,
    Location,
    PeerConfig,
    ProxyPass,
    ReturnAction,
    ServerConfig,
    UpstreamConfig,
)

__all__ = [
    "AccessLogConfig",
    "Address",
    "Config",
    "ErrorLogConfig",
    "HandlerSpec",
    "HttpSettings",
    "IPNetwork",
    "Location",
    "PeerConfig",
    "ProxyPass",
    "ReturnAction",
    "ServerConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
]
