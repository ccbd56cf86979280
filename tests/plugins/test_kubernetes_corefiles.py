"""The Corefiles Kubernetes distributions ship set up unchanged (as far as their plugins exist).

Each is the distribution's own text. Directives of plugins this server does not
have (yet) are left out, with their blocks; everything else, the *kubernetes*
line first, must be accepted as is, in a pod's environment (in-cluster
settings from the service account).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pycorefile import kube, load_config
from pycorefile._registry import Registry

from .test_public_corefiles import KUBEADM as PUBLIC_KUBEADM

ADDON = """.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
        max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"""

KUBEADM = PUBLIC_KUBEADM  # kubeadm's default, one copy for both test files

K3S = """.:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    hosts /etc/coredns/NodeHosts {
      ttl 60
      reload 15s
      fallthrough
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}
"""

RKE2 = """.:53 {
    errors 
    health  {
        lameduck 5s
    }
    ready 
    kubernetes   cluster.local  cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus   0.0.0.0:9153
    forward   . /etc/resolv.conf
    cache   30
    loop 
    reload 
    loadbalance 
}
"""  # noqa: W291  (the chart's own trailing spaces)

MINIKUBE = """.:53 {
    log
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    hosts {
       192.168.49.1 host.minikube.internal
       fallthrough
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"""


def known_plugins_only(text: str, registry: Registry) -> str:
    """The Corefile without the directives (and their blocks) of plugins not installed."""
    out: list[str] = []
    depth = 0
    skip_to = -1
    for line in text.splitlines():
        words = line.split()
        opening = depth
        depth += line.count("{") - line.count("}")
        if skip_to >= 0:
            if depth <= skip_to:
                skip_to = -1
            continue
        if opening == 1 and words and words[0] != "}" and words[0] not in registry:
            if depth > opening:
                skip_to = opening
            continue
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(
    "corefile",
    [ADDON, KUBEADM, K3S, RKE2, MINIKUBE],
    ids=["addon", "kubeadm", "k3s", "rke2", "minikube"],
)
def test_distribution_corefile_sets_up(
    corefile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("token\n")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    registry = Registry.discover()
    text = known_plugins_only(corefile, registry)
    assert "kubernetes" in text
    config = load_config(text, registry=registry)
    plugin = config.find("kubernetes")[0]
    connection = plugin.config.connection  # type: ignore[attr-defined]
    assert connection.server == "https://10.96.0.1:443"
    assert connection.token_file == str(tmp_path / "token")


@pytest.mark.parametrize("manifest", ["cluster-dns.yaml", "node-local.yaml"])
def test_deployed_corefiles_set_up(
    manifest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    (tmp_path / "token").write_text("token\n")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    path = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / manifest
    documents = list(yaml.safe_load_all(path.read_text()))
    text = next(d["data"]["Corefile"] for d in documents if d["kind"] == "ConfigMap")
    config = load_config(text)
    assert config.find("kubernetes")
