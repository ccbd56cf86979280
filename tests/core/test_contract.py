"""The serving contract's core: then, pass_on, within, settle, Wrapper, the compiled chain.

These drive ``handle`` and ``settle`` directly, with small handlers defined
here, so every edge of the waiting path is stated once: a coroutine or a
continuation that returns a Pending, exceptions travelling to the next
``on_error``, cancellation, ``discard``, who is credited with a reply, the
``handle`` a Wrapper derives from the hooks it overrides, and which chains
``compile_chain`` gives the known-answer path.
"""

from __future__ import annotations

import gc
import inspect
import itertools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import trio

from pycorefile import (
    Directive,
    Pending,
    Plugin,
    PluginError,
    Reply,
    Request,
    Result,
    SetupContext,
    Wrapper,
    pass_on,
    settle,
    then,
    within,
)
from pycorefile._chain import Step, compile_chain, known_path
from pycorefile._contract import plugin_of
from pycorefile.plugin import End
from pycorefile.testing import make_query


def request(name: str = "www.example.org.") -> Request:
    return Request.from_message(make_query(name))


async def reply_later(reply: Reply, log: list[str] | None = None, label: str = "") -> Result:
    await trio.lowlevel.checkpoint()
    if log is not None:
        log.append(label)
    return reply


async def fail_later(exc: Exception) -> Result:
    await trio.lowlevel.checkpoint()
    raise exc


async def forever(log: list[str]) -> Result:
    try:
        await trio.sleep_forever()
    finally:
        log.append("coroutine ended")
    raise AssertionError("unreachable")


def record(log: list[str], label: str, change: bytes = b"") -> Callable[[Reply], Result]:
    """An on_reply that notes it ran and appends ``change`` to the (bytes) reply."""

    def on_reply(reply: Reply) -> Result:
        log.append(label)
        assert isinstance(reply, bytes), f"{label} got {reply!r}, not a reply"
        return reply + change

    return on_reply


def recover(log: list[str], label: str) -> Callable[[Exception], Result]:
    def on_error(exc: Exception) -> Result:
        log.append(f"{label}:{exc}")
        return f"recovered by {label}".encode()

    return on_error


def cancelled(log: list[str], label: str) -> Callable[[], None]:
    return lambda: log.append(f"cancel {label}")


# -- then -------------------------------------------------------------------------------


def test_then_applies_on_reply_now_to_a_reply() -> None:
    log: list[str] = []
    assert then(b"r", record(log, "a", b"+a")) == b"r+a"
    assert log == ["a"]


def test_then_without_on_reply_returns_the_reply_itself() -> None:
    reply = b"r"
    assert then(reply, None, recover([], "x")) is reply


async def test_then_appends_continuations_that_run_innermost_first() -> None:
    log: list[str] = []
    pending = Pending(reply_later(b"r", log, "coroutine"))
    assert then(pending, record(log, "inner", b"+i")) is pending
    assert then(pending, record(log, "outer", b"+o")) is pending
    assert log == []  # nothing runs before the wait is over
    assert await settle(pending) == b"r+i+o"
    assert log == ["coroutine", "inner", "outer"]


# -- settle -----------------------------------------------------------------------------


async def test_settle_returns_a_reply_as_is() -> None:
    reply = b"now"
    assert await settle(reply) is reply


async def test_a_coroutine_that_returns_a_pending_hands_its_continuations_over() -> None:
    """The inner wait's continuations run first, then the outer ones, each exactly once."""
    log: list[str] = []
    inner = Pending(reply_later(b"r", log, "inner coroutine"))
    then(inner, record(log, "inner step", b"+i"))

    async def outer_coroutine() -> Result:
        await trio.lowlevel.checkpoint()
        log.append("outer coroutine")
        return inner

    outer = Pending(outer_coroutine())
    then(outer, record(log, "outer step 1", b"+1"))
    then(outer, record(log, "outer step 2", b"+2"))
    assert await settle(outer) == b"r+i+1+2"
    assert log == [
        "outer coroutine",
        "inner coroutine",
        "inner step",
        "outer step 1",
        "outer step 2",
    ]


