"""log: CoreDNS's query log -- one line per query, in Common Log Format by default."""

from ._format import COMBINED_FORMAT, COMMON_FORMAT, compile_format, parse_format
from ._parse import LogRule, parse_log
from ._plugin import LogPlugin

__all__ = [
    "COMBINED_FORMAT",
    "COMMON_FORMAT",
    "LogPlugin",
    "LogRule",
    "compile_format",
    "parse_format",
    "parse_log",
]
