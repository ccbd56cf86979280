"""Files damaged beyond a syntax error, against the real server.

A mesh file or the autoalloc state file is damaged in a way its parser does
not report as a syntax error: a YAML date that does not exist, a number
longer than Python converts, nesting 100,000 deep, a YAML alias bomb, a file
over the size limit, a directory where the file was, binary garbage, a
document of the wrong type. While serving, the last good table and every
allocation keep answering and a good file written afterwards is picked up;
at start, the server exits 1 with ``FILE:LINE: reason``, never a traceback
and never a hang (every wait here is bounded).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import yaml

from pycorefile.testing import Upstream, query, serve
from tests.process import ServerProcess, free_port, run_cli

from ._support import (
    ALIAS_BOMB,
    ENTRIES,
    MESH,
    OLDER,
    Target,
    addresses,
    autoalloc_block,
    keeps_serving,
    mesh_plugin,
    mesh_text,
    sidecar,
    stamp,
    until_answering,
    upstream_records,
    wait_until,
    write_entries,
    write_mesh,
)

LIMIT = 256 * 1024
"""The size limit the tests configure (``max_file_size 256K``)."""
MESHHOSTS = "reload 50ms\n        max_file_size 256K"

NEW_HOST = "new.shop.svc.cluster.local"
NEW_TABLE = {**MESH, NEW_HOST: "10.96.0.20"}


def _yaml_table(hosts: dict[str, str]) -> str:
    """The NameTable as block-style YAML, as a person or a tool writes it."""
    return str(yaml.safe_dump(json.loads(mesh_text(hosts)), default_flow_style=False))


def _oversized(path: Path) -> None:
    """A good table padded past the limit: only its size is wrong."""
    text = mesh_text(NEW_TABLE)
    path.write_text(text[:-2] + " " * LIMIT + text[-2:])


def _directory(path: Path) -> None:
    """What Docker and Kubernetes leave when a file to mount is missing."""
    path.unlink()
    path.mkdir()


def _restore(path: Path) -> None:
    if path.is_dir():
        path.rmdir()


# kind: (file name, how it is damaged, what the log says)
DAMAGE: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "yaml-date": (
        "mesh.yaml",
        lambda p: p.write_text(_yaml_table(NEW_TABLE) + "updated: 2024-02-30\n"),
        "cannot read '2024-02-30' as a date",
    ),
    "yaml-long-number": (
        "mesh.yaml",
        lambda p: p.write_text(_yaml_table(NEW_TABLE) + f"serial: {'7' * 5000}\n"),
        "a number of more than 4300 digits",
    ),
    "json-long-number": (
        "mesh.json",
        lambda p: p.write_text(mesh_text(NEW_TABLE)[:-2] + f', "serial": {"7" * 5000}}}\n'),
        "invalid JSON: a number of more than 4300 digits",
    ),
    "json-deep": (
        "mesh.json",
        lambda p: p.write_text("[" * 100_000 + "]" * 100_000),
        "nested too deeply",
    ),
    "yaml-alias-bomb": (
        "mesh.yaml",
        lambda p: p.write_text(ALIAS_BOMB),
        "aliases and anchors (*name, &name) are not accepted",
    ),
    "oversized": ("mesh.json", _oversized, f"larger than the limit of {LIMIT} bytes"),
    "directory": ("mesh.json", _directory, "is a directory, not a file"),
    "binary": (
        "mesh.json",
        lambda p: p.write_bytes(bytes(range(256)) * 8),
        "not UTF-8 text",
    ),
    "wrong-top-level": (
        "mesh.json",
        lambda p: p.write_text('["web.shop.svc.cluster.local", "10.96.0.10"]\n'),
        "expected a mapping (a NameTable or a manifest), got a string",
    ),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
async def test_mesh_file_damaged_while_serving(tmp_path: Path, kind: str) -> None:
    """The last good table keeps answering; a good file written next is picked up; SIGTERM
    still stops the server at once. A server in its own process, so that nothing the
    damage does (a core pinned, a hang) can outlast the test."""
    filename, damage, reason = DAMAGE[kind]
    mesh = tmp_path / filename
    write_mesh(mesh, MESH)
    port = free_port()
    target = ("127.0.0.1", port)
    corefile = tmp_path / "Corefile"
    async with Upstream(records=upstream_records()).running() as up:
        # Denials are not cached, so the new host may be asked before the table has it.
        text = sidecar(
            mesh, [up.address], meshhosts=MESHHOSTS, cache="disable denial", zone=f".:{port}"
        )
        corefile.write_text(text)
        with ServerProcess(["-conf", str(corefile), "-quiet"]) as proc:
            await until_answering(target, "cached.example", proc)
            damage(mesh)
            if mesh.is_file():
                stamp(mesh, 2)
            line = await trio.to_thread.run_sync(proc.wait_for, reason, 20)
            assert f"[ERROR] plugin/meshhosts: {mesh}:" in line
            assert line.endswith("; the last good table keeps serving")
            await keeps_serving(target)
            # Repaired: the good file is the table, with the host the damage had.
            _restore(mesh)
            write_mesh(mesh, NEW_TABLE, version=3)
            await until_answering(target, NEW_HOST, proc)
            await keeps_serving(target, NEW_TABLE)
            proc.signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(proc.wait) == 0
            output = await trio.to_thread.run_sync(proc.drain)
    assert not any("Traceback" in line for line in output), output


@pytest.mark.parametrize("kind", list(DAMAGE))
async def test_mesh_file_damaged_at_start(tmp_path: Path, kind: str) -> None:
    """The server refuses to start: exit 1, ``cannot start: plugin/meshhosts: FILE:LINE: ...``."""
    filename, damage, reason = DAMAGE[kind]
    mesh = tmp_path / filename
    write_mesh(mesh, MESH)
    damage(mesh)
    corefile = tmp_path / "Corefile"
    corefile.write_text(sidecar(mesh, ["127.0.0.1:9"], meshhosts=MESHHOSTS, zone=".:0"))
    done = await trio.to_thread.run_sync(
        lambda: run_cli("-conf", str(corefile), "-quiet", timeout=60)
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot start: plugin/meshhosts: {mesh}:" in done.stderr
    assert reason in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


async def test_corefile_reload_with_a_damaged_mesh_file_keeps_the_running_one(
    tmp_path: Path,
) -> None:
    """SIGUSR1 while a mesh file is damaged: the new configuration is refused, the running
    one (and its table) keeps serving, and a later reload with a good file goes through."""
    mesh = tmp_path / "mesh.yaml"
    write_mesh(mesh, MESH)
    port = free_port()
    target = ("127.0.0.1", port)
    corefile = tmp_path / "Corefile"
    async with Upstream(records=upstream_records()).running() as up:
        # The table is only read at start: what changes it here is the Corefile reload.
        corefile.write_text(sidecar(mesh, [up.address], meshhosts="reload 0", zone=f".:{port}"))
        with ServerProcess(["-conf", str(corefile), "-quiet"]) as proc:
            await until_answering(target, "cached.example", proc)
            mesh.write_text(ALIAS_BOMB)
            proc.signal(signal.SIGUSR1)
            line = await trio.to_thread.run_sync(proc.wait_for, "SIGUSR1: plugin/meshhosts:", 20)
            assert f"{mesh}:3: invalid YAML: aliases and anchors" in line
            await keeps_serving(target)
            write_mesh(mesh, NEW_TABLE, version=3)
            proc.signal(signal.SIGUSR1)
            await trio.to_thread.run_sync(proc.wait_for, "Reloading complete", 20)
            await keeps_serving(target, NEW_TABLE, cached={})
            proc.signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(proc.wait) == 0


# -- The autoalloc state file ------------------------------------------------------------

LONG_NUMBER = (
    b'{"format": "pycorefile-autoalloc", "version": 1, "generation": ' + b"7" * 5000 + b"}"
)
DEEP = b"[" * 100_000 + b"]" * 100_000


async def _pairs(target: Target, hosts: list[str]) -> dict[str, list[str]]:
    """Each host's A and AAAA addresses."""
    out = {}
    for host in hosts:
        a = await query(target, f"{host}.partner.example", "A")
        aaaa = await query(target, f"{host}.partner.example", "AAAA", proto="tcp")
        out[host] = addresses(a) + addresses(aaaa)
    return out


