"""meshhosts' ``kubernetes`` source: the real server answering the mesh from an API server.

The API server is kmock's emulator on loopback (``kube_api``), with Istio's
ServiceEntry kind registered; objects are created, changed and deleted over
HTTP, so what meshhosts sees comes through LIST and WATCH.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.query
import dns.rcode
import kmock
import pytest
import trio
import yaml

from pycorefile import Server, kube
from pycorefile.testing import make_request, query, serve
from pycorefile_plugins.meshhosts import ClientNamespaceMeshHosts, MeshHostsPlugin
from pycorefile_plugins.meshhosts._kube import SERVICE_ENTRIES, trim_service_entry
from pycorefile_plugins.meshhosts._sources import ServiceEntryRecord
from tests.plugins import kube_api
from tests.plugins.kube_api import ApiServer, Objects, endpoint_slice, pod, service

from ..process import ServerProcess, free_port, get_json, wait_until

kube_api.RESOURCES["serviceentries"] = "networking.istio.io/v1/serviceentries"
kube_api.PATHS["serviceentries"] = "/apis/networking.istio.io/v1/namespaces/{ns}/serviceentries"
HTTP = [{"name": "http", "port": 80, "protocol": "TCP"}]


def _with_istio(emulator: Any) -> None:
    emulator.resources["networking.istio.io/v1/serviceentries"] = kmock.ResourceInfo(
        kind="ServiceEntry", namespaced=True
    )


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer()
    server._before = _with_istio
    server.start()
    try:
        yield server
    finally:
        server.stop(keep_objects=False)


def service_entry(
    ns: str,
    name: str,
    hosts: list[str],
    *,
    addresses: list[str] | None = None,
    resolution: str = "DNS",
    created: str = "2026-01-01T00:00:00Z",
    status: list[dict[str, str]] | None = None,
    export_to: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "hosts": hosts,
        "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
        "resolution": resolution,
        "location": "MESH_EXTERNAL",
    }
    if addresses:
        spec["addresses"] = addresses
    if export_to:
        spec["exportTo"] = export_to
    if resolution == "STATIC":
        spec["endpoints"] = [{"address": "192.0.2.50"}]
    obj: dict[str, Any] = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = {"addresses": status}
    return obj


def corefile(api: ApiServer, options: str = "", extra: str = "", files: str = "") -> str:
    return (
        ".:0 {\n    bind 127.0.0.1\n"
        f"{extra}"
        "    meshhosts {\n"
        f"        kubernetes\n        endpoint {api.url}\n{options}{files}"
        "    }\n}\n"
    )


def autoalloc_block(state: Path) -> str:
    return f"    autoalloc {{\n        state {state}\n        http 127.0.0.1:0\n    }}\n"


def plugin_of(server: Server) -> MeshHostsPlugin:
    assert server.config is not None
    (plugin,) = server.config.find("meshhosts")
    assert isinstance(plugin, MeshHostsPlugin)
    return plugin


async def answer(server: Server, name: str, rdtype: str = "A") -> tuple[str, list[str]]:
    reply = await query(server, name, rdtype)
    records = sorted(r.to_text() for rr in reply.answer for r in rr)
    return dns.rcode.to_text(reply.rcode()), records


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 15) -> None:
    with trio.move_on_after(seconds):
        while not await check():
            await trio.sleep(0.05)
        return
    raise AssertionError("condition not reached in time")


async def populate(objects: Objects) -> None:
    create = objects.create
    await create("services", service("shop", "web", ["10.96.0.10", "fd00::10"], HTTP))
    await create("services", service("db", "mysql", ["None"], HTTP))
    await create(
        "endpointslices",
        endpoint_slice(
            "db",
            "mysql-abc",
            "mysql",
            [
                {"addresses": ["10.1.0.1"], "hostname": "mysql-0"},
                {"addresses": ["10.1.0.2"], "hostname": "mysql-1", "conditions": {"ready": False}},
            ],
        ),
    )
    await create(
        "services",
        service("shop", "legacy", type_="ExternalName", external_name="web.shop.svc.cluster.local"),
    )
    await create(
        "serviceentries",
        service_entry("shop", "fixed", ["fixed.partner.example"], addresses=["192.0.2.7"]),
    )
    await create(
        "serviceentries",
        service_entry(
            "shop",
            "pay",
            ["pay.partner.example"],
            status=[
                {"value": "240.240.0.1", "host": "pay.partner.example"},
                {"value": "2001:2::1", "host": "pay.partner.example"},
            ],
        ),
    )
    await create("serviceentries", service_entry("shop", "orders", ["orders.partner.example"]))
    await create(
        "serviceentries",
        service_entry(
            "other",
            "private",
            ["private.partner.example"],
            addresses=["192.0.2.8"],
            export_to=["."],
        ),
    )


async def test_a_mesh_defined_only_in_the_api_answers_every_name_form(
    api: ApiServer, tmp_path: Path
) -> None:
    await populate(Objects(api.url))
    conf = corefile(
        api,
        "        namespace shop\n",
        extra=autoalloc_block(tmp_path / "alloc.json"),
    )
    async with serve(conf) as server:
        plugin = plugin_of(server)
        assert plugin.ready()
        await eventually(lambda: _has(server, "orders.partner.example"))
        cases = [
            ("web.shop.svc.cluster.local", "A", "NOERROR", ["10.96.0.10"]),
            ("web.shop.svc.cluster.local", "AAAA", "NOERROR", ["fd00::10"]),
            ("web.shop", "A", "NOERROR", ["10.96.0.10"]),
            ("web.shop.svc", "A", "NOERROR", ["10.96.0.10"]),
            ("web", "A", "NOERROR", ["10.96.0.10"]),
            ("WEB.Shop.svc.cluster.local", "A", "NOERROR", ["10.96.0.10"]),
            ("mysql.db.svc.cluster.local", "A", "NOERROR", ["10.1.0.1"]),
            ("mysql-0.mysql.db.svc.cluster.local", "A", "NOERROR", ["10.1.0.1"]),
            ("mysql-1.mysql.db.svc.cluster.local", "A", "NXDOMAIN", []),
            ("fixed.partner.example", "A", "NOERROR", ["192.0.2.7"]),
            ("pay.partner.example", "A", "NOERROR", ["240.240.0.1"]),
            ("pay.partner.example", "AAAA", "NOERROR", ["2001:2::1"]),
            # exportTo ".": visible in its own namespace only, and we are in shop.
            ("private.partner.example", "A", "NXDOMAIN", []),
            (
                "1.0.1.10.in-addr.arpa",
                "PTR",
                "NOERROR",
                [
                    "mysql-0.mysql.db.svc.cluster.local.",
                    "mysql.db.svc.cluster.local.",
                ],
            ),
        ]
        for name, rdtype, rcode, records in cases:
            assert await answer(server, name, rdtype) == (rcode, records), (name, rdtype)
        legacy = await query(server, "legacy.shop.svc.cluster.local", "A")
        texts = [rr.to_text() for rr in legacy.answer]
        assert "CNAME web.shop.svc.cluster.local." in texts[0] and "10.96.0.10" in texts[1]
        # The ServiceEntry without address got autoalloc's hashed pair; istiod's stays istiod's.
        rcode, orders = await answer(server, "orders.partner.example")
        assert rcode == "NOERROR" and orders[0].startswith("240.240.") and orders != ["240.240.0.1"]


async def _has(server: Server, name: str, expect: list[str] | None = None) -> bool:
    _, records = await answer(server, name)
    return bool(records) if expect is None else records == expect


async def test_changes_reach_answers_while_clients_query(api: ApiServer) -> None:
    objects = Objects(api.url)
    await objects.create("services", service("shop", "web", ["10.96.0.10"], HTTP))
    async with serve(corefile(api, "        namespace shop\n")) as server:
        assert await answer(server, "web") == ("NOERROR", ["10.96.0.10"])
        failures: list[str] = []
        seen: set[tuple[str, tuple[str, ...]]] = set()
        stop = trio.Event()

        async def client() -> None:
            # Every answer during the churn is one of the states the API went through.
            for _ in range(5000):
                if stop.is_set():
                    return
                rcode, records = await answer(server, "web.shop.svc.cluster.local")
                seen.add((rcode, tuple(records)))
                if (rcode, records) not in (
                    ("NOERROR", ["10.96.0.10"]),
                    ("NOERROR", ["10.96.0.11"]),
                    ("NXDOMAIN", []),
                ):
                    failures.append(f"{rcode} {records}")
                await trio.sleep(0.005)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            nursery.start_soon(client)
            await objects.create("services", service("shop", "api", ["10.96.0.20"], HTTP))
            await eventually(lambda: _has(server, "api.shop.svc.cluster.local", ["10.96.0.20"]))
            await objects.patch(
                "services",
                "shop",
                "web",
                {"spec": {"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"]}},
            )
            await eventually(lambda: _has(server, "web", ["10.96.0.11"]))
            await objects.delete("services", "shop", "web")
            await eventually(lambda: _gone(server, "web.shop.svc.cluster.local"))
            await objects.create(
                "serviceentries",
                service_entry("shop", "new", ["new.partner.example"], addresses=["192.0.2.30"]),
            )
            await eventually(lambda: _has(server, "new.partner.example", ["192.0.2.30"]))
            await objects.delete("serviceentries", "shop", "new")
            await eventually(lambda: _gone(server, "new.partner.example"))
            stop.set()
        assert not failures, failures[:5]
        assert ("NOERROR", ("10.96.0.11",)) in seen  # the clients saw the change itself


async def _gone(server: Server, name: str) -> bool:
    return (await answer(server, name))[0] == "NXDOMAIN"


async def test_istiod_writes_status_and_the_host_takes_its_addresses(
    api: ApiServer, tmp_path: Path
) -> None:
    objects = Objects(api.url)
    await objects.create("serviceentries", service_entry("shop", "ext", ["ext.partner.example"]))
    conf = corefile(
        api,
        extra=autoalloc_block(tmp_path / "alloc.json"),
    )
    async with serve(conf) as server:
        await eventually(lambda: _has(server, "ext.partner.example"))
        _, ours = await answer(server, "ext.partner.example")
        # istiod allocates the very pair we gave: ours is given up, theirs is served.
        await objects.patch(
            "serviceentries",
            "shop",
            "ext",
            {
                "status": {
                    "addresses": [
                        {"value": ours[0], "host": "ext.partner.example"},
                        {"value": "2001:2::77", "host": "ext.partner.example"},
                    ]
                }
            },
        )
        await eventually(lambda: _has(server, "ext.partner.example", ours))
        await eventually(lambda: _aaaa(server, "ext.partner.example", ["2001:2::77"]))
        rows = await _allocations(server)
        assert [(r["host"], r["status"]) for r in rows] == [
            ("ext.partner.example", "control-plane")
        ]


async def _aaaa(server: Server, name: str, expect: list[str]) -> bool:
    return (await answer(server, name, "AAAA"))[1] == expect


async def _allocations(server: Server) -> list[dict[str, str]]:
    stream = await trio.open_tcp_stream(*server.http_address("127.0.0.1", 0))
    async with stream:
        await stream.send_all(b"GET /allocations HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    rows: list[dict[str, str]] = json.loads(data.partition(b"\r\n\r\n")[2])
    return rows


async def test_an_api_outage_keeps_the_last_table_and_recovery_brings_changes(
    api: ApiServer,
) -> None:
    objects = Objects(api.url)
    await objects.create("services", service("shop", "web", ["10.96.0.10"], HTTP))
    async with serve(corefile(api)) as server:
        plugin = plugin_of(server)
        assert await answer(server, "web.shop.svc.cluster.local") == ("NOERROR", ["10.96.0.10"])
        await trio.to_thread.run_sync(api.stop)
        for _ in range(20):
            assert await answer(server, "web.shop.svc.cluster.local") == ("NOERROR", ["10.96.0.10"])
            await trio.sleep(0.05)
        assert plugin.ready()
        await trio.to_thread.run_sync(api.restart, _with_istio)
        await objects.create("services", service("shop", "api", ["10.96.0.20"], HTTP))
        await eventually(lambda: _has(server, "api.shop.svc.cluster.local", ["10.96.0.20"]), 60)
        assert await answer(server, "web.shop.svc.cluster.local") == ("NOERROR", ["10.96.0.10"])


async def test_namespaces_scope_and_files_add_or_override(api: ApiServer, tmp_path: Path) -> None:
    objects = Objects(api.url)
    await objects.create("services", service("shop", "web", ["10.96.0.10"], HTTP))
    await objects.create("services", service("shop", "cart", ["10.96.0.12"], HTTP))
    await objects.create("services", service("blog", "web", ["10.96.0.30"], HTTP))
    manifests = tmp_path / "local.yaml"
    manifests.write_text(
        yaml.safe_dump_all(
            [
                service("shop", "cart", ["10.99.0.12"], HTTP),  # overrides the API's
                service_entry("shop", "vm", ["vm.corp.example"], addresses=["192.0.2.99"]),
            ]
        )
    )
    conf = corefile(api, "        namespaces shop\n", files=f"        file {manifests}\n")
    async with serve(conf) as server:
        assert await answer(server, "web.shop.svc.cluster.local") == ("NOERROR", ["10.96.0.10"])
        assert await answer(server, "cart.shop.svc.cluster.local") == ("NOERROR", ["10.99.0.12"])
        assert await answer(server, "vm.corp.example") == ("NOERROR", ["192.0.2.99"])
        assert await answer(server, "web.blog.svc.cluster.local") == ("NXDOMAIN", [])
        await objects.create("services", service("blog", "late", ["10.96.0.31"], HTTP))
        await objects.create("services", service("shop", "late", ["10.96.0.32"], HTTP))
        await eventually(lambda: _has(server, "late.shop.svc.cluster.local", ["10.96.0.32"]))
        assert await answer(server, "late.blog.svc.cluster.local") == ("NXDOMAIN", [])


async def test_a_cluster_without_istio_is_ready_with_services_only() -> None:
    server_api = ApiServer()
    server_api.start()  # no ServiceEntry kind: its LIST is 404
    try:
        await Objects(server_api.url).create(
            "services", service("shop", "web", ["10.96.0.10"], HTTP)
        )
        async with serve(corefile(server_api)) as server:
            await eventually(lambda: _ready(server))
            assert await answer(server, "web.shop.svc.cluster.local") == ("NOERROR", ["10.96.0.10"])
    finally:
        server_api.stop(keep_objects=False)


async def test_a_kind_not_served_is_listed_and_empty_until_it_appears() -> None:
    """pycorefile.kube's Reflector: a 404 LIST is synced and empty, ``served`` False, and
    the kind is listed again (slowly) until its CRD is installed, then watched as any."""
    server_api = ApiServer()
    server_api.start()  # no ServiceEntry kind yet
    try:
        store: kube.Store[ServiceEntryRecord] = kube.Store()
        client = kube.ApiClient(kube.from_endpoint(server_api.url))
        try:
            reflector = kube.Reflector(
                client, SERVICE_ENTRIES, trim_service_entry, store, not_served_retry=0.2
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reflector.run)
                with trio.fail_after(15):
                    await reflector.synced_event.wait()
                assert not reflector.served
                assert store.records == {} and store.changes == 1
                with trio.fail_after(15):
                    while reflector.stats.lists < 3:
                        await trio.sleep(0.05)
                assert store.changes == 1  # the retries that find nothing change nothing
                assert reflector.stats.errors == 0 and reflector.last_error == ""

                server_api.call(_with_istio)  # Istio installed
                await Objects(server_api.url).create(
                    "serviceentries", service_entry("shop", "pay", ["pay.example.com"])
                )

                async def listed() -> bool:
                    return reflector.served and ("shop", "pay") in store.records

                await eventually(listed)
                await Objects(server_api.url).create(
                    "serviceentries", service_entry("shop", "tax", ["tax.example.com"])
                )

                async def watched() -> bool:
                    return ("shop", "tax") in store.records

                await eventually(watched)
                assert reflector.stats.watches >= 1
                nursery.cancel_scope.cancel()
        finally:
            await client.aclose()
    finally:
        server_api.stop(keep_objects=False)


async def _ready(server: Server) -> bool:
    return plugin_of(server).ready()


def _first_search_domain(plugin: MeshHostsPlugin, client: str) -> str | None:
    assert isinstance(plugin, ClientNamespaceMeshHosts)
    found = plugin.search_path_for(make_request("web", client=(client, 4000)))
    return None if found is None else found[0]


async def test_node_local_client_namespaces_from_pods(api: ApiServer) -> None:
    objects = Objects(api.url)
    await objects.create("pods", pod("shop", "web-1", "127.0.0.2"))
    await objects.create("pods", pod("blog", "web-2", "127.0.0.3"))
    async with serve(corefile(api, "        namespace @client\n")) as server:
        plugin = plugin_of(server)
        assert _first_search_domain(plugin, "127.0.0.2") == "shop.svc.cluster.local."
        assert _first_search_domain(plugin, "127.0.0.3") == "blog.svc.cluster.local."
        assert _first_search_domain(plugin, "127.0.0.4") is None
        await objects.create("pods", pod("blog", "web-3", "127.0.0.4"))

        async def found() -> bool:
            return _first_search_domain(plugin, "127.0.0.4") == "blog.svc.cluster.local."

        await eventually(found)


# -- Two processes, each with its own state, on the same objects --------------------------


def test_two_processes_on_the_same_objects_agree(api: ApiServer, tmp_path: Path) -> None:
    def create_all(first: int, last: int) -> None:
        async def go() -> None:
            objects = Objects(api.url)
            for i in range(first, last):
                await objects.create(
                    "serviceentries",
                    service_entry(
                        f"team{i % 3}",
                        f"ext{i}",
                        [f"ext{i}.partner.example"],
                        created=f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
                    ),
                )

        trio.run(go)

    def table(port: int) -> dict[str, tuple[str, str]]:
        rows = get_json(port, "/allocations")
        return {r["host"]: (r["ipv4"], r["ipv6"]) for r in rows}

    ports: list[tuple[int, int]] = []
    confs: list[Path] = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        dns_port, http_port = free_port(), free_port()
        conf = tmp_path / name / "Corefile"
        conf.write_text(
            f".:{dns_port} {{\n    bind 127.0.0.1\n"
            f"    autoalloc 240.240.4.0/26 2001:2:0:4::/120 {{\n"
            f"        state {tmp_path / name / 'alloc.json'}\n"
            f"        http 127.0.0.1:{http_port}\n    }}\n"
            f"    meshhosts {{\n        kubernetes\n        endpoint {api.url}\n    }}\n}}\n"
        )
        ports.append((dns_port, http_port))
        confs.append(conf)
    create_all(0, 10)
    with ServerProcess(["-conf", str(confs[0])]) as first:
        first.wait_for("pycorefile-")
        wait_until(lambda: len(table(ports[0][1])) == 10, timeout=60)
        create_all(10, 25)  # arrive by watch, in creation order
        wait_until(lambda: len(table(ports[0][1])) == 25, timeout=60)
        create_all(25, 40)
        wait_until(lambda: len(table(ports[0][1])) == 40, timeout=60)
        with ServerProcess(["-conf", str(confs[1])]) as second:
            second.wait_for("pycorefile-")
            wait_until(lambda: len(table(ports[1][1])) == 40, timeout=60)
            on_first, on_second = table(ports[0][1]), table(ports[1][1])
            assert on_first == on_second
            assert len(set(on_first.values())) == 40
            for host in ("ext0.partner.example", "ext39.partner.example"):
                got = []
                for dns_port, _ in ports:
                    reply = dns.query.udp(
                        dns.message.make_query(host, "A"), "127.0.0.1", port=dns_port, timeout=3
                    )
                    got.append([r.to_text() for rr in reply.answer for r in rr])
                assert got[0] == got[1] == [on_first[host][0]]


# -- Scale: 5,000 ServiceEntries and 10,000 Services ---------------------------------------

SCALE_SERVICES = 10_000
SCALE_ENTRIES = 5_000


def _scale_objects() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(SCALE_SERVICES):
        ip = f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
        out.append(("v1/services", service(f"ns{i % 50}", f"svc{i}", [ip], HTTP)))
    for i in range(SCALE_ENTRIES):
        addresses = [f"192.{168 + i // 65536}.{i // 256 % 256}.{i % 256}"] if i % 2 else None
        out.append(
            (
                "networking.istio.io/v1/serviceentries",
                service_entry(
                    f"ns{i % 50}",
                    f"se{i}",
                    [f"ext{i}.partner{i % 7}.example"],
                    addresses=addresses,
                    created=f"2026-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
                ),
            )
        )
    return out


async def test_5000_service_entries_and_10000_services_load_and_answer_as_from_a_file(
    api: ApiServer, tmp_path: Path
) -> None:
    objects = _scale_objects()

    def fill(emulator: Any) -> None:
        for resource, obj in objects:
            meta = obj["metadata"]
            emulator.objects[resource, meta["namespace"], meta["name"]] = obj

    await trio.to_thread.run_sync(api.call, fill)
    manifests = tmp_path / "same.json"
    manifests.write_text(json.dumps({"kind": "List", "items": [o for _, o in objects]}))
    from_api = corefile(
        api, "        startup_timeout 120s\n", extra=autoalloc_block(tmp_path / "a.json")
    )
    from_file = (
        ".:0 {\n    bind 127.0.0.1\n"
        f"{autoalloc_block(tmp_path / 'f.json')}"
        f"    meshhosts {{\n        file {manifests}\n    }}\n}}\n"
    )
    started = time.monotonic()
    async with serve(from_api) as server:
        loaded = time.monotonic() - started
        plugin = plugin_of(server)
        assert plugin.ready()
        await eventually(lambda: _entries(plugin, SCALE_SERVICES + SCALE_ENTRIES), 120)
        for i in range(0, SCALE_SERVICES, 97):
            ip = f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
            assert await answer(server, f"svc{i}.ns{i % 50}.svc.cluster.local") == ("NOERROR", [ip])
        for i in range(1, SCALE_ENTRIES, 2 * 41):
            ip = f"192.{168 + i // 65536}.{i // 256 % 256}.{i % 256}"
            assert await answer(server, f"ext{i}.partner{i % 7}.example") == ("NOERROR", [ip])
        async with serve(from_file) as file_server:
            # The same prepared answers under the same keys as from a file: the same fast
            # path, so the same rate; and the same pairs for the hosts without address,
            # allocated by two servers each on its own.
            assert plugin.table.answers.keys() == plugin_of(file_server).table.answers.keys()
            for i in range(0, SCALE_ENTRIES, 53):
                name = f"ext{i}.partner{i % 7}.example"
                from_both = [await answer(server, name), await answer(file_server, name)]
                assert from_both[0] == from_both[1] and from_both[0][1], name
    print(
        f"\n{SCALE_SERVICES} Services + {SCALE_ENTRIES} ServiceEntries from the API: {loaded:.1f}s"
    )


async def _entries(plugin: MeshHostsPlugin, count: int) -> bool:
    return plugin.table.entries >= count


async def test_a_cache_in_front_follows_watch_changes(api: ApiServer) -> None:
    # cache keeps answers for 300 s at most, meshhosts' TTL is 30: without the table's
    # change announcement the old address would be served from the cache for 30 s.
    objects = Objects(api.url)
    await objects.create("services", service("shop", "web", ["10.96.0.10"], HTTP))
    conf = corefile(api, "        namespace shop\n", extra="    cache 300\n")
    async with serve(conf) as server:
        assert await answer(server, "web.shop.svc.cluster.local") == ("NOERROR", ["10.96.0.10"])
        assert await answer(server, "web.shop.svc.cluster.local") == ("NOERROR", ["10.96.0.10"])
        await objects.patch(
            "services",
            "shop",
            "web",
            {"spec": {"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"]}},
        )
        await eventually(lambda: _has(server, "web.shop.svc.cluster.local", ["10.96.0.11"]), 10)


async def _ask_from(server: Server, source: str, name: str) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    return await dns.asyncquery.udp(q, "127.0.0.1", port=server.port(), source=source, timeout=3)


async def test_node_local_autopath_searches_each_clients_namespace(api: ApiServer) -> None:
    # One server for pods of two namespaces: each client's short names are searched in its
    # own namespace (its pod found by its address), as autopath @kubernetes does.
    objects = Objects(api.url)
    await objects.create("services", service("shop", "web", ["10.96.0.10"], HTTP))
    await objects.create("services", service("blog", "web", ["10.96.0.20"], HTTP))
    await objects.create("pods", pod("shop", "client-a", "127.0.0.2"))
    await objects.create("pods", pod("blog", "client-b", "127.0.0.3"))
    conf = corefile(api, "        namespace @client\n", extra="    autopath @meshhosts\n")
    async with serve(conf) as server:
        # A blog client's resolver tries "web.shop" in its first search domain first:
        # the search finds shop's web, behind a CNAME.
        reply = await _ask_from(server, "127.0.0.3", "web.shop.blog.svc.cluster.local.")
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer[0][0].target.to_text() == "web.shop.svc.cluster.local."
        assert [r.to_text() for r in reply.answer[-1]] == ["10.96.0.10"]
        # The same name from a shop client is not its search: asked as it is, NXDOMAIN.
        reply = await _ask_from(server, "127.0.0.2", "web.shop.blog.svc.cluster.local.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        # The shop client searching "web.blog" from its namespace.
        reply = await _ask_from(server, "127.0.0.2", "web.blog.shop.svc.cluster.local.")
        assert [r.to_text() for r in reply.answer[-1]] == ["10.96.0.20"]
        # A client no pod has gets no autopath.
        reply = await _ask_from(server, "127.0.0.4", "web.shop.blog.svc.cluster.local.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
