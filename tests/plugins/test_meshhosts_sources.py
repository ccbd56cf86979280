"""meshhosts: reading NameTables and manifests, merging them into the host table (no server)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pycorefile_plugins.meshhosts._sources import (
    MAX_DEPTH,
    ServiceEntryHost,
    SourceError,
    SourceMissing,
    Sources,
    list_files,
    parse_text,
    read_file,
    read_search_domains,
    read_sources,
    snapshot,
)
from pycorefile_plugins.meshhosts._table import (
    EXTERNAL,
    KUBERNETES,
    HostEntry,
    InlineEntry,
    build_table,
    explicit_addresses,
    names_of,
    service_entry_hosts,
    visible,
)
from tests.reliability._support import ALIAS_BOMB

DATA = Path(__file__).parent / "data" / "meshhosts"


def table_of(*files: str, namespace: str = "ns1", **kwargs: object) -> dict[str, HostEntry]:
    sources = read_sources([str(DATA / f) for f in files])
    return build_table(sources, namespace=namespace, **kwargs).entries  # type: ignore[arg-type]


def service_yaml(name: str, namespace: str, cluster_ip: str) -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec: {{clusterIP: {cluster_ip}}}\n"
    )


# -- NameTables -----------------------------------------------------------------------


def test_name_table_json() -> None:
    records = {r.host: r for r in read_file(str(DATA / "nametable.json")).names}
    details = records["details.ns2.svc.cluster.local."]
    assert details.ips == ("10.96.1.1",)
    assert (details.registry, details.shortname, details.namespace) == (
        KUBERNETES,
        "details",
        "ns2",
    )
    assert details.alt_hosts == ("details.legacy.internal.",)
    # A key with a trailing dot is the same host (the reference silently drops
    # Kubernetes keys written that way).
    assert "ratings.ns1.svc.cluster.local." in records
    assert records["mongo.db.example."].registry == EXTERNAL


def test_name_table_yaml_with_snake_case_alt_hosts() -> None:
    records = {r.host: r for r in read_file(str(DATA / "nametable.yaml")).names}
    reviews = records["reviews.ns1.svc.cluster.local."]
    assert reviews.ips == ("10.96.2.1", "fd00::2:1")
    assert reviews.alt_hosts == ("reviews.mesh.internal.",)


def test_name_table_entry_without_fields_and_mixed_case() -> None:
    sources = parse_text('{"table": {"API.Example.COM": {"ips": ["::ffff:10.0.0.1"]}}}', "t.json")
    (record,) = sources.names
    assert record.host == "api.example.com."
    assert record.ips == ("10.0.0.1",)  # IPv4-mapped IPv6 is IPv4, as in the hosts plugin
    assert record.registry == ""


# -- Manifests ------------------------------------------------------------------------


def test_manifests_multi_document() -> None:
    sources = read_file(str(DATA / "manifests.yaml"))
    services = {s.name: s for s in sources.services}
    assert set(services) == {"productpage", "mysql", "search", "db-alias"}  # Deployment skipped
    assert services["productpage"].cluster_ips == ("10.96.0.10", "fd00:10:96::10")
    assert services["mysql"].headless
    assert services["search"].external_name == "search.example.org."
    (mysql_slice,) = sources.slices
    assert (mysql_slice.service, mysql_slice.namespace) == ("mysql", "db")
    assert [e.ready for e in mysql_slice.endpoints] == [True, True, False]
    entries = {se.name: se for se in sources.service_entries}
    assert entries["payments-extra"].addresses == ("240.0.0.5",)  # a /32 is its address
    assert entries["legacy"].endpoint_ips == ("192.168.5.1", "192.168.5.2")
    assert entries["wild"].hosts == ("*.wild.example.",)
    assert entries["external-api"].created == "2024-03-01T10:00:00Z"
    assert entries["external-api"].labels == {"team": "payments"}
    assert entries["private"].export_to == (".",)


def test_list_kind() -> None:
    sources = read_file(str(DATA / "list.yaml"))
    assert [s.name for s in sources.services] == ["listed"]
    assert sources.service_entries[0].addresses == ("2001:db8::7",)


def test_json_manifest_list_and_typed_lists() -> None:
    text = """{"apiVersion": "v1", "kind": "ServiceList", "items": [
      {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
       "spec": {"clusterIP": "10.0.0.1"}}]}"""
    sources = parse_text(text, "svc.json")
    assert [(s.name, s.namespace) for s in sources.services] == [("a", "default")]


def test_unquoted_timestamps_stay_rfc3339() -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: e, creationTimestamp: 2024-03-01T10:00:00Z}\nspec: {hosts: [a.example]}\n"
    )
    (entry,) = parse_text(text, "e.yaml").service_entries
    assert entry.created == "2024-03-01T10:00:00+00:00"
    assert entry.resolution == "NONE"  # Istio's default


def test_other_groups_and_kinds_are_skipped() -> None:
    text = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: knative}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
---
"""
    assert parse_text(text, "x.yaml") == Sources()


