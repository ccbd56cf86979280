"""A third-party plugin package, installed from a directory, used from a Corefile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import pytest

from ..process import ServerProcess, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pycorefile-greeting"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The example package installed into a private directory (not the test environment)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return str(target)


def env_with(site: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_third_party_plugin_is_listed_with_its_package(site: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pycorefile", "-plugins"],
        env=env_with(site),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()}
    assert rows["greeting"][1] == "pycorefile-greeting"
    order = list(rows)
    assert order.index("cache") < order.index("greeting") < order.index("forward")


def test_third_party_plugin_serves_from_a_corefile(site: str, tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(f'example.org:{port} {{\n bind 127.0.0.1\n greeting "hi there"\n whoami\n}}\n')
    with ServerProcess(["-conf", str(conf)], env=env_with(site)) as srv:
        srv.wait_for("pycorefile-")
        reply = dns.query.udp(
            dns.message.make_query("example.org", "TXT"), "127.0.0.1", port=port, timeout=3
        )
        assert reply.answer[0][0].strings == (b"hi there",)
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def test_plugin_without_the_package_is_an_unknown_directive(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text('example.org:1053 {\n greeting "hi"\n}\n')
    out = subprocess.run(
        [sys.executable, "-m", "pycorefile", "-conf", str(conf), "-validate"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert f"{conf}:2:2 - Unknown directive 'greeting'" in out.stderr
