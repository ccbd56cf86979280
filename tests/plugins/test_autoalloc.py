"""autoalloc end to end: manifests in files, the real server, answers through meshhosts."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
import trio
import yaml

from pycorefile import CorefileError, load_config
from pycorefile._app import Runner, Source
from pycorefile._server import Server
from pycorefile.testing import query, serve

from ..process import ServerProcess, wait_until
from ..process import free_port as free_dns_port

# -- Helpers ---------------------------------------------------------------------------


def entry(
    name: str,
    hosts: list[str],
    *,
    namespace: str = "shop",
    created: str | None = "2024-01-01T00:00:00Z",
    resolution: str | None = "STATIC",
    addresses: list[str] | None = None,
    labels: dict[str, str] | None = None,
    port: int = 3306,
) -> dict[str, Any]:
    """A ServiceEntry manifest."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    if labels:
        meta["labels"] = labels
    spec: dict[str, Any] = {
        "hosts": hosts,
        "ports": [{"number": port, "name": "tcp", "protocol": "TCP"}],
    }
    if resolution:
        spec["resolution"] = resolution
    if addresses:
        spec["addresses"] = addresses
    if resolution == "STATIC":
        spec["endpoints"] = [{"address": "10.0.0.5"}]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": meta,
        "spec": spec,
    }


