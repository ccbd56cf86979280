"""errors: parsing, error lines, consolidation, against the real server."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence

import dns.rcode
import dns.rrset
import pytest
import trio

from plugins.bind import BindPlugin
from plugins.errors import Consolidate, ErrorsConfig, ErrorsPlugin, go_duration, parse_errors
from plugins.log import LogPlugin
from pycorefile import (
    CorefileError,
    Directive,
    Plugin,
    Reply,
    Request,
    SetupContext,
    load_config,
    open_server,
)
from pycorefile._registry import Registry
from pycorefile.corefile import parse_corefile
from pycorefile.testing import query


class FlakyPlugin(Plugin):
    """Raises for names starting ``boom`` (now) or ``later`` (after waiting); answers others."""

    after = "cache"

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> FlakyPlugin:
        return cls()

    def serve_now(self, request: Request) -> Reply | None:
        label = request.name.split(".")[0]
        if label.startswith("boom"):
            raise RuntimeError(f"kaput {label}")
        if label == "later":
            return None
        if label == "bare":
            raise KeyError
        reply = request.reply()
        reply.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "A", "192.0.2.1"))
        return reply

    async def serve(self, request: Request) -> Reply:
        await trio.sleep(0)
        raise OSError("upstream went away")


def registry() -> Registry:
    return Registry.from_classes(
        {"bind": BindPlugin, "errors": ErrorsPlugin, "log": LogPlugin, "flaky": FlakyPlugin}
    )


def corefile(errors: str) -> str:
    return ".:0 {\n    bind 127.0.0.1\n" + errors + "\n    flaky\n}\n"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """What the server logs, whatever the logger's propagation."""
    logger = logging.getLogger("pycorefile")
    handler = _Collect()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


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
        Consolidate(300.0, re.compile(".* i/o timeout$"), logging.WARNING, False),
        Consolidate(30.0, re.compile("^Failed to .+"), logging.INFO, True),
        Consolidate(1.0, re.compile("x"), logging.ERROR, True),
    )


ERRORS = [
    ("errors stderr", "invalid log file: stderr"),
    ("errors stdout extra", "Wrong argument count"),
    ("errors {\n  consolidate 5m\n}", "Wrong argument count"),
    ("errors {\n  consolidate soon x\n}", "invalid duration 'soon'"),
    ("errors {\n  consolidate 5m (x\n}", "invalid regexp '(x'"),
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


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_error_is_logged_and_answered_servfail(
    proto: str, records: list[logging.LogRecord]
) -> None:
    async with open_server(corefile("    errors"), registry=registry()) as server:
        reply = await query(server, "boom.test.", "AAAA", proto=proto)
        good = await query(server, "fine.test.", "A", proto=proto)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert good.rcode() == dns.rcode.NOERROR
    assert messages(records, logging.ERROR) == [
        "plugin/errors: 2 boom.test. AAAA: plugin/flaky: RuntimeError: kaput boom"
    ]


async def test_errors_after_waiting_and_without_message(records: list[logging.LogRecord]) -> None:
    async with open_server(corefile("    errors"), registry=registry()) as server:
        late = await query(server, "later.test.", "A")
        bare = await query(server, "bare.test.", "A")
    assert late.rcode() == bare.rcode() == dns.rcode.SERVFAIL
    assert messages(records) == [
        "plugin/errors: 2 later.test. A: plugin/flaky: OSError: upstream went away",
        "plugin/errors: 2 bare.test. A: plugin/flaky: KeyError",
    ]


async def test_stacktrace(records: list[logging.LogRecord]) -> None:
    errors = "    errors {\n        stacktrace\n    }"
    async with open_server(corefile(errors), registry=registry()) as server:
        await query(server, "boom.test.", "A")
    [record] = [r for r in records if r.getMessage().startswith("plugin/errors:")]
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


async def test_the_log_plugin_inside_sees_servfail(capsys: pytest.CaptureFixture[str]) -> None:
    text = corefile('    errors\n    log . "{name} {rcode}"')
    async with open_server(text, registry=registry()) as server:
        await query(server, "boom.test.", "A")
    assert capsys.readouterr().out.splitlines() == ["[INFO] boom.test. SERVFAIL"]


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
    assert singles == ["plugin/errors: 2 boomx.test. A: plugin/flaky: RuntimeError: kaput boomx"]


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
        assert messages(records, logging.WARNING) == [
            "plugin/errors: 2 boom.test. A: plugin/flaky: RuntimeError: kaput boom"
        ]
    # One error only, already shown: no summary.
    assert len(messages(records)) == 1

    records.clear()
    async with open_server(corefile(errors), registry=registry()) as server:
        for _ in range(3):
            await query(server, "boom.test.", "A")
    assert messages(records) == [
        "plugin/errors: 2 boom.test. A: plugin/flaky: RuntimeError: kaput boom",
        "plugin/errors: 3 errors like 'kaput' occurred in last 1h0m0s",
    ]
