"""A Kubernetes API server on loopback for tests: kmock's KubernetesEmulator in a thread.

kmock is an aiohttp (asyncio) server, so it runs in a thread with its own
event loop; the tests (trio) talk to it over real HTTP only: objects are
created, changed and deleted with POST, PATCH and DELETE, which is what sends
watch events. ``script_watch`` makes the next watch of a resource send given
lines (bookmarks, a 410 Gone), which the emulator does not do by itself.

Two gaps of kmock 0.8 are filled here: ``/api/v1/namespaces`` is read as the
namespaces collection (kmock takes ``namespaces`` for the namespace prefix
and fails with 500), and a stopped API can be started again on the same port
(``ApiServer.restart``) for outage tests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import kmock
from kmock._internal import parsing

T = TypeVar("T")
_original_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _original_parse_path(path)


parsing.parse_path = _parse_path

RESOURCES = {
    "services": "v1/services",
    "namespaces": "v1/namespaces",
    "pods": "v1/pods",
    "endpointslices": "discovery.k8s.io/v1/endpointslices",
}
PATHS = {
    "services": "/api/v1/namespaces/{ns}/services",
    "pods": "/api/v1/namespaces/{ns}/pods",
    "endpointslices": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
    "namespaces": "/api/v1/namespaces",
}


class ApiServer:
    """kmock's emulator served on 127.0.0.1, started and stopped from any thread."""

    def __init__(self) -> None:
        self.emulator: Any = None
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._objects: Any = None
        self._before: Callable[[Any], None] | None = None
        self._main: asyncio.Task[Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            try:
                emulator = kmock.KubernetesEmulator()
                emulator.resources.load_bundled()
                self._stop = asyncio.Event()
                self._main = asyncio.current_task()
                async with (
                    emulator,
                    kmock.Server(emulator, host="127.0.0.1", port=self.port or None) as srv,
                ):
                    if self._objects is not None:
                        for key, value in self._objects:
                            emulator.objects[key] = value
                    self.emulator = emulator
                    if self._before is not None:
                        self._before(emulator)
                    self.port = srv.port
                    ready.set()
                    await self._stop.wait()
            except BaseException as exc:
                failure.append(exc)
                ready.set()

        def thread() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=thread, name="kmock", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the test API server did not start")
        if failure:
            raise failure[0]

    def stop(self, keep_objects: bool = True) -> None:
        """Stop serving (connections are cut); ``restart`` serves the same objects again."""
        if self._loop is None or self._stop is None:
            return
        if keep_objects and self.emulator is not None:
            done = threading.Event()

            def copy() -> None:
                objects = self.emulator.objects
                self._objects = [
                    (key, dict(objects[key].raw))
                    for key in list(objects)
                    if not objects[key].deleted
                ]
                done.set()

            self._loop.call_soon_threadsafe(copy)
            done.wait(10)
        main = self._main

        def cut() -> None:
            # Open watches are endless handlers: cancel them, so their connections close
            # at once (as when an API server goes away), then stop serving.
            for task in asyncio.all_tasks():
                if task is not main:
                    task.cancel()
            assert self._stop is not None
            self._stop.set()

        self._loop.call_soon_threadsafe(cut)
        assert self._thread is not None
        self._thread.join(30)
        if self._thread.is_alive():
            raise RuntimeError("the test API server did not stop")
        self._loop = None

    def restart(self, before: Callable[[Any], None] | None = None) -> None:
        """Serve again on the same port; ``before(emulator)`` runs before any request is read."""
        self._before = before
        self.start()

    def call(self, function: Callable[[Any], T]) -> T:
        """Run ``function(emulator)`` on the API server's own loop and return its result."""
        assert self._loop is not None
        done = threading.Event()
        result: list[T] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                result.append(function(self.emulator))
            except BaseException as exc:
                errors.append(exc)
            done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise RuntimeError("the test API server did not answer")
        if errors:
            raise errors[0]
        return result[0]

    def script_watch(self, resource: str, *lines: dict[str, Any]) -> None:
        """The next watch of ``resource`` (``services``...) sends exactly ``lines``, then ends."""

        def script(emulator: Any) -> None:
            emulator[f"watch {RESOURCES[resource]}"][:1] << lines

        self.call(script)

    def refuse(self, verb: str, resource: str, status: int, reason: str, message: str) -> None:
        """Every ``verb`` (``list``, ``watch``) of ``resource`` gets an error Status."""
        body = {"kind": "Status", "code": status, "reason": reason, "message": message}

        def script(emulator: Any) -> None:
            emulator[f"{verb} {RESOURCES[resource]}"] << status << body

        self.call(script)

    def answer(self, verb: str, resource: str, payload: bytes) -> None:
        """Every ``verb`` of ``resource`` gets ``payload`` as its body, status 200."""

        def script(emulator: Any) -> None:
            emulator[f"{verb} {RESOURCES[resource]}"] << payload

        self.call(script)

    def authorizations(self) -> list[str]:
        """The Authorization header of every request the server under test made so far."""

        def headers(emulator: Any) -> list[str]:
            out = []
            for request in emulator:
                fields = {k.lower(): v for k, v in request.headers.items()}
                if str(fields.get("user-agent", "")).startswith("pycorefile"):
                    out.append(str(fields.get("authorization", "")))
            return out

        return self.call(headers)


@contextmanager
def api_server() -> Iterator[ApiServer]:
    server = ApiServer()
    server.start()
    try:
        yield server
    finally:
        server.stop(keep_objects=False)


class Objects:
    """Create, change and delete objects on the API server over HTTP (so watches see them)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def create(self, resource: str, obj: dict[str, Any]) -> None:
        ns = obj.get("metadata", {}).get("namespace", "")
        async with httpx.AsyncClient(base_url=self.url, trust_env=False) as client:
            response = await client.post(PATHS[resource].format(ns=ns), json=obj)
            response.raise_for_status()

    async def patch(self, resource: str, ns: str, name: str, patch: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.url, trust_env=False) as client:
            response = await client.patch(
                PATHS[resource].format(ns=ns) + "/" + name,
                json=patch,
                headers={"Content-Type": "application/merge-patch+json"},
            )
            response.raise_for_status()

    async def delete(self, resource: str, ns: str, name: str) -> None:
        async with httpx.AsyncClient(base_url=self.url, trust_env=False) as client:
            response = await client.delete(PATHS[resource].format(ns=ns) + "/" + name)
            response.raise_for_status()


# -- Objects as the API serves them ------------------------------------------------------


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(
    ns: str,
    name: str,
    cluster_ips: list[str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    type_: str = "ClusterIP",
    external_name: str = "",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type_}
    if cluster_ips is not None:
        spec["clusterIP"] = cluster_ips[0] if cluster_ips else ""
        spec["clusterIPs"] = cluster_ips
    if ports is not None:
        spec["ports"] = ports
    if external_name:
        spec["externalName"] = external_name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def endpoint_slice(
    ns: str,
    name: str,
    service_name: str,
    endpoints: list[dict[str, Any]],
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports or [],
    }


def pod(ns: str, name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "status": {"phase": "Running", "podIP": ip},
    }
