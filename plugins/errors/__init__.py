"""errors: CoreDNS's error logging, with consolidation of repeated errors."""

from ._parse import Consolidate, ErrorsConfig, parse_errors
from ._plugin import ErrorsPlugin

__all__ = ["Consolidate", "ErrorsConfig", "ErrorsPlugin", "parse_errors"]
