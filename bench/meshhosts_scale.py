"""How long a big mesh table takes to load and how much memory it holds.

    python bench/meshhosts_scale.py                    # 50,000 Services, both formats
    python bench/meshhosts_scale.py -n 10000 -f nametable-json

Each format runs in a fresh child process, which generates the file (with
the test-side generator), then does exactly what a reload does: read and
parse the file, then merge the table and prepare every answer. It reports the time
of each step and the resident memory the prepared table holds once the
parsed sources are dropped (and the peak during the load). Targets from the
meshhosts issue: under 5 s and under 300 MB for 50,000 Services.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("nametable-json", "manifests-json", "manifests-yaml")
TARGET_SECONDS = 5.0
TARGET_MB = 300.0


def rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 1e6


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1000
    return 0.0


def measure(count: int, fmt: str) -> dict[str, float | int | str]:
    """One measurement, in this process (the child)."""
    sys.path.insert(0, str(ROOT))
    from pycorefile_plugins.meshhosts._parse import MeshHostsConfig
    from pycorefile_plugins.meshhosts._plugin import load_sources, prepare_table
    from tests.plugins.test_meshhosts_scale import write_services

    with tempfile.TemporaryDirectory() as tmp:
        path = write_services(Path(tmp), count, fmt)
        size_mb = path.stat().st_size / 1e6
        gc.collect()
        base = rss_mb()
        t0 = time.perf_counter()
        sources = load_sources([str(path)])
        t1 = time.perf_counter()
        t2 = time.perf_counter()
        prepared = prepare_table(sources, MeshHostsConfig(namespace="ns1"), {})
        t3 = time.perf_counter()
        peak = peak_rss_mb() - base
        del sources
        gc.collect()
        held = rss_mb() - base
    return {
        "format": fmt,
        "services": count,
        "file_mb": round(size_mb, 1),
        "parse_s": round(t1 - t0, 2),
        "prepare_s": round(t3 - t2, 2),
        "total_s": round(t3 - t0, 2),
        "held_mb": round(held, 1),
        "peak_mb": round(peak, 1),
        "names": len(prepared.known),
        "answers": len(prepared.answers),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--services", type=int, default=50_000)
    parser.add_argument("-f", "--format", choices=FORMATS, action="append")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    formats = args.format or list(FORMATS)
    if args.child:
        print(json.dumps(measure(args.services, formats[0])))
        return 0
    failed = False
    print(
        "| format | services | file MB | parse s | merge + prepare s | total s | "
        "table MB | peak MB | names | answers |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for fmt in formats:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "-n", str(args.services), "-f", fmt],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        r = json.loads(out.stdout)
        print(
            f"| {r['format']} | {r['services']:,} | {r['file_mb']} | {r['parse_s']} | "
            f"{r['prepare_s']} | {r['total_s']} | {r['held_mb']} | "
            f"{r['peak_mb']} | {r['names']:,} | {r['answers']:,} |"
        )
        if float(r["total_s"]) > TARGET_SECONDS or float(r["peak_mb"]) > TARGET_MB:
            failed = True
    print(
        f"\ntargets: under {TARGET_SECONDS} s and {TARGET_MB} MB" + (" — MISSED" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
