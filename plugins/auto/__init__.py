"""auto: every zone file of a directory served authoritatively, as CoreDNS's auto plugin."""

from ._parse import AutoConfig, parse_auto
from ._plugin import AutoPlugin
from ._walk import scan

__all__ = ["AutoConfig", "AutoPlugin", "parse_auto", "scan"]
