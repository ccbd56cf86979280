"""The types the core's layers share, none of which needs a Request.

What a plugin returns (``Reply``, or ``Pending``: the promise of one; either is a
``Result``), where a query was routed (``Route``), what the known-answer path
calls (``KnownAnswer``), a client's and a listener's address (``Client``,
``ListenerKey``), and what a plugin's HTTP route is (``HttpRequest``,
``HttpResponse``, ``HttpHandler``). The protocols that take a Request
(``Handler``, ``ReplyObserver``, ``FailureObserver``) are defined with it, in
``_request``; how a Pending is settled is the contract's (``_contract``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import dns.message

Reply: TypeAlias = bytes | dns.message.Message
"""What a handler returns: finished wire bytes or a dnspython message."""


class Pending:
    """A plugin must wait: the coroutine that waits, and what to do with its result.

    The coroutine (an ``async def`` returning a Reply or another Pending) is
    awaited once, by the server. ``then`` does not wrap it in another
    coroutine: it appends a continuation, so a wait costs one coroutine
    however many plugins look at its reply on the way back. Continuations run
    innermost first; one that returns a Pending hands the rest over to it.

    A Pending is returned or awaited, never dropped (an un-awaited coroutine
    is a bug Python warns about); ``discard`` closes one that will not be.
    """

    __slots__ = ("coroutine", "steps")

    def __init__(self, coroutine: Coroutine[Any, Any, Result]) -> None:
        self.coroutine = coroutine
        self.steps: list[tuple[OnReply | None, OnError | None, OnCancel | None]] = []

    def discard(self) -> None:
        self.coroutine.close()


Result: TypeAlias = "Reply | Pending"
"""What ``handle`` returns: a reply now, or the promise of one."""

OnReply = Callable[["Reply"], Result]
"""A continuation: what becomes of a reply once it is there."""
OnError = Callable[[Exception], Result]
"""A continuation for an exception raised while waiting: a reply, or raise."""
OnCancel = Callable[[], None]
"""Told when a wait is cancelled (the query's deadline passed)."""


class Route(Protocol):
    """Where a query was routed: the zone of its server block and the block's listener.

    Routes are compared by identity (a metrics observer keys its labels by them).
    """

    @property
    def zone(self) -> str:
        """The zone the block serves that the query's name lies in (``.`` when unrouted)."""
        ...

    @property
    def server(self) -> str:
        """The block's listener as a metric label (``dns://:53``; empty when unrouted)."""
        ...

    @property
    def view(self) -> str:
        """The block's view name (the ``view`` metric label; empty for most blocks)."""
        ...


Client = tuple[str, int] | tuple[str, int, int, int]
"""A client's address as the socket gives it (IPv6 adds flow info and scope)."""

ListenerKey = tuple[str, str, int]
"""(transport, host, port); host '' means every interface."""

KnownAnswer = Callable[[bytes, bytes, int, bool, bool, str], "bytes | None"]
"""A known-answer plugin's ``serve_known``."""


# -- A plugin's HTTP routes (health, ready, metrics, autoalloc) ------------------------


@dataclass
class HttpRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class HttpResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
"""What serves one path of an HTTP listener (``SetupContext.http_route``)."""
