"""The plugin chain: each plugin wraps the next handler, and the chain has an end.

``compile_chain`` (at configuration build time) links a block's plugins and
picks its known-answer plugin; ``Step`` is the link of a plugin that answers;
``End`` (public in ``pycorefile.plugin``) is what the last plugin's ``next`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeGuard

from ._contract import tag
from ._request import Handler, Request
from ._types import Pending, Result
from .plugin import Plugin, Wrapper


class Step:
    """A plugin that answers (not a Wrapper): credits its replies and names its exceptions.

    ``answered_by`` is set once, by the innermost plugin that returned a reply
    or started waiting; a plugin whose continuation answers something other
    than what it waited for sets ``request.answered_by`` itself (autopath).
    """

    __slots__ = ("_handle", "_tag_step", "name", "plugin")

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.name = plugin.name
        self._handle = plugin.handle
        self._tag_step = (None, self._tag, None)

    def _tag(self, exc: Exception) -> Result:
        tag(exc, self.name)
        raise exc

    def handle(self, request: Request) -> Result:
        try:
            result = self._handle(request)
        except Exception as exc:
            tag(exc, self.name)
            raise
        if not request.answered_by:
            request.answered_by = self.name
        if type(result) is Pending:
            # What fails while it waits (or in its continuations) is named after it.
            result.steps.append(self._tag_step)
        return result


def is_wrapper(plugin: Plugin) -> TypeGuard[Wrapper]:
    return isinstance(plugin, Wrapper)


def has_known(plugin: Plugin) -> bool:
    return type(plugin).serve_known is not Plugin.serve_known


def compile_chain(plugins: Sequence[Plugin], end: Handler) -> tuple[Handler, Plugin | None]:
    """Link plugins (outermost first); return the entry and the known-answer plugin.

    The known-answer plugin is the first one with ``serve_known`` when every
    plugin before it is a wrapper transparent on success (errors): the server
    may then ask it before making a Request, and fall back to the chain.
    """
    handler: Handler = end
    for plugin in reversed(plugins):
        plugin.next = handler
        handler = plugin if is_wrapper(plugin) else Step(plugin)
    known: Plugin | None = None
    for plugin in plugins:
        if has_known(plugin):
            known = plugin
            break
        if not (is_wrapper(plugin) and type(plugin).transparent_on_success()):
            break
    return handler, known
