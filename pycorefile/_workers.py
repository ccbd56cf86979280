"""``-workers N``: N serving processes sharing the DNS ports, under one parent.

Python runs one core per process. With ``-workers N`` the parent validates the
Corefile, starts N copies of itself that bind the DNS ports with SO_REUSEPORT
(the kernel spreads clients over them by flow hash), and keeps them running.
The parent owns what must be one: signals (SIGUSR1 is checked here first, then
passed on; SIGTERM stops every worker gracefully), restarting a worker that
died, and the HTTP endpoints. Each worker serves its endpoints on a private
unix socket; the parent answers ``/metrics`` with the sum of every worker's
series and the other endpoints with OK only when every worker says OK.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ._app import Runner, user_facing, version_lines, write_pidfile
from ._config import Config
from ._http import HttpListener
from ._server import bind_http_socket
from ._types import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile")

RESTART_DELAY = 1.0
WORKER_HTTP_TIMEOUT = 5.0
"""Seconds a worker has to answer the parent's request for an endpoint."""


async def fetch_unix(path: str, target: str, accept: str = "") -> HttpResponse:
    """GET ``target`` from an HTTP server on a unix socket."""
    stream = await trio.open_unix_socket(path)
    async with stream:
        head = f"GET {target} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n"
        if accept:
            head += f"Accept: {accept}\r\n"
        await stream.send_all((head + "\r\n").encode("latin-1"))
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    content_type = "text/plain; charset=utf-8"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            content_type = value.strip()
    return HttpResponse(status, body, content_type)


def merge_metrics(texts: Sequence[str]) -> list[Metric]:
    """Every worker's series summed into one (build info and such taken once)."""
    # Imported when metrics are asked for: prometheus_client costs ~2 MB resident.
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            series = values.setdefault(family.name, {})
            once = family.name.endswith("build_info") or family.type == "info"
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if once:
                    series[key] = sample.value
                else:
                    series[key] = series.get(key, 0.0) + sample.value
    out = []
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
        out.append(family)
    return out


def _die_with_parent() -> None:
    """In the worker, before exec: get SIGTERM when the parent dies (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Merged:
    """A collector yielding metric families built elsewhere."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class Supervisor:
    """The parent of ``-workers N``."""

    def __init__(self, runner: Runner, config: Config, workers: int, argv: Sequence[str]) -> None:
        self.runner = runner
        self.config = config
        self.workers = workers
        self.argv = list(argv)
        self.dir = tempfile.mkdtemp(prefix="pycorefile-workers-")
        self.sockets = [os.path.join(self.dir, f"worker{i}.sock") for i in range(workers)]
        self.processes: list[trio.Process | None] = [None] * workers
        self.stopping = False
        self.http: list[HttpListener] = []

    def worker_command(self, index: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pycorefile",
            *self.argv,
            "-quiet",
            "-worker-http",
            self.sockets[index],
        ]

    async def run(self, *, quiet: bool = False, pidfile: str | None = None) -> None:
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)
        with trio.open_signal_receiver(*signals) as received:
            async with trio.open_nursery() as nursery:
                self._serve_http(nursery)
                for index in range(self.workers):
                    nursery.start_soon(self._keep_worker, index)
                nursery.start_soon(self._announce, quiet, pidfile)
                async for signum in received:
                    if signum == signal.SIGUSR1:
                        await self._reload()
                    elif signum in (signal.SIGTERM, signal.SIGINT):
                        log.info(
                            "%s: Shutting down workers then terminating",
                            signal.Signals(signum).name,
                        )
                        await self._stop_workers()
                        break
                nursery.cancel_scope.cancel()
        if pidfile and os.path.exists(pidfile):
            os.unlink(pidfile)
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _announce(self, quiet: bool, pidfile: str | None) -> None:
        """Once every worker has started: the startup listing and the pidfile."""
        with trio.move_on_after(30):
            while not all(os.path.exists(s) for s in self.sockets):
                await trio.sleep(0.05)
        if not quiet:
            for key in sorted({str(k) for b in self.config.blocks for k in b.keys}):
                print(key)
            print(f"{self.workers} workers")
            for line in version_lines():
                print(line)
            sys.stdout.flush()
        if pidfile:
            await trio.to_thread.run_sync(write_pidfile, pidfile)

    async def _keep_worker(self, index: int) -> None:
        while not self.stopping:
            # Own session: a signal to the parent's group reaches the parent only,
            # which stops the workers in order; the workers die with the parent.
            try:
                proc = await trio.lowlevel.open_process(
                    self.worker_command(index), start_new_session=True, preexec_fn=_die_with_parent
                )
            except OSError as exc:  # out of processes, files or memory: try again
                log.error("worker %d cannot be started: %s; retrying", index, exc)
                await trio.sleep(RESTART_DELAY)
                continue
            self.processes[index] = proc
            status = await proc.wait()
            await trio.sleep(RESTART_DELAY)
            if self.stopping:
                return
            log.error("worker %d exited with status %s; restarting", index, status)

    async def _stop_workers(self) -> None:
        self.stopping = True
        for proc in self.processes:
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(15):
            for proc in self.processes:
                if proc is not None:
                    await proc.wait()
        for proc in self.processes:
            if proc is not None and proc.returncode is None:
                proc.kill()

    async def _reload(self) -> None:
        """Validate the new Corefile here; only a good one reaches the workers."""
        try:
            source, self.config = await self.runner.build_again()
        except Exception as exc:
            problem = user_facing(exc)
            if problem is None:
                raise
            log.error("SIGUSR1: %s", problem)
            return
        self.runner.source = source
        for proc in self.processes:
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGUSR1)
        log.info("Reloading workers")

    # -- HTTP ------------------------------------------------------------------

    def _serve_http(self, nursery: trio.Nursery) -> None:
        for (host, port), routes in self.config.http_routes.items():
            sock = bind_http_socket(host, port)
            listener = HttpListener(sock, sock.getsockname()[:2])
            listener.routes = {path: self._proxy for path in routes}
            self.http.append(listener)
            nursery.start_soon(listener.serve)

    async def _proxy(self, request: HttpRequest) -> HttpResponse:
        responses = []
        for path in self.sockets:
            response = HttpResponse(503, b"worker not answering\n")
            with trio.move_on_after(WORKER_HTTP_TIMEOUT):
                # A worker restarting or stuck answers nothing, or half an answer.
                with contextlib.suppress(OSError, trio.BrokenResourceError, ValueError, IndexError):
                    response = await fetch_unix(path, request.path)
            responses.append(response)
        if request.path != "/metrics":
            failed = [r for r in responses if r.status != 200]
            return failed[0] if failed else responses[0]
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        registry = CollectorRegistry(auto_describe=False)
        texts = [r.body.decode() for r in responses if r.status == 200]
        registry.register(_Merged(merge_metrics(texts)))
        encoder, content_type = choose_encoder("text/plain")
        return HttpResponse(200, encoder(registry), content_type)