def test_endpoint_slice_rules() -> None:
    text = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s1, namespace: ns, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
endpoints:
  - addresses: ["fd00::1"]
  - addresses: ["fd00::2"]
    conditions: {ready: false, terminating: true}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orphan, namespace: ns}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: fqdn, namespace: ns, labels: {kubernetes.io/service-name: web}}
addressType: FQDN
endpoints: [{addresses: [web.example.com]}]
"""
    (sl,) = parse_text(text, "s.yaml").slices
    # An endpoint without conditions counts as ready (the API's rule for "unknown").
    assert [(e.addresses, e.ready, e.terminating) for e in sl.endpoints] == [
        (("fd00::1",), True, False),
        (("fd00::2",), False, True),
    ]


@pytest.mark.parametrize(
    ("name", "text", "line", "reason"),
    [
        ("bad.json", '{"table": {\n  "a.example": {"ips": [\n 1,2', 3, "invalid JSON"),
        (
            "ips.json",
            '{"table": {\n  "a.example": {\n    "ips": ["10.0.0.300"]}}}',
            3,
            "'10.0.0.300' is not an IP address",
        ),
        ("bad.yaml", "table:\n  a.example: {ips: [10.0.0.1}\n", 2, "invalid YAML"),
        (
            "svc.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: x\nspec: {}\n",
            4,
            "a Service needs metadata.name",
        ),
        (
            "se.yaml",
            "---\nkind: Deployment\n---\napiVersion: networking.istio.io/v1\n"
            "kind: ServiceEntry\nmetadata: {name: e}\nspec:\n  hosts:\n  - ok.example\n"
            "  - bad..example\n",
            10,
            "'bad..example' is not a valid host name",
        ),
        (
            "se2.yaml",
            "apiVersion: networking.istio.io/v2\nkind: ServiceEntry\nmetadata: {name: e}\n",
            1,
            "unsupported ServiceEntry version",
        ),
        ("list.yaml", "- 3\n", 1, "expected a mapping"),
        ("table.yaml", "table: [a]\n", 1, "'table' must map host names"),
        (
            "ips.yaml",
            "table:\n  a.example:\n    ips: 10.0.0.1\n",
            3,
            "expected a list, got a string",
        ),
    ],
)
def test_errors_name_file_line_and_reason(name: str, text: str, line: int, reason: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_text(text, name)
    err = caught.value
    assert (err.file, err.line) == (name, line)
    assert reason in err.reason
    assert str(err).startswith(f"{name}:{line}: ")


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        read_sources([str(tmp_path / "absent.yaml")])
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SourceError, match="not UTF-8"):
        read_file(str(binary))


GOOD_ENTRY = "table:\n  a.example: {ips: [10.0.0.1]}\n"


@pytest.mark.parametrize(
    ("name", "text", "line", "reason"),
    [
        ("date.yaml", GOOD_ENTRY + "when: 2024-02-30\n", 3, "cannot read '2024-02-30' as a date"),
        ("long.yaml", GOOD_ENTRY + "n: " + "9" * 5000 + "\n", 3, "more than 4300 digits"),
        ("long.json", '{"table": {},\n"n": ' + "9" * 5000 + "}", 2, "more than 4300 digits"),
        ("deep.json", "[" * 100_000 + "]" * 100_000, 0, "nested too deeply"),
        ("deep.yaml", "[" * 100_000 + "]" * 100_000 + "\n", 1, f"more than {MAX_DEPTH} levels"),
        ("block.yaml", "- " * 100_000 + "x\n", 1, f"more than {MAX_DEPTH} levels"),
        ("bomb.yaml", ALIAS_BOMB, 3, "aliases and anchors (*name, &name) are not accepted"),
        ("anchor.yaml", "table: &t {}\n", 1, "aliases and anchors"),
        ("control.yaml", "table:\n  \x00\x01: x\n", 2, "unacceptable character #x0000"),
        (
            "top.json",
            '"a table"',
            1,
            "expected a mapping (a NameTable or a manifest), got a string",
        ),
        (
            "top.yaml",
            "- [1, 2]\n",
            1,
            "expected a mapping (a NameTable or a manifest), got a number",
        ),
        ("tag.yaml", "table: !!python/name:os.system\n", 1, "could not determine a constructor"),
    ],
)
def test_damage_beyond_syntax_is_a_source_error(
    name: str, text: str, line: int, reason: str
) -> None:
    """Whatever the damage, one SourceError naming file, line and reason, and quickly."""
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        parse_text(text, name)
    err = caught.value
    assert (err.file, err.line) == (name, line), err
    assert reason in err.reason
    assert time.monotonic() - started < 20  # the bomb is refused, not expanded


def test_yaml_without_aliases_reads_as_before() -> None:
    """The composer that refuses aliases gives what PyYAML gives on everything else."""
    text = (DATA / "manifests.yaml").read_text()
    assert parse_text(text, "m.yaml") == parse_text(text.replace("\n", "\r\n"), "m.yaml")
    merged = parse_text("table:\n  a.example: {<<: {ips: [10.0.0.1]}, ? b : c}\n", "m.yaml")
    assert merged.names[0].ips == ("10.0.0.1",)
    assert parse_text("table:\n  '*.x': {ips: [10.0.0.2]}\n", "w.yaml").names[0].host == "*.x."


def test_size_limit(tmp_path: Path) -> None:
    table = tmp_path / "t.json"
    table.write_text('{"table": {"a.example": {"ips": ["10.0.0.1"]}}}')
    size = table.stat().st_size
    assert [r.host for r in read_file(str(table), max_size=size).names] == ["a.example."]
    with pytest.raises(SourceError) as caught:
        read_sources([str(table)], max_size=size - 1)
    assert caught.value.reason == f"larger than the limit of {size - 1} bytes (max_file_size)"


def test_not_a_file_where_a_file_was(tmp_path: Path) -> None:
    """A directory named like a table (Docker and Kubernetes make one for a missing
    file to mount) or a FIFO is refused, never read as an empty table or waited on."""
    (tmp_path / "mesh.json").mkdir()
    with pytest.raises(SourceError, match="is a directory, not a file"):
        read_sources([str(tmp_path / "mesh.json")])
    with pytest.raises(SourceError, match="is a directory, not a file"):
        read_sources([str(tmp_path)])  # also as an entry of a directory source
    os.rmdir(tmp_path / "mesh.json")
    os.mkfifo(tmp_path / "mesh.yaml")
    with pytest.raises(SourceError, match="not a regular file"):
        read_sources([str(tmp_path)])


def test_missing_is_told_apart_from_broken(tmp_path: Path) -> None:
    with pytest.raises(SourceMissing):
        read_sources([str(tmp_path / "absent.json")])
    (tmp_path / "dangling.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(SourceMissing):
        read_sources([str(tmp_path)])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SourceError) as caught:
        read_sources([str(tmp_path / "broken.json")])
    assert not isinstance(caught.value, SourceMissing)


def test_directory_lists_json_and_yaml_only(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("table: {b.example: {ips: [10.0.0.2]}}\n")
    (tmp_path / "a.json").write_text('{"table": {"a.example": {"ips": ["10.0.0.1"]}}}')
    (tmp_path / "notes.txt").write_text("not a table")
    (tmp_path / ".hidden.yaml").write_text("::: broken")
    assert [Path(f).name for f in list_files([str(tmp_path)])] == ["a.json", "b.yaml"]
    assert [r.host for r in read_sources([str(tmp_path)]).names] == ["a.example.", "b.example."]


def test_snapshot_sees_changes_and_deletions(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text("{}")
    first = snapshot([str(f)])
    assert snapshot([str(f)]) == first
    f.write_text('{"table": {}}')
    second = snapshot([str(f)])
    assert second != first
    f.unlink()
    assert snapshot([str(f)]) == ((str(f), -1, -1, -1),)


def test_resolv_conf_search(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(
        "nameserver 10.96.0.10\nsearch old.example\nsearch NS1.svc.cluster.local. corp.example\n"
    )
    assert read_search_domains(str(path)) == ["ns1.svc.cluster.local.", "corp.example."]
    assert read_search_domains(str(tmp_path / "missing")) == []


# -- The merged table -----------------------------------------------------------------


def test_service_wins_over_service_entry_and_entries_merge() -> None:
    entries = table_of("manifests.yaml")
    assert entries["productpage.ns1.svc.cluster.local."].addresses == (
        "10.96.0.10",
        "fd00:10:96::10",
    )
    assert entries["productpage.ns1.svc.cluster.local."].registry == KUBERNETES
    # Two ServiceEntries for one host: addresses appended.
    assert entries["api.payments.example."].addresses == ("240.0.0.1", "240.0.0.5")
    # resolution NONE without addresses: the endpoints' IPs (not their host names).
    assert entries["legacy.corp.example."].addresses == ("192.168.5.1", "192.168.5.2")
    # No address and no allocator: no entry (as the reference).
    assert "api.external.example." not in entries


def test_service_wins_whatever_the_order() -> None:
    se = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: d, namespace: ns1}
spec: {hosts: [web.ns1.svc.cluster.local], addresses: [240.0.0.9]}
"""
    svc = service_yaml("web", "ns1", "10.0.0.9")
    for text in (se + "---\n" + svc, svc + "---\n" + se):
        entry = build_table(parse_text(text, "x.yaml")).entries["web.ns1.svc.cluster.local."]
        assert entry.addresses == ("10.0.0.9",)


