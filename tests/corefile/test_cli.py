"""The command line: ``-dump`` prints the parsed Corefile, errors exit 1 cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pycorefile.corefile import blocks_to_json, load_corefile

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pycorefile", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def test_dump_prints_the_parsed_corefile(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    (tmp_path / "extra.conf").write_text("cache 30\n")
    conf.write_text(
        "(common) {\n  log\n}\n{$ZONE}:1053 {\n  import common\n  import extra.conf\n"
        "  forward . 1.1.1.1 {\n    max_fails 3\n  }\n  unknown_plugin x\n}\n"
    )
    result = run("-conf", str(conf), "-dump", env={"ZONE": "example.org"})
    assert result.returncode == 0, result.stderr
    dumped = json.loads(result.stdout)
    assert dumped == blocks_to_json(load_corefile(str(conf), env={"ZONE": "example.org"}))
    assert dumped[0]["keys"] == ["example.org:1053"]
    assert [d["name"] for d in dumped[0]["directives"]] == [
        "log",
        "cache",
        "forward",
        "unknown_plugin",
    ]
    assert dumped[0]["directives"][1]["file"] == str(tmp_path / "extra.conf")


def test_dump_is_indented_json(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(". {\n  whoami\n}\n")
    result = run("-conf", str(conf), "-dump")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == json.dumps(blocks_to_json(load_corefile(str(conf))), indent=2)


def test_a_syntax_error_exits_1_with_the_position(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(". {\n  whoami }\n")
    result = run("-conf", str(conf), "-dump")
    assert result.returncode == 1
    assert f"{conf}:2:10 - Unexpected '}}' because no matching opening brace" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_an_error_in_an_imported_file_names_that_file(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(". {\n  import bad.conf\n}\n")
    (tmp_path / "bad.conf").write_text("log\nforward . }\n")
    result = run("-conf", str(conf), "-dump")
    assert result.returncode == 1
    assert f"{tmp_path / 'bad.conf'}:2:11 - Unexpected '}}'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_import_exits_1(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(". {\n  import nothere.conf\n}\n")
    result = run("-conf", str(conf), "-dump")
    assert result.returncode == 1
    assert f"{conf}:2:10 - File to import not found: nothere.conf" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_reports_syntax_errors_too(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text("a, {\n}\n")
    result = run("-conf", str(conf), "-validate")
    assert result.returncode == 1
    assert f"{conf}:1:4 - Expected another address" in result.stderr
    assert "Traceback" not in result.stderr


def test_dump_with_an_import_matching_nothing_prints_json_and_warns_on_stderr(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(". {\n  import nothing-here-*.conf\n  whoami\n}\n")
    result = run("-conf", str(conf), "-dump")
    assert result.returncode == 0, result.stderr
    dumped = json.loads(result.stdout)
    assert [d["name"] for d in dumped[0]["directives"]] == ["whoami"]
    assert "No files matching import glob pattern" in result.stderr
    assert "No files matching" not in result.stdout
