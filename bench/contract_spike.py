"""Microbenchmark of the serving contract prototype (issue 18): Dispatcher.handle, no sockets.

    PYTHONPATH=<checkout> python bench/contract_spike.py [--mode today|contract] [-n N] [-r R]

``today`` runs the plugins as they are (run it against a checkout of main to
measure today's core, or against this branch to measure the adapter);
``contract`` swaps in prototype copies of errors, log, acl and cache written
against ``handle`` (defined here, not in plugins/). Each scenario is a
perf_counter loop over ``Dispatcher.handle`` with real query bytes (64 names,
a fresh ID per query), cache warmed, prometheus on; the minimum of R runs is
printed in microseconds per query, as JSON lines.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import dns.message
import trio

from plugins.acl._plugin import AclPlugin
from plugins.acl._rules import Action
from plugins.cache._plugin import CachePlugin
from plugins.errors._plugin import ErrorsPlugin
from plugins.log._plugin import LogPlugin
from pycorefile import Directive, Plugin, Reply, Request, SetupContext, _wire
from pycorefile._app import default_registry, load_config
from pycorefile._registry import Registry
from pycorefile._request import _NO_ROUTE, parse_question
from pycorefile._server import Dispatcher
from pycorefile._wire import PreparedReply

try:
    from pycorefile import _contract
except ImportError:  # a checkout of main: only --mode today
    _contract = None  # type: ignore[assignment]


# One A record, TTL 300, owner = the question name (a pointer to offset 12).
_A_RECORD = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc0\x00\x02\x01"
_ANSWER = PreparedReply.spliced(0x8180, 1, 0, _A_RECORD)


class AnswerPlugin(Plugin):
    """The end of the chain: an A record for any name, from memory (stands in for a table)."""

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> AnswerPlugin:
        return cls()

    def serve_now(self, request: Request) -> Reply | None:
        return _ANSWER.render(request.wire, request.name_end, request.edns, request.do)

    async def serve(self, request: Request) -> Reply:
        reply = self.serve_now(request)
        assert reply is not None
        return reply


class WaitPlugin(AnswerPlugin):
    """The same answer, but it must wait (stands in for forward): serve only."""

    def serve_now(self, request: Request) -> Reply | None:
        return None

    async def serve(self, request: Request) -> Reply:
        return _ANSWER.render(request.wire, request.name_end, request.edns, request.do)


CLASSES: dict[str, type[Plugin]] = {}

if _contract is not None:
    from pycorefile import Pending, Result, Wrapper, pass_on, then, within

    class ContractErrors(ErrorsPlugin, Wrapper):
        """errors as a wrapper: only ``on_error`` (its ``failed``): transparent on success."""

    class ContractAcl(AclPlugin, Wrapper):
        """acl as a wrapper: one ``on_query``, counted once (no 'only once settled' rule)."""

        def on_query(self, request: Request) -> Reply | None:
            action, zone = self._decide(request)
            self._count(request, action, zone)
            if action is Action.ALLOW:
                return None
            return self._refuse(request, action)

    class ContractLog(LogPlugin, Wrapper):
        """log as a wrapper: one ``on_reply`` for every reply, now or after a wait."""

        def on_reply(self, request: Request, reply: Reply) -> Reply:
            rule = self._catch_all or self._rule(request)
            if rule is None:
                return reply
            if type(reply) is bytes and len(reply) <= request.max_size:
                wire = reply
            else:
                rendered = self._render(rule, request, reply)
                if rendered is None:
                    return reply
                wire = rendered
            self._emit(rule, request, wire)
            return wire

        def on_error(self, request: Request, exc: Exception) -> Reply:
            self.on_cancel(request)
            raise exc

        def on_cancel(self, request: Request) -> None:
            rule = self._catch_all or self._rule(request)
            if rule is not None:
                self._emit(rule, request, request.error(2))

    class ContractCache(CachePlugin):
        """cache's stale/hit/miss ladder stated once, against ``handle``."""

        def handle(self, request: Request) -> Result:
            key = request.key
            entry = self._success_get(key) or self._denial_get(key)
            if entry is not None:
                now = self.clock()
                if now < entry.expires:
                    return self._hit(request, entry, now)
                stale = self._stale
                if (
                    stale is not None
                    and now < entry.expires + stale.duration
                    and entry.serves_stale
                ):
                    if not stale.verify or now < entry.recheck_at:
                        return self._serve_stale(request, entry, now)
                    return pass_on(
                        _Within(self.next, stale.verify_timeout),
                        request,
                        lambda answer: self._verified(request, answer, entry, self.clock()),
                        lambda exc: self._verified(request, None, entry, self.clock()),
                    )
            if request.qdcount != 1 or not self._in_zone(request):
                return self.next.handle(request)
            counts = self._count(request)
            counts.requests += 1
            counts.misses += 1
            return then(
                self.next.handle(request),
                lambda reply: self._settle(request, reply, self.clock(), entry),
            )

    class _Within:
        """``handler`` whose waits are bounded (cache's serve_stale verify)."""

        def __init__(self, handler: Any, seconds: float) -> None:
            self.handler, self.seconds = handler, seconds

        def handle(self, request: Request) -> Result:
            return within(self.handler.handle(request), self.seconds)

    class ContractWait(AnswerPlugin):
        """WaitPlugin against ``handle``: says once that it must wait."""

        def handle(self, request: Request) -> Result:
            return Pending(self._answer_later(request))

        async def _answer_later(self, request: Request) -> Reply:
            return _ANSWER.render(request.wire, request.name_end, request.edns, request.do)

    CLASSES = {
        "wait": ContractWait,
        "errors": ContractErrors,
        "acl": ContractAcl,
        "log": ContractLog,
        "cache": ContractCache,
    }
    assert Pending  # re-exported for readers


