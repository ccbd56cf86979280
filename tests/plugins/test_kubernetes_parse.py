"""kubernetes: the directive's syntax, defaults and setup errors (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycorefile import CorefileError, load_config
from pycorefile.corefile import ZoneKey, parse_corefile
from pycorefile.plugin import Fallthrough, SetupContext
from pycorefile_plugins.kubernetes import KubernetesConfig, parse_kubernetes


def parsed(text: str, zone: str = "cluster.local.") -> KubernetesConfig:
    block = parse_corefile(f"{zone} {{\n{text}\n}}\n")[0]
    ctx = SetupContext(block=block, keys=(ZoneKey("dns", zone, 53),))
    directives = [d for d in block.directives if d.name == "kubernetes"]
    return parse_kubernetes(directives, ctx, connect=False)


def test_defaults() -> None:
    config = parsed("kubernetes")
    assert config.zones == ("cluster.local.",)
    assert config.primary_zone == "cluster.local."
    assert config.ttl == 5
    assert config.pods == "disabled"
    assert config.startup_timeout == 5.0
    assert config.fallthrough is None
    assert not config.noendpoints and not config.ignore_empty_service
    assert not config.endpoint_pod_names


def test_the_stock_corefile() -> None:
    config = parsed(
        "kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
        "   pods insecure\n   fallthrough in-addr.arpa ip6.arpa\n   ttl 30\n}",
        zone=".",
    )
    assert config.zones == ("cluster.local.", "in-addr.arpa.", "ip6.arpa.")
    assert config.pods == "insecure"
    assert config.fallthrough == Fallthrough(("in-addr.arpa.", "ip6.arpa."))
    assert config.ttl == 30


def test_primary_zone_is_the_first_forward_zone() -> None:
    config = parsed("kubernetes in-addr.arpa cluster.local")
    assert config.primary_zone == "cluster.local."


def test_options() -> None:
    config = parsed(
        "kubernetes {\n namespaces a b\n labels app in (x, y),tier!=db\n endpoint_pod_names\n"
        " noendpoints\n ignore empty_service\n startup_timeout 2s\n apiserver_qps 5.5\n"
        " apiserver_burst 10\n apiserver_max_inflight 3\n pods verified\n}"
    )
    assert config.namespaces == frozenset({"a", "b"})
    assert config.labels == "app in (x, y),tier!=db"
    assert config.endpoint_pod_names and config.noendpoints and config.ignore_empty_service
    assert config.startup_timeout == 2.0
    assert (config.api_qps, config.api_burst, config.api_max_inflight) == (5.5, 10, 3)
    assert config.pods == "verified"


@pytest.mark.parametrize(
    ("body", "position", "message"),
    [
        ("kubernetes in-addr.arpa", "2:1", "non-reverse zone name must be used"),
        ("kubernetes {\n ttl 4000\n}", "3:6", "ttl must be in range [0, 3600]: 4000"),
        ("kubernetes {\n ttl x\n}", "3:6", 'strconv.Atoi: parsing "x": invalid syntax'),
        ("kubernetes {\n pods some\n}", "3:7", "wrong value for pods: some"),
        ("kubernetes {\n ignore stuff\n}", "3:9", "unable to parse ignore value: 'stuff'"),
        ("kubernetes {\n labels a=b=c\n}", "3:9", "unable to parse label selector value"),
        ("kubernetes {\n color blue\n}", "3:2", "unknown property 'color'"),
        ("kubernetes {\n endpoint_pod_names yes\n}", "3:21", "Wrong argument count"),
        ("kubernetes {\n tls a b\n}", "3:2", "Wrong argument count"),
        ("kubernetes {\n apiserver_qps -1\n}", "3:16", "apiserver_qps must be >= 0"),
        ("kubernetes {\n startup_timeout soon\n}", "3:18", "invalid duration 'soon'"),
        ("kubernetes {\n zonal\n}", "3:2", "'zonal' is not supported"),
        (
            "kubernetes {\n namespaces a\n namespace_labels x=y\n}",
            "2:1",
            "namespaces and namespace_labels cannot both be set",
        ),
        ("kubernetes\nkubernetes", "3:1", "plugin/kubernetes"),
    ],
)
def test_setup_errors(body: str, position: str, message: str) -> None:
    text = f"cluster.local {{\n{body}\n}}\n"
    with pytest.raises(CorefileError) as caught:
        load_config(text)
    error = str(caught.value)
    assert error.startswith(f"Corefile:{position} - "), error
    assert message in error


def test_not_in_a_cluster_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(CorefileError, match=r"Corefile:2:1 - plugin/kubernetes: not running in"):
        load_config("cluster.local {\nkubernetes\n}\n")


def test_missing_kubeconfig_is_a_setup_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CorefileError, match=r"Corefile:3:13 - plugin/kubernetes: kubeconfig "):
        load_config(f"cluster.local {{\nkubernetes {{\n kubeconfig {missing}\n}}\n}}\n")


def test_kubeconfig_wins_over_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts:\n- name: c\n  context: {cluster: k, user: u}\n"
        "clusters:\n- name: k\n  cluster: {server: 'http://127.0.0.1:1'}\n"
        "users:\n- name: u\n  user: {token: abc}\n"
    )
    config = load_config(
        "cluster.local {\nkubernetes {\n endpoint http://127.0.0.9:9\n"
        f" kubeconfig {path}\n}}\n}}\n"
    )
    plugin = config.find("kubernetes")[0]
    connection = plugin.config.connection  # type: ignore[attr-defined]
    assert connection.server == "http://127.0.0.1:1"
    assert connection.token == "abc"
