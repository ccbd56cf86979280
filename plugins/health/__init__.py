"""health: CoreDNS's liveness endpoint, ``/health``, with a lameduck delay at exit."""

from ._address import parse_http_address
from ._plugin import DEFAULT_ADDRESS, STOPPING_KEY, HealthConfig, HealthPlugin, parse_health

__all__ = [
    "DEFAULT_ADDRESS",
    "STOPPING_KEY",
    "HealthConfig",
    "HealthPlugin",
    "parse_health",
    "parse_http_address",
]