# -- Lazy Request (cost comparison only) -------------------------------------------------


class LazyRequest(Request):
    """A Request that keeps the parsed fields tuple and reads attributes on demand."""

    __slots__ = ("_cap", "_f")

    def __init__(
        self,
        wire: bytes,
        client: Any = ("127.0.0.1", 0),
        proto: str = "udp",
        local: Any = None,
        server_cap: int = 1232,
    ) -> None:
        self._f, self.key = parse_question(wire)
        self.wire = wire
        self.client = client
        self.proto = proto
        self.local = local
        self._cap = server_cap
        self._message = None
        self._name = None
        self.answered_by = ""
        self.route = _NO_ROUTE
        self.started = time.perf_counter()

    # The twelve header/question fields, read from the tuple when asked.
    id = property(lambda self: (self.wire[0] << 8) | self.wire[1])  # type: ignore[assignment]
    flags = property(lambda self: self._f[1])  # type: ignore[assignment]
    qdcount = property(lambda self: self._f[3])  # type: ignore[assignment]
    name_end = property(lambda self: self._f[4])  # type: ignore[assignment]
    qtype = property(lambda self: self._f[5])  # type: ignore[assignment]
    qclass = property(lambda self: self._f[6])  # type: ignore[assignment]
    edns = property(lambda self: self._f[7])  # type: ignore[assignment]
    do = property(lambda self: self._f[10])  # type: ignore[assignment]

    @property  # type: ignore[override]
    def max_size(self) -> int:
        f = self._f
        return _wire.reply_limit(self.proto, f[7], f[8], self._cap)


# -- Harness ------------------------------------------------------------------------------

HEAD = "reload\n health :0\n ready :0\n prometheus :0\n"
SCENARIOS = {
    "cache_first": " cache\n prometheus :0\n answer\n",
    "errors_cache": " errors\n cache\n prometheus :0\n answer\n",
    "k8s": " errors\n health :0\n ready :0\n prometheus :0\n reload\n cache 30\n answer\n",
    "errors_log_cache": " errors\n log\n cache\n prometheus :0\n answer\n",
    "errors_acl_cache": " errors\n acl {\n  allow\n }\n cache\n prometheus :0\n answer\n",
    "miss_errors_cache": " errors\n cache\n prometheus :0\n answer\n",
    "wait_errors": " errors\n prometheus :0\n wait\n",
    "wait_errors_log_acl": " errors\n log\n acl {\n  allow\n }\n prometheus :0\n wait\n",
}


