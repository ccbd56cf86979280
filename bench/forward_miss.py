"""Microbenchmark of a forwarded miss: Dispatcher.handle + answer, a real upstream on loopback.

    PYTHONPATH=<checkout> python bench/forward_miss.py [-n N] [-r R] [-s SCENARIO]

Every query asks a new name, so nothing is answered from memory and nothing
is merged with a query in flight: each one walks the chain, waits for the
upstream and comes back. Queries are sent one at a time (``Dispatcher.handle``,
then ``Dispatcher.answer`` awaited in the same task), so the figure is the
cost of one forwarded query, not a throughput under load. The upstream is a
separate process on 127.0.0.1 that answers from the query's bytes (one A
record), so its work is not counted in this process's CPU time.

Printed per scenario, in microseconds per query, the minimum of R runs:
``cpu`` (this process's CPU time: the chain, forward, the socket calls) and
``wall`` (includes the upstream's turn-around).

``--chain-only`` measures the chain part alone: forward's exchange with the
upstreams (``Forwarder.forward``) is replaced by a coroutine that returns the
same reply at once, so what is left is the walk, the wait's machinery and the
reply's way back (no I/O, no upstream process).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import dns.message
import trio

from pycorefile import Request
from pycorefile._app import load_config
from pycorefile._dispatch import Dispatcher
from pycorefile_plugins.forward._plugin import Forwarder

SCENARIOS = {
    "forward": " prometheus :0\n forward . {upstream}\n",
    "errors_cache_forward": " errors\n prometheus :0\n cache 30\n forward . {upstream}\n",
}

# The upstream: answers every query with one A record (192.0.2.1, TTL 300),
# question copied from the query, no EDNS (the queries carry none).
_RESPONDER = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc0\x00\x02\x01"
while True:
    data, addr = sock.recvfrom(4096)
    if len(data) < 17 or data[2] & 0x80:
        continue
    end = data.index(b"\x00", 12) + 5
    header = data[:2] + bytes([0x80 | (data[2] & 0x01), 0x80]) + b"\x00\x01\x00\x01\x00\x00\x00\x00"
    sock.sendto(header + data[12:end] + record, addr)
"""


def _answer(query: bytes) -> bytes:
    """What the upstream process answers, made here (``--chain-only``)."""
    end = query.index(b"\x00", 12) + 5
    flags = bytes([0x80 | (query[2] & 0x01), 0x80])
    return query[:2] + flags + b"\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:end] + _RECORD


_RECORD = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc0\x00\x02\x01"


async def _forward_at_once(self: Forwarder, request: Request) -> tuple[bytes, int]:
    return _answer(request.wire), 0


@contextlib.contextmanager
def responder() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-c", _RESPONDER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def queries(count: int, prefix: str) -> list[bytes]:
    out = []
    for i in range(count):
        q = dns.message.make_query(f"{prefix}{i}.bench.test", "A", use_edns=False)
        q.id = (i * 7919) & 0xFFFF
        out.append(q.to_wire())
    return out


async def _run(scenario: str, upstream: str, n: int, rounds: int) -> dict[str, float]:
    body = SCENARIOS[scenario].format(upstream=upstream)
    config = load_config(f".:1053 {{\n{body}}}\n", dns_port=1053)
    routes = next(iter(config.routes.values()))
    dispatcher = Dispatcher(routes, config.observers, 1232, config.failure_observers)
    handle, answer = dispatcher.handle, dispatcher.answer
    client, local = ("127.0.0.1", 40000), ("127.0.0.1", 1053)
    best_cpu = best_wall = float("inf")
    for r in range(rounds + 1):  # round 0 warms up (sockets, memos) and is not counted
        qs = queries(n, f"r{r}x")
        cpu, wall = time.process_time(), time.perf_counter()
        out: object = None
        for q in qs:
            out = handle(q, client, "udp", local)
            if isinstance(out, Request):
                out = await answer(out)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert type(out) is bytes and dns.message.from_wire(out).answer, out
        if r:
            best_cpu, best_wall = min(best_cpu, cpu / n), min(best_wall, wall / n)
    for plugin in config.plugins:
        await plugin.shutdown()
    return {"cpu": round(best_cpu * 1e6, 2), "wall": round(best_wall * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("-r", type=int, default=5)
    parser.add_argument("-s", "--scenario", action="append")
    parser.add_argument("--chain-only", action="store_true", help="no upstream, no I/O")
    args = parser.parse_args()
    if args.chain_only:
        Forwarder.forward = _forward_at_once  # type: ignore[method-assign]
    logging.disable(logging.CRITICAL)
    sys.stdout, real = io.StringIO(), sys.stdout
    result: dict[str, dict[str, float]] = {}
    try:
        with contextlib.ExitStack() as stack:
            # --chain-only never sends: the address only has to be valid.
            upstream = "127.0.0.1:9" if args.chain_only else stack.enter_context(responder())
            for scenario in args.scenario or SCENARIOS:
                result[scenario] = trio.run(_run, scenario, upstream, args.n, args.r)
    finally:
        sys.stdout = real
    print(json.dumps(result))


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    main()