PG_REDIS = {"pg": ["240.240.0.1", "2001:2::1"], "redis": ["240.240.0.2", "2001:2::2"]}


def _alloc_corefile(tmp_path: Path, upstream: str, port: int) -> tuple[Path, Path, Path]:
    """The sidecar with autoalloc; returns (Corefile, manifests, state file)."""
    mesh, entries, state = tmp_path / "mesh.json", tmp_path / "entries.yaml", tmp_path / "a.json"
    write_mesh(mesh, MESH)
    write_entries(entries, ENTRIES)
    corefile = tmp_path / "Corefile"
    corefile.write_text(
        sidecar(f"{mesh} {entries}", [upstream], extra=autoalloc_block(state), zone=f".:{port}")
    )
    return corefile, entries, state


async def _run_once(corefile: Path, port: int) -> dict[str, list[str]]:
    """Start the server, read the pairs, stop it cleanly."""
    target = ("127.0.0.1", port)
    with ServerProcess(["-conf", str(corefile), "-quiet"]) as proc:
        await until_answering(target, "pg.partner.example", proc)
        pairs = await _pairs(target, ["pg", "redis"])
        proc.signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(proc.wait) == 0
    return pairs


async def test_autoalloc_main_copy_damaged_across_a_restart(tmp_path: Path) -> None:
    """PATH beyond repair, PATH.bak good: the restart serves every host its old pair."""
    port = free_port()
    async with Upstream(records=upstream_records()).running() as up:
        corefile, entries, state = _alloc_corefile(tmp_path, up.address, port)
        assert await _run_once(corefile, port) == PG_REDIS
        state.write_bytes(LONG_NUMBER)
        write_entries(entries, [*ENTRIES, OLDER])
        target = ("127.0.0.1", port)
        with ServerProcess(["-conf", str(corefile), "-quiet"]) as proc:
            await until_answering(target, "kafka.partner.example", proc)
            assert await _pairs(target, ["pg", "redis", "kafka"]) == {
                **PG_REDIS,
                "kafka": ["240.240.0.3", "2001:2::3"],  # a free pair, not a taken one
            }
            line = await trio.to_thread.run_sync(proc.wait_for, "state copy not used")
            proc.signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(proc.wait) == 0
    assert f"{state}: not valid JSON (a number of more than 4300 digits)" in line
    assert f"using {state}.bak" in line
    for copy in (state, Path(f"{state}.bak")):  # both written again, whole
        assert len(json.loads(copy.read_text())["hosts"]) == 3