def registry(mode: str) -> Registry:
    base = default_registry()
    classes = {name: base.get(name) for name in base.entries}
    classes["answer"] = AnswerPlugin
    classes["wait"] = WaitPlugin
    if mode == "contract":
        classes.update(CLASSES)
    return Registry.from_classes(classes)


def queries(count: int, names: int = 64, prefix: str = "name") -> list[bytes]:
    out = []
    for i in range(count):
        q = dns.message.make_query(f"{prefix}{i % names}.bench.test", "A", use_edns=0)
        q.id = (i * 7919) & 0xFFFF
        out.append(q.to_wire())
    return out


def measure(mode: str, scenario: str, n: int, rounds: int) -> float:
    body = SCENARIOS[scenario]
    config = load_config(f".:1053 {{\n{body}}}\n", registry=registry(mode), dns_port=1053)
    routes = next(iter(config.routes.values()))
    dispatcher = Dispatcher(routes, config.observers, 1232, config.failure_observers)
    handle = dispatcher.handle
    client, local = ("127.0.0.1", 40000), ("127.0.0.1", 1053)
    miss = scenario.startswith("miss")
    waits = scenario.startswith("wait")
    qs = queries(n)
    for q in qs[:64]:  # warm the cache (and the parse memo)
        out = handle(q, client, "udp", local)
        pending = getattr(out, "pending", None)  # a wait, not measured here: dropped
        if pending is not None:
            pending.discard()
    best = float("inf")
    for r in range(rounds):
        if miss:  # every name new: the cache misses and stores
            qs = queries(n, names=n, prefix=f"m{r}x")
        if waits:
            elapsed, out = trio.run(_waiting_loop, dispatcher, qs, client, local)
        else:
            start = time.perf_counter()
            for q in qs:
                out = handle(q, client, "udp", local)
            elapsed = time.perf_counter() - start
        assert type(out) is bytes and len(out) > 12, out
        best = min(best, elapsed / n)
    return best * 1e6


async def _waiting_loop(
    dispatcher: Dispatcher, qs: list[bytes], client: Any, local: Any
) -> tuple[float, Any]:
    """Every query waits: Dispatcher.handle, then Dispatcher.answer awaited (no task)."""
    handle, answer = dispatcher.handle, dispatcher.answer
    out: Any = None
    start = time.perf_counter()
    for q in qs:
        out = handle(q, client, "udp", local)
        if isinstance(out, Request):
            out = await answer(out)
    return time.perf_counter() - start, out


def measure_request(n: int, rounds: int) -> dict[str, float]:
    """Construction alone, and construction plus what a cache hit reads."""
    qs = queries(n)
    client = ("127.0.0.1", 40000)
    out: dict[str, float] = {}
    for label, cls in (("eager", Request), ("lazy", LazyRequest)):
        best_new = best_use = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for q in qs:
                cls(q, client, "udp", None, 1232)
            best_new = min(best_new, (time.perf_counter() - start) / n)
            start = time.perf_counter()
            for q in qs:
                req = cls(q, client, "udp", None, 1232)
                _ = (req.key, req.wire, req.name_end, req.edns, req.do, req.max_size, req.qtype)
            best_use = min(best_use, (time.perf_counter() - start) / n)
        out[f"request_{label}_new"] = best_new * 1e6
        out[f"request_{label}_new_and_read"] = best_use * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["today", "contract"], default="contract")
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("-r", type=int, default=7)
    parser.add_argument("-s", "--scenario", action="append")
    parser.add_argument("--request", action="store_true", help="Request eager vs lazy only")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    sys.stdout, real = io.StringIO(), sys.stdout  # the log plugin's lines go nowhere
    try:
        if args.request:
            result: dict[str, Any] = measure_request(args.n, args.r)
        else:
            result = {s: measure(args.mode, s, args.n, args.r) for s in args.scenario or SCENARIOS}
    finally:
        sys.stdout = real
    print(json.dumps({"mode": args.mode, **{k: round(v, 3) for k, v in result.items()}}))


if __name__ == "__main__":
    main()
