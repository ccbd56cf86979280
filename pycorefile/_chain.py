"""The plugin chain: each plugin wraps the next handler."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dns.rcode

if TYPE_CHECKING:
    from ._request import Reply, Request


def plugin_of(exc: BaseException) -> str:
    """The name of the plugin an exception came out of ('' when unknown)."""
    return getattr(exc, "pycorefile_plugin", "")


STACKTRACE = "pycorefile_stacktrace"
"""Set (True) on an exception by ``errors { stacktrace }``: the server logs the
panic with its traceback, as CoreDNS's ``stacktrace`` does on panic recovery."""


class End:
    """What the last plugin's ``next`` is: SERVFAIL, as CoreDNS's ``plugin.NextOrFailure``.

    A server block with no chain at all answers ``rcode`` REFUSED instead, as
    CoreDNS answers a zone whose block has no plugin chain (``build_chain``).
    """

    __slots__ = ("after", "rcode")

    def __init__(self, after: str, rcode: int = dns.rcode.SERVFAIL) -> None:
        self.after = after
        self.rcode = rcode

    def handle(self, request: Request) -> Reply:
        return request.error(self.rcode)
