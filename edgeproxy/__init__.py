"""edgeproxy: an asyncio reverse proxy and load balancer for Python web deployments."""

__version__ = "0.1.0"


def build_kind() -> str:
    """ "compiled" when the request path runs as mypyc-built extensions (see setup.py)."""
    from edgeproxy.server import connection

    return "pure Python" if connection.__file__.endswith(".py") else "compiled"
