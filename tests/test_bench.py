"""The benchmark scripts still run end to end (a smoke test: no speed is asserted here)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from pycorefile._app import load_config
from pycorefile._conn import ConnectionBudget
from pycorefile.corefile import parse_corefile

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_run_measures_pycorefile_beside_dnsmasq() -> None:
    out = run(
        "bench/run.py", "-s", "cache", "-s", "deployed", "-s", "miss", "-d", "2", "-r", "2",
        "--no-dnslib",
    )  # fmt: skip
    rows = {
        (cells[0], cells[1]): cells
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| scenario")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert set(rows) == {
        ("cache", "pycorefile"),
        ("cache", "dnsmasq"),
        ("deployed", "pycorefile"),
        ("deployed", "dnsmasq"),
        ("miss", "pycorefile"),
        ("miss", "dnsmasq"),
    }
    for (scenario, server), cells in rows.items():
        qps = float(cells[2].replace(",", ""))
        assert qps > 100, (scenario, server, cells)
        assert float(cells[8]) > 0, cells  # CPU per query was measured
    assert re.fullmatch(r"\d+\.\d\dx", rows[("cache", "pycorefile")][3])
    assert re.fullmatch(r"\d+\.\d\dx", rows[("deployed", "pycorefile")][3])


def bench_run() -> ModuleType:
    """bench/run.py as a module (the bench scripts are not a package)."""
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def directives(corefile: str) -> list[str]:
    (block,) = parse_corefile(corefile)
    return [d.name for d in block.directives]


def test_the_sidecar_scenarios_run_the_example_corefile_s_plugins(tmp_path: Path) -> None:
    bench = bench_run()
    data = bench.Data(tmp_path)
    example = directives((ROOT / "Corefile.example").read_text())
    with_log = bench.pycorefile_corefile("sidecar+log", 1053, 1054, data, 1055)
    without_log = bench.pycorefile_corefile("sidecar", 1053, 1054, data, 1055)
    assert directives(with_log) == example
    assert directives(without_log) == [name for name in example if name != "log"]
    for text in (with_log, without_log):
        load_config(text, dns_port=1053)  # the bench's data and options set up
    # Without log, autopath's kept answers take the byte-level path; log sees every query.
    assert load_config(without_log, dns_port=1053).blocks[0].known_by == "autopath"
    assert load_config(with_log, dns_port=1053).blocks[0].known_by == ""


def test_the_deployed_scenario_is_the_kubernetes_default_and_takes_the_fast_path(
    tmp_path: Path,
) -> None:
    bench = bench_run()
    text = bench.pycorefile_corefile("deployed", 1053, 1054, bench.Data(tmp_path), 1055)
    # The addon's Corefile less kubernetes, loop and loadbalance (bind keeps it on loopback).
    assert directives(text) == [
        "bind", "errors", "health", "ready", "prometheus", "forward", "cache", "reload",
    ]  # fmt: skip
    config = load_config(text, dns_port=1053)
    (block,) = config.blocks
    assert block.known_by == "cache"  # errors before the cache keeps the byte-level path


def test_memory_fills_the_cache_and_reports() -> None:
    out = run("bench/memory.py", "-n", "300")
    assert re.search(r"cache entries\s+300\b", out), out
    assert re.search(r"RSS, full cache\s+\d+\.\d MB", out), out


def test_reload_stall_measures_both_phases() -> None:
    out = run("bench/reload_stall.py", "-d", "2", "-r", "1")
    rows = [line for line in out.splitlines() if line.startswith(("| steady", "| reloading"))]
    assert len(rows) == 2, out
    for row in rows:
        sent = int(row.split("|")[2].strip().replace(",", ""))
        assert sent > 1000, row  # 2 s at 2,000 a second
    assert re.search(r"\d+ reloads, each \d+ ms", out), out
    assert re.search(r"worst stall while reloading: \d+\.\d ms", out), out


def test_forward_miss_measures_both_ways() -> None:
    for extra in ((), ("--chain-only",)):
        out = run("bench/forward_miss.py", "-n", "50", "-r", "1", *extra)
        result = json.loads(out)
        assert set(result) == {"forward", "errors_cache_forward"}, out
        assert all(r["cpu"] > 0 and r["wall"] > 0 for r in result.values()), out


def test_attack_soak_runs_every_attack_and_the_server_survives() -> None:
    """A few seconds of every attack beside the legitimate load. Whether a legitimate query
    was lost depends on the machine's load, so the verdict is not asserted here; that the
    server is alive, answers over UDP and TCP, logged no traceback and exits cleanly is."""
    done = subprocess.run(
        [sys.executable, "bench/attack_soak.py", "-d", "3", "--probe", "1", "--reload-every", "2",
         "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["verdict"] == ("pass" if done.returncode == 0 else "FAIL")
    server = report["server"]
    assert server["alive"] and server["answering"] and server["clean_exit_on_sigterm"], server
    assert server["tracebacks"] == 0 and not server["loop_detected"], server
    budget = ConnectionBudget.of(file_limit=1024)
    assert report["budget"] == {"dns": budget.dns.limit, "http": budget.http.limit}
    assert report["legit"]["sent"] > 0 and report["legit"]["answered"] > 0, report["legit"]
    assert report["canary"]["sent"] > 0
    attacks = report["attacks"]
    assert set(attacks) == set(report["attacks_run"]) == {
        "resets", "flood", "pipeline", "slowloris", "types", "scrapes", "loop_probes",
        "malformed", "mesh_file", "sigusr1",
    }  # fmt: skip
    assert attacks["resets"]["idle"] > 0
    assert attacks["flood"]["rounds"] > 0
    assert attacks["pipeline"]["clients"] > 0 and attacks["pipeline"]["queries_sent"] > 0
    assert attacks["types"]["sent"] > 0 and attacks["malformed"]["udp_sent"] > 0
    assert attacks["loop_probes"]["sent"] > 0 and attacks["sigusr1"]["sent"] > 0
    assert attacks["mesh_file"]["bad_date"] > 0  # the first rewrite is a damaged one


def test_kubernetes_scale_loads_and_reports() -> None:
    out = run("bench/kubernetes_scale.py", "-s", "300", "-e", "2")
    assert re.search(r"^services\s+300\.000$", out, re.M), out
    assert re.search(r"^endpoints\s+600\.000$", out, re.M), out
    assert re.search(r"^slice_event_ms\s+\d+\.\d+$", out, re.M), out
