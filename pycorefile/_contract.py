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

Here: ``settle`` (the server's one await), ``then``, ``pass_on``, ``within``,
and the naming of an exception after the plugin it came out of (``tag``,
``plugin_of``). ``Pending`` itself is a shared type (``_types``), ``Wrapper``
is in ``plugin``, and linking the plugins into a chain is ``_chain``'s.
"""

from __future__ import annotations

from typing import Any

import trio

from ._request import Handler, Request
from ._types import OnCancel, OnError, OnReply, Pending, Reply, Result


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


# -- Which plugin an exception came out of ---------------------------------------------


def tag(exc: BaseException, name: str) -> None:
    """Name the plugin an exception came out of (the innermost one keeps it)."""
    if not hasattr(exc, "pycorefile_plugin"):
        exc.pycorefile_plugin = name  # type: ignore[attr-defined]


def plugin_of(exc: BaseException) -> str:
    """The name of the plugin an exception came out of ('' when unknown)."""
    return getattr(exc, "pycorefile_plugin", "")


STACKTRACE = "pycorefile_stacktrace"
"""Set (True) on an exception by ``errors { stacktrace }``: the server logs the
panic with its traceback, as CoreDNS's ``stacktrace`` does on panic recovery."""
