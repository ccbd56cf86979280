"""timeouts: the read, write and idle timeouts of DNS over TCP, as CoreDNS's *timeouts*."""

from ._parse import MAX_TIMEOUT, MIN_TIMEOUT, parse_timeouts
from ._plugin import TimeoutsPlugin

__all__ = ["MAX_TIMEOUT", "MIN_TIMEOUT", "TimeoutsPlugin", "parse_timeouts"]