def test_headless_service_and_pods() -> None:
    entries = table_of("manifests.yaml")
    mysql = entries["mysql.db.svc.cluster.local."]
    assert mysql.addresses == ("10.1.0.10", "10.1.0.11")  # the not-ready endpoint left out
    pod = entries["mysql-0.mysql.db.svc.cluster.local."]
    assert (pod.addresses, pod.shortname, pod.namespace) == (("10.1.0.10",), "mysql-0.mysql", "db")
    assert "mysql-2.mysql.db.svc.cluster.local." not in entries


def test_publish_not_ready_addresses() -> None:
    text = """\
apiVersion: v1
kind: Service
metadata: {name: peers, namespace: ns}
spec: {clusterIP: None, publishNotReadyAddresses: true}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: p1, namespace: ns, labels: {kubernetes.io/service-name: peers}}
addressType: IPv4
endpoints:
  - {addresses: [10.0.0.1], conditions: {ready: false}}
  - {addresses: [10.0.0.2], conditions: {ready: false, terminating: true}}
"""
    entry = build_table(parse_text(text, "p.yaml")).entries["peers.ns.svc.cluster.local."]
    assert entry.addresses == ("10.0.0.1",)


def test_headless_without_endpoints_still_exists() -> None:
    text = service_yaml("h", "ns", "None")
    entry = build_table(parse_text(text, "h.yaml")).entries["h.ns.svc.cluster.local."]
    assert entry.addresses == ()