async def test_autoalloc_both_copies_damaged_at_start(tmp_path: Path) -> None:
    """Neither copy usable: exit 1 naming both files, no traceback, nothing rewritten."""
    port = free_port()
    async with Upstream(records=upstream_records()).running() as up:
        corefile, _entries, state = _alloc_corefile(tmp_path, up.address, port)
        assert await _run_once(corefile, port) == PG_REDIS
    state.write_bytes(LONG_NUMBER)
    Path(f"{state}.bak").write_bytes(DEEP)
    done = await trio.to_thread.run_sync(lambda: run_cli("-conf", str(corefile), timeout=60))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{state}: not valid JSON (a number of more than 4300 digits)" in done.stderr
    assert f"{state}.bak: not valid JSON (nested too deeply)" in done.stderr
    assert "Refusing to start" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert state.read_bytes() == LONG_NUMBER  # left for the operator to look at


@pytest.mark.parametrize("both", [False, True], ids=["main-copy", "both-copies"])
async def test_autoalloc_state_damaged_while_serving(
    tmp_path: Path, both: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The next table build keeps every pair in memory (the backup's, or its own) and
    writes both copies again; the VIP names never stop answering."""
    mesh, entries, state = tmp_path / "mesh.json", tmp_path / "entries.yaml", tmp_path / "a.json"
    write_mesh(mesh, MESH)
    write_entries(entries, ENTRIES)
    with trio.fail_after(60):
        async with (
            Upstream(records=upstream_records()).running() as up,
            serve(
                sidecar(f"{mesh} {entries}", [up.address], extra=autoalloc_block(state))
            ) as server,
        ):
            assert await _pairs(server, ["pg", "redis"]) == PG_REDIS
            plugin = mesh_plugin(server)
            loads = plugin.loads
            state.write_bytes(DEEP)
            if both:
                Path(f"{state}.bak").write_bytes(LONG_NUMBER)
            with caplog.at_level(logging.WARNING, logger="pycorefile"):
                write_entries(entries, [*ENTRIES, OLDER])

                async def rebuilt() -> bool:
                    return plugin.loads > loads

                await wait_until("meshhosts builds the new table", rebuilt, timeout=20)
            assert await _pairs(server, ["pg", "redis", "kafka"]) == {
                **PG_REDIS,
                "kafka": ["240.240.0.3", "2001:2::3"],
            }
            await keeps_serving(server, cached={})
            messages = caplog.text
            assert f"{state}: not valid JSON (nested too deeply)" in messages
            if both:
                assert "no copy is usable" in messages
                assert f"{state}.bak: not valid JSON (a number of more than 4300" in messages
            else:
                assert f"state copy not used: {state}: " in messages
            assert "building with the allocations served so far" not in messages

            async def rewritten() -> bool:
                try:
                    copies = [json.loads(p.read_text()) for p in (state, Path(f"{state}.bak"))]
                except ValueError:
                    return False
                return all(len(c["hosts"]) == 3 for c in copies)

            await wait_until("both copies are written again", rewritten, timeout=20)
    assert os.path.getsize(state) < 10_000
