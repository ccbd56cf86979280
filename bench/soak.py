"""Soak test: pycorefile under dnsperf at saturation, then below it, on loopback.

    python bench/soak.py                 # 60 s at saturation, 20 s at 70 % of it
    python bench/soak.py -d 30 --write   # shorter; record the figures in docs/reliability.md

Passes when the server never dies, its resident memory stops growing (the
last third of the saturated run grows less than 5 %), no query is lost and
none gets SERVFAIL below saturation, it still answers a mesh name and an
upstream name afterwards, and it exits cleanly on SIGTERM. The server runs
the sidecar chain (errors, cache, meshhosts, forward) against a dnsmasq
upstream, with every name unique half of the time so that the cache fills
and evicts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    Data,
    dnsperf,
    free_port,
    peak_rss_mb,
    pycorefile_process,
    rss_mb,
    still_answers,
    upstream,
    wait_answering,
    write_between_markers,
)

BELOW_SATURATION = 0.7
"""The second run's rate, as a share of the rate reached at saturation."""
GROWTH_LIMIT = 5.0
"""Percent of resident memory the last third of the saturated run may add."""


def growth_percent(samples: list[tuple[float, float]], duration: float) -> float:
    """RSS growth over the last third of the run, from the median of the first three
    samples of that third to the median of its last three (one sample is noisy)."""
    third = [rss for t, rss in samples if t >= duration * 2 / 3]
    if len(third) < 6:
        return 0.0
    start, end = statistics.median(third[:3]), statistics.median(third[-3:])
    return (end - start) / start * 100 if start else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--duration", type=float, default=60.0)
    parser.add_argument("--write", action="store_true", help="record in docs/reliability.md")
    args = parser.parse_args()
    below_seconds = max(args.duration / 3, 10)
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
            text = (
                f".:{port} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{metrics}\n"
                f"    errors\n    cache {{\n        success 10000\n        denial 10000\n    }}\n"
                f"    meshhosts cluster.local {{\n        file {data.mesh_table}\n"
                f"        fallthrough\n    }}\n    forward . 127.0.0.1:{up.port}\n}}\n"
            )
            with pycorefile_process(data.dir / "Corefile.soak", text) as proc:
                wait_answering(port)
                samples: list[tuple[float, float]] = []
                stop = threading.Event()

                def sample() -> None:
                    start = time.monotonic()
                    while not stop.wait(1.0):
                        samples.append((time.monotonic() - start, rss_mb(proc.pid)))

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                saturated = dnsperf(port, queries, args.duration, clients=4, outstanding=500)
                stop.set()
                sampler.join()
                alive = proc.poll() is None
                below_rate = saturated.qps * BELOW_SATURATION
                below = dnsperf(
                    port, queries, below_seconds, clients=4, outstanding=500, qps=below_rate
                )
                alive = alive and proc.poll() is None
                answers = alive and still_answers(port)
                peak = peak_rss_mb(proc.pid) if alive else 0.0
                final = rss_mb(proc.pid) if alive else 0.0
            clean_exit = proc.returncode == 0
    growth = growth_percent(samples, args.duration)
    ok = (
        alive
        and answers
        and clean_exit
        and growth < GROWTH_LIMIT
        and below.lost == 0
        and below.rcodes.get("SERVFAIL", 0) == 0
    )
    report = (
        f"Soak, {args.duration:g} s at saturation (dnsperf `-c 4 -q 500`, half of the names "
        f"new so the cache keeps evicting): {saturated.qps:,.0f} qps, "
        f"{saturated.lost:,} lost (loss is allowed at saturation), "
        f"{saturated.rcodes.get('SERVFAIL', 0):,} SERVFAIL; then {below_seconds:g} s at "
        f"{below_rate:,.0f} qps ({BELOW_SATURATION:.0%}): {below.lost:,} lost, "
        f"{below.rcodes.get('SERVFAIL', 0):,} SERVFAIL. Resident memory: "
        f"{samples[0][1] if samples else 0:.0f} MB after 1 s, "
        f"{samples[-1][1] if samples else 0:.0f} MB at the end of the saturated run "
        f"({growth:+.1f} % over its last third), {final:.0f} MB after both, peak {peak:.0f} MB. "
        f"Server alive: {alive}; answering afterwards: {answers}; clean exit on SIGTERM: "
        f"{clean_exit}. Verdict: {'pass' if ok else 'FAIL'}."
    )
    print(report)
    if args.write:
        write_report(report)
    return 0 if ok else 1


def write_report(report: str) -> None:
    """Put the report between the soak markers of docs/reliability.md."""
    stamp = time.strftime("%Y-%m-%d")
    body = f"{report} ({stamp}, `python bench/soak.py --write`)"
    write_between_markers(ROOT / "docs" / "reliability.md", "soak", body, "Soak results")


if __name__ == "__main__":
    raise SystemExit(main())
