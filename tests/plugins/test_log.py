"""log: the format language, rule parsing, and lines written by the real server."""

from __future__ import annotations

import json
import re
import socket
import struct
from collections.abc import Sequence

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio

from pycorefile import (
    CorefileError,
    Directive,
    Pending,
    Plugin,
    Reply,
    Request,
    Result,
    ServerOptions,
    SetupContext,
    load_config,
    open_server,
)
from pycorefile._registry import Registry
from pycorefile.corefile import parse_corefile
from pycorefile.testing import make_query, query, query_wire
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.cache import CachePlugin
from pycorefile_plugins.errors import ErrorsPlugin
from pycorefile_plugins.log import (
    COMMON_FORMAT,
    LogPlugin,
    LogRule,
    compile_format,
    parse_format,
    parse_log,
)
from pycorefile_plugins.whoami import WhoamiPlugin

# -- A plugin answering with every kind of reply ------------------------------------


class AnswersPlugin(Plugin):
    """Answers by the first label: ok (A), nx (NXDOMAIN+SOA), nodata, deleg (NS), fail (SERVFAIL),
    drop (no reply), boom (raises), wait (answers only after waiting), late (answers after
    0.6 s), hang (waits until cancelled); for the reply types: nxbare (NXDOMAIN, no SOA),
    empty (NOERROR, nothing), nxanswer (NXDOMAIN with an A), refused, notimp, badvers
    (extended rcode 16), expired and signed (an A with an RRSIG out of and in its validity
    period)."""

    after = "cache"

    def __init__(self) -> None:
        self.answered = 0
        self.hanging = 0
        self.cancelled = 0

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> AnswersPlugin:
        return cls()

    def handle(self, request: Request) -> Result:
        self.answered += 1
        label = request.name.split(".")[0]
        if label == "wait":
            return Pending(self._answer_later(request))
        if label == "hang":
            return Pending(self._hang())
        if label == "late":
            return Pending(self._answer_later(request, 0.6))
        if label == "drop":
            return b""  # silence, as the acl plugin's drop
        if label == "boom":
            raise RuntimeError("kaput")
        reply = request.reply(authoritative=True)
        soa = dns.rrset.from_text("test.", 60, "IN", "SOA", "ns.test. h.test. 1 2 3 4 5")
        if label == "ok":
            reply.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "A", "192.0.2.1"))
        elif label == "nx":
            reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.authority.append(soa)
        elif label == "nodata":
            reply.authority.append(soa)
        elif label == "deleg":
            reply.flags &= ~dns.flags.AA
            reply.authority.append(dns.rrset.from_text(request.qname, 60, "IN", "NS", "ns.x."))
        elif label == "fail":
            return request.error(dns.rcode.SERVFAIL)
        elif label in ("refused", "notimp", "badvers"):
            reply.set_rcode(dns.rcode.from_text(label.upper()))
        elif label == "nxbare":
            reply.set_rcode(dns.rcode.NXDOMAIN)
        elif label == "nxanswer":
            reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "A", "192.0.2.1"))
        elif label in ("expired", "signed"):
            dates = "20000101000000 19990101000000" if label == "expired" else VALID_DATES
            reply.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "A", "192.0.2.1"))
            sig = f"A 8 2 60 {dates} 12345 test. AAAA"
            reply.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "RRSIG", sig))
        return reply

    async def _answer_later(self, request: Request, seconds: float = 0.01) -> Reply:
        await trio.sleep(seconds)
        reply = request.reply()
        reply.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "A", "192.0.2.9"))
        return reply

    async def _hang(self) -> Reply:
        self.hanging += 1
        try:
            await trio.sleep(30)  # far beyond the test; cancelled long before
        except trio.Cancelled:
            self.cancelled += 1
            raise
        raise AssertionError("a hanging query was never cancelled")


VALID_DATES = "21000101000000 20000101000000"
"""An RRSIG's expiration and inception around now (and until 2100)."""


