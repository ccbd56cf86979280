"""The workload's namespace for meshhosts: from the environment, a file, or each client's pod.

``namespace env VAR`` and ``namespace file PATH`` are read when the Corefile is
loaded (a sidecar knows its namespace from the downward API); ``namespace
@client`` (a node-local server) looks the client's address up among the Pods
and gives autopath that namespace's search path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from pycorefile import CorefileError, Server, load_config
from pycorefile.testing import Upstream, make_query, make_request, query, serve
from pycorefile_plugins.meshhosts import ClientNamespaceMeshHosts, MeshHostsPlugin


def _config(body: str) -> MeshHostsPlugin:
    config = load_config(".:0 {\n    meshhosts {\n" + body + "\n    }\n}\n")
    (plugin,) = config.find("meshhosts")
    assert isinstance(plugin, MeshHostsPlugin)
    return plugin


def test_namespace_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "Shop\n")
    assert _config("        namespace env POD_NAMESPACE").config.namespace == "shop"
    # A namespace called "env" is still a namespace (one argument).
    assert _config("        namespace env").config.namespace == "env"


def test_namespace_env_unset_or_invalid_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    with pytest.raises(
        CorefileError, match=r"namespace env POD_NAMESPACE: the variable is not set"
    ):
        _config("        namespace env POD_NAMESPACE")
    monkeypatch.setenv("POD_NAMESPACE", "not/a namespace")
    with pytest.raises(CorefileError, match=r"invalid namespace 'not/a namespace'"):
        _config("        namespace env POD_NAMESPACE")


def test_namespace_from_a_downward_api_file(tmp_path: Path) -> None:
    path = tmp_path / "namespace"
    path.write_text("payments\n")
    assert _config(f"        namespace file {path}").config.namespace == "payments"
    with pytest.raises(CorefileError, match=r"namespace file .*missing: cannot read"):
        _config(f"        namespace file {tmp_path / 'missing'}")
    path.write_text("")
    with pytest.raises(CorefileError, match=r"invalid namespace ''"):
        _config(f"        namespace file {path}")


def test_namespace_forms_that_are_errors() -> None:
    with pytest.raises(CorefileError, match=r"namespace takes NAME, env VARIABLE, file PATH"):
        _config("        namespace from somewhere")
    with pytest.raises(CorefileError, match=r"'namespace' given twice"):
        _config("        namespace @client\n        namespace shop")
    plugin = _config("        namespace @client")
    assert plugin.config.client_namespace and plugin.config.namespace == ""


def _pod(name: str, namespace: str, ips: list[str], **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "app"}]}
    status: dict[str, Any] = {"phase": "Running", "podIP": ips[0] if ips else None}
    status["podIPs"] = [{"ip": ip} for ip in ips]
    if extra.get("host_network"):
        spec["hostNetwork"] = True
    if "phase" in extra:
        status["phase"] = extra["phase"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
        "status": status,
    }


def _service(name: str, namespace: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": ip, "ports": [{"port": 80}]},
    }


async def test_each_client_gets_the_search_path_of_its_pods_namespace(tmp_path: Path) -> None:
    manifests = tmp_path / "cluster.yaml"
    manifests.write_text(
        yaml.safe_dump_all(
            [
                _service("web", "shop", "10.96.0.10"),
                _service("web", "blog", "10.96.0.20"),
                _pod("web-1", "shop", ["127.0.0.2", "fd00::2"]),
                _pod("web-2", "blog", ["127.0.0.3"]),
                # The node's address, shared by host-network pods: nobody's namespace.
                _pod("agent", "kube-system", ["127.0.0.4"], host_network=True),
                _pod("old", "shop", ["127.0.0.5"], phase="Succeeded"),
                # One address, two namespaces (a reused address): no namespace.
                _pod("a", "shop", ["127.0.0.6"]),
                _pod("b", "blog", ["127.0.0.6"]),
            ]
        )
    )
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search corp.example\n")
    corefile = (
        ".:0 {\n    bind 127.0.0.1\n"
        f"    meshhosts {{\n        file {manifests}\n        namespace @client\n"
        f"        resolv_conf {resolv}\n    }}\n}}\n"
    )
    async with serve(corefile) as server:
        assert server.config is not None
        (plugin,) = server.config.find("meshhosts")
        assert isinstance(plugin, ClientNamespaceMeshHosts)

        def path_of(client: str) -> list[str] | None:
            found = plugin.search_path_for(make_request("web", client=(client, 4000)))
            return None if found is None else list(found)

        assert path_of("127.0.0.2") == [
            "shop.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
            "corp.example.",
        ]
        assert path_of("fd00::2") == path_of("127.0.0.2")
        assert path_of("127.0.0.3") == [
            "blog.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
            "corp.example.",
        ]
        for unknown in ("127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.9"):
            assert path_of(unknown) is None, unknown
        # No namespace of its own: a plain name is nobody's, the qualified forms answer.
        plain = await query(server, "web.", "A")
        qualified = await query(server, "web.blog.", "A")
        assert not plain.answer
        assert [r.to_text() for rr in qualified.answer for r in rr] == ["10.96.0.20"]

        # A pod that appears later is picked up with the next table.
        manifests.write_text(
            manifests.read_text() + "---\n" + yaml.safe_dump(_pod("late", "blog", ["127.0.0.9"]))
        )
        os.utime(manifests, (1, 1))
        await plugin.check()
        assert path_of("127.0.0.9") == path_of("127.0.0.3")


def test_a_sidecar_offers_autopath_one_path_for_every_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # autopath asks a plugin with search_path_for for each client's path: a sidecar's
    # block (one namespace) has no such method, only search_path().
    monkeypatch.setenv("POD_NAMESPACE", "shop")
    plugin = _config("        namespace env POD_NAMESPACE\n        resolv_conf /nonexistent")
    assert not hasattr(plugin, "search_path_for")
    assert plugin.search_path() == [
        "shop.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
    ]
    node_local = _config("        namespace @client")
    assert isinstance(node_local, ClientNamespaceMeshHosts)


async def _ask_from(server: Server, client: str, name: str) -> list[str]:
    reply = await dns.asyncquery.udp(
        make_query(name, "A"), "127.0.0.1", port=server.port(), source=client, timeout=3
    )
    return [dns.rcode.to_text(reply.rcode())] + [
        f"{rr.name} {dns.rdatatype.to_text(rr.rdtype)} {r.to_text()}"
        for rr in reply.answer
        for r in rr
    ]


async def test_autopath_searches_again_when_a_clients_search_path_changed(
    tmp_path: Path,
) -> None:
    """What autopath found with a client's search path is not given once that path changed:
    the search list of resolv.conf, or the client's address now a pod of another namespace."""
    manifests = tmp_path / "cluster.yaml"
    manifests.write_text(yaml.safe_dump(_pod("web-1", "shop", ["127.0.0.2"])))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search corp.old\n")
    records = {("api.corp.old.", "A"): ["192.0.2.1"], ("api.corp.new.", "A"): ["192.0.2.2"]}
    async with Upstream(records=records, host="127.0.0.5").running() as upstream:
        corefile = (
            ".:0 {\n    bind 127.0.0.1\n    autopath @meshhosts\n"
            f"    meshhosts cluster.local {{\n        file {manifests}\n"
            f"        namespace @client\n        resolv_conf {resolv}\n        reload 0\n    }}\n"
            f"    forward . {upstream.address}\n}}\n"
        )
        async with serve(corefile) as server:
            assert server.config is not None
            (plugin,) = server.config.find("meshhosts")
            assert isinstance(plugin, ClientNamespaceMeshHosts)
            asked = "api.shop.svc.cluster.local."
            found_old = [
                "NOERROR",
                f"{asked} CNAME api.corp.old.",
                "api.corp.old. A 192.0.2.1",
            ]
            assert await _ask_from(server, "127.0.0.2", asked) == found_old
            assert await _ask_from(server, "127.0.0.2", asked) == found_old  # stored
            tries_of_old = upstream.count("api.corp.old.", "A")

            # resolv.conf's search list changes: the same first domain, another path.
            resolv.write_text("search corp.new\n")
            os.utime(resolv, (2, 2))
            await plugin.check()
            assert await _ask_from(server, "127.0.0.2", asked) == [
                "NOERROR",
                f"{asked} CNAME api.corp.new.",
                "api.corp.new. A 192.0.2.2",
            ]
            assert upstream.count("api.corp.old.", "A") == tries_of_old

            # The pod's address is reused by a pod of another namespace: for that client
            # the name is not a search of its own, and it is asked as it is.
            manifests.write_text(yaml.safe_dump(_pod("web-9", "blog", ["127.0.0.2"])))
            os.utime(manifests, (3, 3))
            await plugin.check()
            reply = await _ask_from(server, "127.0.0.2", asked)
            assert reply[0] == "NXDOMAIN" and len(reply) == 1
