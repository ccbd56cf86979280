"""Resident memory of pycorefile with a full cache, on loopback.

    python bench/memory.py               # 10,000 names
    python bench/memory.py -n 20000      # another cache size

Starts dnsmasq as the upstream (the wildcard zone of ``bench/run.py``, so
every name exists) and pycorefile with ``bind``, ``prometheus``, ``cache``
(room for exactly N successes) and ``forward``, then asks N distinct A
questions over UDP (a bounded window of queries in flight, each retried at
most a few times, the whole fill bounded in time) and prints the server's
resident memory: right after start, after the first 1,000 names, and with all
N cached, with the bytes each entry costs; then once more after a scrape of
the metrics endpoint (which also checks the entry count), as a monitored
server would be. The project's modules are byte-compiled first, as an
installed package is, so compiling them is not counted. All traffic stays on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import ROOT, Data, free_port, pycorefile_process, upstream, wait_answering

TARGET_MB = 40.0
"""Issue 10's goal: the whole process under this with a full 10,000-entry cache."""
WINDOW = 64
"""Queries in flight at once while filling."""
FILL_SECONDS = 120.0
RETRIES = 3


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def query(qid: int, name: str) -> bytes:
    """An A query for ``name`` with RD set, built by hand (the client stays light)."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


def fill(port: int, names: list[str], deadline: float) -> int:
    """Ask every name once (windowed, retried); return how many got a NOERROR answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.5)
    pending: dict[int, tuple[int, int]] = {}  # id -> (index, tries)
    queue = list(range(len(names)))
    queue.reverse()
    answered = 0
    next_id = 1
    try:
        while (queue or pending) and time.monotonic() < deadline:
            while queue and len(pending) < WINDOW:
                index = queue.pop()
                qid = next_id
                next_id = next_id % 65535 + 1
                pending[qid] = (index, pending.pop(qid, (index, 0))[1] + 1)
                sock.send(query(qid, names[index]))
            try:
                reply = sock.recv(4096)
            except TimeoutError:
                # Lost in flight: send the unanswered again (a few times at most).
                retry = [i for i, tries in pending.values() if tries < RETRIES]
                pending.clear()
                queue.extend(retry)
                continue
            qid = struct.unpack_from(">H", reply)[0]
            if pending.pop(qid, None) is not None and reply[3] & 0xF == 0:
                answered += 1
    finally:
        sock.close()
    return answered


def cache_entries(metrics_port: int) -> int:
    """The success entries the cache reports on its metrics endpoint."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("coredns_cache_entries{") and 'type="success"' in line
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--names", type=int, default=10_000, help="distinct names to cache")
    args = parser.parse_args()
    total = args.names
    names = [f"m{i}.miss.bench.test" for i in range(total)]
    first = min(1_000, total // 2)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "pycorefile", "plugins"], check=True, cwd=ROOT
    )
    with tempfile.TemporaryDirectory(prefix="pycorefile-memory-") as tmp:
        data = Data(Path(tmp))
        with upstream(data) as up:
            port, metrics = free_port(), free_port()
            text = (
                f".:{port} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{metrics}\n"
                f"    cache {{\n        success {total}\n    }}\n"
                f"    forward . 127.0.0.1:{up.port}\n}}\n"
            )
            with pycorefile_process(Path(tmp) / "Corefile", text) as proc:
                wait_answering(port, names[0])  # the first entry
                time.sleep(0.5)
                base = status_kb(proc.pid)
                deadline = time.monotonic() + FILL_SECONDS
                answered = fill(port, names[:first], deadline)
                part = status_kb(proc.pid)
                answered += fill(port, names[first:], deadline)
                time.sleep(0.5)
                full = status_kb(proc.pid)
                entries = cache_entries(metrics)
                time.sleep(0.5)
                scraped = status_kb(proc.pid)
    mb = 1024.0
    per_entry = (full["VmRSS"] - base["VmRSS"]) * 1024 / max(1, entries - 1)
    marginal = (full["VmRSS"] - part["VmRSS"]) * 1024 / max(1, total - first)
    print(f"names asked            {total:,} ({answered:,} answered NOERROR)")
    print(f"cache entries          {entries:,} (from the metrics endpoint)")
    print(f"baseline RSS           {base['VmRSS'] / mb:.1f} MB (after start, 1 entry)")
    print(f"RSS at {first:,} entries   {part['VmRSS'] / mb:.1f} MB")
    print(f"RSS, full cache        {full['VmRSS'] / mb:.1f} MB (VmHWM {full['VmHWM'] / mb:.1f} MB)")
    print(f"bytes per entry        {per_entry:,.0f} (from start), {marginal:,.0f} (past {first:,})")
    print(f"RSS after a scrape     {scraped['VmRSS'] / mb:.1f} MB")
    verdict = "yes" if scraped["VmRSS"] / mb < TARGET_MB else "no"
    print(f"under {TARGET_MB:.0f} MB, scraped     {verdict}")
    return 0 if entries >= total else 1


if __name__ == "__main__":
    raise SystemExit(main())
