"""autoalloc's state file and Corefile parsing, with no server."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest

from pycorefile import Directive, SetupError
from pycorefile_plugins.autoalloc import (
    AllocationState,
    Pool,
    Record,
    StateError,
    parse_autoalloc,
)
from pycorefile_plugins.autoalloc._state import backup_path, decode, encode, load, write

POOL = Pool(ipaddress.IPv4Network("240.240.0.0/16"), ipaddress.IPv6Network("2001:2::/48"))


def state(generation: int = 1) -> AllocationState:
    return AllocationState(
        {
            "a.example": Record("a.example", "240.240.0.1", "2001:2::1", "ns", "a", 1.7e9),
            "b.example": Record("b.example", "240.240.0.2", "2001:2::2", "ns", "b", 1.7e9, 1.8e9),
        },
        cursor=3,
        generation=generation,
    )


def test_encode_decode_round_trip() -> None:
    back = decode(encode(state(4), POOL))
    assert back.generation == 4 and back.cursor == 3
    assert back.records == state().records


def test_damage_is_detected_by_the_checksum() -> None:
    doc = json.loads(encode(state(), POOL))
    doc["hosts"][0]["ipv4"] = "240.240.0.9"  # still a well-formed state: only the sum tells
    with pytest.raises(StateError, match="checksum mismatch"):
        decode(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format", "other", "not a pycorefile-autoalloc state file"),
        ("version", 9, "unsupported version 9"),
        ("generation", -1, "'generation' must be a non-negative integer"),
        ("next", True, "'next' must be a positive integer"),
        ("hosts", {}, "'hosts' must be a list"),
    ],
)
def test_wrong_fields_are_refused(field: str, value: object, message: str) -> None:
    doc = json.loads(encode(state(), POOL))
    del doc["checksum"]
    doc[field] = value
    with pytest.raises(StateError, match=message):
        decode(json.dumps(doc).encode())


def test_a_hand_edited_file_without_checksum_is_accepted_but_checked() -> None:
    doc = json.loads(encode(state(), POOL))
    del doc["checksum"]
    doc["hosts"][1]["ipv4"] = "240.240.0.1"
    with pytest.raises(StateError, match=r"given to both a\.example and b\.example"):
        decode(json.dumps(doc).encode())
    doc["hosts"][1]["ipv4"] = "240.240.0.9"
    assert decode(json.dumps(doc).encode()).records["b.example"].ipv4 == "240.240.0.9"


@pytest.mark.parametrize("garbage", [b"", b"\x00\xff garbage", b"{not json", b"[]", b'{"a": 1}'])
def test_garbage_is_refused(garbage: bytes) -> None:
    with pytest.raises(StateError):
        decode(garbage)


def _hand_edited(**record: str) -> bytes:
    """A good copy edited by hand (no checksum): the first host's fields changed."""
    doc = json.loads(encode(state(), POOL))
    del doc["checksum"]
    doc["hosts"][0].update(record)
    return json.dumps(doc).encode()


_HOLE = _hand_edited(namespace="HOLE")
DAMAGE = {
    "long number": _HOLE.replace(b'"HOLE"', b"9" * 5000),
    "deep nesting": _HOLE.replace(b'"HOLE"', b"[" * 100_000 + b"]" * 100_000),
    "year 0 in UTC": _hand_edited(assigned="0001-01-01T00:00:00+01:00"),
    "binary": bytes(range(256)) * 4,
    "a list": b"[1, 2, 3]",
}
"""Copies that are damaged in ways beyond a JSON syntax error."""


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_beyond_syntax_is_a_state_error(kind: str) -> None:
    with pytest.raises(StateError):
        decode(DAMAGE[kind])


@pytest.mark.parametrize("kind", ["long number", "deep nesting", "year 0 in UTC"])
def test_load_falls_back_to_the_copy_whatever_the_damage(tmp_path: Path, kind: str) -> None:
    path = str(tmp_path / "alloc.json")
    write(path, encode(state(5), POOL))
    Path(path).write_bytes(DAMAGE[kind])
    loaded = load(path)
    assert loaded is not None and loaded.source == backup_path(path)
    assert loaded.state.records == state().records and loaded.state.generation == 5
    assert loaded.problems[0].startswith(f"{path}: ")


def test_load_names_both_copies_when_none_is_usable(tmp_path: Path) -> None:
    path = str(tmp_path / "alloc.json")
    Path(path).write_bytes(DAMAGE["long number"])
    with pytest.raises(StateError) as info:
        load(path)
    assert str(info.value) == (
        f"{path}: not valid JSON (a number of more than 4300 digits); {path}.bak: missing"
    )
    os.mkdir(backup_path(path))
    with pytest.raises(StateError) as info:
        load(path)
    assert f"{path}.bak: not a regular file" in str(info.value)