def write_manifests(path: Path, docs: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    os.replace(tmp, path)


def corefile(
    manifests: Path,
    *,
    state: Path | None = None,
    args: str = "",
    extra: str = "",
    reload: str = "100ms",
) -> str:
    options = (f"        state {state}\n" if state else "") + "        assign sequential\n"
    return (
        ".:0 {\n"
        "    bind 127.0.0.1\n"
        "    prometheus 127.0.0.1:0\n"
        f"    autoalloc {args} {{\n{options}        http 127.0.0.1:0\n{extra}    }}\n"
        f"    meshhosts {{\n        file {manifests}\n        reload {reload}\n    }}\n"
        "}\n"
    )


async def http_raw(address: tuple[str, int], path: str) -> bytes:
    """One GET on a fresh connection: the whole response, head and body."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data


async def http_get(server: Server, path: str) -> tuple[int, bytes]:
    """GET ``path`` from the block's HTTP listener (127.0.0.1:0): status and body."""
    data = await http_raw(server.http_address("127.0.0.1", 0), path)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def allocations(server: Server, all_rows: bool = False) -> list[dict[str, str]]:
    status, body = await http_get(server, "/allocations?all=1" if all_rows else "/allocations")
    assert status == 200
    rows: list[dict[str, str]] = json.loads(body)
    return rows


def pairs(rows: list[dict[str, str]]) -> dict[str, tuple[str, str]]:
    return {r["host"]: (r["ipv4"], r["ipv6"]) for r in rows if r["status"] == "allocated"}


async def wait_for(
    server: Server, check: Callable[[list[dict[str, str]]], bool], all_rows: bool = False
) -> list[dict[str, str]]:
    """Poll ``/allocations`` until ``check`` holds (meshhosts reloads every 100ms)."""
    rows: list[dict[str, str]] = []
    with trio.move_on_after(10):
        while True:
            rows = await allocations(server, all_rows)
            if check(rows):
                return rows
            await trio.sleep(0.05)
    raise AssertionError(f"allocations never matched: {rows}")


async def metric(server: Server, name: str) -> float:
    status, body = await http_get(server, "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def addresses(server: Server, name: str, rdtype: str, proto: str = "udp") -> list[str]:
    reply = await query(server, name, rdtype, proto=proto)
    assert reply.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(reply.rcode())
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


# -- The seed scenario and who gets an address -------------------------------------------

SEED = [
    entry("auto", ["auto.internal"], port=80),
    entry("explicit", ["explicit.internal"], addresses=["240.240.0.2"], port=80),
    entry("later", ["later.internal"], created="2024-02-01T00:00:00Z", port=80),
]

# (name, type, expected rcode, expected records)
SEED_ANSWERS = [
    ("auto.internal", "A", "NOERROR", ["240.240.0.1"]),
    ("auto.internal", "AAAA", "NOERROR", ["2001:2::1"]),
    ("AUTO.Internal", "A", "NOERROR", ["240.240.0.1"]),
    ("explicit.internal", "A", "NOERROR", ["240.240.0.2"]),
    ("explicit.internal", "AAAA", "NOERROR", []),
    # 240.240.0.2 is used explicitly: the next host skips it
    ("later.internal", "A", "NOERROR", ["240.240.0.3"]),
    ("later.internal", "AAAA", "NOERROR", ["2001:2::3"]),
    ("1.0.240.240.in-addr.arpa", "PTR", "NOERROR", ["auto.internal."]),
    (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.2.ip6.arpa",
        "PTR",
        "NOERROR",
        ["auto.internal."],
    ),
    ("3.0.240.240.in-addr.arpa", "PTR", "NOERROR", ["later.internal."]),
]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_seed_scenario(tmp_path: Path, proto: str) -> None:
    manifests = tmp_path / "mesh.yaml"
    write_manifests(manifests, SEED)
    async with serve(corefile(manifests)) as server:
        for name, rdtype, rcode, records in SEED_ANSWERS:
            reply = await query(server, name, rdtype, proto=proto)
            assert dns.rcode.to_text(reply.rcode()) == rcode, name
            got = sorted(r.to_text() for rrset in reply.answer for r in rrset)
            assert got == records, (name, rdtype)
            assert reply.flags & dns.flags.AA
        # same TTL as the explicit entry meshhosts answers from the manifests
        auto = await query(server, "auto.internal", "A", proto=proto)
        explicit = await query(server, "explicit.internal", "A", proto=proto)
        assert auto.answer[0].ttl == explicit.answer[0].ttl == 30


async def test_rds_style_hosts_on_one_port_get_distinct_pairs(tmp_path: Path) -> None:
    manifests = tmp_path / "mesh.yaml"
    write_manifests(
        manifests,
        [
            entry("orders-db", ["orders.cluster-abc.eu-west-1.rds.amazonaws.com"]),
            entry(
                "users-db",
                ["users.cluster-abc.eu-west-1.rds.amazonaws.com"],
                created="2024-01-01T00:00:01Z",
            ),
        ],
    )
    async with serve(corefile(manifests)) as server:
        orders = await addresses(server, "orders.cluster-abc.eu-west-1.rds.amazonaws.com", "A")
        users = await addresses(server, "users.cluster-abc.eu-west-1.rds.amazonaws.com", "A")
        orders6 = await addresses(
            server, "orders.cluster-abc.eu-west-1.rds.amazonaws.com", "AAAA", "tcp"
        )
        users6 = await addresses(
            server, "users.cluster-abc.eu-west-1.rds.amazonaws.com", "AAAA", "tcp"
        )
    assert (orders, orders6) == (["240.240.0.1"], ["2001:2::1"])
    assert (users, users6) == (["240.240.0.2"], ["2001:2::2"])


ELIGIBILITY = [
    entry(
        "optout",
        ["optout.internal"],
        labels={"networking.istio.io/enable-autoallocate-ip": "false"},
    ),
    entry("none", ["none.internal"], resolution="NONE"),
    entry("unset", ["unset.internal"], resolution=None),
    entry("wild-dns", ["*.wild-dns.example"], resolution="DNS"),
    entry("wild-dyn", ["*.wild-dyn.example"], resolution="DYNAMIC_DNS"),
    entry("dns", ["dns.example"], resolution="DNS", created="2024-01-02T00:00:00Z"),
]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_opt_out_none_and_wildcards(tmp_path: Path, proto: str) -> None:
    manifests = tmp_path / "mesh.yaml"
    write_manifests(manifests, ELIGIBILITY)
    async with serve(corefile(manifests)) as server:
        for name in ("optout.internal", "none.internal", "unset.internal", "a.wild-dns.example"):
            reply = await query(server, name, "A", proto=proto)
            assert reply.rcode() == dns.rcode.NXDOMAIN, name
            assert reply.answer == []
        wild = await query(server, "db.wild-dyn.example", "A", proto=proto)
        assert [r.to_text() for r in wild.answer[0]] == ["240.240.0.1"]
        assert wild.answer[0].name.to_text() == "db.wild-dyn.example."  # never a literal '*'
        assert await addresses(server, "dns.example", "A", proto) == ["240.240.0.2"]
        rows = await allocations(server)
    assert pairs(rows) == {
        "*.wild-dyn.example": ("240.240.0.1", "2001:2::1"),
        "dns.example": ("240.240.0.2", "2001:2::2"),
    }


# -- Stability ---------------------------------------------------------------------------

BASE = [
    entry("a", ["a.example"], created="2024-03-01T00:00:00Z"),
    entry("b", ["b.example"], created="2024-03-02T00:00:00Z"),
    entry("c", ["c.example"], created="2024-03-03T00:00:00Z"),
]


async def test_adding_removing_and_reordering_other_entries_changes_nothing(
    tmp_path: Path,
) -> None:
    manifests = tmp_path / "mesh.yaml"
    write_manifests(manifests, BASE)
    async with serve(corefile(manifests)) as server:
        first = pairs(await wait_for(server, lambda rows: len(rows) == 3))
        assert first["a.example"] == ("240.240.0.1", "2001:2::1")
        # an older entry appears first in the file: with no memory it would take .1
        older = entry("old", ["old.example"], created="2020-01-01T00:00:00Z")
        write_manifests(manifests, [older, *BASE])
        rows = await wait_for(server, lambda rows: len(rows) == 4)
        assert pairs(rows)["old.example"] == ("240.240.0.4", "2001:2::4")
        # b leaves, the rest are reordered and one entry is renamed (same host)
        renamed = dict(BASE[2], metadata={**BASE[2]["metadata"], "name": "c-renamed"})
        write_manifests(manifests, [renamed, older, BASE[0]])
        rows = await wait_for(server, lambda rows: len(rows) == 3)
        # a newcomer gets a fresh pair, not b's reserved one
        write_manifests(manifests, [renamed, older, BASE[0], entry("new", ["new.example"])])
        rows = await wait_for(server, lambda rows: len(rows) == 4)
        now = pairs(rows)
        for host in ("a.example", "c.example"):
            assert now[host] == first[host]
            assert await addresses(server, host, "A") == [first[host][0]]
        assert now["new.example"] == ("240.240.0.5", "2001:2::5")
        assert {r["entry"] for r in rows if r["host"] == "c.example"} == {"c-renamed"}
        reserved = [r for r in await allocations(server, True) if r["status"] == "reserved"]
        assert [(r["host"], r["ipv4"]) for r in reserved] == [("b.example", "240.240.0.2")]
        # b returns and gets its pair back
        write_manifests(manifests, [*BASE, older, entry("new", ["new.example"])])
        rows = await wait_for(server, lambda rows: len(rows) == 5)
        assert pairs(rows)["b.example"] == first["b.example"]
        assert await addresses(server, "b.example", "AAAA", "tcp") == ["2001:2::2"]


async def test_restart_with_the_state_file(tmp_path: Path) -> None:
    manifests, state = tmp_path / "mesh.yaml", tmp_path / "alloc.json"
    write_manifests(manifests, BASE[1:])
    async with serve(corefile(manifests, state=state)) as server:
        before = pairs(await allocations(server))
    assert before == {
        "b.example": ("240.240.0.1", "2001:2::1"),
        "c.example": ("240.240.0.2", "2001:2::2"),
    }
    assert json.loads(state.read_text())["generation"] == 1
    # restarted with an older entry added: b and c keep their pairs
    write_manifests(manifests, BASE)
    async with serve(corefile(manifests, state=state)) as server:
        assert await addresses(server, "b.example", "A") == ["240.240.0.1"]
        assert await addresses(server, "c.example", "AAAA", "tcp") == ["2001:2::2"]
        assert await addresses(server, "a.example", "A") == ["240.240.0.3"]


async def test_reload_without_state_keeps_every_pair(tmp_path: Path) -> None:
    manifests, conf = tmp_path / "mesh.yaml", tmp_path / "Corefile"
    write_manifests(manifests, BASE[1:])
    conf.write_text(corefile(manifests))
    runner = Runner(Source.read(str(conf), 0), dns_port=0)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(runner.server.serve, runner.build(runner.source))
        try:
            await wait_for(server, lambda rows: len(rows) == 2)
            # after a reload an older entry appears: a fresh allocator would give it .1
            write_manifests(manifests, BASE)
            assert await runner.reload()
            rows = await wait_for(server, lambda rows: len(rows) == 3)
            assert pairs(rows)["b.example"] == ("240.240.0.1", "2001:2::1")
            assert pairs(rows)["a.example"] == ("240.240.0.3", "2001:2::3")
            assert await addresses(server, "a.example", "A") == ["240.240.0.3"]
        finally:
            runner.server.stop()


async def test_state_added_by_a_reload_keeps_the_pairs_served_so_far(tmp_path: Path) -> None:
    manifests, conf, state = tmp_path / "mesh.yaml", tmp_path / "Corefile", tmp_path / "a.json"
    write_manifests(manifests, BASE[1:])
    conf.write_text(corefile(manifests))
    runner = Runner(Source.read(str(conf), 0), dns_port=0)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(runner.server.serve, runner.build(runner.source))
        try:
            before = pairs(await wait_for(server, lambda rows: len(rows) == 2))
            write_manifests(manifests, BASE)
            conf.write_text(corefile(manifests, state=state))
            assert await runner.reload()
            rows = await wait_for(server, lambda rows: len(rows) == 3)
        finally:
            runner.server.stop()
    after = pairs(rows)
    assert after["b.example"] == before["b.example"] == ("240.240.0.1", "2001:2::1")
    assert after["a.example"] == ("240.240.0.3", "2001:2::3")
    stored = {h["host"]: h["ipv4"] for h in json.loads(state.read_text())["hosts"]}
    assert stored == {
        "b.example": "240.240.0.1",
        "c.example": "240.240.0.2",
        "a.example": "240.240.0.3",
    }


# -- A damaged state file ----------------------------------------------------------------


async def test_garbage_state_recovers_from_the_kept_copy(tmp_path: Path) -> None:
    manifests, state = tmp_path / "mesh.yaml", tmp_path / "alloc.json"
    write_manifests(manifests, BASE[1:])
    async with serve(corefile(manifests, state=state)) as server:
        before = pairs(await allocations(server))
    state.write_bytes(b"\x00\x17 not json at all")
    write_manifests(manifests, BASE)
    async with serve(corefile(manifests, state=state)) as server:
        after = pairs(await allocations(server))
    assert after["b.example"] == before["b.example"]
    assert after["c.example"] == before["c.example"]
    assert json.loads(state.read_text())["hosts"][0]["host"] == "b.example"  # rewritten


async def test_garbage_state_and_copy_refuse_to_start(tmp_path: Path) -> None:
    manifests, state = tmp_path / "mesh.yaml", tmp_path / "alloc.json"
    write_manifests(manifests, BASE)
    state.write_bytes(b"garbage")
    Path(f"{state}.bak").write_bytes(b"{}")
    with pytest.raises(CorefileError) as info:
        async with serve(corefile(manifests, state=state)):
            pass
    message = str(info.value)
    assert message.startswith("Corefile:5:15 - ")
    assert f"plugin/autoalloc: state file {state} cannot be used" in message
    assert "Refusing to start" in message
    assert state.read_bytes() == b"garbage"  # left for a person to look at


# -- Exhaustion --------------------------------------------------------------------------


async def test_exhaustion_with_a_tiny_prefix(tmp_path: Path) -> None:
    manifests = tmp_path / "mesh.yaml"
    docs = [
        entry(f"h{i}", [f"h{i}.example"], created=f"2024-01-0{i + 1}T00:00:00Z") for i in range(3)
    ]
    write_manifests(manifests, docs)
    async with serve(corefile(manifests, args="240.240.0.0/30 2001:2::/126")) as server:
        assert await addresses(server, "h0.example", "A") == ["240.240.0.1"]
        assert await addresses(server, "h1.example", "AAAA", "tcp") == ["2001:2::2"]
        reply = await query(server, "h2.example", "A")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        rows = await allocations(server, all_rows=True)
        assert rows[-1]["host"] == "h2.example" and rows[-1]["status"] == "unallocated"
        assert await metric(server, "coredns_autoalloc_unallocated") == 1
        assert await metric(server, "coredns_autoalloc_exhausted_total") == 1
        assert await metric(server, "coredns_autoalloc_allocations") == 2
        assert await metric(server, "coredns_autoalloc_capacity") == 2


# -- Determinism and visibility ----------------------------------------------------------


async def test_two_independent_servers_allocate_the_same(tmp_path: Path) -> None:
    docs = [
        entry(f"svc{i}", [f"svc{i}.example", f"alias{i % 4}.example"],
              namespace=f"ns{i % 3}", created=f"2024-01-{1 + i % 6:02d}T00:00:00Z")
        for i in range(12)
    ]  # fmt: skip
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    write_manifests(one, docs)
    write_manifests(two, list(reversed(docs)))
    async with serve(corefile(one)) as first, serve(corefile(two)) as second:
        rows_one = await allocations(first)
        rows_two = await allocations(second)
        assert await addresses(first, "alias3.example", "A") == await addresses(
            second, "alias3.example", "A"
        )
    assert rows_one == rows_two
    assert len(rows_one) == 16


async def test_json_endpoint(tmp_path: Path) -> None:
    manifests = tmp_path / "mesh.yaml"
    write_manifests(manifests, SEED)
    async with serve(corefile(manifests)) as server:
        raw = await http_raw(server.http_address("127.0.0.1", 0), "/allocations")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == [
        {"host": "auto.internal", "namespace": "shop", "entry": "auto",
         "ipv4": "240.240.0.1", "ipv6": "2001:2::1", "status": "allocated"},
        {"host": "later.internal", "namespace": "shop", "entry": "later",
         "ipv4": "240.240.0.3", "ipv6": "2001:2::3", "status": "allocated"},
    ]  # fmt: skip


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pycorefile", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_allocations_prints_the_table_without_serving(tmp_path: Path) -> None:
    manifests, state = tmp_path / "mesh.yaml", tmp_path / "alloc.json"
    write_manifests(manifests, SEED)
    conf = tmp_path / "Corefile"
    conf.write_text(corefile(manifests, state=state))
    # no state yet: what the server would allocate; nothing is written
    done = await trio.to_thread.run_sync(run_cli, "-conf", str(conf), "-allocations")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert not state.exists() and not Path(f"{state}.bak").exists()
    async with serve(conf.read_text()) as server:
        served = await allocations(server)
    assert printed == served
    # with state and a newer entry: the stored pairs plus what the next round gives
    write_manifests(
        manifests, [entry("first", ["first.internal"], created="2000-01-01T00:00:00Z"), *SEED]
    )
    done = await trio.to_thread.run_sync(run_cli, "-conf", str(conf), "-allocations")
    assert done.returncode == 0, done.stderr
    assert pairs(json.loads(done.stdout)) == {
        "auto.internal": ("240.240.0.1", "2001:2::1"),
        "later.internal": ("240.240.0.3", "2001:2::3"),
        "first.internal": ("240.240.0.4", "2001:2::4"),
    }
    assert json.loads(state.read_text())["generation"] == 1  # still untouched


async def test_cli_allocations_with_a_broken_state_says_why(tmp_path: Path) -> None:
    manifests, state = tmp_path / "mesh.yaml", tmp_path / "alloc.json"
    write_manifests(manifests, SEED)
    state.write_bytes(b"garbage")
    conf = tmp_path / "Corefile"
    conf.write_text(corefile(manifests, state=state))
    done = await trio.to_thread.run_sync(run_cli, "-conf", str(conf), "-allocations")
    assert done.returncode == 1
    assert "plugin/autoalloc: state file" in done.stderr and "Refusing to start" in done.stderr


async def test_meshhosts_missing_is_a_setup_error() -> None:
    with pytest.raises(CorefileError, match="autoalloc needs meshhosts in the same server block"):
        load_config(".:0 {\n    autoalloc\n    whoami\n}\n")


# -- A real full disk under a running server ------------------------------------------


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_namespace(directory: Path, *command: str) -> list[str]:
    """``command`` in a private mount namespace with a 16 KiB tmpfs on ``directory``."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None:
        pytest.fail("the full-disk test needs root, unshare and setpriv (a private tmpfs mount)")
    script = 'mount -t tmpfs -o size=16k tmpfs "$0" && exec "$@"'
    return ["setpriv", "--pdeathsig=KILL", "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script, str(directory), *command]  # fmt: skip


@pytest.mark.namespace
async def test_disk_full_keeps_answering_and_writes_when_space_returns(tmp_path: Path) -> None:
    small, manifests = tmp_path / "small", tmp_path / "mesh.yaml"
    small.mkdir()
    write_manifests(manifests, [BASE[0]])
    dns_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    conf = tmp_path / "Corefile"
    conf.write_text(
        f".:{dns_port} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{http_port}\n"
        f"    autoalloc {{\n        assign sequential\n        state {small}/alloc.json\n"
        f"        http 127.0.0.1:{http_port}\n    }}\n"
        f"    meshhosts {{\n        file {manifests}\n        reload 100ms\n    }}\n}}\n"
    )
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        in_namespace(small, sys.executable, "-m", "pycorefile", "-conf", str(conf), "-quiet"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    inside = Path(f"/proc/{proc.pid}/root{small}")  # the tmpfs, seen from outside
    target = ("127.0.0.1", dns_port)

    async def answer(name: str) -> list[str]:
        with trio.move_on_after(10):
            while True:
                with contextlib.suppress(dns.exception.Timeout, OSError):
                    reply = await query(target, name, "A", timeout=0.5)
                    if reply.answer:
                        return [r.to_text() for r in reply.answer[0]]
                await trio.sleep(0.05)
        raise AssertionError(f"no answer for {name}")

    def on_disk() -> list[str]:
        return sorted(h["host"] for h in json.loads((inside / "alloc.json").read_text())["hosts"])

    async def failures() -> float:
        data = await http_raw(("127.0.0.1", http_port), "/metrics")
        body = data.partition(b"\r\n\r\n")[2].decode()
        for line in body.splitlines():
            if line.startswith("coredns_autoalloc_state_write_failures_total{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError("no write failure metric")

    try:
        assert await answer("a.example") == ["240.240.0.1"]
        assert on_disk() == ["a.example"]
        fd = os.open(inside / "filler", os.O_WRONLY | os.O_CREAT)
        with pytest.raises(OSError) as full:
            for _ in range(1000):
                os.write(fd, b"x" * 512)
        os.close(fd)
        assert full.value.errno == errno.ENOSPC
        write_manifests(manifests, [BASE[0], BASE[1]])
        # the new host is answered from memory although its pair cannot be written
        assert await answer("b.example") == ["240.240.0.2"]
        assert await answer("a.example") == ["240.240.0.1"]
        assert await failures() >= 1
        assert on_disk() == ["a.example"]  # the previous state is intact
        assert not (inside / "alloc.json.tmp").exists()
        os.unlink(inside / "filler")
        with trio.move_on_after(10):
            while on_disk() != ["a.example", "b.example"]:
                await trio.sleep(0.1)
        assert on_disk() == ["a.example", "b.example"]
        backup = json.loads((inside / "alloc.json.bak").read_text())
        assert sorted(h["host"] for h in backup["hosts"]) == ["a.example", "b.example"]
    finally:
        proc.terminate()
        await trio.to_thread.run_sync(proc.wait, 10)
        log.close()
    output = (tmp_path / "server.log").read_text()
    assert "cannot write state file" in output and "No space left on device" in output
    assert "written again" in output
    assert not any(small.iterdir())  # the tmpfs lived only in the namespace


# -- The event loop never waits for the state file ---------------------------------------


def _ask(port: int, name: str, rdtype: str = "A") -> list[str]:
    """The addresses answered over UDP (NXDOMAIN: none); a timeout fails the test."""
    reply = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=3)
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _waiting_for_lock(inode: int) -> bool:
    """Whether some process waits for a flock on the file with this inode (/proc/locks)."""
    with open("/proc/locks") as f:
        return any("->" in line and f":{inode} " in line for line in f)


def test_a_held_state_file_lock_stops_no_answer(tmp_path: Path) -> None:
    # Another process (this test) holds the state file's lock while the manifests change:
    # the allocation round waits for the lock in a worker thread; queries, the metrics
    # and the table keep being answered; the round completes once the lock is released.
    manifests, state = tmp_path / "mesh.yaml", tmp_path / "alloc.json"
    write_manifests(manifests, SEED[:1])
    dns_port, http_port, metrics_port = free_dns_port(), free_dns_port(), free_dns_port()
    conf = tmp_path / "Corefile"
    conf.write_text(
        f".:{dns_port} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{metrics_port}\n"
        f"    autoalloc {{\n        assign sequential\n        state {state}\n"
        f"        http 127.0.0.1:{http_port}\n    }}\n"
        f"    meshhosts {{\n        file {manifests}\n        reload 100ms\n    }}\n}}\n"
    )
    with ServerProcess(["-conf", str(conf)]) as srv:
        srv.wait_for("pycorefile-")
        wait_until(lambda: _ask(dns_port, "auto.internal") == ["240.240.0.1"])
        lock = os.open(f"{state}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            write_manifests(manifests, SEED)
            wait_until(lambda: _waiting_for_lock(os.fstat(lock).st_ino))
            answers = [_ask(dns_port, "auto.internal") for _ in range(20)]
            assert answers == [["240.240.0.1"]] * 20
            assert _ask(dns_port, "later.internal") == []  # its round waits for the lock
            status, body = _get(metrics_port, "/metrics")
            assert status == 200 and b"coredns_autoalloc_allocations" in body
            status, body = _get(http_port, "/allocations")
            assert status == 200 and [r["host"] for r in json.loads(body)] == ["auto.internal"]
        finally:
            os.close(lock)  # releases the lock
        wait_until(lambda: _ask(dns_port, "later.internal") == ["240.240.0.3"])
        assert json.loads(state.read_text())["generation"] == 2
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