async def test_a_coroutine_that_returns_a_pending_with_no_continuations_of_its_own() -> None:
    log: list[str] = []

    async def outer_coroutine() -> Result:
        return Pending(reply_later(b"r", log, "inner"))

    outer = Pending(outer_coroutine())
    then(outer, record(log, "outer", b"+o"))
    assert await settle(outer) == b"r+o"
    assert log == ["inner", "outer"]


async def test_a_continuation_that_returns_a_pending_hands_the_rest_over() -> None:
    log: list[str] = []

    def ask_again(reply: Reply) -> Result:
        log.append(f"asked again after {reply!r}")
        second = Pending(reply_later(b"second", log, "second coroutine"))
        return then(second, record(log, "second's own step", b"+s"))

    pending = Pending(reply_later(b"first", log, "first coroutine"))
    then(pending, ask_again)
    then(pending, record(log, "outer", b"+o"))
    assert await settle(pending) == b"second+s+o"
    assert log == [
        "first coroutine",
        "asked again after b'first'",
        "second coroutine",
        "second's own step",
        "outer",
    ]


async def test_an_exception_in_a_continuation_reaches_the_next_on_error() -> None:
    """Continuations between the failure and the next on_error are skipped."""
    log: list[str] = []

    def broken(reply: Reply) -> Result:
        log.append("broken")
        raise ValueError("bad reply")

    pending = Pending(reply_later(b"r"))
    then(pending, broken)
    then(pending, record(log, "skipped"))  # no on_error: not called
    then(pending, record(log, "not this one either"), None, cancelled(log, "x"))
    then(pending, record(log, "handler's on_reply"), recover(log, "handler"))
    then(pending, record(log, "after", b"+a"))
    assert await settle(pending) == b"recovered by handler+a"
    assert log == ["broken", "handler:bad reply", "after"]


async def test_an_exception_no_continuation_handles_is_raised_by_settle() -> None:
    log: list[str] = []
    pending = Pending(fail_later(PluginError("no upstream")))
    then(pending, record(log, "never"))
    with pytest.raises(PluginError, match="no upstream"):
        await settle(pending)
    assert log == []


async def test_an_exception_from_the_coroutine_goes_to_the_first_on_error() -> None:
    log: list[str] = []
    pending = Pending(fail_later(ValueError("down")))
    then(pending, record(log, "inner"))
    then(pending, record(log, "middle"), recover(log, "middle"))
    then(pending, record(log, "outer", b"+o"), recover(log, "outer"))
    assert await settle(pending) == b"recovered by middle+o"
    assert log == ["middle:down", "outer"]


async def test_an_on_error_that_reraises_passes_the_exception_outwards() -> None:
    log: list[str] = []

    def note_and_reraise(exc: Exception) -> Result:
        log.append(f"noted {exc}")
        raise exc

    pending = Pending(fail_later(ValueError("down")))
    then(pending, None, note_and_reraise)
    then(pending, None, recover(log, "outer"))
    assert await settle(pending) == b"recovered by outer"
    assert log == ["noted down", "outer:down"]


async def test_an_exception_after_a_handed_over_wait_reaches_the_outer_on_error() -> None:
    log: list[str] = []

    def ask_again(reply: Reply) -> Result:
        return Pending(fail_later(ValueError("second failed")))

    pending = Pending(reply_later(b"first"))
    then(pending, ask_again)
    then(pending, None, recover(log, "outer"))
    assert await settle(pending) == b"recovered by outer"
    assert log == ["outer:second failed"]


