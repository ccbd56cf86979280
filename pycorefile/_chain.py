"""The plugin chain: each plugin wraps the next handler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import dns.rcode

if TYPE_CHECKING:
    from ._request import Reply, Request
    from .plugin import Plugin


class Handler(Protocol):
    """What a plugin calls as ``self.next``."""

    async def serve(self, request: Request) -> Reply: ...

    def serve_now(self, request: Request) -> Reply | None: ...


def plugin_of(exc: BaseException) -> str:
    """The name of the plugin an exception came out of ('' when unknown)."""
    return getattr(exc, "pycorefile_plugin", "")


STACKTRACE = "pycorefile_stacktrace"
"""Set (True) on an exception by ``errors { stacktrace }``: the server logs the
panic with its traceback, as CoreDNS's ``stacktrace`` does on panic recovery."""


class Link:
    """One plugin in the chain.

    It records which plugin produced the reply (the innermost one that
    returned it, the ``plugin`` label of CoreDNS's response metric) and tags
    exceptions with the plugin they came from, so they are logged by name.
    """

    __slots__ = ("name", "plugin")

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.name = plugin.name

    async def serve(self, request: Request) -> Reply:
        try:
            reply = await self.plugin.serve(request)
        except Exception as exc:
            if not hasattr(exc, "pycorefile_plugin"):
                exc.pycorefile_plugin = self.name  # type: ignore[attr-defined]
            raise
        if not request.answered_by:
            request.answered_by = self.name
        return reply

    def serve_now(self, request: Request) -> Reply | None:
        try:
            reply = self.plugin.serve_now(request)
        except Exception as exc:
            if not hasattr(exc, "pycorefile_plugin"):
                exc.pycorefile_plugin = self.name  # type: ignore[attr-defined]
            raise
        if reply is not None and not request.answered_by:
            request.answered_by = self.name
        return reply


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


def build_chain(plugins: Sequence[Plugin], *, empty: bool | None = None) -> Handler:
    """Link plugins (outermost first) and return the entry handler.

    ``empty`` says whether CoreDNS would have built no chain for the block
    (by default: when ``plugins`` is empty); then every query is REFUSED.
    Otherwise a query that runs past the last plugin is SERVFAIL.
    """
    if empty is None:
        empty = not plugins
    last = plugins[-1].name if plugins else ""
    handler: Handler = End(last, dns.rcode.REFUSED if empty else dns.rcode.SERVFAIL)
    for plugin in reversed(plugins):
        plugin.next = handler
        handler = Link(plugin)
    return handler
