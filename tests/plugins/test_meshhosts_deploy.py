"""deploy/kubernetes/mesh-*.yaml: the Corefiles load, and RBAC grants what meshhosts watches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pycorefile import load_config
from pycorefile_plugins.meshhosts import MeshHostsPlugin

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def documents(name: str) -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOY / name).read_text())
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def granted(role: dict[str, Any]) -> set[tuple[str, str]]:
    """(apiGroup, resource) pairs a ClusterRole lets list and watch."""
    out: set[tuple[str, str]] = set()
    for rule in role["rules"]:
        if {"list", "watch"} <= set(rule["verbs"]):
            out.update((g, r) for g in rule["apiGroups"] for r in rule["resources"])
    return out


WATCHED = {
    ("", "services"),
    ("discovery.k8s.io", "endpointslices"),
    ("networking.istio.io", "serviceentries"),
}


def loaded(corefile: str, state_dir: Path) -> MeshHostsPlugin:
    # In a pod, `kubernetes` connects in-cluster and the state directory is a volume; here
    # the same block points at loopback and a temporary directory.
    text = corefile.replace("kubernetes\n", "kubernetes\n            endpoint http://127.0.0.1:1\n")
    for volume in ("/var/run/pycorefile", "/var/lib/pycorefile"):
        text = text.replace(volume, str(state_dir))
    (plugin,) = load_config(text).find("meshhosts")
    assert isinstance(plugin, MeshHostsPlugin)
    return plugin


def test_the_sidecar_reads_the_api_in_its_own_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rbac = documents("mesh-rbac.yaml")
    docs = documents("mesh-sidecar.yaml")
    monkeypatch.setenv("POD_NAMESPACE", "shop")
    plugin = loaded(docs["ConfigMap/pycorefile-mesh-sidecar"]["data"]["Corefile"], tmp_path)
    assert plugin.config.kubernetes is not None and not plugin.config.kubernetes.pods
    assert plugin.config.namespace == "shop"
    pod = docs["Pod/app"]["spec"]
    env = pod["initContainers"][0]["env"][0]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    binding = docs["ClusterRoleBinding/pycorefile-mesh-shop"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    assert granted(rbac[f"ClusterRole/{binding['roleRef']['name']}"]) >= WATCHED


def test_the_daemonset_places_each_client_by_its_pod(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rbac = documents("mesh-rbac.yaml")
    docs = documents("mesh-node-local.yaml")
    monkeypatch.setenv("KUBE_DNS_SERVICE_HOST", "10.96.0.10")
    corefile = docs["ConfigMap/pycorefile-node"]["data"]["Corefile"]
    plugin = loaded(corefile.replace("169.254.20.10", "127.0.0.1"), tmp_path)
    assert plugin.config.client_namespace and plugin.config.kubernetes is not None
    assert plugin.config.kubernetes.pods
    account = docs["DaemonSet/pycorefile-node"]["spec"]["template"]["spec"]["serviceAccountName"]
    roles: set[tuple[str, str]] = set()
    for key, doc in docs.items():
        if key.startswith("ClusterRoleBinding/") and doc["subjects"][0]["name"] == account:
            roles |= granted(rbac[f"ClusterRole/{doc['roleRef']['name']}"])
    assert roles >= WATCHED | {("", "pods")}
