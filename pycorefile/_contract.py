"""One serving contract: ``handle(request) -> Reply | Pending``.

A plugin states each decision once, synchronously. It answers (returns a
Reply), passes the query on (returns what ``self.next.handle`` gives, which
may be a ``Pending``), or says it must wait by returning ``Pending(coro)``,
where ``coro`` is an ``async def`` that returns a Reply or another Pending.
The server awaits a Pending once, in a task; the query goes on from where it
stopped, and nothing is walked twice.

A plugin that changes what comes back writes its after-logic once with
``then(result, on_reply, on_error)``: applied now when ``result`` is a reply,
chained onto the wait when it is a Pending.

A plugin that only looks before and after the rest of the chain subclasses
``Wrapper`` and overrides ``on_query``, ``on_reply`` and/or ``on_error``; its
``handle`` is derived from the hooks it overrides (a wrapper that overrides
neither ``on_query`` nor ``on_reply`` is transparent on success, so the server's
known-answer path may skip it).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import trio

if TYPE_CHECKING:
    from ._request import Reply, Request
    from .plugin import Plugin


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
OnError = Callable[[Exception], Result]
OnCancel = Callable[[], None]


async def settle(result: Result) -> Reply:
    """The reply a result comes to, waiting as long as it takes (the server's one await)."""
    while type(result) is Pending:
        steps = result.steps
        try:
            value: Any = await result.coroutine
            failure: Exception | None = None
        except Exception as exc:
            value, failure = None, exc
        except BaseException:
            for _, _, on_cancel in steps:
                if on_cancel is not None:
                    on_cancel()
            raise
        if type(value) is Pending:
            # The coroutine itself returned a Pending (forward falling through to
            # the next plugin): its own continuations run first, then these.
            value.steps.extend(steps)
            result = value
            continue
        for index, (on_reply, on_error, _) in enumerate(steps):
            try:
                if failure is None:
                    if on_reply is not None:
                        value = on_reply(value)
                elif on_error is not None:
                    value, failure = on_error(failure), None
            except Exception as exc:
                value, failure = None, exc
            if type(value) is Pending:
                value.steps.extend(steps[index + 1 :])
                break
        if failure is not None:
            raise failure
        result = value
    return result  # type: ignore[return-value]


def then(
    result: Result,
    on_reply: OnReply | None,
    on_error: OnError | None = None,
    on_cancel: OnCancel | None = None,
) -> Result:
    """``on_reply(reply)`` now if ``result`` is a reply, else once the wait is over.

    ``on_error`` is applied to an exception raised while waiting (or by an
    inner continuation); an exception raised before ``result`` existed is the
    caller's (see ``pass_on``). ``on_cancel`` is told when the wait is
    cancelled (the query's deadline): it cannot answer.
    """
    if type(result) is not Pending:
        return result if on_reply is None else on_reply(result)  # type: ignore[arg-type]
    result.steps.append((on_reply, on_error, on_cancel))
    return result


def pass_on(
    handler: Handler, request: Request, on_reply: OnReply, on_error: OnError | None = None
) -> Result:
    """``handler.handle(request)``, then ``on_reply``; ``on_error`` for a failure now or later."""
    try:
        result = handler.handle(request)
    except Exception as exc:
        if on_error is None:
            raise
        return on_error(exc)
    return then(result, on_reply, on_error)


def within(result: Result, seconds: float) -> Result:
    """``result``, but a wait longer than ``seconds`` raises ``trio.TooSlowError``."""
    if type(result) is not Pending or seconds <= 0:
        return result
    return Pending(_within(result, seconds))


async def _within(pending: Pending, seconds: float) -> Reply:
    with trio.fail_after(seconds):
        return await settle(pending)
    # (A bounded wait is a new coroutine: the inner continuations run inside the bound.)


class Handler(Protocol):
    """What a plugin calls as ``self.next``."""

    def handle(self, request: Request) -> Result: ...


def tag(exc: BaseException, name: str) -> None:
    """Name the plugin an exception came out of (the innermost one keeps it)."""
    if not hasattr(exc, "pycorefile_plugin"):
        exc.pycorefile_plugin = name  # type: ignore[attr-defined]


# -- The chain -------------------------------------------------------------------------


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


def is_wrapper(plugin: Plugin) -> bool:
    from .plugin import Wrapper

    return isinstance(plugin, Wrapper)


def has_known(plugin: Plugin) -> bool:
    from .plugin import Plugin as Base

    return type(plugin).serve_known is not Base.serve_known


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
        if not (is_wrapper(plugin) and type(plugin).transparent_on_success()):  # type: ignore[attr-defined]
            break
    return handler, known