async def test_cancellation_calls_every_on_cancel_and_propagates() -> None:
    log: list[str] = []
    pending = Pending(forever(log))
    then(pending, record(log, "inner"), recover(log, "inner"), cancelled(log, "inner"))
    then(pending, record(log, "no hook"))
    then(pending, record(log, "outer"), recover(log, "outer"), cancelled(log, "outer"))
    with pytest.raises(trio.TooSlowError), trio.fail_after(0.01):
        await settle(pending)
    # The coroutine was cancelled, every on_cancel told (innermost first); no reply hook ran.
    assert log == ["coroutine ended", "cancel inner", "cancel outer"]


async def test_cancellation_after_a_handover_calls_only_the_continuations_still_waiting() -> None:
    """A continuation that already ran had its reply: it is not told of a later cancel."""
    log: list[str] = []

    def ask_again(reply: Reply) -> Result:
        log.append("ask again")
        return then(Pending(forever(log)), None, None, cancelled(log, "second's own"))

    pending = Pending(reply_later(b"first"))
    then(pending, record(log, "done before"), None, cancelled(log, "done before"))
    then(pending, ask_again, None, cancelled(log, "asker"))
    then(pending, record(log, "outer"), None, cancelled(log, "outer"))
    with trio.move_on_after(0.01) as scope:
        await settle(pending)
    assert scope.cancelled_caught
    assert log == ["done before", "ask again", "coroutine ended", "cancel second's own",
                   "cancel outer"]  # fmt: skip


def test_discard_closes_the_coroutine_without_running_it() -> None:
    ran: list[str] = []

    async def never_awaited() -> Result:
        ran.append("ran")
        return b""

    coroutine = never_awaited()
    pending = Pending(coroutine)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pending.discard()
        del pending, coroutine
        gc.collect()
    assert ran == []
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_discard_closes_a_coroutine_so_its_state_is_closed() -> None:
    coroutine = reply_later(b"r")
    Pending(coroutine).discard()
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


# -- pass_on ----------------------------------------------------------------------------


class Raises:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def handle(self, request: Request) -> Result:
        raise self.exc


class Answers:
    def __init__(self, result: Callable[[], Result]) -> None:
        self.result = result
        self.seen: list[Request] = []

    def handle(self, request: Request) -> Result:
        self.seen.append(request)
        return self.result()


def test_pass_on_routes_an_exception_raised_now_to_on_error() -> None:
    log: list[str] = []
    result = pass_on(Raises(ValueError("now")), request(), record(log, "r"), recover(log, "e"))
    assert result == b"recovered by e"
    assert log == ["e:now"]


def test_pass_on_without_on_error_raises_the_exception_now() -> None:
    with pytest.raises(ValueError, match="now"):
        pass_on(Raises(ValueError("now")), request(), record([], "r"))


def test_pass_on_applies_on_reply_to_a_reply_now() -> None:
    log: list[str] = []
    handler = Answers(lambda: b"r")
    req = request()
    assert pass_on(handler, req, record(log, "r", b"+r"), recover(log, "e")) == b"r+r"
    assert handler.seen == [req]
    assert log == ["r"]


async def test_pass_on_routes_a_later_exception_to_the_same_on_error() -> None:
    log: list[str] = []
    handler = Answers(lambda: Pending(fail_later(ValueError("later"))))
    result = pass_on(handler, request(), record(log, "r"), recover(log, "e"))
    assert type(result) is Pending
    assert await settle(result) == b"recovered by e"
    assert log == ["e:later"]


# -- within -----------------------------------------------------------------------------


def test_within_leaves_a_reply_alone() -> None:
    reply = b"r"
    assert within(reply, 1.0) is reply


def test_within_no_bound_leaves_a_pending_alone() -> None:
    pending = Pending(reply_later(b"r"))
    assert within(pending, 0) is pending
    pending.discard()


async def test_within_a_wait_in_time_runs_the_inner_continuations() -> None:
    log: list[str] = []
    inner = Pending(reply_later(b"r", log, "coroutine"))
    then(inner, record(log, "inner", b"+i"))
    bounded = within(inner, 30.0)
    assert bounded is not inner
    then(bounded, record(log, "outer", b"+o"))
    assert await settle(bounded) == b"r+i+o"
    assert log == ["coroutine", "inner", "outer"]


