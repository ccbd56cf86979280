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
from ._types import KnownAnswer, Pending, Result
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

    The known-answer plugin is the one ``known_path`` finds: the server may
    ask it before making a Request, and fall back to the chain.
    """
    handler: Handler = end
    for plugin in reversed(plugins):
        plugin.next = handler
        handler = plugin if is_wrapper(plugin) else Step(plugin)
    found = known_path(plugins)
    return handler, found[0] if found is not None else None


def known_path(plugins: Sequence[Plugin]) -> tuple[Plugin, KnownAnswer] | None:
    """The known-answer plugin and what the server calls for a known answer.

    The known-answer plugin is the first one with ``serve_known`` when every
    plugin before it is a wrapper that is transparent on success (errors) or
    says what it does to a known answer (``on_known_reply``: loadbalance), or
    a plugin that decides by the question alone (``decides_by_question``:
    local, any, chaos); the call is its ``serve_known``, followed by those
    wrappers' ``on_known_reply``, innermost first, as their ``on_reply`` would be.
    """
    reshapers: list[Wrapper] = []
    for plugin in plugins:
        if has_known(plugin):
            return plugin, _reshaped(plugin.serve_known, reshapers[::-1])
        if type(plugin).decides_by_question:
            continue
        if not is_wrapper(plugin):
            return None
        cls = type(plugin)
        if cls.reshapes_known():
            reshapers.append(plugin)
        elif not cls.transparent_on_success():
            return None
    return None


def _reshaped(serve_known: KnownAnswer, reshapers: Sequence[Wrapper]) -> KnownAnswer:
    """``serve_known`` whose answers go through ``reshapers`` (innermost first)."""
    if not reshapers:
        return serve_known
    steps = tuple(r.on_known_reply for r in reshapers)
    if len(steps) == 1:
        (step,) = steps

        def known_once(
            wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
        ) -> bytes | None:
            reply = serve_known(wire, key, name_end, edns, do, server)
            return None if reply is None else step(reply)

        return known_once

    def known(
        wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        reply = serve_known(wire, key, name_end, edns, do, server)
        if reply is None:
            return None
        for each in steps:
            reply = each(reply)
        return reply

    return known
