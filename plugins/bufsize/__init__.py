"""bufsize: the EDNS payload a server block's chain sees and its UDP reply cap, as CoreDNS's."""

from ._parse import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, parse_bufsize
from ._plugin import BufsizePlugin

__all__ = ["DEFAULT_SIZE", "MAX_SIZE", "MIN_SIZE", "BufsizePlugin", "parse_bufsize"]