async def test_within_a_slow_wait_cancels_the_inner_one_and_is_an_error_outside() -> None:
    """The bound's TooSlowError is an ordinary exception for the continuations outside it
    (the cache's verify-stale path answers stale from its on_error)."""
    log: list[str] = []
    inner = Pending(forever(log))
    then(inner, record(log, "inner"), recover(log, "inner"), cancelled(log, "inner"))
    bounded = within(inner, 0.01)

    def stale(exc: Exception) -> Result:
        log.append(f"outer on_error: {type(exc).__name__}")
        return b"stale"

    then(bounded, record(log, "outer"), stale, cancelled(log, "outer"))
    assert await settle(bounded) == b"stale"
    assert log == ["coroutine ended", "cancel inner", "outer on_error: TooSlowError"]


# -- The chain: attribution and exceptions named after their plugin -----------------------


class Answering(Plugin):
    """An answering plugin (not a Wrapper): answers now, waits, passes on or raises."""

    name = "answering"

    def __init__(self, how: str = "now", reply: bytes = b"answered") -> None:
        self.how = how
        self.reply = reply

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> Answering:
        return cls()

    def handle(self, request: Request) -> Result:
        if self.how == "now":
            return self.reply
        if self.how == "wait":
            return Pending(reply_later(self.reply))
        if self.how == "raise":
            raise ValueError("bug now")
        if self.how == "raise later":
            return Pending(fail_later(ValueError("bug later")))
        return self.next.handle(request)  # "pass"


class Inner(Answering):
    name = "inner"


class Gate(Wrapper):
    """Answers ``mine.*`` names itself, in on_query; passes the rest on."""

    name = "gate"

    def on_query(self, request: Request) -> Reply | None:
        if request.name.startswith("boom."):
            raise RuntimeError("gate bug")
        return b"gate's" if request.name.startswith("mine.") else None


class Transparent(Wrapper):
    name = "transparent"

    def on_error(self, request: Request, exc: Exception) -> Reply:
        raise exc


def linked(*plugins: Plugin) -> Any:
    handler, _known = compile_chain(plugins, End(plugins[-1].name))
    return handler


async def test_an_answering_plugin_is_credited() -> None:
    req = request()
    assert linked(Answering("now")).handle(req) == b"answered"
    assert req.answered_by == "answering"


async def test_the_innermost_answering_plugin_is_credited() -> None:
    req = request()
    assert linked(Answering("pass"), Inner("now")).handle(req) == b"answered"
    assert req.answered_by == "inner"


async def test_a_wait_is_credited_when_it_starts() -> None:
    req = request()
    result = linked(Answering("pass"), Inner("wait")).handle(req)
    assert type(result) is Pending
    assert req.answered_by == "inner"  # before the wait is over
    assert await settle(result) == b"answered"
    assert req.answered_by == "inner"


async def test_a_wrapper_that_answers_in_on_query_is_credited_over_its_step() -> None:
    req = request("mine.example.org.")
    assert linked(Answering("pass"), Gate(), Inner("now")).handle(req) == b"gate's"
    assert req.answered_by == "gate"


async def test_a_wrapper_that_passes_on_credits_the_plugin_that_answered() -> None:
    for how in ("now", "wait"):
        req = request()
        result = linked(Gate(), Transparent(), Inner(how)).handle(req)
        assert await settle(result) == b"answered"
        assert req.answered_by == "inner"


def test_a_reply_from_the_chain_end_is_credited_to_no_plugin() -> None:
    req = request()
    reply = linked(Gate(), Transparent()).handle(req)
    assert isinstance(reply, bytes) and reply[3] & 0xF == 2  # SERVFAIL
    assert req.answered_by == ""


