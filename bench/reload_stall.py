"""Answer latency of cache hits while the server reloads its Corefile, on loopback.

    python bench/reload_stall.py                 # 2 rounds of 10 s steady + 10 s reloading
    python bench/reload_stall.py --blocks 300    # the Corefile imports 300 more server blocks

Starts dnsmasq as the upstream and pycorefile with ``bind``, ``prometheus``,
``reload``, ``cache`` and ``forward`` (pinned to one core with taskset, the
client on the other), fills the cache with the 1,000 upstream names, then
sends them again as a paced stream with dnsperf (``-Q``, open loop: a stalled
server delays every query sent meanwhile, not just one). Each round measures a
*steady* phase (no reload) and a *reloading* phase (SIGUSR1 every
``--every`` seconds, each reload waited for), so both phases see the same
machine load. It prints p50, p99 and the maximum latency of each phase, the
queries lost, and how long each reload took from the signal to its
"Reloading complete" line. The worst stall is the maximum latency of the
reloading phase. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    CLIENT_CORE,
    ROOT,
    Data,
    cache_queries,
    free_port,
    need,
    process,
    upstream,
    wait_answering,
)

RELOAD_TIMEOUT = 30.0
"""Seconds a reload may take before the benchmark gives up on it."""


@dataclass
class Phase:
    """What dnsperf measured in one kind of phase, over every round."""

    name: str
    latencies: list[float] = field(default_factory=list)
    """Seconds, one per answered query."""
    sent: int = 0
    lost: int = 0

    def row(self) -> str:
        lat = sorted(self.latencies)
        p50 = p99 = worst = 0.0
        if len(lat) > 1:
            q = statistics.quantiles(lat, n=100)
            p50, p99, worst = q[49], q[98], lat[-1]
        return (
            f"| {self.name} | {self.sent:,} | {self.lost:,} | {p50 * 1e3:.2f} | "
            f"{p99 * 1e3:.2f} | {worst * 1e3:.1f} |"
        )


class Output:
    """The server's standard output, read in a thread: times of "Reloading complete"."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.reloaded: list[float] = []
        self.lines: list[str] = []
        self.changed = threading.Condition()
        assert proc.stdout is not None
        self.stream = proc.stdout
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.stream:
            line = raw.decode(errors="replace").rstrip("\n")
            with self.changed:
                self.lines.append(line)
                if "Reloading complete" in line:
                    self.reloaded.append(time.monotonic())
                self.changed.notify_all()

    def wait_reloads(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.reloaded) >= count, timeout)


def dnsperf(port: int, queries: Path, seconds: float, qps: int, phase: Phase | None) -> None:
    """A paced stream of ``qps`` queries for ``seconds``; per-query latencies into ``phase``."""
    args = ["taskset", "-c", CLIENT_CORE, need("dnsperf", "dnsperf"), "-s", "127.0.0.1",
            "-p", str(port), "-d", str(queries), "-l", str(seconds), "-c", "1",
            "-q", "2000", "-t", "2", "-Q", str(qps), "-v"]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    if phase is None:
        return
    for line in out.splitlines():
        words = line.split()
        if words[:1] == [">"] and words[1] not in ("T", "I"):  # T: timed out, I: interrupted
            phase.latencies.append(float(words[-1]))
        elif "Queries sent:" in line:
            phase.sent += int(line.split()[2])
        elif "Queries lost:" in line:
            phase.lost += int(line.split()[2])


def reload_repeatedly(
    proc: subprocess.Popen[bytes], output: Output, every: float, stop: threading.Event,
    took: list[float], failed: list[str],
) -> None:  # fmt: skip
    """SIGUSR1 every ``every`` seconds until ``stop``, each reload waited for and timed."""
    while not stop.is_set():
        started = time.monotonic()
        done = len(output.reloaded) + 1
        proc.send_signal(signal.SIGUSR1)
        if not output.wait_reloads(done, RELOAD_TIMEOUT):
            failed.append(f"no reload within {RELOAD_TIMEOUT:g} s")
            return
        took.append(output.reloaded[done - 1] - started)
        stop.wait(max(0.0, every - (time.monotonic() - started)))


def corefile(port: int, metrics: int, upstream_port: int, extra: Path | None) -> str:
    head = f"import {extra}\n\n" if extra is not None else ""
    return (
        f"{head}.:{port} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{metrics}\n"
        f"    reload\n    cache\n    forward . 127.0.0.1:{upstream_port}\n}}\n"
    )


def extra_blocks(path: Path, port: int, count: int) -> Path:
    """``count`` more server blocks (whoami) for the Corefile to import."""
    path.write_text(
        "".join(
            f"z{i}.bench.test:{port} {{\n    bind 127.0.0.1\n    whoami\n}}\n" for i in range(count)
        )
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("-r", "--rounds", type=int, default=2)
    parser.add_argument("--qps", type=int, default=2000, help="the paced query rate")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between reloads")
    parser.add_argument("--blocks", type=int, default=0, help="extra server blocks imported")
    args = parser.parse_args()
    steady, reloading = Phase("steady"), Phase("reloading")
    took: list[float] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pycorefile-reload-") as tmp:
        data = Data(Path(tmp))
        queries = data.queries("hits", cache_queries())
        with upstream(data) as up:
            port, metrics = free_port(), free_port()
            extra = (
                extra_blocks(data.dir / "extra.conf", port, args.blocks) if args.blocks else None
            )
            conf = data.dir / "Corefile"
            conf.write_text(corefile(port, metrics, up.port, extra))
            command = [sys.executable, "-m", "pycorefile", "-conf", str(conf), "-quiet"]
            with process(command, stdout=subprocess.PIPE, cwd=str(ROOT)) as proc:
                output = Output(proc)
                wait_answering(port)
                dnsperf(port, queries, 3, args.qps, None)  # fill the cache
                for _ in range(args.rounds):
                    dnsperf(port, queries, args.duration, args.qps, steady)
                    stop = threading.Event()
                    reloader = threading.Thread(
                        target=reload_repeatedly,
                        args=(proc, output, args.every, stop, took, failed),
                    )
                    reloader.start()
                    dnsperf(port, queries, args.duration, args.qps, reloading)
                    stop.set()
                    reloader.join()
                alive = proc.poll() is None
    print(
        f"Cache hits at {args.qps:,} qps (dnsperf -Q, open loop), {args.rounds} rounds of "
        f"{args.duration:g} s steady + {args.duration:g} s reloading (SIGUSR1 every "
        f"{args.every:g} s); Corefile of {1 + args.blocks} server block(s)\n"
    )
    print("| phase | queries | lost | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    print(steady.row())
    print(reloading.row())
    if took:
        print(
            f"\n{len(took)} reloads, each {statistics.median(took) * 1e3:.0f} ms "
            f"(median; max {max(took) * 1e3:.0f} ms) from SIGUSR1 to 'Reloading complete'"
        )
    worst = max(reloading.latencies, default=0.0)
    print(f"worst stall while reloading: {worst * 1e3:.1f} ms")
    for problem in failed:
        print(f"problem: {problem}")
    return 0 if alive and took and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
