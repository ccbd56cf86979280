"""errors: parsing, error lines, consolidation, against the real server.

As in CoreDNS, *errors* logs the errors plugins return (``PluginError``,
Go's ``return rcode, err``); a panic (any other exception) is not its to log:
the server logs and counts it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import dns.rcode
import dns.rrset
import pytest
import trio

from pycorefile import (
    CorefileError,
    Directive,
    Pending,
    Plugin,
    PluginError,
    Reply,
    Request,
    Result,
    SetupContext,
    load_config,
    open_server,
)
from pycorefile._registry import Registry
from pycorefile._types import Client, Route
from pycorefile.corefile import parse_corefile
from pycorefile.plugin import go_duration
from pycorefile.re2 import compile_re2
from pycorefile.testing import Upstream, query, serve
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.errors import (
    Consolidate,
    ErrorsConfig,
    ErrorsPlugin,
    parse_errors,
)
from pycorefile_plugins.log import LogPlugin
from tests.logcapture import collect_logs
from tests.plugins.test_prometheus import scrape, value


class FlakyPlugin(Plugin):
    """Fails by the first label: ``boom*`` (an error, now), ``refuse`` (an error
    answered REFUSED), ``later`` (an error after waiting), ``panic`` and ``bare``
    (panics), ``crash`` (a panic after waiting); answers other names."""

    after = "cache"

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> FlakyPlugin:
        return cls()

    def handle(self, request: Request) -> Result:
        label = request.name.split(".")[0]
        if label.startswith("boom"):
            raise PluginError(f"kaput {label}")
        if label == "refuse":
            raise PluginError("not today", dns.rcode.REFUSED)
        if label == "later":
            return Pending(self._time_out())
        if label == "panic":
            raise RuntimeError("kaput panic")
        if label == "bare":
            raise KeyError
        if label == "crash":
            return Pending(self._crash())
        reply = request.reply()
        reply.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "A", "192.0.2.1"))
        return reply

    async def _time_out(self) -> Reply:
        await trio.sleep(0)
        raise PluginError("read udp 127.0.0.1:40000->127.0.0.2:53: i/o timeout")

    async def _crash(self) -> Reply:
        await trio.sleep(0)
        raise RuntimeError("kaput crash")


def registry() -> Registry:
    return Registry.from_classes(
        {"bind": BindPlugin, "errors": ErrorsPlugin, "log": LogPlugin, "flaky": FlakyPlugin}
    )


def corefile(errors: str) -> str:
    return ".:0 {\n    bind 127.0.0.1\n" + errors + "\n    flaky\n}\n"


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """What the server logs, whatever the logger's propagation."""
    with collect_logs(logging.DEBUG) as collected:
        yield collected


def messages(records: list[logging.LogRecord], level: int | None = None) -> list[str]:
    return [
        r.getMessage()
        for r in records
        if r.getMessage().startswith("plugin/errors:") and (level is None or r.levelno == level)
    ]


async def wait_for_message(records: list[logging.LogRecord], text: str) -> str:
    with trio.fail_after(5):
        while True:
            for message in messages(records):
                if text in message:
                    return message
            await trio.sleep(0.02)


def directives(text: str) -> tuple[Directive, ...]:
    return parse_corefile(".:53 {\n" + text + "\n}\n")[0].directives


# -- Parsing ----------------------------------------------------------------------------


def test_parse_defaults() -> None:
    assert parse_errors(directives("errors")) == ErrorsConfig()
    assert parse_errors(directives("errors stdout")) == ErrorsConfig()


def test_parse_options() -> None:
    config = parse_errors(
        directives(
            "errors {\n"
            "  stacktrace\n"
            '  consolidate 5m ".* i/o timeout$" warning\n'
            '  consolidate 30s "^Failed to .+" info show_first\n'
            '  consolidate 1s "x" show_first\n'
            "}"
        )
    )
    assert config.stacktrace
    assert config.consolidate == (
        Consolidate(
            300.0, compile_re2(".* i/o timeout$"), logging.WARNING, False, ".* i/o timeout$"
        ),
        Consolidate(30.0, compile_re2("^Failed to .+"), logging.INFO, True, "^Failed to .+"),
        Consolidate(1.0, compile_re2("x"), logging.ERROR, True, "x"),
    )


