"""loop: CoreDNS's loop plugin, a probe to the server itself that stops it on a forwarding loop."""

from ._parse import parse_loop
from ._plugin import LoopPlugin
from ._probe import Probe, probe_name, probe_query

__all__ = ["LoopPlugin", "Probe", "parse_loop", "probe_name", "probe_query"]
