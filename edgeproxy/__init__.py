"""edgeproxy: an asyncio reverse proxy and load balancer for Python web deployments."""

__version__ = "0.1.0"