def test_write_keeps_two_complete_copies(tmp_path: Path) -> None:
    path = str(tmp_path / "alloc.json")
    write(path, encode(state(1), POOL))
    write(path, encode(state(2), POOL))
    with open(path, "rb") as f, open(backup_path(path), "rb") as g:
        assert f.read() == g.read()
    assert sorted(os.listdir(tmp_path)) == ["alloc.json", "alloc.json.bak"]


def test_load_recovers_from_the_copy_when_the_file_is_garbage(tmp_path: Path) -> None:
    path = str(tmp_path / "alloc.json")
    write(path, encode(state(5), POOL))
    Path(path).write_bytes(b"\x00garbage")
    loaded = load(path)
    assert loaded is not None
    assert loaded.source == backup_path(path)
    assert loaded.state.records == state().records
    assert "not valid JSON" in loaded.problems[0]


def test_load_refuses_when_both_copies_are_unusable(tmp_path: Path) -> None:
    path = str(tmp_path / "alloc.json")
    Path(path).write_bytes(b"garbage")
    Path(backup_path(path)).write_bytes(b'{"format": "pycorefile-autoalloc"}')
    with pytest.raises(StateError) as info:
        load(path)
    assert f"{path}: not valid JSON" in str(info.value)
    assert f"{path}.bak: unsupported version" in str(info.value)


def test_load_takes_the_newest_valid_copy(tmp_path: Path) -> None:
    path = str(tmp_path / "alloc.json")
    Path(path).write_bytes(encode(state(3), POOL))
    Path(backup_path(path)).write_bytes(encode(state(4), POOL))
    loaded = load(path)
    assert loaded is not None and loaded.state.generation == 4
    assert load(str(tmp_path / "none.json")) is None


def test_a_failed_write_leaves_both_copies_intact(tmp_path: Path) -> None:
    path = str(tmp_path / "alloc.json")
    write(path, encode(state(1), POOL))
    os.mkdir(path + ".tmp")  # the temporary file cannot be created: a real OSError
    with pytest.raises(OSError):
        write(path, encode(state(2), POOL))
    loaded = load(path)
    assert loaded is not None and loaded.state.generation == 1 and not loaded.problems


# -- Corefile ---------------------------------------------------------------------------


def directive(*args: str, options: tuple[tuple[str, ...], ...] = ()) -> Directive:
    block = tuple(Directive(o[0], o[1:], "Corefile", 3 + i, 5) for i, o in enumerate(options))
    return Directive("autoalloc", args, "Corefile", 2, 3, block or None)


def test_parse_defaults() -> None:
    config = parse_autoalloc([directive()])
    assert str(config.pool.ipv4) == "240.240.0.0/16" and str(config.pool.ipv6) == "2001:2::/48"
    assert config.state is None and config.hold == 86400.0 and config.http == "localhost:9153"


def test_parse_everything(tmp_path: Path) -> None:
    options = (("state", str(tmp_path / "s.json")), ("hold", "forever"), ("http", ":9999"))
    config = parse_autoalloc([directive("2001:db8:1::/64", "10.99.0.0/24", options=options)])
    assert str(config.pool.ipv4) == "10.99.0.0/24" and str(config.pool.ipv6) == "2001:db8:1::/64"
    assert config.state == str(tmp_path / "s.json") and config.hold is None
    assert config.http == ":9999"
    assert parse_autoalloc([directive(options=(("hold", "1h"),))]).hold == 3600.0


@pytest.mark.parametrize(
    ("d", "message", "line"),
    [
        (directive("240.240.0.1/16"), "has host bits set", 2),
        (directive("bogus"), "invalid prefix 'bogus'", 2),
        (directive("10.0.0.0/8", "11.0.0.0/8"), "two IPv4 prefixes", 2),
        (directive("10.0.0.0/31"), "too small", 2),
        (directive("a", "b", "c"), "Wrong argument count", 2),
        (directive(options=(("nope", "x"),)), "unknown property 'nope'", 3),
        (directive(options=(("state", "/nonexistent/dir/s.json"),)), "does not exist", 3),
        (directive(options=(("hold", "soon"),)), "invalid duration", 3),
        (directive(options=(("http", "localhost"),)), "missing port", 3),
        (directive(options=(("state",),)), "Wrong argument count", 3),
    ],
)
def test_parse_errors(d: Directive, message: str, line: int) -> None:
    with pytest.raises(SetupError, match=message) as info:
        parse_autoalloc([d])
    assert info.value.directive is not None and info.value.directive.line == line
