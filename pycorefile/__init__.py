"""pycorefile: a CoreDNS-compatible DNS server in Python, driven by a Corefile.

The public API is small: what a plugin author writes against (``Plugin``,
``Request``, ``SetupContext``, ``SetupError`` and the parsing helpers) and what
an embedder or a test uses to serve a Corefile (``open_server``,
``load_config``). Everything else lives in private modules.
"""

from ._app import load_config, open_server
from ._contract import pass_on, settle, then, within
from ._request import DROP, Handler, Request
from ._server import Server, ServerOptions
from ._types import Pending, Reply, Result
from ._version import __version__
from .corefile import CorefileError, Directive, ServerBlock
from .plugin import (
    DataChange,
    DataChanges,
    Fallthrough,
    Plugin,
    PluginError,
    SetupContext,
    SetupError,
    Wrapper,
    check_args,
    lookup,
    parse_duration,
    parse_zones,
    reply_message,
)

__all__ = [
    "DROP",
    "CorefileError",
    "DataChange",
    "DataChanges",
    "Directive",
    "Fallthrough",
    "Handler",
    "Pending",
    "Plugin",
    "PluginError",
    "Reply",
    "Request",
    "Result",
    "Server",
    "ServerBlock",
    "ServerOptions",
    "SetupContext",
    "SetupError",
    "Wrapper",
    "__version__",
    "check_args",
    "load_config",
    "lookup",
    "open_server",
    "parse_duration",
    "parse_zones",
    "pass_on",
    "reply_message",
    "settle",
    "then",
    "within",
]