ERRORS = [
    ("errors stderr", "invalid log file: stderr"),
    ("errors stdout extra", "Wrong argument count"),
    ("errors {\n  consolidate 5m\n}", "Wrong argument count"),
    ("errors {\n  consolidate soon x\n}", "invalid duration 'soon'"),
    ("errors {\n  consolidate 5m (x\n}", "invalid regex '(x'"),
    ("errors {\n  consolidate 5m x loud\n}", "unknown log level argument in consolidate: loud"),
    ("errors {\n  consolidate 5m x show_first error\n}", "unknown log level argument"),
    ("errors {\n  consolidate 5m " + "a" * 10001 + "\n}", "regexp longer than 10000"),
    ("errors {\n  stacktrace now\n}", "Wrong argument count"),
    ("errors {\n  panicky\n}", "unknown property 'panicky'"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_setup_errors(text: str, message: str) -> None:
    with pytest.raises(CorefileError, match=re.escape(message)) as info:
        load_config(".:53 {\n" + text + "\n}\n", registry=registry())
    assert "plugin/errors" in str(info.value)


def test_errors_once_per_block() -> None:
    with pytest.raises(CorefileError, match="only be used once"):
        load_config(".:53 {\n errors\n errors\n}\n", registry=registry())


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (30, "30s"),
        (300, "5m0s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (5400.5, "1h30m0.5s"),
        (1.5, "1.5s"),
        (0.5, "500ms"),
        (0.0015, "1.5ms"),
        (0, "0s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


# -- Serving ----------------------------------------------------------------------------


def server_lines(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """What the server logged of panics (``plugin/flaky: NAME TYPE: ...``)."""
    return [r for r in records if r.getMessage().startswith("plugin/flaky:")]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_an_error_is_logged_as_coredns_does_and_answered_with_its_rcode(
    proto: str, records: list[logging.LogRecord]
) -> None:
    async with open_server(corefile("    errors"), registry=registry()) as server:
        reply = await query(server, "boom.test.", "AAAA", proto=proto)
        refused = await query(server, "refuse.test.", "MX", proto=proto)
        good = await query(server, "fine.test.", "A", proto=proto)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert refused.rcode() == dns.rcode.REFUSED
    assert good.rcode() == dns.rcode.NOERROR
    # CoreDNS: log.Errorf("%d %s %s: %s", rcode, state.Name(), state.Type(), err)
    assert messages(records, logging.ERROR) == [
        "plugin/errors: 2 boom.test. AAAA: kaput boom",
        "plugin/errors: 5 refuse.test. MX: not today",
    ]
    assert server_lines(records) == []  # errors are not panics


async def test_an_error_after_waiting_is_logged(records: list[logging.LogRecord]) -> None:
    async with open_server(corefile("    errors"), registry=registry()) as server:
        late = await query(server, "later.test.", "A")
    assert late.rcode() == dns.rcode.SERVFAIL
    assert messages(records) == [
        "plugin/errors: 2 later.test. A: read udp 127.0.0.1:40000->127.0.0.2:53: i/o timeout"
    ]


async def test_a_panic_is_the_servers_to_log_not_errors(records: list[logging.LogRecord]) -> None:
    # CoreDNS's errors plugin does not recover panics: the server does, logs
    # and counts them, with or without errors in the block.
    async with open_server(corefile("    errors"), registry=registry()) as server:
        panic = await query(server, "panic.test.", "A")
        bare = await query(server, "bare.test.", "A")
    assert panic.rcode() == bare.rcode() == dns.rcode.SERVFAIL
    assert messages(records) == []
    assert [r.getMessage() for r in server_lines(records)] == [
        "plugin/flaky: panic.test. A: RuntimeError: kaput panic",
        "plugin/flaky: bare.test. A: KeyError: ",
    ]
    assert all(r.levelno == logging.ERROR for r in server_lines(records))


@pytest.mark.parametrize("stacktrace", [True, False])
async def test_stacktrace_adds_the_traceback_to_panics_only(
    stacktrace: bool, records: list[logging.LogRecord]
) -> None:
    logging.getLogger("pycorefile").setLevel(logging.INFO)  # DEBUG logs tracebacks anyway
    errors = "    errors {\n        stacktrace\n    }" if stacktrace else "    errors"
    async with open_server(corefile(errors), registry=registry()) as server:
        await query(server, "panic.test.", "A")
        await query(server, "boom.test.", "A")
    [panic] = server_lines(records)
    if stacktrace:
        assert panic.exc_info is not None and panic.exc_info[0] is RuntimeError
    else:
        assert not panic.exc_info
    [error] = [r for r in records if r.getMessage().startswith("plugin/errors:")]
    assert error.exc_info is None


async def test_a_panic_after_waiting_goes_to_the_server_with_its_traceback(
    records: list[logging.LogRecord],
) -> None:
    logging.getLogger("pycorefile").setLevel(logging.INFO)  # DEBUG logs tracebacks anyway
    errors = "    errors {\n        stacktrace\n    }"
    async with open_server(corefile(errors), registry=registry()) as server:
        reply = await query(server, "crash.test.", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert messages(records) == []
    [panic] = server_lines(records)
    assert panic.getMessage() == "plugin/flaky: crash.test. A: RuntimeError: kaput crash"
    assert panic.exc_info is not None and panic.exc_info[0] is RuntimeError


async def test_the_log_plugin_inside_sees_the_rcode(capsys: pytest.CaptureFixture[str]) -> None:
    text = corefile('    errors\n    log . "{name} {rcode}"')
    async with open_server(text, registry=registry()) as server:
        await query(server, "boom.test.", "A")
        await query(server, "refuse.test.", "A")
        await query(server, "panic.test.", "A")
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("[INFO]")] == [
        "[INFO] boom.test. SERVFAIL",
        "[INFO] refuse.test. REFUSED",
        "[INFO] panic.test. SERVFAIL",
    ]


async def test_consolidate_counts_over_the_window(records: list[logging.LogRecord]) -> None:
    errors = '    errors {\n        consolidate 300ms "kaput boom[0-9]$"\n    }'
    async with open_server(corefile(errors), registry=registry()) as server:
        for i in range(3):
            reply = await query(server, f"boom{i}.test.", "A")
            assert reply.rcode() == dns.rcode.SERVFAIL
        await query(server, "boomx.test.", "A")  # does not match: logged on its own
        summary = await wait_for_message(records, "errors like")
        # A new window opens with the next matching error.
        await query(server, "boom7.test.", "A")
        second = await wait_for_message(records, "1 errors like")
    assert summary == "plugin/errors: 3 errors like 'kaput boom[0-9]$' occurred in last 300ms"
    assert second == "plugin/errors: 1 errors like 'kaput boom[0-9]$' occurred in last 300ms"
    singles = [m for m in messages(records) if "errors like" not in m]
    assert singles == ["plugin/errors: 2 boomx.test. A: kaput boomx"]


async def test_consolidate_level_first_match_and_report_at_shutdown(
    records: list[logging.LogRecord],
) -> None:
    errors = (
        "    errors {\n"
        '        consolidate 1h "kaput" warning\n'
        '        consolidate 1h "boom" info\n'
        "    }"
    )
    async with open_server(corefile(errors), registry=registry()) as server:
        for _ in range(2):
            await query(server, "boom.test.", "A")
        assert messages(records) == []
    # The window is an hour long: stopping the server reports it.
    assert messages(records, logging.WARNING) == [
        "plugin/errors: 2 errors like 'kaput' occurred in last 1h0m0s"
    ]
    assert messages(records, logging.INFO) == []


async def test_consolidate_show_first(records: list[logging.LogRecord]) -> None:
    errors = '    errors {\n        consolidate 1h "kaput" warning show_first\n    }'
    async with open_server(corefile(errors), registry=registry()) as server:
        await query(server, "boom.test.", "A")
        assert messages(records, logging.WARNING) == ["plugin/errors: 2 boom.test. A: kaput boom"]
    # One error only, already shown: no summary.
    assert len(messages(records)) == 1

    records.clear()
    async with open_server(corefile(errors), registry=registry()) as server:
        for _ in range(3):
            await query(server, "boom.test.", "A")
    assert messages(records) == [
        "plugin/errors: 2 boom.test. A: kaput boom",
        "plugin/errors: 3 errors like 'kaput' occurred in last 1h0m0s",
    ]


# -- Transparent on success: the known-answer path with errors in front -----------------

KUBERNETES_DEFAULT = """\
.:0 {{
    bind 127.0.0.1
    errors
{log}    health 127.0.0.1:0
    ready 127.0.0.1:0
    prometheus 127.0.0.1:0
    reload
    cache 30
    forward . {upstream}
}}
"""


@dataclass
class PathSpy:
    """A reply observer, as the metrics are one: which way each reply went, and who is credited.

    ``observe`` is told of replies the chain gave (a Request was made);
    ``observe_known`` of the server's known-answer path (``serve_known``, no Request).
    """

    paths: list[tuple[str, str]] = field(default_factory=list)

    def observe(self, request: Request, wire: bytes) -> None:
        self.paths.append(("chain", request.answered_by))

    def observe_known(
        self, route: Route, proto: str, client: Client, qtype: int, do: bool,
        answered_by: str, asked: int, wire: bytes, started: float,
    ) -> None:  # fmt: skip
        self.paths.append(("known", answered_by))


@pytest.mark.parametrize("with_log", [False, True], ids=["kubernetes-default", "log-too"])
async def test_errors_in_front_keeps_cache_hits_on_the_known_answer_path(with_log: bool) -> None:
    """errors only looks at failures, so the Kubernetes default block answers cache hits
    on the server's fast path, credited to cache; log must see every query, so with log
    the same hits take the chain."""
    up = Upstream(records={("www.example.org.", "A"): ["192.0.2.1"]}, host="127.0.0.2")
    log = "    log\n" if with_log else ""
    async with (
        up.running(),
        serve(KUBERNETES_DEFAULT.format(log=log, upstream=up.address)) as server,
    ):
        assert server.config is not None
        (block,) = server.config.blocks
        assert (block.known is None) == with_log
        spy = PathSpy()
        server.config.observers.append(spy)  # where prometheus's observer is too
        replies = [
            await query(server, "www.example.org.", "A", proto=proto)
            for proto in ("udp", "tcp")
            for _ in range(3)
        ]
        found, _ = await scrape(server)
    for reply in replies:
        assert reply.rcode() == dns.rcode.NOERROR
        assert [rr.to_text() for rr in reply.answer[0]] == ["192.0.2.1"]
    assert up.count("www.example.org.", "A") == 1  # one miss, then five hits
    hit_path = "chain" if with_log else "known"
    assert spy.paths == [("chain", "forward")] + [(hit_path, "cache")] * 5
    core = {"server": "dns://127.0.0.1:0", "zone": ".", "view": ""}
    responses = "coredns_dns_responses_total"
    assert value(found, responses, rcode="NOERROR", plugin="cache", **core) == 5
    assert value(found, responses, rcode="NOERROR", plugin="forward", **core) == 1
    cache = {"server": "dns://127.0.0.1:0", "zones": ".", "view": ""}
    assert value(found, "coredns_cache_hits_total", type="success", **cache) == 5
    assert value(found, "coredns_cache_misses_total", **cache) == 1
