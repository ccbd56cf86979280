"""meshhosts at scale: a generator of large tables, and a check that big tables answer right.

Not a timed test: ``bench/meshhosts_scale.py`` measures load time and memory
of 50,000 Services with the same generator.
"""

from __future__ import annotations

import json
from pathlib import Path

import dns.rcode
import pytest

from pycorefile import Request
from pycorefile.testing import make_query
from pycorefile_plugins.meshhosts._answers import Answer, PreparedTable, Rotation, Settings
from pycorefile_plugins.meshhosts._sources import read_sources
from pycorefile_plugins.meshhosts._table import build_table

NAMESPACES = 100
FORMATS = ("nametable-json", "manifests-json", "manifests-yaml")


def service_address(i: int) -> str:
    return f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"


def write_services(directory: Path, count: int, fmt: str) -> Path:
    """A table of ``count`` Kubernetes Services in ``NAMESPACES`` namespaces; its path.

    Every fourth Service is dual-stack and every tenth headless-like with
    three addresses, so answers of every shape are built. ``fmt`` is
    ``nametable-json`` (what the reference control plane pushes) or
    ``manifests-json`` (``kubectl get services -A -o json``: a List) or
    ``manifests-yaml`` (the same Services as multi-document YAML).
    """
    if fmt == "nametable-json":
        table = {}
        for i in range(count):
            ns = f"ns{i % NAMESPACES}"
            ips = [service_address(i)]
            if i % 4 == 0:
                ips.append(f"fd00:10:96::{i:x}")
            if i % 10 == 0:
                ips += [f"10.250.{i // 256 % 256}.{i % 256}", f"10.251.{i // 256 % 256}.{i % 256}"]
            table[f"svc{i}.{ns}.svc.cluster.local"] = {
                "ips": ips,
                "registry": "Kubernetes",
                "shortname": f"svc{i}",
                "namespace": ns,
            }
        path = directory / "nametable.json"
        path.write_text(json.dumps({"table": table}))
        return path
    if fmt == "manifests-json":
        items = []
        for i in range(count):
            ips = [service_address(i)]
            if i % 4 == 0:
                ips.append(f"fd00:10:96::{i:x}")
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": f"svc{i}", "namespace": f"ns{i % NAMESPACES}"},
                    "spec": {
                        "clusterIP": ips[0],
                        "clusterIPs": ips,
                        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
                        "type": "ClusterIP",
                    },
                }
            )
        path = directory / "services.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        return path
    if fmt == "manifests-yaml":
        docs = []
        for i in range(count):
            ips = [service_address(i)]
            if i % 4 == 0:
                ips.append(f"fd00:10:96::{i:x}")
            docs.append(
                "apiVersion: v1\nkind: Service\nmetadata:\n"
                f"  name: svc{i}\n  namespace: ns{i % NAMESPACES}\n"
                f"spec:\n  clusterIP: {ips[0]}\n  clusterIPs: [{', '.join(ips)}]\n"
                "  ports:\n  - port: 80\n    targetPort: 8080\n"
            )
        path = directory / "services.yaml"
        path.write_text("---\n".join(docs))
        return path
    raise ValueError(f"unknown format {fmt}")


def load(path: Path, namespace: str = "ns1") -> PreparedTable:
    """What a reload does, minus the thread: read, merge, prepare."""
    sources = read_sources([str(path)])
    table = build_table(sources, namespace=namespace)
    return PreparedTable(table, Settings(namespace=namespace))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_big_table_answers(tmp_path: Path, fmt: str) -> None:
    count = 2000
    table = load(write_services(tmp_path, count, fmt))
    assert table.entries == count
    for i in (0, 1, 10, 1999):
        for name in (f"svc{i}.ns{i % NAMESPACES}.svc.cluster.local", f"svc{i}.ns{i % NAMESPACES}"):
            req = Request(make_query(name, "A").to_wire())
            found = table.lookup(req)
            assert isinstance(found, Answer | Rotation)
            wire = found.render(req.wire, req.name_end, req.edns, req.do)
            assert wire[3] & 0xF == dns.rcode.NOERROR
            assert service_address(i).encode() not in wire  # packed, not text
            assert bytes(int(x) for x in service_address(i).split(".")) in wire
    # Plain names only for our own namespace (ns1).
    for name, rcode in (("svc1", dns.rcode.NOERROR), ("svc0", dns.rcode.NXDOMAIN)):
        req = Request(make_query(name, "A").to_wire())
        found = table.lookup(req)
        assert isinstance(found, Answer | Rotation)
        assert found.render(req.wire, req.name_end, False, False)[3] & 0xF == rcode
