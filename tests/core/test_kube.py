"""pycorefile.kube: connection settings, trimmed records, watch event lines (no server)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pycorefile import kube


def write_kubeconfig(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


CONFIG = """
apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: dev
  context: {cluster: one, user: alice, namespace: team}
- name: ops
  context: {cluster: two, user: bob}
clusters:
- name: one
  cluster: {server: 'https://10.9.9.9:6443/', certificate-authority: ca.pem}
- name: two
  cluster: {server: 'https://two:6443', insecure-skip-tls-verify: true, tls-server-name: kube}
users:
- name: alice
  user: {tokenFile: token}
- name: bob
  user: {client-certificate-data: CERT, client-key-data: KEY}
"""


def test_kubeconfig_current_context(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", CONFIG)
    conn = kube.from_kubeconfig(str(path))
    assert conn.server == "https://10.9.9.9:6443"
    assert conn.ca_file == str(tmp_path / "ca.pem")  # relative to the file
    assert conn.token_file == str(tmp_path / "token")
    assert conn.namespace == "team"


def test_kubeconfig_named_context_and_inline_data(tmp_path: Path) -> None:
    body = CONFIG.replace("CERT", base64.b64encode(b"cert-pem").decode()).replace(
        "KEY", base64.b64encode(b"key-pem").decode()
    )
    conn = kube.from_kubeconfig(str(write_kubeconfig(tmp_path / "config", body)), "ops")
    assert conn.insecure and conn.tls_server_name == "kube"
    assert conn.client_cert_data == "cert-pem" and conn.client_key_data == "key-pem"
    assert conn.namespace == "default"


def test_kubeconfig_files_merge_first_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_kubeconfig(
        tmp_path / "a",
        "clusters:\n- name: one\n  cluster: {server: 'https://first'}\n",
    )
    second = write_kubeconfig(tmp_path / "b", CONFIG)
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}:{tmp_path / 'missing'}")
    conn = kube.from_kubeconfig()
    assert conn.server == "https://first"
    assert conn.token_file == str(tmp_path / "token")


@pytest.mark.parametrize(
    ("body", "context", "message"),
    [
        (CONFIG, "nope", "no context 'nope'"),
        (CONFIG.replace("current-context: dev", ""), None, "no current-context"),
        (CONFIG.replace("tokenFile: token", "exec: {command: aws}"), None, "exec is not supported"),
        ("- a list", None, "not a mapping"),
        ("a: [", None, "kubeconfig"),
    ],
)
def test_kubeconfig_errors(tmp_path: Path, body: str, context: str | None, message: str) -> None:
    path = write_kubeconfig(tmp_path / "config", body)
    with pytest.raises(kube.ConfigError, match=message):
        kube.from_kubeconfig(str(path), context)


def test_in_cluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0k3n\n")
    (tmp_path / "namespace").write_text("kube-system")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    conn = kube.in_cluster(env, str(tmp_path))
    assert conn.server == "https://[fd00::1]:443"
    assert conn.token_file == str(tmp_path / "token")
    assert conn.ca_file is None  # no ca.crt there
    assert conn.namespace == "kube-system"


def test_not_in_cluster(tmp_path: Path) -> None:
    with pytest.raises(kube.ConfigError, match="KUBERNETES_SERVICE_HOST"):
        kube.in_cluster({}, str(tmp_path))
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(kube.ConfigError, match="no service account token"):
        kube.in_cluster(env, str(tmp_path))


def test_endpoint() -> None:
    assert kube.from_endpoint("10.0.0.1:6443").server == "https://10.0.0.1:6443"
    conn = kube.from_endpoint("http://127.0.0.1:8080/", "c.pem", "k.pem", "ca.pem")
    assert conn.server == "http://127.0.0.1:8080"
    assert (conn.client_cert, conn.client_key, conn.ca_file) == ("c.pem", "k.pem", "ca.pem")


# -- Records ----------------------------------------------------------------------------


def test_trim_service_dual_stack_and_defaults() -> None:
    record = kube.trim_service({
        "metadata": {"name": "web", "namespace": "ns", "annotations": {"big": "x" * 1000}},
        "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "fd00::1"]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
    })  # fmt: skip
    assert record == kube.ServiceRecord(
        "ns", "web", "ClusterIP", ("10.0.0.1", "fd00::1"), "",
        (kube.PortRecord("", "", -1),), ("192.0.2.1",),
    )  # fmt: skip
    headless = kube.trim_service(
        {"metadata": {"name": "h", "namespace": "ns"}, "spec": {"clusterIP": "None"}}
    )
    assert headless is not None and headless.headless
    assert kube.trim_service({"metadata": {"name": "x"}}) is None


def test_trim_endpoint_slice_keeps_ready_addresses() -> None:
    record = kube.trim_endpoint_slice({
        "metadata": {"name": "s", "namespace": "ns", "labels": {kube.SERVICE_NAME_LABEL: "web"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.1.0.1"], "hostname": "a", "nodeName": "n1",
             "targetRef": {"name": "web-0"}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": False}},
            {"addresses": ["10.1.0.3"], "targetRef": {"name": "p" * 64}},
        ],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    })  # fmt: skip
    assert record is not None
    assert record.service == "web"
    assert record.ports == (kube.PortRecord("http", "TCP", 80),)
    assert record.addresses == (
        kube.EndpointAddress("10.1.0.1", "a", "n1", "web-0"),
        kube.EndpointAddress("10.1.0.3", "", "", ""),  # a pod name too long for a label
    )
    empty = kube.trim_endpoint_slice({"metadata": {"name": "e", "namespace": "ns"}})
    assert empty is not None and empty.ports == (kube.PortRecord("", "", -1),)


def test_trim_pod() -> None:
    running = {"metadata": {"name": "p", "namespace": "ns"}, "status": {"podIP": "10.2.0.1"}}
    assert kube.trim_pod(running) == kube.PodRecord("ns", "p", "10.2.0.1")
    leaving = {**running, "metadata": {"name": "p", "namespace": "ns", "deletionTimestamp": "x"}}
    assert kube.trim_pod(leaving) is None
    assert kube.trim_pod({"metadata": {"name": "p"}, "status": {}}) is None


# -- Watch bodies -------------------------------------------------------------------------


def test_line_splitter_across_chunks() -> None:
    splitter = kube.LineSplitter()
    assert splitter.feed(b'{"type": "ADDED", "obj') == []
    assert splitter.feed(b'ect": {}}\n\n{"type": "BOOK') == [{"type": "ADDED", "object": {}}]
    assert splitter.feed(b'MARK", "object": {}}') == []
    assert splitter.end() == [{"type": "BOOKMARK", "object": {}}]


def test_line_splitter_refuses_bad_and_oversize_events() -> None:
    with pytest.raises(kube.ApiError, match="unreadable"):
        kube.LineSplitter().feed(b"not json\n")
    with pytest.raises(kube.ApiError, match="not a JSON object"):
        kube.LineSplitter().feed(b"[1]\n")
    splitter = kube.LineSplitter(max_line=10)
    with pytest.raises(kube.ApiError, match="over 10 bytes"):
        splitter.feed(b"x" * 11)


def test_store_sink() -> None:
    store: kube.Store[kube.NamespaceRecord] = kube.Store()
    store.replace({("", "a"): kube.NamespaceRecord("a")})
    store.upsert(("", "b"), kube.NamespaceRecord("b"))
    store.remove(("", "a"))
    store.remove(("", "zz"))
    assert list(store.records) == [("", "b")]
    assert store.changes == 3


@pytest.mark.parametrize(
    "selector", ["a=b", "a==b", "a!=b", "a", "!a", "a in (b,c)", "a notin (b)", "k8s.io/x=y,z"]
)
def test_label_selectors_accepted(selector: str) -> None:
    assert kube.check_selector(selector)


@pytest.mark.parametrize("selector", ["a=b=c", "in (x)", "a in b", "=b", "a,,b"])
def test_label_selectors_refused(selector: str) -> None:
    with pytest.raises(ValueError):
        kube.check_selector(selector)


def test_label_selector_spaces_are_normalised() -> None:
    assert kube.check_selector("a  in (b,c) ,  !d") == "a in (b,c),!d"
