"""How long the kubernetes plugin takes to load a big cluster, what it holds, what a change costs.

    python bench/kubernetes_scale.py                  # 10,000 Services, 50,000 endpoints
    python bench/kubernetes_scale.py -s 2000 -e 5

In a fresh child process: a minimal API server on loopback serves the
Services, EndpointSlices (one per Service, ``-e`` endpoints each) and
Namespaces as paged JSON lists (500 per page, as the plugin asks) and keeps
watches open; the plugin's own client lists them through ``startup`` as the
server does. Reported: the time to the first complete sync, resident memory
once synced (and the peak), the time to apply one watch event (a Service
changed, an EndpointSlice changed) at that size, and the time to answer a
Service query from a prepared reply and from a fresh lookup. Targets from
issue 20: load under 10 s and under 250 MB, an event under 50 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 10.0
TARGET_MB = 250.0
PAGE = 500


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1000
    return 0.0


def pod_ip(n: int) -> str:
    return f"172.{16 + n // 65536}.{(n // 256) % 256}.{n % 256}"


def objects(services: int, endpoints: int) -> dict[str, list[dict[str, Any]]]:
    namespaces = [f"ns{i}" for i in range(max(1, services // 100))]
    svcs, slices = [], []
    for i in range(services):
        ns = namespaces[i % len(namespaces)]
        name = f"svc{i}"
        ip = f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        svcs.append({
            "metadata": {"name": name, "namespace": ns, "resourceVersion": str(i),
                         "labels": {"app": name}, "annotations": {"note": "x" * 100}},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                     "selector": {"app": name}, "sessionAffinity": "None"},
            "status": {"loadBalancer": {}},
        })  # fmt: skip
        slices.append({
            "metadata": {"name": f"{name}-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [pod_ip(i * endpoints + k)],
                 "conditions": {"ready": True, "serving": True, "terminating": False},
                 "nodeName": f"node{k}",
                 "targetRef": {"kind": "Pod", "name": f"{name}-{k}", "namespace": ns}}
                for k in range(endpoints)
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        })  # fmt: skip
    return {
        "services": svcs,
        "endpointslices": slices,
        "namespaces": [{"metadata": {"name": ns}} for ns in namespaces],
    }


async def api_server(data: dict[str, list[dict[str, Any]]], task_status: Any) -> None:
    """List pages with continue tokens; watches stay open and silent."""
    import trio

    async def connection(stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                target = head.split(b"\r\n")[0].split()[1].decode()
                url = urlsplit(target)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                plural = url.path.rsplit("/", 1)[-1]
                if query.get("watch") == "true":
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n"
                    )
                    await trio.sleep_forever()
                items = data.get(plural, [])
                start = int(query.get("continue") or 0)
                limit = int(query.get("limit") or len(items) or 1)
                page = items[start : start + limit]
                more = start + limit < len(items)
                meta = {"resourceVersion": "1"}
                if more:
                    meta["continue"] = str(start + limit)
                body = json.dumps({"metadata": meta, "items": page}).encode()
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body
                )  # fmt: skip
        except trio.BrokenResourceError:
            return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(connection, listeners)


def measure(services: int, endpoints: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    import trio

    from pycorefile import Request
    from pycorefile.corefile import ZoneKey, parse_corefile
    from pycorefile.plugin import SetupContext
    from pycorefile.testing import make_query
    from pycorefile_plugins.kubernetes import KubernetesPlugin

    data = objects(services, endpoints)
    result: dict[str, float] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(api_server, data)
            block = parse_corefile(
                "cluster.local {\n kubernetes {\n"
                f"  endpoint http://127.0.0.1:{port}\n  startup_timeout 120s\n }}\n}}\n"
            )[0]
            ctx = SetupContext(block=block, keys=(ZoneKey("dns", "cluster.local.", 53),))
            plugin = KubernetesPlugin.setup(block.directives, ctx)
            data_mb = rss_mb()
            started = time.perf_counter()
            await plugin.startup()
            result["load_s"] = time.perf_counter() - started
            assert plugin.ready(), [r.last_error for r in plugin.reflectors]
            gc.collect()
            result["rss_mb"] = rss_mb()
            result["held_mb"] = rss_mb() - data_mb
            result["peak_mb"] = peak_rss_mb()
            result["services"] = len(plugin.index.services)
            result["endpoints"] = sum(len(s.addresses) for s in plugin.index.slices.values())
            services_r, _namespaces_r, slices_r = plugin.reflectors
            # One watch event at this size: a Service's IP changes, a slice gains an endpoint.
            timings: dict[str, list[float]] = {"service_event_ms": [], "slice_event_ms": []}
            for n in range(200):
                svc = json.loads(json.dumps(data["services"][n]))
                svc["spec"]["clusterIP"] = f"10.200.0.{n % 250}"
                svc["spec"]["clusterIPs"] = [svc["spec"]["clusterIP"]]
                line = json.dumps({"type": "MODIFIED", "object": svc}).encode() + b"\n"
                t0 = time.perf_counter()
                services_r._apply(json.loads(line))
                timings["service_event_ms"].append((time.perf_counter() - t0) * 1000)
                piece = json.loads(json.dumps(data["endpointslices"][n]))
                piece["endpoints"].append({"addresses": [f"172.31.0.{n % 250}"]})
                line = json.dumps({"type": "MODIFIED", "object": piece}).encode() + b"\n"
                t0 = time.perf_counter()
                slices_r._apply(json.loads(line))
                timings["slice_event_ms"].append((time.perf_counter() - t0) * 1000)
            for key, values in timings.items():
                result[key] = statistics.median(values)
                result[key.replace("_ms", "_max_ms")] = max(values)
            # Answers: a fresh lookup (first query after a change) and a prepared reply.
            names = [
                f"svc{i}.ns{i % max(1, services // 100)}.svc.cluster.local."
                for i in range(1000, 3000)
            ]
            wires = [make_query(name, "A").to_wire() for name in names]
            t0 = time.perf_counter()
            for wire in wires:
                plugin.handle(Request(wire))
            result["fresh_answer_us"] = (time.perf_counter() - t0) / len(wires) * 1e6
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for wire in wires:
                    plugin.handle(Request(wire))
                best = min(best, (time.perf_counter() - t0) / len(wires) * 1e6)
            result["prepared_answer_us"] = best
            nursery.cancel_scope.cancel()

    trio.run(main)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-s", "--services", type=int, default=10_000)
    parser.add_argument("-e", "--endpoints", type=int, default=5, help="endpoints per Service")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.services, args.endpoints)))
        return 0
    out = subprocess.run(
        [sys.executable, __file__, "--child", "-s", str(args.services), "-e", str(args.endpoints)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return 1
    result = json.loads(out.stdout)
    for key, value in result.items():
        print(f"{key:24} {value:12.3f}")
    ok = result["load_s"] < TARGET_SECONDS and result["rss_mb"] < TARGET_MB
    verdict = "met" if ok else "NOT met"
    print(f"targets (load < {TARGET_SECONDS} s, resident < {TARGET_MB} MB): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
