"""HTTP listen addresses as the health, ready and prometheus plugins take them."""

from __future__ import annotations

from pycorefile import Directive, SetupError
from pycorefile.plugin import parse_address


def parse_http_address(directive: Directive, index: int) -> str:
    """Check ``HOST:PORT`` (``:8080``, ``localhost:9153``, ``[::1]:8181``); return it as given.

    As CoreDNS, the port is required: ``localhost`` alone is an error.
    """
    text = directive.args[index]
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port or (host.startswith("[") != host.endswith("]")):
        raise SetupError(f"address {text}: missing port in address", directive, index)
    if ":" in host and not host.startswith("["):
        raise SetupError(f"address {text}: too many colons in address", directive, index)
    try:
        parse_address(text, 0)
    except ValueError as exc:
        raise SetupError(str(exc), directive, index) from None
    return text