@pytest.mark.parametrize(
    ("plugins", "name", "blamed"),
    [
        (lambda: [Answering("pass"), Inner("raise")], "www.example.org.", "inner"),
        (lambda: [Answering("pass"), Inner("raise later")], "www.example.org.", "inner"),
        (lambda: [Answering("raise")], "www.example.org.", "answering"),
        (lambda: [Answering("pass"), Gate(), Inner("now")], "boom.example.org.", "gate"),
        (lambda: [Transparent(), Answering("raise later")], "www.example.org.", "answering"),
    ],
)
async def test_an_exception_is_named_after_the_plugin_it_came_out_of(
    plugins: Callable[[], list[Plugin]], name: str, blamed: str
) -> None:
    with pytest.raises(Exception) as caught:
        await settle(linked(*plugins()).handle(request(name)))
    assert plugin_of(caught.value) == blamed


# -- Wrapper: the handle derived from the hooks it overrides ----------------------------

HOOKS = ("on_query", "on_reply", "on_error", "on_cancel")
COMBINATIONS = [
    frozenset(c) for n in range(len(HOOKS) + 1) for c in itertools.combinations(HOOKS, n)
]


def make_wrapper(hooks: frozenset[str]) -> type[Wrapper]:
    """A Wrapper overriding exactly ``hooks``; each notes its call in ``self.calls``."""

    def __init__(self: Any) -> None:
        self.calls = []

    def on_query(self: Any, request: Request) -> Reply | None:
        self.calls.append("on_query")
        return b"from on_query" if request.name.startswith("mine.") else None

    def on_reply(self: Any, request: Request, reply: Reply) -> Reply:
        self.calls.append("on_reply")
        assert isinstance(reply, bytes)
        return b"on_reply(" + reply + b")"

    def on_error(self: Any, request: Request, exc: Exception) -> Reply:
        self.calls.append(f"on_error({exc})")
        return b"on_error"

    def on_cancel(self: Any, request: Request) -> None:
        self.calls.append("on_cancel")

    hooks_defined = {"on_query": on_query, "on_reply": on_reply, "on_error": on_error,
                     "on_cancel": on_cancel}  # fmt: skip
    namespace: dict[str, Any] = {"__init__": __init__, "name": "w"}
    namespace.update({hook: hooks_defined[hook] for hook in hooks})
    return type("W_" + "_".join(sorted(hooks)), (Wrapper,), namespace)


class Next:
    """The rest of the chain for the combination tests."""

    def __init__(self, scenario: str, log: list[str]) -> None:
        self.scenario = scenario
        self.log = log
        self.asked = 0

    def handle(self, request: Request) -> Result:
        self.asked += 1
        if self.scenario in ("reply now", "on_query"):
            return b"next"
        if self.scenario == "reply later":
            return Pending(reply_later(b"next"))
        if self.scenario == "raise now":
            raise ValueError("now")
        if self.scenario == "raise later":
            return Pending(fail_later(ValueError("later")))
        return Pending(forever(self.log))  # "cancelled"


SCENARIOS = ("reply now", "reply later", "raise now", "raise later", "cancelled", "on_query")


def expected(hooks: frozenset[str], scenario: str) -> tuple[bytes | type[BaseException], list[str]]:
    """What any wrapper must do, stated once: the result and the hooks called, in order."""
    calls = ["on_query"] if "on_query" in hooks else []
    if scenario == "on_query" and "on_query" in hooks:
        return b"from on_query", calls
    if scenario in ("reply now", "reply later", "on_query"):
        if "on_reply" in hooks:
            return b"on_reply(next)", [*calls, "on_reply"]
        return b"next", calls
    if scenario in ("raise now", "raise later"):
        if "on_error" in hooks:
            return b"on_error", [*calls, f"on_error({scenario.split()[1]})"]
        return ValueError, calls
    return trio.TooSlowError, [*calls, "on_cancel"] if "on_cancel" in hooks else calls


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("hooks", COMBINATIONS, ids=lambda h: "+".join(sorted(h)) or "none")
async def test_a_wrapper_behaves_as_its_hooks_say(hooks: frozenset[str], scenario: str) -> None:
    cls = make_wrapper(hooks)
    wrapper = cls()
    log: list[str] = []
    rest = Next(scenario, log)
    wrapper.next = rest
    req = request("mine.example.org." if scenario == "on_query" else "www.example.org.")
    want, calls = expected(hooks, scenario)
    outcome: object
    try:
        with trio.fail_after(0.05 if scenario == "cancelled" else 30):
            result = await settle(wrapper.handle(req))
        outcome = result if isinstance(result, bytes) else type(result)
    except (ValueError, trio.TooSlowError) as exc:
        outcome = type(exc)
    assert outcome == want
    assert wrapper.calls == calls  # type: ignore[attr-defined]
    answered_in_on_query = scenario == "on_query" and "on_query" in hooks
    assert rest.asked == (0 if answered_in_on_query else 1)
    assert req.answered_by == ("w" if answered_in_on_query else "")
    if scenario == "cancelled":
        assert log == ["coroutine ended"]


