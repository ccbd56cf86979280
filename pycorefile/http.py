"""A plugin's HTTP endpoint: the request it is handed and the response it returns.

A plugin serves a path on an HTTP listener (health, ready, metrics, autoalloc's
table) with ``SetupContext.http_route(address, path, handler)``; the server
owns the sockets, limits and deadlines, the handler only maps an
``HttpRequest`` to an ``HttpResponse``. ``parse_http_address`` checks a
listener address in a Corefile as CoreDNS does (``:8080``, ``[::1]:8181``).
"""

from __future__ import annotations

from ._types import HttpHandler, HttpRequest, HttpResponse

__all__ = ["HttpHandler", "HttpRequest", "HttpResponse"]