def test_external_name_is_a_cname() -> None:
    entry = table_of("manifests.yaml")["search.ns1.svc.cluster.local."]
    assert (entry.cname, entry.addresses) == ("search.example.org.", ())


def test_cluster_domain_is_configurable() -> None:
    entries = table_of("manifests.yaml", domain="mesh.internal")
    assert "productpage.ns1.svc.mesh.internal." in entries


def test_export_to_scopes_service_entries() -> None:
    assert "private.ns3.example." not in table_of("manifests.yaml", namespace="ns1")
    assert "private.ns3.example." in table_of("manifests.yaml", namespace="ns3")
    assert "private.ns3.example." in table_of("manifests.yaml", namespace="")
    assert visible(("~",), "a", "b") is False
    assert visible(("*",), "a", "b") is True
    assert visible(("b", "c"), "a", "b") is True


def test_inline_entries_merge_with_external_ones() -> None:
    inline = [InlineEntry("192.0.2.1", ("ledger.bank.example.", "inline.test."))]
    sources = read_sources([str(DATA / "nametable.yaml")])
    entries = build_table(sources, inline).entries
    assert entries["ledger.bank.example."].addresses == ("198.51.100.7", "192.0.2.1")
    assert entries["inline.test."].addresses == ("192.0.2.1",)


