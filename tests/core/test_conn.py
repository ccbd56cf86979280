"""The sans-IO parts of connection handling: framing, deadlines, accept pauses, the budget."""

from __future__ import annotations

import errno
import logging
import math

import pytest

from pycorefile._conn import AcceptPause, ConnectionBudget, ReadClock, connection_budget
from pycorefile._tcp import Framer


def framed(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


def drain(framer: Framer) -> list[bytes]:
    out = []
    while (message := framer.next_message()) is not None:
        out.append(message)
    return out


def test_framer_splits_pipelined_messages_and_waits_for_the_rest() -> None:
    data = framed(b"first", b"", b"x" * 300, b"last")
    framer = Framer()
    got: list[bytes] = []
    for i in range(0, len(data), 7):  # arriving in odd pieces
        framer.feed(data[i : i + 7])
        got += drain(framer)
    assert got == [b"first", b"", b"x" * 300, b"last"]
    assert not framer.partial


def test_framer_reports_a_partial_message() -> None:
    framer = Framer()
    framer.feed(framed(b"done") + b"\x00\x10abc")
    assert drain(framer) == [b"done"]
    assert framer.partial
    framer.feed(b"d" * 13)
    assert drain(framer) == [b"abc" + b"d" * 13]
    assert not framer.partial


def test_read_clock_first_message_counts_from_the_accept() -> None:
    clock = ReadClock(read=3.0, idle=10.0, accepted_at=100.0)
    assert clock.deadline(busy=False) == 103.0
    clock.received(101.0, partial=True)
    assert clock.deadline(busy=False) == 103.0  # still the first message


def test_read_clock_later_messages_from_their_first_byte_and_idle_between() -> None:
    clock = ReadClock(read=3.0, idle=10.0, accepted_at=100.0)
    clock.message_done(101.0)
    assert clock.deadline(busy=False) == 111.0  # idle after the last message
    assert clock.deadline(busy=True) == math.inf  # answers still owed: not idle
    clock.wrote(105.0)
    assert clock.deadline(busy=False) == 115.0
    clock.received(106.0, partial=True)
    clock.received(108.0, partial=True)  # a byte now and then does not extend it
    assert clock.deadline(busy=False) == 109.0
    clock.message_done(108.5)
    clock.received(108.5, partial=False)
    assert clock.deadline(busy=False) == 118.5


def test_accept_pause_grows_and_logs_once_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pycorefile")
    pause = AcceptPause("dns://:53")
    emfile = OSError(errno.EMFILE, "Too many open files")
    waits = [pause.failed(emfile, now=float(t)) for t in range(6)]
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    pause.succeeded()
    assert pause.failed(emfile, now=7.0) == 0.1  # a new burst, but logged 7 s ago
    pause.succeeded()
    pause.failed(emfile, now=20.0)  # a new burst, 20 s later: said again
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["dns://:53: cannot accept connections (Too many open files); "
                        "pausing and retrying"] * 2  # fmt: skip


@pytest.mark.parametrize(
    ("max_connections", "file_limit", "budget"),
    [
        (1000, 1024, 768),  # a quarter of the files kept in reserve
        (1000, 256, 192),  # at least 64
        (1000, 100, 36),
        (1000, 1 << 20, 1000),  # the limit raised to a large hard limit: the configured budget
        (5000, 65536, 5000),
        (10, 10, 2),  # never nothing at all
    ],
)
def test_connection_budget_fits_the_file_limit(
    max_connections: int, file_limit: int, budget: int
) -> None:
    assert connection_budget(max_connections, file_limit) == budget


def test_http_share_is_kept_within_the_total() -> None:
    default = ConnectionBudget.of(1000, 64, file_limit=1 << 20)
    assert (default.dns.limit, default.http.limit) == (936, 64)
    small = ConnectionBudget.of(1000, 64, file_limit=256)
    assert (small.dns.limit, small.http.limit) == (144, 48)  # HTTP: a quarter at most
    assert small.total == 192
    slots = small.http
    assert all(slots.take() for _ in range(48))
    assert not slots.take()
    assert slots.refused == 1
    slots.release()
    assert slots.take()