@pytest.mark.parametrize("hooks", COMBINATIONS, ids=lambda h: "+".join(sorted(h)) or "none")
def test_a_wrapper_is_transparent_on_success_unless_it_looks_at_queries_or_replies(
    hooks: frozenset[str],
) -> None:
    cls = make_wrapper(hooks)
    assert cls.transparent_on_success() == (not {"on_query", "on_reply"} & hooks)


@pytest.mark.parametrize(
    ("hook", "scenario"), [("on_query", "reply now"), ("on_reply", "reply now"),
                           ("on_reply", "reply later"), ("on_error", "raise now"),
                           ("on_error", "raise later")],
)  # fmt: skip
async def test_a_bug_in_a_hook_is_named_after_the_wrapper(hook: str, scenario: str) -> None:
    def broken(self: Any, *args: Any) -> Any:
        raise RuntimeError(f"{hook} bug")

    for others in (frozenset(), frozenset(HOOKS) - {hook}):
        cls = type("Broken", (make_wrapper(others),), {hook: broken, "name": "broken"})
        wrapper = cls()
        wrapper.next = Next(scenario, [])
        with pytest.raises(RuntimeError, match=f"{hook} bug") as caught:
            await settle(wrapper.handle(request()))
        assert plugin_of(caught.value) == "broken", sorted(others)


class OwnHandle(Wrapper):
    """A wrapper that states its own handle (it passes on a renamed copy)."""

    name = "own"

    def handle(self, request: Request) -> Result:
        return self.next.handle(request.derive("elsewhere.example."))


class OwnHandleChild(OwnHandle):
    """A subclass that adds a hook keeps the handle its parent stated."""

    def on_error(self, request: Request, exc: Exception) -> Reply:
        return b"child"


@pytest.mark.parametrize("cls", [OwnHandle, OwnHandleChild])
def test_a_wrapper_stating_its_own_handle_keeps_it_and_is_not_transparent(
    cls: type[OwnHandle],
) -> None:
    wrapper = cls()
    rest = Answers(lambda: b"r")
    wrapper.next = rest
    assert wrapper.handle(request()) == b"r"
    assert [r.name for r in rest.seen] == ["elsewhere.example."]
    assert not cls.transparent_on_success()


# -- compile_chain: links and the known-answer path ---------------------------------------


class Known(Plugin):
    """A plugin with the known-answer capability (as cache, meshhosts)."""

    name = "known"

    def handle(self, request: Request) -> Result:
        return self.next.handle(request)

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        return None


class OtherKnown(Known):
    name = "other_known"


class Passing(Plugin):
    """States no ``handle``: the default passes every query on."""

    name = "passing"


class OnCancelOnly(Wrapper):
    name = "on_cancel_only"

    def on_cancel(self, request: Request) -> None:
        pass


def wrapper_with(*hooks: str) -> Wrapper:
    return make_wrapper(frozenset(hooks))()