def test_names_of_kubernetes_entries() -> None:
    entry = HostEntry(
        "productpage.ns1.svc.cluster.local.", ("10.0.0.1",), KUBERNETES, "productpage", "ns1",
        ("pp.alias.",),
    )  # fmt: skip
    assert names_of(entry, "cluster.local.", "ns1") == [
        "productpage.ns1.svc.cluster.local.",
        "productpage.ns1.",
        "productpage.ns1.svc.",
        "productpage.",
        "pp.alias.",
    ]
    # Another namespace: no plain short name.
    assert "productpage." not in names_of(entry, "cluster.local.", "ns2")
    # Another cluster domain: the FQDN and alt hosts only (label-aware suffix test).
    assert names_of(entry, "local.", "ns1") == ["productpage.ns1.svc.cluster.local.", "pp.alias."]
    other = HostEntry("x.ns1.svc.xcluster.local.", ("10.0.0.2",), KUBERNETES, "x", "ns1")
    assert names_of(other, "cluster.local.", "ns1") == ["x.ns1.svc.xcluster.local."]
    # Entries of other registries: their names only.
    external = HostEntry("api.example.", ("10.0.0.3",), EXTERNAL, "api", "ns1")
    assert names_of(external, "cluster.local.", "ns1") == ["api.example."]


def test_service_entry_hosts_for_the_allocator() -> None:
    hosts = service_entry_hosts(read_sources([str(DATA / "manifests.yaml")]))
    assert hosts == [
        # resolution NONE without addresses is listed too: the allocator decides.
        ServiceEntryHost("legacy.corp.example", "ns2", "legacy", "", "NONE", False, {}),
        ServiceEntryHost(
            host="api.external.example",
            namespace="ns1",
            name="external-api",
            created="2024-03-01T10:00:00Z",
            resolution="DNS",
            wildcard=False,
            labels={"team": "payments"},
            explicit_addresses=(),
        ),
        ServiceEntryHost(
            host="cdn.external.example",
            namespace="ns1",
            name="external-api",
            created="2024-03-01T10:00:00Z",
            resolution="DNS",
            wildcard=False,
            labels={"team": "payments"},
        ),
    ]


def test_allocations_become_addresses() -> None:
    sources = read_sources([str(DATA / "manifests.yaml")])
    allocations = {"api.external.example": ("240.240.0.1", "2001:2::1")}
    table = build_table(sources, allocations=allocations)
    assert table.entries["api.external.example."].addresses == ("240.240.0.1", "2001:2::1")
    assert table.allocated == {"api.external.example.": ("240.240.0.1", "2001:2::1")}
    assert "cdn.external.example." not in table.entries


def test_explicit_addresses() -> None:
    sources = read_sources([str(DATA / "manifests.yaml"), str(DATA / "nametable.json")])
    explicit = explicit_addresses(sources, [InlineEntry("192.0.2.1", ("x.test.",))])
    assert {"10.96.0.10", "fd00:10:96::10", "10.1.0.12", "240.0.0.5", "192.168.5.1"} <= explicit
    assert {"10.96.1.1", "fd00::db", "192.0.2.1"} <= explicit
    assert "240.240.0.1" not in explicit
