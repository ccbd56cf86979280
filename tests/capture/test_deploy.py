"""The deployment files under deploy/ agree with each other and with the capture command."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pycorefile.capture._cli import _parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def pod_documents() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "pod.yaml").read_text()))
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def capture_args(command: list[str]) -> Any:
    """Parse a ``pycorefile capture ...`` command line exactly as the command would."""
    assert command[:2] == ["pycorefile", "capture"], command
    return _parser().parse_args(command[2:])


def test_pod_capture_exempts_exactly_the_sidecar() -> None:
    pod = pod_documents()["Pod/app"]["spec"]
    capture, sidecar = pod["initContainers"]
    args = capture_args(capture["command"])
    assert args.command == "install"
    # The capture runs first, as root with NET_ADMIN and nothing else.
    caps = capture["securityContext"]["capabilities"]
    assert capture["securityContext"]["runAsUser"] == 0
    assert caps == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    # pycorefile is a native sidecar running as the exempt uid and gid ...
    assert sidecar["restartPolicy"] == "Always"
    assert args.uid == [sidecar["securityContext"]["runAsUser"]]
    assert args.gid == [str(sidecar["securityContext"]["runAsGroup"])]
    # ... and no other container shares them (its DNS would escape capture).
    for container in pod["containers"]:
        context = container.get("securityContext", {})
        assert context.get("runAsUser") not in args.uid
        assert str(context.get("runAsGroup")) not in args.gid


def test_pod_corefile_listens_where_capture_redirects() -> None:
    documents = pod_documents()
    pod = documents["Pod/app"]["spec"]
    args = capture_args(pod["initContainers"][0]["command"])
    corefile = documents["ConfigMap/pycorefile"]["data"]["Corefile"]
    assert re.search(rf"^\.:{args.port} {{$", corefile, re.MULTILINE)
    assert "bind 127.0.0.1 ::1" in corefile


def test_systemd_units_agree_on_user_and_port() -> None:
    service = unit("pycorefile.service")
    user = service["Service"]["User"]
    corefile = (DEPLOY / "vm" / "Corefile").read_text()
    port = int(re.search(r"^\.:(\d+) \{$", corefile, re.MULTILINE)[1])  # type: ignore[index]
    assert "bind 127.0.0.1 ::1" in corefile
    capture = unit("pycorefile-capture.service")["Service"]
    fail_open = unit("fail-open.conf")["Service"]
    installs = [capture["ExecStart"], capture["ExecReload"], fail_open["ExecStartPost"]]
    for line in installs:
        binary, *rest = shlex.split(line.lstrip("+"))
        assert binary == service["Service"]["ExecStart"].split()[0]
        args = capture_args(["pycorefile", *rest])
        assert args.command == "install"
        assert args.user == [user]
        assert args.port == port
    for line in (capture["ExecStop"], fail_open["ExecStopPost"]):
        assert shlex.split(line.lstrip("+"))[1:] == ["capture", "remove"]
    sysusers = (DEPLOY / "systemd" / "pycorefile.sysusers.conf").read_text()
    assert re.search(rf"^u {user} ", sysusers, re.MULTILINE)


def validate(
    corefile: str, tmp_path: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "Corefile"
    path.write_text(corefile)
    return subprocess.run(
        [sys.executable, "-m", "pycorefile", "-conf", str(path), "-validate"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_the_corefiles_validate(tmp_path: Path) -> None:
    # The paths the files name exist on the target machines, not here: point them at
    # stand-ins with the same content shape.
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    table = pod_documents()["ConfigMap/pycorefile-mesh"]["data"]["nametable.json"]
    (mesh / "nametable.json").write_text(table)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\n")
    pod_corefile = pod_documents()["ConfigMap/pycorefile"]["data"]["Corefile"]
    vm_corefile = (DEPLOY / "vm" / "Corefile").read_text()
    for text in (pod_corefile, vm_corefile):
        text = text.replace("/etc/pycorefile/mesh", str(mesh))
        text = text.replace("/run/systemd/resolve/resolv.conf", str(resolv))
        text = text.replace("/etc/resolv.conf", str(resolv))
        done = validate(text, tmp_path, {"POD_NAMESPACE": "default"})
        assert done.returncode == 0, done.stderr
