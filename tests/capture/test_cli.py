"""The capture command line and the proxy probe, without touching any rules."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pycorefile.capture import main
from pycorefile.capture._probe import probe
from pycorefile.testing import serve

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pycorefile ARGS``: also checks the hook in the main command line."""
    return subprocess.run(
        [sys.executable, "-m", "pycorefile", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_dry_run_prints_both_backends_rules() -> None:
    done = run("capture", "install", "--uid", "15053", "--port", "1053", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "meta skuid 15053 return" in done.stdout
    assert "redirect to :1053" in done.stdout
    assert "-A PYCOREFILE_OUTPUT -m owner --uid-owner 15053 -j RETURN" in done.stdout


def test_install_without_an_exclusion_is_refused_with_the_reason() -> None:
    done = run("capture", "install", "--dry-run")
    assert done.returncode == 1
    assert "loop back to itself" in done.stderr


def test_users_and_groups_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["install", "--user", "nobody", "--gid", "nogroup", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "meta skuid 65534 return" in out
    assert "meta skgid 65534 return" in out


def test_unknown_user_says_to_use_the_uid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["install", "--user", "no-such-user-here", "--dry-run"]) == 1
    assert "give --uid N" in capsys.readouterr().err


def test_only_resolv_conf_reads_the_name_servers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search svc.cluster.local\nnameserver 10.96.0.10\n")
    args = ["install", "--uid", "7", "--only-resolv-conf", "--resolv-conf", str(resolv)]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ip daddr 10.96.0.10 udp dport 53" in out
    assert "ip6" not in out.split("# iptables")[0]
    missing = ["install", "--uid", "7", "--only-resolv-conf", "--resolv-conf", "/nonexistent"]
    assert main([*missing, "--dry-run"]) == 1
    assert "cannot read /nonexistent" in capsys.readouterr().err


def test_probe_of_a_closed_port_is_refused_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    result = probe(LOOPBACK, port, "udp", timeout=1.0)
    assert not result.answered
    assert "refused" in result.detail
    assert not probe(LOOPBACK, port, "tcp", timeout=1.0).answered


def test_probe_of_a_silent_port_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        result = probe(LOOPBACK, silent.getsockname()[1], "udp", timeout=0.3)
    assert not result.answered
    assert result.detail == "no reply within 0.3 s"


async def test_probe_gets_an_answer_from_pycorefile_over_udp_and_tcp() -> None:
    corefile = ".:0 {\n bind 127.0.0.1\n whoami\n}\n"
    async with serve(corefile) as server:
        port = server.port()
        for protocol in ("udp", "tcp"):
            result = await trio.to_thread.run_sync(probe, LOOPBACK, port, protocol, 2.0)
            assert result.answered, result.detail
            assert result.detail.startswith("answered NOTIMP")  # the STATUS-opcode probe
            assert result.endpoint == f"127.0.0.1:{port}"
