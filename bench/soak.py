"""Soak test: pycorefile under dnsperf at saturation, then below it, on loopback.

    python bench/soak.py                 # 60 s at saturation, 20 s at 70 % of it
    python bench/soak.py -d 30 --write   # shorter; record the figures in docs/performance.md

Passes when the server never dies, its resident memory stops growing (the
last third of the saturated run grows less than 5 %), and no query is lost
below saturation. The server runs the sidecar chain (cache, meshhosts,
forward) against a dnsmasq upstream, with every name unique half of the time
so that the cache fills and evicts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    CLIENT_CORE,
    ROOT,
    Data,
    free_port,
    need,
    peak_rss_mb,
    process,
    upstream,
    wait_answering,
)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_dnsperf(port: int, queries: Path, seconds: float, qps: float | None) -> dict[str, float]:
    args = ["taskset", "-c", CLIENT_CORE, need("dnsperf", "dnsperf"), "-s", "127.0.0.1",
            "-p", str(port), "-d", str(queries), "-l", str(seconds), "-c", "4", "-q", "500",
            "-t", "2"]
    if qps:
        args += ["-Q", str(int(qps))]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    stats: dict[str, float] = {}
    for line in out.splitlines():
        if "Queries completed:" in line:
            stats["completed"] = float(line.split()[2])
        elif "Queries lost:" in line:
            stats["lost"] = float(line.split()[2])
        elif "Queries per second:" in line:
            stats["qps"] = float(line.split()[3])
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--duration", type=float, default=60.0)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pycorefile-soak-") as tmp:
        data = Data(Path(tmp))
        lines = []
        for i in range(200_000):
            if i % 2:
                lines.append(f"u{i}.miss.bench.test A")  # unique: fills the cache
            elif i % 4 == 0:
                lines.append(f"svc{i % 10_000}.ns{i % 10 + 1}.svc.cluster.local A")
            else:
                lines.append(f"name{i % 1000}.bench.test AAAA")
        queries = data.queries("soak", lines)
        with upstream(data) as up:
            port, metrics = free_port(), free_port()
            conf = data.dir / "Corefile.soak"
            conf.write_text(
                f".:{port} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{metrics}\n"
                f"    errors\n    cache {{\n        success 10000\n        denial 10000\n    }}\n"
                f"    meshhosts cluster.local {{\n        file {data.mesh_table}\n"
                f"        fallthrough\n    }}\n    forward . 127.0.0.1:{up.port}\n}}\n"
            )
            with process([sys.executable, "-m", "pycorefile", "-conf", str(conf), "-quiet"],
                         stdout=subprocess.DEVNULL, cwd=str(ROOT)) as proc:
                wait_answering(port)
                samples: list[tuple[float, float]] = []
                stop = threading.Event()

                def sample() -> None:
                    start = time.monotonic()
                    while not stop.wait(1.0):
                        samples.append((time.monotonic() - start, rss_mb(proc.pid)))

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                saturated = run_dnsperf(port, queries, args.duration, None)
                stop.set()
                sampler.join()
                alive = proc.poll() is None
                below_rate = saturated.get("qps", 0) * 0.7
                below = run_dnsperf(port, queries, max(args.duration / 3, 10), below_rate)
                alive = alive and proc.poll() is None
                peak = peak_rss_mb(proc.pid)
    third = [rss for t, rss in samples if t >= args.duration * 2 / 3]
    growth = (third[-1] - third[0]) / third[0] * 100 if len(third) > 1 and third[0] else 0.0
    ok = alive and growth < 5 and below.get("lost", 1) == 0
    report = (
        f"Soak, {args.duration:g} s at saturation (dnsperf `-c 4 -q 500`, cache filling with "
        f"unique names): {saturated.get('qps', 0):,.0f} qps, "
        f"{saturated.get('lost', 0):.0f} lost (expected at saturation); then "
        f"{max(args.duration / 3, 10):g} s at {below_rate:,.0f} qps (70 %): "
        f"{below.get('lost', 0):.0f} lost. Resident memory: {samples[0][1] if samples else 0:.0f}"
        f" MB after 1 s, {samples[-1][1] if samples else 0:.0f} MB at the end "
        f"({growth:+.1f} % over the last third), peak {peak:.0f} MB. Server alive: {alive}. "
        f"Verdict: {'pass' if ok else 'FAIL'}."
    )
    print(report)
    if args.write:
        doc = ROOT / "docs" / "performance.md"
        text = doc.read_text()
        begin, end = "<!-- soak:begin -->", "<!-- soak:end -->"
        if begin in text:
            head, _, rest = text.partition(begin)
            _, _, tail = rest.partition(end)
            doc.write_text(f"{head}{begin}\n{report}\n{end}{tail}")
        else:
            doc.write_text(text + f"\n## Soak\n\n{begin}\n{report}\n{end}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
