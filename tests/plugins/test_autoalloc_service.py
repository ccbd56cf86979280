"""autoalloc's allocation service: state on disk across restarts, damage, full disks, workers."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pycorefile import Directive, SetupContext, SetupError
from pycorefile.corefile import ServerBlock, ZoneKey
from pycorefile_plugins.autoalloc import (
    MISSING_MESHHOSTS,
    SEQUENTIAL,
    AllocationService,
    AutoAllocPlugin,
    Pool,
)
from pycorefile_plugins.autoalloc._parse import AutoAllocConfig
from pycorefile_plugins.autoalloc._state import backup_path, load

POOL = Pool(ipaddress.IPv4Network("240.240.0.0/16"), ipaddress.IPv6Network("2001:2::/48"))


@dataclass(frozen=True)
class SE:
    host: str
    namespace: str = "default"
    name: str = "entry"
    created: str = "2024-01-01T00:00:00Z"
    resolution: str = "STATIC"
    wildcard: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    explicit_addresses: tuple[str, ...] = ()


def service(path: Path, **kwargs: object) -> AllocationService:
    return AllocationService(AutoAllocConfig(POOL, state=str(path), scheme=SEQUENTIAL, **kwargs))  # type: ignore[arg-type]


HOSTS = [SE(f"h{i}.example", created=f"2024-01-0{i + 1}T00:00:00Z") for i in range(4)]


def test_restart_gives_every_host_its_pair_back(tmp_path: Path) -> None:
    path = tmp_path / "alloc.json"
    first = service(path)
    assigned = first.allocate(HOSTS[1:3], [])
    assigned.update(first.allocate(HOSTS[1:], []))  # h3 joins in a second round
    # Restarted with all four present, the oldest first: a fresh start would give h0 .1
    second = service(path)
    again = second.allocate(HOSTS, [])
    for host, pair in assigned.items():
        assert again[host] == pair
    assert again["h0.example"] == ("240.240.0.4", "2001:2::4")


def test_nothing_is_written_when_nothing_changes(tmp_path: Path) -> None:
    path = tmp_path / "alloc.json"
    s = service(path)
    s.allocate(HOSTS, [])
    before = os.stat(path).st_mtime_ns, path.read_bytes()
    s.allocate(list(reversed(HOSTS)), [])
    assert (os.stat(path).st_mtime_ns, path.read_bytes()) == before


def test_garbage_state_recovers_from_the_kept_copy(tmp_path: Path) -> None:
    path = tmp_path / "alloc.json"
    assigned = service(path).allocate(HOSTS, [])
    path.write_bytes(b"\x00\x01 this is not a state file")
    recovered = service(path)
    assert recovered.dirty  # the damaged copy gets rewritten once running
    assert recovered.allocate(list(reversed(HOSTS)), []) == assigned
    assert load(str(path)) is not None and not load(str(path)).problems  # type: ignore[union-attr]


def test_state_deleted_while_running_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "alloc.json"
    s = service(path)
    assigned = s.allocate(HOSTS, [])
    path.unlink()
    Path(backup_path(str(path))).unlink()
    assert s.allocate(HOSTS, []) == assigned  # nothing changed, but the file is gone
    loaded = load(str(path))
    assert loaded is not None and len(loaded.state.records) == len(HOSTS)


def ctx(directives: tuple[Directive, ...]) -> SetupContext:
    block = ServerBlock((".:0",), directives, "Corefile", 1)
    return SetupContext(block=block, keys=(ZoneKey("dns", ".", 0),))


def autoalloc_directive(state: Path) -> Directive:
    option = Directive("state", (str(state),), "Corefile", 3, 5)
    return Directive("autoalloc", (), "Corefile", 2, 3, (option,))


def test_garbage_in_both_copies_refuses_to_start_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "alloc.json"
    service(path).allocate(HOSTS, [])
    path.write_bytes(b"garbage")
    Path(backup_path(str(path))).write_bytes(b"more garbage")
    d = autoalloc_directive(path)
    mesh = Directive("meshhosts", (), "Corefile", 5, 3)
    with pytest.raises(SetupError) as info:
        AutoAllocPlugin.setup([d], ctx((d, mesh)))
    message = info.value.message
    assert f"state file {path} cannot be used" in message
    assert "not valid JSON" in message and "Refusing to start" in message
    assert info.value.directive is not None and info.value.directive.line == 3


def test_meshhosts_is_required_in_the_block(tmp_path: Path) -> None:
    d = autoalloc_directive(tmp_path / "alloc.json")
    with pytest.raises(SetupError, match=MISSING_MESHHOSTS):
        AutoAllocPlugin.setup([d], ctx((d,)))


def test_two_processes_sharing_the_file_agree(tmp_path: Path) -> None:
    path = tmp_path / "alloc.json"
    worker1, worker2 = service(path), service(path)  # both started before any write
    one = worker1.allocate([HOSTS[3]], [])
    two = worker2.allocate([HOSTS[0], HOSTS[3]], [])  # reads worker1's write first
    assert two["h3.example"] == one["h3.example"] == ("240.240.0.1", "2001:2::1")
    assert two["h0.example"] == ("240.240.0.2", "2001:2::2")
    assert worker1.allocate([HOSTS[0], HOSTS[3]], []) == two


# -- A real full disk: a 16 KiB tmpfs in a private mount namespace -----------------------

DISK_FULL = textwrap.dedent(
    """
    import errno, json, os, sys, ipaddress
    from dataclasses import dataclass, field
    from pycorefile_plugins.autoalloc import SEQUENTIAL, AllocationService, Pool
    from pycorefile_plugins.autoalloc._parse import AutoAllocConfig
    from pycorefile_plugins.autoalloc._state import load

    @dataclass(frozen=True)
    class SE:
        host: str
        namespace: str = "default"
        name: str = "entry"
        created: str = "2024-01-01T00:00:00Z"
        resolution: str = "STATIC"
        wildcard: bool = False
        labels: dict = field(default_factory=dict)
        explicit_addresses: tuple = ()

    directory = sys.argv[1]
    path = os.path.join(directory, "alloc.json")
    pool = Pool(ipaddress.IPv4Network("240.240.0.0/16"), ipaddress.IPv6Network("2001:2::/48"))
    s = AllocationService(AutoAllocConfig(pool, state=path, scheme=SEQUENTIAL))
    out = {"first": s.allocate([SE("a.example")], [])}
    filler = os.path.join(directory, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for _ in range(1000):
            os.write(fd, b"x" * 512)
    except OSError as exc:
        out["fill"] = errno.errorcode[exc.errno]
    os.close(fd)
    out["second"] = s.allocate([SE("a.example"), SE("b.example")], [])
    out["failures_after_second"] = s.write_failures
    out["on_disk_while_full"] = sorted(load(path).state.records)
    s.retry()
    out["failures_after_retry"] = s.write_failures
    out["leftovers_while_full"] = sorted(os.listdir(directory))
    os.unlink(filler)
    s.retry()
    out["dirty_after_space"] = s.dirty
    out["on_disk_after"] = sorted(load(path).state.records)
    out["leftovers_after"] = sorted(os.listdir(directory))
    print(json.dumps(out))
    """
)


def namespace_command(directory: Path, *command: str) -> list[str]:
    """Run ``command`` in a private mount namespace with a 16 KiB tmpfs on ``directory``."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the full-disk tests need root and unshare (a private tmpfs mount)")
    script = 'mount -t tmpfs -o size=16k tmpfs "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(directory), *command]  # fmt: skip


@pytest.mark.namespace
def test_disk_full_keeps_serving_from_memory_and_writes_when_space_returns(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "small"
    directory.mkdir()
    script = tmp_path / "disk_full.py"
    script.write_text(DISK_FULL)
    done = subprocess.run(
        namespace_command(directory, sys.executable, str(script), str(directory)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["fill"] == "ENOSPC"
    assert out["first"] == {"a.example": ["240.240.0.1", "2001:2::1"]}
    # the new host is answered from memory although its pair could not be written
    assert out["second"]["b.example"] == ["240.240.0.2", "2001:2::2"]
    assert out["failures_after_second"] == 1 and out["failures_after_retry"] == 2
    assert out["on_disk_while_full"] == ["a.example"]  # the old copy is intact
    assert "alloc.json.tmp" not in out["leftovers_while_full"]
    assert "cannot write state file" in done.stdout + done.stderr
    assert out["dirty_after_space"] is False
    assert out["on_disk_after"] == ["a.example", "b.example"]
    assert out["leftovers_after"] == ["alloc.json", "alloc.json.bak", "alloc.json.lock"]
    assert not any(directory.iterdir())  # the tmpfs lived only in the namespace
