"""file: authoritative answers from zone files, as CoreDNS's file plugin.

The zone code (``Zone``, ``lookup``, ``ZoneSet``) is shared with *auto*.
"""

from ._parse import FileConfig, ZoneFile, parse_file, parse_reload
from ._plugin import FilePlugin
from ._serve import ZoneSet
from ._zone import Answer, Result, Zone, ZoneFileError, load_zone, lookup, parse_zone

__all__ = [
    "Answer",
    "FileConfig",
    "FilePlugin",
    "Result",
    "Zone",
    "ZoneFile",
    "ZoneFileError",
    "ZoneSet",
    "load_zone",
    "lookup",
    "parse_file",
    "parse_reload",
    "parse_zone",
]