KNOWN_PATH: list[tuple[str, Callable[[], list[Plugin]], str | None]] = [
    ("known plugin first", lambda: [Known(), Answering()], "known"),
    ("transparent wrapper first", lambda: [Transparent(), Known()], "known"),
    ("several transparent wrappers", lambda: [Transparent(), OnCancelOnly(), Known()], "known"),
    ("on_error and on_cancel", lambda: [wrapper_with("on_error", "on_cancel"), Known()], "known"),
    ("the first of two known plugins", lambda: [Known(), OtherKnown()], "known"),
    ("a wrapper with on_query", lambda: [wrapper_with("on_query"), Known()], None),
    ("a wrapper with on_reply", lambda: [wrapper_with("on_reply", "on_error"), Known()], None),
    ("a wrapper with its own handle", lambda: [OwnHandle(), Known()], None),
    ("an answering plugin first", lambda: [Answering("pass"), Known()], None),
    ("a plugin that passes on, not a wrapper", lambda: [Passing(), Known()], None),
    ("no known plugin", lambda: [Transparent(), Answering()], None),
    ("no plugin", lambda: [], None),
]


@pytest.mark.parametrize(
    ("plugins", "known"), [(p, k) for _, p, k in KNOWN_PATH], ids=[d for d, _, _ in KNOWN_PATH]
)
def test_the_known_answer_plugin_is_first_behind_wrappers_transparent_on_success(
    plugins: Callable[[], list[Plugin]], known: str | None
) -> None:
    _handler, found = compile_chain(plugins(), End(""))
    assert (found.name if found is not None else None) == known


class KnownAnswering(Known):
    name = "known_answering"

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        return b"known" if key else None


class Reshaping(Wrapper):
    """A wrapper that changes replies and says how for a known answer (loadbalance)."""

    def __init__(self, mark: bytes) -> None:
        self.mark = mark

    def on_reply(self, request: Request, reply: Reply) -> Reply:
        return reply

    def on_known_reply(self, reply: bytes) -> bytes:
        return reply + self.mark


class ReshapingWithQuery(Reshaping):
    def on_query(self, request: Request) -> Reply | None:
        return None


@pytest.mark.parametrize(
    ("plugins", "expected"),
    [
        (lambda: [Reshaping(b"+a"), KnownAnswering()], b"known+a"),
        # The outer wrapper's on_known_reply runs last, as its on_reply would.
        (
            lambda: [Reshaping(b"+a"), Transparent(), Reshaping(b"+b"), KnownAnswering()],
            b"known+b+a",
        ),
        (lambda: [ReshapingWithQuery(b"+a"), KnownAnswering()], None),  # it must see queries
        (lambda: [wrapper_with("on_reply"), Reshaping(b"+a"), KnownAnswering()], None),
    ],
)
def test_wrappers_that_reshape_known_answers_keep_the_known_path(
    plugins: Callable[[], list[Plugin]], expected: bytes | None
) -> None:
    found = known_path(plugins())
    if expected is None:
        assert found is None
        return
    assert found is not None and found[0].name == "known_answering"
    assert found[1](b"q", b"key", 12, False, False, "") == expected
    assert found[1](b"q", b"", 12, False, False, "") is None  # a miss is not reshaped


def test_compile_chain_links_wrappers_as_themselves_and_answering_plugins_through_a_step() -> None:
    gate, answering, passing = Gate(), Answering("pass"), Passing()
    end = End("passing")
    handler, _ = compile_chain([gate, answering, passing], end)
    assert handler is gate
    assert isinstance(gate.next, Step) and gate.next.plugin is answering
    assert isinstance(answering.next, Step) and answering.next.plugin is passing
    assert passing.next is end


async def test_the_default_handle_passes_on_and_the_wait_after_it_is_returned() -> None:
    """A plugin that states no ``handle`` hands back what comes after it, wait included."""
    req = request()
    result = linked(Passing(), Inner("wait")).handle(req)
    assert type(result) is Pending
    assert await settle(result) == b"answered"
    req = request()
    assert linked(Passing(), Inner("now")).handle(req) == b"answered"
    assert req.answered_by == "inner"