def registry() -> Registry:
    return Registry.from_classes(
        {
            "bind": BindPlugin,
            "log": LogPlugin,
            "errors": ErrorsPlugin,
            "whoami": WhoamiPlugin,
            "answers": AnswersPlugin,
            "cache": CachePlugin,
        }
    )


def block(body: str) -> str:
    return ".:0 {\n    bind 127.0.0.1\n" + body + "\n    answers\n}\n"


def log_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line]


def directives(text: str) -> tuple[Directive, ...]:
    return parse_corefile(".:53 {\n" + text + "\n}\n")[0].directives


async def tcp_raw(port: int, wire: bytes) -> bytes:
    """One query over TCP, the reply's exact bytes."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        await sock.connect(("127.0.0.1", port))
        await sock.send(struct.pack(">H", len(wire)) + wire)
        data = b""
        with trio.fail_after(3):
            while len(data) < 2 or len(data) < 2 + struct.unpack(">H", data[:2])[0]:
                chunk = await sock.recv(65535)
                assert chunk
                data += chunk
    return data[2:]


# -- The format language --------------------------------------------------------------

FORMATS = [
    # (format, [(kind, value), ...])
    ("{type}", [("label", "{type}")]),
    ("A {type} B", [("literal", "A "), ("label", "{type}"), ("literal", " B")]),
    ("{{remote}}", [("literal", "{"), ("label", "{remote}"), ("literal", "}")]),
    ("A } {name}", [("literal", "A } "), ("label", "{name}")]),
    ("{unknown} {rcode}", [("literal", "{unknown} "), ("label", "{rcode}")]),
    ("{/some/label}", [("metadata", "some/label")]),
    ("no placeholders", [("literal", "no placeholders")]),
    ("{>ID}", [("literal", "{>ID}")]),
]


@pytest.mark.parametrize(("text", "expected"), FORMATS)
def test_parse_format(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(n.kind, n.value) for n in parse_format(text)] == expected


def test_percent_in_a_format_is_literal() -> None:
    request = Request.from_message(make_query("ok.test.", "A"), ("192.0.2.5", 1234))
    template = compile_format("100% {port} %s %d", prefix="")
    assert template.render(request, request.error(0), 0.0) == "100% 1234 %s %d"


def test_duration_is_printed_as_go_does() -> None:
    request = Request.from_message(make_query("ok.test.", "A"))
    template = compile_format("{duration}", prefix="")
    wire = request.error(0)
    assert template.render(request, wire, 0.037990251) == "0.037990251s"
    assert template.render(request, wire, 0.5) == "0.5s"
    assert template.render(request, wire, 2.0) == "2s"
    assert template.render(request, wire, 0.0) == "0s"


# -- Parsing the directive ------------------------------------------------------------

RULES = [
    ("log", [LogRule(".", COMMON_FORMAT, frozenset({"all"}))]),
    ("log example.org", [LogRule("example.org.", COMMON_FORMAT, frozenset({"all"}))]),
    (
        "log a.test B.Test",
        [
            LogRule("a.test.", COMMON_FORMAT, frozenset({"all"})),
            LogRule("b.test.", COMMON_FORMAT, frozenset({"all"})),
        ],
    ),
    ('log . "{name} {rcode}"', [LogRule(".", "{name} {rcode}", frozenset({"all"}))]),
    (
        "log . {combined}",
        [LogRule(".", COMMON_FORMAT + ' "{>opcode}"', frozenset({"all"}))],
    ),
    ('log . "x {common}"', [LogRule(".", "x " + COMMON_FORMAT, frozenset({"all"}))]),
    (
        "log {\n class denial\n class error success\n}",
        [LogRule(".", COMMON_FORMAT, frozenset({"denial", "error", "success"}))],
    ),
    (
        "log a.test\nlog . {\n class error\n}",
        [
            LogRule("a.test.", COMMON_FORMAT, frozenset({"all"})),
            LogRule(".", COMMON_FORMAT, frozenset({"error"})),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), RULES)
def test_parse_log(text: str, expected: list[LogRule]) -> None:
    assert list(parse_log(directives(text))) == expected


ERRORS = [
    ("log {\n class nope\n}", "invalid Class: nope", 3),
    ("log {\n class\n}", "Wrong argument count", 3),
    ("log {\n format json\n}", "unknown property 'format'", 3),
    ("log {common}", "a single argument is a name", 2),
    ('log a..b "{name}"', "not a valid domain name", 2),
]


@pytest.mark.parametrize(("text", "message", "line"), ERRORS)
def test_setup_errors(text: str, message: str, line: int) -> None:
    with pytest.raises(CorefileError, match=re.escape(message)) as info:
        load_config(".:53 {\n" + text + "\n}\n", registry=registry())
    assert "plugin/log" in str(info.value)
    assert f"Corefile:{line}:" in str(info.value)


# -- Lines written by the real server ------------------------------------------------

COMMON_LINE = re.compile(
    r'^\[INFO\] (?P<remote>\S+):(?P<port>\d+) - (?P<id>\d+) "(?P<type>\S+) (?P<class>\S+) '
    r'(?P<name>\S+) (?P<proto>udp|tcp) (?P<size>\d+) (?P<do>true|false) (?P<bufsize>\d+)" '
    r"(?P<rcode>\S+) (?P<rflags>\S*) (?P<rsize>\d+) (?P<duration>\d+(\.\d+)?)s$"
)


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_default_line_is_common_log_format(
    proto: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_server(block("    log"), registry=registry()) as server:
        reply = await query(server, "OK.Test", "A", proto=proto, edns=True, payload=4096)
        assert reply.rcode() == dns.rcode.NOERROR
    lines = log_lines(capsys.readouterr().out)
    assert len(lines) == 1
    m = COMMON_LINE.match(lines[0])
    assert m is not None, lines[0]
    assert m["remote"] == "127.0.0.1"
    assert m["id"] == str(reply.id)
    assert (m["type"], m["class"], m["name"], m["proto"]) == ("A", "IN", "ok.test.", proto)
    assert m["do"] == "false"
    assert m["bufsize"] == ("4096" if proto == "udp" else "65535")
    assert (m["rcode"], m["rflags"]) == ("NOERROR", "qr,aa,rd")
    assert 0 < float(m["duration"]) < 3


EVERY_PLACEHOLDER = (
    "{type}|{name}|{class}|{proto}|{size}|{remote}|{port}|{local}|{>id}|{>opcode}|{>do}|"
    "{>bufsize}|{rcode}|{rsize}|{duration}|{>rflags}|{/log/type}|{/log/class}|{/other}"
)


@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        ("ok.test.", "A", ("NOERROR", "qr,aa,rd", "NOERROR", "success")),
        ("nx.test.", "AAAA", ("NXDOMAIN", "qr,aa,rd", "NXDOMAIN", "denial")),
        ("nodata.test.", "MX", ("NOERROR", "qr,aa,rd", "NODATA", "denial")),
        ("deleg.test.", "NS", ("NOERROR", "qr,rd", "DELEGATION", "success")),
        ("fail.test.", "TXT", ("SERVFAIL", "qr,rd", "SERVERERROR", "error")),
    ],
)
async def test_every_placeholder_read_back(
    name: str,
    rdtype: str,
    expected: tuple[str, str, str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    corefile = block(f'    log . "{EVERY_PLACEHOLDER}"')
    msg = make_query(name, rdtype, edns=True, payload=2048, do=True)
    wire = msg.to_wire()
    async with open_server(corefile, registry=registry()) as server:
        raw = await query_wire(server, wire)
    assert raw is not None
    fields = log_lines(capsys.readouterr().out)[0].removeprefix("[INFO] ").split("|")
    rcode, rflags, reply_type, reply_class = expected
    assert fields[0] == rdtype
    assert fields[1] == name
    assert fields[2] == "IN"
    assert fields[3] == "udp"
    assert fields[4] == str(len(wire))
    assert fields[5] == "127.0.0.1"
    assert 0 < int(fields[6]) < 65536
    assert fields[7] == "127.0.0.1"
    assert fields[8] == str(msg.id)
    assert fields[9] == "0"
    assert fields[10] == "true"
    assert fields[11] == "2048"
    assert fields[12] == rcode
    assert fields[13] == str(len(raw))
    assert re.fullmatch(r"\d+(\.\d+)?s", fields[14])
    assert fields[15] == rflags
    assert fields[16:] == [reply_type, reply_class, "-"]
    assert dns.rcode.to_text(dns.message.from_wire(raw).rcode()) == rcode


async def test_ipv6_addresses_in_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    fmt = "{remote}|{local}|{>bufsize}|{rsize}"
    corefile = f'.:0 {{\n    bind ::1\n    log . "{fmt}"\n    answers\n}}\n'
    wire = make_query("ok.test.", "A").to_wire()
    async with open_server(corefile, registry=registry()) as server:
        raw = await query_wire(("::1", server.port()), wire)
    assert raw is not None
    fields = log_lines(capsys.readouterr().out)[0].removeprefix("[INFO] ").split("|")
    assert fields == ["[::1]", "[::1]", "512", str(len(raw))]


async def test_rsize_is_the_size_sent_after_truncation(capsys: pytest.CaptureFixture[str]) -> None:
    corefile = block('    log . "{rsize} {>rflags} {>bufsize}"')
    wire = make_query("ok.test.", "A").to_wire()
    async with open_server(corefile, registry=registry()) as server:
        udp = await query_wire(server, wire)
        tcp = await tcp_raw(server.port(), wire)
    assert udp is not None
    lines = log_lines(capsys.readouterr().out)
    assert lines == [
        f"[INFO] {len(udp)} qr,aa,rd 512",
        f"[INFO] {len(tcp)} qr,aa,rd 65535",
    ]


async def test_queries_that_wait_are_logged_too(capsys: pytest.CaptureFixture[str]) -> None:
    async with open_server(block('    log . "{name} {rcode}"'), registry=registry()) as server:
        reply = await query(server, "wait.test.", "A")
        assert reply.answer
    assert log_lines(capsys.readouterr().out) == ["[INFO] wait.test. NOERROR"]


async def test_cache_hits_are_logged(capsys: pytest.CaptureFixture[str]) -> None:
    corefile = block('    log . "{>id} {name} {rcode} {rsize}"\n    cache')
    queries = [make_query("ok.test.", "A") for _ in range(3)]
    async with open_server(corefile, registry=registry()) as server:
        raw = [await query_wire(server, q.to_wire()) for q in queries]
        assert server.config is not None
        answers = server.config.find("answers")[0]
        assert isinstance(answers, AnswersPlugin)
    # The plugin answered once; the cache twice (log in front: through the chain).
    assert answers.answered == 1
    assert log_lines(capsys.readouterr().out) == [
        f"[INFO] {q.id} ok.test. NOERROR {len(r or b'')}" for q, r in zip(queries, raw, strict=True)
    ]


CLASS_CASES = [
    # (class line, names logged among ok nx nodata deleg fail)
    ("", ["ok", "nx", "nodata", "deleg", "fail"]),
    ("class all", ["ok", "nx", "nodata", "deleg", "fail"]),
    ("class success", ["ok", "deleg"]),
    ("class denial", ["nx", "nodata"]),
    ("class error", ["fail"]),
    ("class denial error", ["nx", "nodata", "fail"]),
]


@pytest.mark.parametrize(("classes", "logged"), CLASS_CASES)
async def test_classes(classes: str, logged: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    corefile = block(f'    log . "{{name}}" {{\n        {classes}\n    }}')
    async with open_server(corefile, registry=registry()) as server:
        for label in ("ok", "nx", "nodata", "deleg", "fail"):
            await query(server, f"{label}.test.", "A")
    assert log_lines(capsys.readouterr().out) == [f"[INFO] {x}.test." for x in logged]


TYPIFY_CASES = [
    # (label, type, DO, log/type, log/class) -- CoreDNS 1.14's response.Typify and Classify
    ("ok", "A", False, "NOERROR", "success"),
    ("empty", "A", False, "NOERROR", "success"),  # no answers, no SOA, no NS
    ("deleg", "A", False, "DELEGATION", "success"),
    ("nx", "A", False, "NXDOMAIN", "denial"),
    ("nxbare", "A", False, "NXDOMAIN", "denial"),  # NXDOMAIN without an SOA: still a denial
    ("nodata", "A", False, "NODATA", "denial"),
    ("fail", "A", False, "SERVERERROR", "error"),
    ("notimp", "A", False, "SERVERERROR", "error"),
    ("refused", "A", False, "OTHERERROR", "error"),
    ("nxanswer", "A", False, "OTHERERROR", "error"),  # NXDOMAIN with records
    ("badvers", "A", True, "OTHERERROR", "error"),  # extended rcode 16, header NOERROR
    ("ok", "AXFR", False, "META", "error"),
    ("expired", "A", True, "OTHERERROR", "error"),  # a signature out of date, DO asked
    ("expired", "A", False, "NOERROR", "success"),  # not judged without DO
    ("signed", "A", True, "NOERROR", "success"),
    ("drop", "A", False, "OTHERERROR", "error"),  # no reply at all
]


async def test_reply_types_and_classes_as_coredns_typify(
    capsys: pytest.CaptureFixture[str],
) -> None:
    corefile = block('    log . "{name} {type} {/log/type} {/log/class}"')
    async with open_server(corefile, registry=registry()) as server:
        for label, rdtype, do, _, _ in TYPIFY_CASES:
            wire = make_query(f"{label}.test.", rdtype, do=do).to_wire()
            await query_wire(server, wire, timeout=0.3 if label == "drop" else 3.0)
    assert log_lines(capsys.readouterr().out) == [
        f"[INFO] {label}.test. {rdtype} {reply_type} {reply_class}"
        for label, rdtype, _, reply_type, reply_class in TYPIFY_CASES
    ]


@pytest.mark.parametrize("reply_class", ["success", "denial", "error"])
async def test_class_filter_follows_coredns_classify(
    reply_class: str, capsys: pytest.CaptureFixture[str]
) -> None:
    corefile = block(f'    log . "{{name}} {{type}}" {{\n        class {reply_class}\n    }}')
    async with open_server(corefile, registry=registry()) as server:
        for label, rdtype, do, _, _ in TYPIFY_CASES:
            wire = make_query(f"{label}.test.", rdtype, do=do).to_wire()
            await query_wire(server, wire, timeout=0.3 if label == "drop" else 3.0)
    assert log_lines(capsys.readouterr().out) == [
        f"[INFO] {label}.test. {rdtype}"
        for label, rdtype, _, _, expected in TYPIFY_CASES
        if expected == reply_class
    ]


async def test_name_scopes_first_match_wins(capsys: pytest.CaptureFixture[str]) -> None:
    corefile = block(
        '    log ok.test "A {name}"\n'
        '    log nx.test "B {name}" {\n        class success\n    }\n'
        '    log . "C {name}"'
    )
    async with open_server(corefile, registry=registry()) as server:
        for name in ("ok.test.", "nx.test.", "nodata.test.", "sub.ok.test."):
            await query(server, name, "A")
    # nx.test matches rule B first; its class filter then drops the line (no fallback to C).
    assert log_lines(capsys.readouterr().out) == [
        "[INFO] A ok.test.",
        "[INFO] C nodata.test.",
        "[INFO] A sub.ok.test.",
    ]


async def test_unmatched_names_are_not_logged(capsys: pytest.CaptureFixture[str]) -> None:
    async with open_server(block("    log example.org"), registry=registry()) as server:
        reply = await query(server, "ok.test.", "A")
        assert reply.answer
    assert log_lines(capsys.readouterr().out) == []


async def test_a_failing_plugin_is_logged_as_servfail(capsys: pytest.CaptureFixture[str]) -> None:
    async with open_server(block('    log . "{name} {rcode}"'), registry=registry()) as server:
        reply = await query(server, "boom.test.", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert log_lines(capsys.readouterr().out) == ["[INFO] boom.test. SERVFAIL"]


async def test_a_wait_cancelled_is_logged_as_servfail(capsys: pytest.CaptureFixture[str]) -> None:
    """A query whose wait is cancelled (its TCP client reset the connection) gets no reply;
    log writes it as SERVFAIL (``on_cancel``), as for a query that ran out of time."""
    corefile = block('    log . "{name} {rcode}"')
    async with open_server(corefile, registry=registry()) as server:
        assert server.config is not None
        answers = server.config.find("answers")[0]
        assert isinstance(answers, AnswersPlugin)
        with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            await sock.connect(("127.0.0.1", server.port()))
            wire = make_query("hang.test.", "A").to_wire()
            await sock.send(struct.pack(">H", len(wire)) + wire)
            with trio.fail_after(5):
                while not answers.hanging:
                    await trio.sleep(0.01)
            # Close with a reset (SO_LINGER 0): the server ends the connection and its queries.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with trio.fail_after(5):
            while not answers.cancelled:
                await trio.sleep(0.01)
    assert log_lines(capsys.readouterr().out) == ["[INFO] hang.test. SERVFAIL"]


async def test_the_query_deadline_cancels_the_wait_and_logs_servfail_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Past the server's query deadline the client gets SERVFAIL and the plugins' wait is
    cancelled: log writes SERVFAIL once, never the rcode of an answer that comes later."""
    corefile = block('    log . "{name} {rcode}"')
    options = ServerOptions(query_deadline=0.2)
    async with open_server(corefile, registry=registry(), options=options) as server:
        assert server.config is not None
        answers = server.config.find("answers")[0]
        assert isinstance(answers, AnswersPlugin)
        for name in ("hang.test.", "late.test."):
            reply = await query(server, name, "A", timeout=5)
            assert reply.rcode() == dns.rcode.SERVFAIL
        with trio.fail_after(5):
            while not answers.cancelled:
                await trio.sleep(0.01)
        await trio.sleep(0.8)  # past the moment the late answer would have come
        assert answers.hanging == 1
        assert log_lines(capsys.readouterr().out) == [
            "[INFO] hang.test. SERVFAIL",
            "[INFO] late.test. SERVFAIL",
        ]


