"""health: CoreDNS's liveness endpoint, ``/health``, with a lameduck delay at exit."""

from ._plugin import DEFAULT_ADDRESS, STOPPING_KEY, HealthConfig, HealthPlugin, parse_health

__all__ = [
    "DEFAULT_ADDRESS",
    "STOPPING_KEY",
    "HealthConfig",
    "HealthPlugin",
    "parse_health",
]
