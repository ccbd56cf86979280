"""ready: CoreDNS's readiness endpoint, ``/ready``."""

from ._plugin import DEFAULT_ADDRESS, ReadyConfig, ReadyGroup, ReadyPlugin, parse_ready

__all__ = ["DEFAULT_ADDRESS", "ReadyConfig", "ReadyGroup", "ReadyPlugin", "parse_ready"]
