"""DNS capture: redirect a workload's outgoing DNS queries to pycorefile.

``pycorefile capture install|remove|status`` manages nftables rules (iptables as a
fallback) in the current network namespace: UDP and TCP to port 53 go to pycorefile's
local port, except the traffic of the user or group pycorefile runs as, so its own upstream
queries are not captured. See docs/capture.md.
"""

from ._cli import main
from ._rules import CaptureError, CaptureOptions

__all__ = ["CaptureError", "CaptureOptions", "main"]