async def test_a_dropped_query_has_no_rcode(capsys: pytest.CaptureFixture[str]) -> None:
    corefile = block('    log . "{name} {rcode} {>rflags} {rsize} {/log/class}"')
    async with open_server(corefile, registry=registry()) as server:
        silence = await query_wire(server, make_query("drop.test.", "A").to_wire(), timeout=0.3)
    assert silence is None
    assert log_lines(capsys.readouterr().out) == ["[INFO] drop.test. - - 0 error"]


async def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    async with open_server(block("    log . {json}"), registry=registry()) as server:
        reply = await query(server, 'we"ird.OK.test.', "AAAA", proto="tcp", do=True)
    record = json.loads(log_lines(capsys.readouterr().out)[0])
    assert record["name"] == 'we\\"ird.ok.test.'
    assert record["type"] == "AAAA"
    assert record["id"] == reply.id
    assert record["do"] is True
    assert record["proto"] == "tcp"
    assert record["bufsize"] == 65535
    assert record["rcode"] == "NOERROR"
    assert record["rsize"] > 0
    assert isinstance(record["duration"], float)


async def test_many_lines_keep_their_order(capsys: pytest.CaptureFixture[str]) -> None:
    async with open_server(block('    log . "{>id}"'), registry=registry()) as server:
        ids = []
        for _ in range(600):  # more than one batch of buffered lines
            reply = await query(server, "ok.test.", "A")
            ids.append(reply.id)
    assert log_lines(capsys.readouterr().out) == [f"[INFO] {i}" for i in ids]


def test_type_and_class_numbers_for_unknown_values() -> None:
    wire = bytearray(make_query("ok.test.", 65280).to_wire())
    wire[-2:] = b"\x00\x03"  # class CH
    request = Request.from_wire(bytes(wire))
    template = compile_format("{type} {class}", prefix="")
    assert template.render(request, request.error(0), 0.0) == "TYPE65280 CH"
