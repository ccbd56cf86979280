"""How pycorefile installs: the import names, type information for plugin authors, and
third-party plugins found beside the built-ins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python(code: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_built_ins_import_as_pycorefile_plugins_and_nothing_claims_plugins(
    tmp_path: Path,
) -> None:
    # From a directory that is not the checkout, only the installed names exist.
    found = python(
        "import importlib.util as u;"
        "print(u.find_spec('pycorefile_plugins') is not None, u.find_spec('plugins') is None)",
        cwd=tmp_path,
    )
    assert found == "True True"
    module = python(
        "import pycorefile_plugins.cache as c; print(c.CachePlugin.__module__)", tmp_path
    )
    assert module.startswith("pycorefile_plugins.cache")


def mypy(target: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file=",
            str(target),
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_a_third_party_plugin_type_checks_against_the_installed_package(tmp_path: Path) -> None:
    # The example plugin is clean under --strict, seen from outside the checkout ...
    rename = ROOT / "examples" / "rename" / "pycorefile_rename"
    clean = mypy(rename, tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # ... and that is because mypy sees pycorefile's types, not Any: a misuse is caught.
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            from pycorefile.plugin import Plugin, Wrapper

            directive: int = Plugin.name
            wrapper: str = Wrapper
            """
        )
    )
    wrong = mypy(probe, tmp_path)
    assert wrong.returncode == 1
    assert 'has type "str", variable has type "int"' in wrong.stdout
    assert 'type[Wrapper]", variable has type "str"' in wrong.stdout


def test_plugins_lists_a_third_party_plugin_with_its_distribution(tmp_path: Path) -> None:
    # An installed distribution is a dist-info folder on the path: make one for the
    # example plugin, as pip would, and put both on PYTHONPATH.
    dist = tmp_path / "pycorefile_rename-1.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pycorefile-rename\nVersion: 1.0.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[pycorefile.plugins]\nrename = pycorefile_rename:RenamePlugin\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path), str(ROOT / "examples" / "rename"), env.get("PYTHONPATH", "")]
    )
    out = subprocess.run(
        [sys.executable, "-m", "pycorefile", "-plugins"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()}
    assert rows["rename"] == "pycorefile-rename"
    assert rows["cache"] == "pycorefile"
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names.index("rename") < names.index("cache")  # its declared place: before cache
