"""auto: the zone files of a directory, served for real; new, changed and removed files."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest
import trio

from pycorefile import CorefileError, Server, load_config
from pycorefile.testing import query, serve, setup_plugin
from pycorefile_plugins.auto import AutoPlugin, scan


def zone_text(origin: str, serial: int, address: str) -> str:
    return (
        f"$ORIGIN {origin}.\n$TTL 60\n@ SOA ns hm {serial} 1 1 1 1\n@ NS ns\n"
        f"ns A 192.0.2.1\nwww A {address}\n"
    )


def address(reply: dns.message.Message) -> str:
    return reply.answer[0][0].to_text() if reply.answer else ""


async def until(
    server: Server, name: str, done: Callable[[dns.message.Message], bool], seconds: float = 20.0
) -> dns.message.Message:
    """Ask until ``done(reply)``; bounded in time (a loaded machine) and in count."""
    with trio.fail_after(seconds):
        for _ in range(2000):
            reply = await query(server, name, "A")
            if done(reply):
                return reply
            await trio.sleep(0.05)
    raise AssertionError(f"{name} never changed")


def corefile(directory: Path, zones: str = ".", extra: str = "") -> str:
    return (
        f"{zones}:0 {{\n bind 127.0.0.1\n auto {{\n  directory {directory} {extra}\n"
        "  reload 100ms\n }\n}\n"
    )


async def test_zones_appear_change_and_disappear_with_their_files(tmp_path: Path) -> None:
    (tmp_path / "db.example.org").write_text(zone_text("example.org", 1, "192.0.2.10"))
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "db.example.net").write_text(zone_text("example.net", 1, "192.0.2.20"))
    (tmp_path / "unrelated.txt").write_text("not a zone")
    async with serve(corefile(tmp_path)) as server:
        org = await query(server, "www.example.org", "A")
        assert org.flags & dns.flags.AA and address(org) == "192.0.2.10"
        assert (
            address(await query(server, "www.example.net", "A")) == "192.0.2.20"
        )  # recursive walk
        # a new file on a rescan
        (tmp_path / "db.example.com").write_text(zone_text("example.com", 1, "192.0.2.30"))
        await until(server, "www.example.com", lambda r: address(r) == "192.0.2.30")
        # a new serial
        (tmp_path / "db.example.org").write_text(zone_text("example.org", 2, "192.0.2.11"))
        await until(server, "www.example.org", lambda r: address(r) == "192.0.2.11")
        # a file gone: its zone is no longer served (no next plugin: SERVFAIL at the end)
        os.remove(tmp_path / "db.example.com")
        await until(server, "www.example.com", lambda r: r.rcode() != dns.rcode.NOERROR)
        assert address(await query(server, "www.example.org", "A")) == "192.0.2.11"


async def test_a_broken_file_is_skipped_and_a_broken_update_keeps_the_zone(tmp_path: Path) -> None:
    (tmp_path / "db.good.test").write_text(zone_text("good.test", 1, "192.0.2.1"))
    (tmp_path / "db.bad.test").write_text("$TTL 60\n@ SOA ns hm 1 1 1 1 1\nwww A 999.0.0.1\n")
    async with serve(corefile(tmp_path)) as server:
        assert address(await query(server, "www.good.test", "A")) == "192.0.2.1"
        assert (await query(server, "www.bad.test", "A")).rcode() == dns.rcode.SERVFAIL
        (tmp_path / "db.good.test").write_text(zone_text("good.test", 2, "192.0.2.2") + "x A 1\n")
        (tmp_path / "db.bad.test").write_text(zone_text("bad.test", 1, "192.0.2.3"))
        await until(server, "www.bad.test", lambda r: address(r) == "192.0.2.3")  # fixed: loaded
        assert address(await query(server, "www.good.test", "A")) == "192.0.2.1"  # kept


async def test_only_names_under_the_zones_are_answered(tmp_path: Path) -> None:
    (tmp_path / "db.example.org").write_text(zone_text("example.org", 1, "192.0.2.10"))
    (tmp_path / "db.other.test").write_text(zone_text("other.test", 1, "192.0.2.20"))
    text = (
        f".:0 {{\n bind 127.0.0.1\n auto example.org {{\n  directory {tmp_path}\n }}\n whoami\n}}\n"
    )
    async with serve(text) as server:
        assert address(await query(server, "www.example.org", "A")) == "192.0.2.10"
        other = await query(server, "www.other.test", "A")
    assert not other.answer and other.additional  # whoami's answer: auto passed it on


async def test_a_regexp_and_template_name_the_origin(tmp_path: Path) -> None:
    (tmp_path / "example.org.zone").write_text(zone_text("example.org", 1, "192.0.2.10"))
    async with serve(corefile(tmp_path, extra=r"(.*)\.zone {1}")) as server:
        assert address(await query(server, "www.example.org", "A")) == "192.0.2.10"


def test_the_pattern_is_searched_unanchored_as_go_does(tmp_path: Path) -> None:
    plugin = setup_plugin(AutoPlugin, f"auto {{\n directory {tmp_path} (.*)\\.zone {{1}}\n}}")
    (tmp_path / "a.test.zone").write_text("")
    (tmp_path / "b.test.zone.bak").write_text("")
    assert scan(plugin.config) == {
        "a.test.": str(tmp_path / "a.test.zone"),
        "b.test.": str(tmp_path / "b.test.zone.bak"),
    }


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("directory", "Corefile:3:3 - plugin/auto: Wrong argument count"),
        ("directory {dir} db", "Corefile:3:3 - plugin/auto: Wrong argument count"),
        (
            "directory {dir} db\\.x {{1}}",
            "Corefile:3:REGEXP - plugin/auto: Need at least one sub expression",
        ),
        ("directory {dir} db\\.( {{1}}", "Corefile:3:REGEXP - plugin/auto: error parsing regexp"),
        ("reload", "Corefile:3:3 - plugin/auto: reload duration value is expected"),
        ("fallthrough", "Corefile:3:3 - plugin/auto: unknown property 'fallthrough'"),
    ],
)
def test_setup_errors(tmp_path: Path, options: str, expected: str) -> None:
    line = options.format(dir=tmp_path)
    # ":REGEXP" stands for the column of the argument after the directory
    expected = expected.replace(":REGEXP ", f":{len('  directory ') + len(str(tmp_path)) + 2} ")
    with pytest.raises(CorefileError) as caught:
        load_config(f"example.org {{\n auto {{\n  {line}\n }}\n}}\n")
    assert re.sub(r"\n.*", "", str(caught.value), flags=re.S).startswith(expected), str(
        caught.value
    )
