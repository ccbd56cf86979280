"""The plugin chain: each plugin wraps the next handler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import dns.rcode

if TYPE_CHECKING:
    from ._contract import Result
    from ._request import Reply, Request


class Handler(Protocol):
    """What a plugin calls as ``self.next``: ``handle`` (``serve_now``/``serve`` until
    every plugin is converted to the one contract)."""

    def handle(self, request: Request) -> Result: ...

    async def serve(self, request: Request) -> Reply: ...

    def serve_now(self, request: Request) -> Reply | None: ...


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

    async def serve(self, request: Request) -> Reply:
        return request.error(self.rcode)

    def serve_now(self, request: Request) -> Reply | None:
        return request.error(self.rcode)

    def handle(self, request: Request) -> Reply:
        return request.error(self.rcode)
