"""Watching the Kubernetes API: connection settings, a list/watch reflector, trimmed records.

The watch core that plugins answering from a cluster share (the *kubernetes*
plugin; *meshhosts* next). It is public, part of the plugin toolkit, and
imports nothing else of pycorefile.

- **Where the API is** (``Connection``): ``in_cluster()`` reads the pod's
  service account (``KUBERNETES_SERVICE_HOST``/``_PORT``, token, CA);
  ``from_kubeconfig(path, context)`` reads a kubeconfig (merged ``KUBECONFIG``
  files, first wins); ``from_endpoint(url, cert, key, ca)`` is CoreDNS's
  ``endpoint``/``tls``.
- **Talking to it** (``ApiClient``): HTTP through httpx (anyio, so it runs
  under trio); a token file is read again every minute and after a 401, so a
  rotating projected service-account token keeps working.
- **Keeping a copy** (``Reflector``): the loop client-go's reflector runs, but
  ours: a paged LIST, then WATCH from the list's resourceVersion with
  bookmarks, re-watch from the last resourceVersion when a watch ends, a new
  LIST on 410 Gone (objects missing from it become deletions), exponential
  backoff with jitter on errors. A kind the API does not serve (404 on LIST:
  a CRD not installed, e.g. Istio's ServiceEntries) counts as listed and
  empty (``Reflector.served`` False) and is listed again now and then, in
  case it is installed later. Each object is turned into a small record on
  arrival (``trim``) and the JSON dropped, so only the fields a plugin answers
  from are kept, and a relist never holds two full copies.
- **Records**: ``ServiceRecord``, ``EndpointSliceRecord``, ``NamespaceRecord``
  and ``PodRecord`` with their ``trim_*`` functions: what DNS answers need.

A plugin subscribes a ``Sink`` (``replace``, ``upsert``, ``remove``) with
``subscribe``: one watch per kind, connection and selectors serves the whole
process (every block, and both configurations across a reload), run as a
trio system task until its last ``Subscription`` closes. ``Reflector`` alone
runs the loop for a plugin that wants its own.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import random
import re
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import httpx
import trio
import yaml

__all__ = [
    "ENDPOINT_SLICES",
    "NAMESPACES",
    "PODS",
    "POD_FIELD_SELECTOR",
    "SERVICES",
    "SERVICE_ACCOUNT_DIR",
    "SERVICE_NAME_LABEL",
    "ApiClient",
    "ApiError",
    "ConfigError",
    "Connection",
    "EndpointAddress",
    "EndpointSliceRecord",
    "LineSplitter",
    "NamespaceRecord",
    "ObjectKey",
    "PodRecord",
    "PortRecord",
    "Reflector",
    "ReflectorStats",
    "Resource",
    "ServiceRecord",
    "SharedWatch",
    "Sink",
    "Store",
    "Subscription",
    "check_selector",
    "connect",
    "from_endpoint",
    "from_kubeconfig",
    "in_cluster",
    "subscribe",
    "trim_endpoint_slice",
    "trim_namespace",
    "trim_pod",
    "trim_service",
]

log = logging.getLogger("pycorefile.kube")

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where a pod finds its service account's token, CA and namespace."""
TOKEN_REREAD_SECONDS = 60.0
"""How often a token file is read again (client-go: every minute)."""
MAX_LINE = 16 * 1024 * 1024
"""The longest watch event accepted (an object is at most ~1.5 MB in etcd)."""


class ConfigError(Exception):
    """The API's connection settings cannot be read or make no sense."""


class ApiError(Exception):
    """The API server answered with an error (``status`` 410 Gone, 403 Forbidden, ...)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


# -- Where the API is ----------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """How to reach one API server and who to be there."""

    server: str
    """``https://host:port`` (or ``http://`` for a test server)."""
    ca_file: str | None = None
    ca_data: str | None = None
    """PEM text of the CA certificates (a kubeconfig's ``certificate-authority-data``)."""
    insecure: bool = False
    tls_server_name: str | None = None
    token: str | None = None
    token_file: str | None = None
    """Read again every minute and after a 401: a projected token rotates."""
    client_cert: str | None = None
    client_key: str | None = None
    client_cert_data: str | None = None
    client_key_data: str | None = None
    namespace: str = "default"

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS settings: the CA to trust, the client certificate to show."""
        context = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert or self.client_cert_data:
            _load_client_cert(context, self)
        return context


def _load_client_cert(context: ssl.SSLContext, conn: Connection) -> None:
    """Load the client certificate and key; inline PEM goes through private temporary files."""
    made: list[str] = []
    try:
        cert, key = conn.client_cert, conn.client_key
        if conn.client_cert_data:
            cert = _private_file(conn.client_cert_data, made)
        if conn.client_key_data:
            key = _private_file(conn.client_key_data, made)
        assert cert is not None
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"client certificate: {exc}") from None
    finally:
        for path in made:
            os.unlink(path)


def _private_file(text: str, made: list[str]) -> str:
    fd, path = tempfile.mkstemp(prefix="pycorefile-kube-")
    made.append(path)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def in_cluster(environ: Mapping[str, str] | None = None, secrets: str | None = None) -> Connection:
    """The API as a pod sees it (client-go's ``rest.InClusterConfig``); ``secrets`` is the
    service account's folder (``SERVICE_ACCOUNT_DIR``)."""
    env = os.environ if environ is None else environ
    secrets = SERVICE_ACCOUNT_DIR if secrets is None else secrets
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError(
            "not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
            "are not set (give endpoint or kubeconfig)"
        )
    if ":" in host:
        host = f"[{host}]"
    token_file = os.path.join(secrets, "token")
    if not os.path.exists(token_file):
        raise ConfigError(f"not running in a cluster: no service account token at {token_file}")
    ca_file = os.path.join(secrets, "ca.crt")
    namespace = "default"
    try:
        with open(os.path.join(secrets, "namespace"), encoding="utf-8") as f:
            namespace = f.read().strip() or namespace
    except OSError:
        pass
    return Connection(
        server=f"https://{host}:{port}",
        ca_file=ca_file if os.path.exists(ca_file) else None,
        token_file=token_file,
        namespace=namespace,
    )


def from_endpoint(
    url: str, cert: str | None = None, key: str | None = None, ca: str | None = None
) -> Connection:
    """CoreDNS's ``endpoint URL`` with ``tls CERT KEY CACERT``."""
    if not url.startswith(("http://", "https://")):
        url = "https://" + url
    return Connection(server=url.rstrip("/"), ca_file=ca, client_cert=cert, client_key=key)


def connect(
    kubeconfig: tuple[str, str | None] | None = None,
    endpoint: str | None = None,
    tls: tuple[str, str, str] | None = None,
) -> Connection:
    """Where the API is, as CoreDNS's options say: a ``kubeconfig`` (path, context) wins
    over an ``endpoint`` (with ``tls`` CERT KEY CACERT); neither means in-cluster.

    ``ConfigError`` when the chosen settings cannot be read.
    """
    if kubeconfig is not None:
        return from_kubeconfig(*kubeconfig)
    if endpoint is not None:
        cert, key, ca = tls if tls is not None else (None, None, None)
        return from_endpoint(endpoint, cert, key, ca)
    return in_cluster()


def from_kubeconfig(path: str | None = None, context: str | None = None) -> Connection:
    """The cluster and user of a kubeconfig's context (its current one when None).

    ``path`` None reads ``KUBECONFIG`` (files joined by ``:``, merged, the
    first to name a thing wins) or ``~/.kube/config``. Relative file names in
    it are relative to the file. ``exec`` and ``auth-provider`` users are not
    supported (a ``ConfigError`` says so).
    """
    if path is None:
        listed = os.environ.get("KUBECONFIG", "")
        paths = [p for p in listed.split(os.pathsep) if p] or [os.path.expanduser("~/.kube/config")]
    else:
        paths = [path]
    merged: dict[str, dict[str, tuple[dict[str, Any], str]]] = {
        "clusters": {},
        "users": {},
        "contexts": {},
    }
    current = ""
    read_any = False
    for file in paths:
        try:
            with open(file, encoding="utf-8") as f:
                document = yaml.safe_load(f)
        except FileNotFoundError:
            if path is not None:
                raise ConfigError(f"kubeconfig {file}: no such file") from None
            continue
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"kubeconfig {file}: {exc}") from None
        read_any = True
        if not isinstance(document, dict):
            raise ConfigError(f"kubeconfig {file}: not a mapping")
        base = os.path.dirname(os.path.abspath(file))
        current = current or str(document.get("current-context") or "")
        for section, inner in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in document.get(section) or ():
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    body = entry.get(inner) or {}
                    merged[section].setdefault(entry["name"], (body, base))
    if not read_any:
        raise ConfigError(f"no kubeconfig found (looked at {', '.join(paths)})")
    name = context or current
    if not name:
        raise ConfigError("kubeconfig has no current-context (name a context)")
    if name not in merged["contexts"]:
        raise ConfigError(f"kubeconfig has no context {name!r}")
    ctx, _ = merged["contexts"][name]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in merged["clusters"]:
        raise ConfigError(f"kubeconfig context {name!r}: no cluster {cluster_name!r}")
    cluster, cluster_base = merged["clusters"][cluster_name]
    user, user_base = merged["users"].get(str(user_name), ({}, ""))
    for unsupported in ("exec", "auth-provider"):
        if user.get(unsupported):
            raise ConfigError(f"kubeconfig user {user_name!r}: {unsupported} is not supported")
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigError(f"kubeconfig cluster {cluster_name!r} has no server")

    def file_of(value: Any, base: str) -> str | None:
        return os.path.join(base, value) if isinstance(value, str) and value else None

    def data_of(value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        try:
            return base64.b64decode(value).decode()
        except ValueError as exc:
            raise ConfigError(f"kubeconfig: bad base64 data: {exc}") from None

    return Connection(
        server=server.rstrip("/"),
        ca_file=file_of(cluster.get("certificate-authority"), cluster_base),
        ca_data=data_of(cluster.get("certificate-authority-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name") or None,
        token=user.get("token") or None,
        token_file=file_of(user.get("tokenFile"), user_base),
        client_cert=file_of(user.get("client-certificate"), user_base),
        client_key=file_of(user.get("client-key"), user_base),
        client_cert_data=data_of(user.get("client-certificate-data")),
        client_key_data=data_of(user.get("client-key-data")),
        namespace=str(ctx.get("namespace") or "default"),
    )


# -- Label selectors -----------------------------------------------------------------

_SELECTOR_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_SELECTOR_VALUE = r"(?:[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SELECTOR_REQUIREMENT = re.compile(
    rf"^\s*(?:!\s*{_SELECTOR_KEY}|{_SELECTOR_KEY}\s*(?:(?:==?|!=)\s*{_SELECTOR_VALUE}"
    rf"|\s+(?:in|notin)\s*\(\s*{_SELECTOR_VALUE}(?:\s*,\s*{_SELECTOR_VALUE})*\s*\))?)\s*$"
)


def check_selector(text: str) -> str:
    """A label selector as the API takes it (``a=b,c in (d,e),!f``), its spaces normalised;
    ValueError naming the requirement that is malformed. Check a Corefile's selector with
    it at setup: the API would refuse it only later, at every LIST."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    for part in parts:
        if not _SELECTOR_REQUIREMENT.match(part):
            raise ValueError(f"unable to parse requirement {part.strip()!r}")
    return ",".join(" ".join(part.split()) for part in parts)


# -- Talking to it -------------------------------------------------------------------


class ApiClient:
    """Requests to one API server, with the bearer token kept current."""

    def __init__(
        self,
        conn: Connection,
        user_agent: str = "pycorefile",
        connect_timeout: float = 10.0,
        request_timeout: float = 60.0,
    ) -> None:
        self.conn = conn
        verify: ssl.SSLContext | bool = (
            conn.ssl_context() if conn.server.startswith("https:") else False
        )
        self._http = httpx.AsyncClient(
            base_url=conn.server,
            verify=verify,
            trust_env=False,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
        )
        self._extensions = {"sni_hostname": conn.tls_server_name} if conn.tls_server_name else {}
        self._token = conn.token
        self._token_read = -math.inf
        self.token_reads = 0
        """How many times the token file was read (for tests and logs)."""
        self.host = httpx.URL(conn.server).netloc.decode()
        self.requests: dict[tuple[str, str], int] = {}
        """Requests by (HTTP status or ``<error>``, method): client-go's request counter."""

    def _count(self, code: str, method: str = "GET") -> None:
        key = (code, method)
        self.requests[key] = self.requests.get(key, 0) + 1

    async def _headers(self, force_token: bool = False) -> dict[str, str]:
        """The Authorization header; a token file is read again (in a thread) when due."""
        conn = self.conn
        if conn.token_file is not None:
            now = time.monotonic()
            if force_token or now - self._token_read >= TOKEN_REREAD_SECONDS:
                try:
                    text = await trio.to_thread.run_sync(_read_token, conn.token_file)
                    self._token = text.strip()
                    self.token_reads += 1
                except OSError as exc:
                    log.warning("kube: cannot read token file %s: %s", conn.token_file, exc)
                self._token_read = now
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """GET a JSON document; ``ApiError`` for an error status (after one retry on 401)."""
        for attempt in range(2):
            try:
                response = await self._http.get(
                    path,
                    params=dict(params),
                    headers=await self._headers(force_token=attempt > 0),
                    extensions=self._extensions,
                )
            except httpx.HTTPError:
                self._count("<error>")
                raise
            self._count(str(response.status_code))
            if response.status_code == 401 and attempt == 0 and self.conn.token_file:
                continue
            if response.status_code != 200:
                raise _api_error(response.status_code, response.content)
            document = json.loads(response.content)
            if not isinstance(document, dict):
                raise ApiError(response.status_code, "BadResponse", "not a JSON object")
            return document
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def stream(
        self, path: str, params: Mapping[str, str], read_timeout: float
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A watch: its body as it comes, in chunks of bytes."""
        timeout = httpx.Timeout(read_timeout, connect=self._http.timeout.connect)
        request = self._http.build_request(
            "GET",
            path,
            params=dict(params),
            headers=await self._headers(),
            timeout=timeout,
            extensions=self._extensions,
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError:
            self._count("<error>")
            raise
        self._count(str(response.status_code))
        try:
            if response.status_code == 401 and self.conn.token_file:
                self._token_read = -math.inf  # the next request reads the file again
            if response.status_code != 200:
                raise _api_error(response.status_code, await response.aread())
            yield response.aiter_raw()
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()


def _read_token(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _api_error(status: int, body: bytes) -> ApiError:
    reason, message = httpx.codes.get_reason_phrase(status) or "Error", ""
    try:
        document = json.loads(body)
        if isinstance(document, dict):
            reason = str(document.get("reason") or reason)
            message = str(document.get("message") or "")
    except ValueError:
        message = body[:200].decode("utf-8", "replace")
    return ApiError(status, reason, message)


class LineSplitter:
    """Watch events out of a body that arrives in chunks: one JSON object per line."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._pending = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        """The events completed by ``chunk``; ``ApiError`` for an unreadable or oversize one."""
        data = self._pending + chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > self.max_line:
            raise ApiError(0, "EventTooLarge", f"a watch event over {self.max_line} bytes")
        return [_event(line) for line in lines if line.strip()]

    def end(self) -> list[dict[str, Any]]:
        """The last event, when the body did not end with a newline."""
        rest, self._pending = self._pending, b""
        return [_event(rest)] if rest.strip() else []


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise ApiError(0, "BadEvent", f"unreadable watch event: {exc}") from None
    if not isinstance(event, dict):
        raise ApiError(0, "BadEvent", "a watch event that is not a JSON object")
    return event


# -- Records -------------------------------------------------------------------------

ObjectKey = tuple[str, str]
"""(namespace, name); the namespace is empty for cluster-scoped objects."""


@dataclass(frozen=True, slots=True)
class PortRecord:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """What DNS needs of a Service."""

    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]
    """``spec.clusterIPs`` (or ``[clusterIP]``); ``("None",)`` for a headless Service."""
    external_name: str
    ports: tuple[PortRecord, ...]
    external_ips: tuple[str, ...] = ()

    @property
    def headless(self) -> bool:
        return self.cluster_ips == ("None",)


@dataclass(frozen=True, slots=True)
class EndpointAddress:
    """One ready address of an EndpointSlice endpoint."""

    ip: str
    hostname: str = ""
    node_name: str = ""
    target_name: str = ""
    """The name of the ``targetRef`` (a pod), if any."""


@dataclass(frozen=True, slots=True)
class EndpointSliceRecord:
    """What DNS needs of an EndpointSlice: its Service and its ready addresses."""

    namespace: str
    name: str
    service: str
    """The ``kubernetes.io/service-name`` label (empty: belongs to no Service)."""
    address_type: str
    ports: tuple[PortRecord, ...]
    addresses: tuple[EndpointAddress, ...]


@dataclass(frozen=True, slots=True)
class NamespaceRecord:
    name: str


@dataclass(frozen=True, slots=True)
class PodRecord:
    namespace: str
    name: str
    ip: str
    """``status.podIP`` (only the first address, as CoreDNS)."""


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and v)


def _ports(value: Any, default_protocol: str = "TCP") -> tuple[PortRecord, ...]:
    ports = []
    for port in value if isinstance(value, list) else ():
        if not isinstance(port, dict):
            continue
        number = port.get("port")
        ports.append(
            PortRecord(
                str(port.get("name") or ""),
                str(port.get("protocol") or default_protocol),
                number if isinstance(number, int) else -1,
            )
        )
    return tuple(ports)


def trim_service(obj: Mapping[str, Any]) -> ServiceRecord | None:
    meta, spec = _meta(obj), obj.get("spec")
    if not isinstance(spec, dict) or not meta.get("name"):
        return None
    cluster_ips = _strings(spec.get("clusterIPs"))
    if not cluster_ips and isinstance(spec.get("clusterIP"), str) and spec["clusterIP"]:
        cluster_ips = (spec["clusterIP"],)
    external = list(_strings(spec.get("externalIPs")))
    status = obj.get("status")
    balancer = status.get("loadBalancer") if isinstance(status, dict) else None
    for ingress in (balancer or {}).get("ingress") or ():
        if isinstance(ingress, dict):
            external.extend(v for k in ("ip", "hostname") if (v := ingress.get(k)))
    ports = _ports(spec.get("ports")) or (PortRecord("", "", -1),)
    return ServiceRecord(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta["name"]),
        type=str(spec.get("type") or "ClusterIP"),
        cluster_ips=cluster_ips,
        external_name=str(spec.get("externalName") or ""),
        ports=ports,
        external_ips=tuple(external),
    )


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def trim_endpoint_slice(obj: Mapping[str, Any]) -> EndpointSliceRecord | None:
    """The slice's ready addresses (``ready`` absent counts as ready, as the API says)."""
    meta = _meta(obj)
    if not meta.get("name"):
        return None
    labels = meta.get("labels")
    service = labels.get(SERVICE_NAME_LABEL, "") if isinstance(labels, dict) else ""
    addresses = []
    for endpoint in obj.get("endpoints") or ():
        if not isinstance(endpoint, dict):
            continue
        conditions = endpoint.get("conditions")
        if isinstance(conditions, dict) and conditions.get("ready") is False:
            continue
        target = endpoint.get("targetRef")
        target_name = str(target.get("name") or "") if isinstance(target, dict) else ""
        if len(target_name) > 63:
            target_name = ""  # not a valid label: never an endpoint name
        for ip in _strings(endpoint.get("addresses")):
            addresses.append(
                EndpointAddress(
                    ip=ip,
                    hostname=str(endpoint.get("hostname") or ""),
                    node_name=str(endpoint.get("nodeName") or ""),
                    target_name=target_name,
                )
            )
    return EndpointSliceRecord(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta["name"]),
        service=str(service or ""),
        address_type=str(obj.get("addressType") or ""),
        ports=_ports(obj.get("ports"), "") or (PortRecord("", "", -1),),
        addresses=tuple(addresses),
    )


def trim_namespace(obj: Mapping[str, Any]) -> NamespaceRecord | None:
    name = _meta(obj).get("name")
    return NamespaceRecord(str(name)) if name else None


def trim_pod(obj: Mapping[str, Any]) -> PodRecord | None:
    """A running pod's first IP; None (not kept) for a pod being deleted or without an IP."""
    meta = _meta(obj)
    status = obj.get("status")
    ip = status.get("podIP") if isinstance(status, dict) else None
    if not meta.get("name") or meta.get("deletionTimestamp") or not ip:
        return None
    return PodRecord(str(meta.get("namespace") or ""), str(meta["name"]), str(ip))


# -- Keeping a copy ------------------------------------------------------------------

R = TypeVar("R")


@dataclass(frozen=True)
class Resource:
    """A kind to list and watch, cluster-wide."""

    path: str
    """The collection's path, ``/api/v1/services``."""
    plural: str


SERVICES = Resource("/api/v1/services", "services")
ENDPOINT_SLICES = Resource("/apis/discovery.k8s.io/v1/endpointslices", "endpointslices")
NAMESPACES = Resource("/api/v1/namespaces", "namespaces")
PODS = Resource("/api/v1/pods", "pods")
POD_FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"
"""The pods worth knowing for DNS (CoreDNS's selector)."""


class Sink(Protocol[R]):
    """Where a reflector puts what it learns; called on the event loop, never concurrently."""

    def replace(self, records: dict[ObjectKey, R]) -> None:
        """The whole collection after a LIST: what is not in it is gone."""

    def upsert(self, key: ObjectKey, record: R) -> None:
        """An object was added or changed."""

    def remove(self, key: ObjectKey) -> None:
        """An object was deleted (or is no longer of interest)."""


@dataclass
class ReflectorStats:
    """Counts of what a reflector did (metrics, logs, tests)."""

    lists: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    gone: int = 0
    """Watches or lists that ended in 410 Gone (each led to a new LIST)."""
    errors: int = 0


class _Gone(Exception):
    """410: the resourceVersion is too old, list again."""


class Reflector(Generic[R]):
    """Keeps a ``Sink`` equal to one kind of object of the cluster.

    ``trim`` turns an object's JSON into the record kept (None: not kept, e.g.
    a pod being deleted). ``synced`` is True once a LIST has reached the sink,
    and stays so through outages: the sink keeps the last state.

    A LIST answered 404 means the API does not serve the kind (its CRD is not
    installed): the sink gets an empty collection, ``synced`` becomes True and
    ``served`` False, and the kind is listed again every ``not_served_retry``
    seconds (jittered); when it appears, ``served`` is True again.
    """

    def __init__(
        self,
        client: ApiClient,
        resource: Resource,
        trim: Callable[[Mapping[str, Any]], R | None],
        sink: Sink[R],
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        watch_seconds: tuple[int, int] = (300, 600),
        backoff: tuple[float, float] = (0.8, 30.0),
        not_served_retry: float = 60.0,
    ) -> None:
        self.client = client
        self.resource = resource
        self.trim = trim
        self.sink = sink
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.watch_seconds = watch_seconds
        self.backoff = backoff
        self.not_served_retry = not_served_retry
        self.synced = False
        self.served = True
        """False while the API answers 404 to this kind's LIST (counted as listed, empty)."""
        self.synced_event = trio.Event()
        self.resource_version = ""
        self.last_error = ""
        self.stats = ReflectorStats()
        self._delay = backoff[0]

    def _params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def run(self) -> None:
        """List (unless ``list`` already succeeded), then watch, for ever (until cancelled)."""
        must_list = not self.synced
        while True:
            try:
                if must_list:
                    await self.list()
                    must_list = False
                if not self.served:
                    await trio.sleep(self.not_served_retry * random.uniform(0.8, 1.2))
                    must_list = True
                    continue
                await self.watch()
            except _Gone:
                self.stats.gone += 1
                log.info("kube: %s: resource version expired, listing again", self.resource.plural)
                must_list = True
            except Exception as exc:  # the API, the network, a body that is not JSON...
                self.stats.errors += 1
                self._report(exc)
                await trio.sleep(self._next_delay())
                # A watch can go on from the last version; a LIST that failed starts over,
                # and so does a watch answered 404 (the kind was removed: list to know).
                not_found = isinstance(exc, ApiError) and exc.status == 404
                must_list = must_list or not self.resource_version or not_found

    def _report(self, exc: BaseException) -> None:
        what = self.resource.plural
        if isinstance(exc, ApiError) and exc.status == 403:
            text = (
                f"forbidden to list/watch {what} at cluster scope: give the service account "
                f"list and watch on {what} (ClusterRole): {exc.message}"
            )
        elif isinstance(exc, ApiError) and exc.status == 401:
            text = f"unauthorized for {what}: the credentials were refused: {exc.message}"
        else:
            text = f"{what}: {type(exc).__name__}: {exc}"
        if text != self.last_error:
            log.warning("kube: %s", text)
        self.last_error = text

    def _next_delay(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self.backoff[1])
        return delay * random.uniform(0.8, 1.2)

    async def list(self) -> None:
        """A paged LIST into a new collection, then ``sink.replace``."""
        records: dict[ObjectKey, R] = {}
        params = self._params()
        params["limit"] = str(self.page_size)
        token = ""
        version = ""
        while True:
            if token:
                params["continue"] = token
            try:
                page = await self.client.get(self.resource.path, params)
            except ApiError as exc:
                if exc.status == 410 and token:
                    # The continue token expired mid-list: start the list over.
                    params.pop("continue", None)
                    records.clear()
                    token = ""
                    continue
                if exc.status == 404:
                    self._not_served()
                    return
                raise
            meta = page.get("metadata") if isinstance(page.get("metadata"), dict) else {}
            assert isinstance(meta, dict)
            version = str(meta.get("resourceVersion") or version)
            for obj in page.get("items") or ():
                if isinstance(obj, dict):
                    record = self.trim(obj)
                    if record is not None:
                        m = _meta(obj)
                        records[(str(m.get("namespace") or ""), str(m.get("name")))] = record
            del page
            token = str(meta.get("continue") or "")
            if not token:
                break
        self.stats.lists += 1
        if not self.served:
            log.info("kube: %s: now served by the API", self.resource.plural)
            self.served = True
        self.sink.replace(records)
        self.resource_version = version
        self._synced()

    def _not_served(self) -> None:
        """The API does not serve the kind: listed, and empty."""
        self.stats.lists += 1
        if self.served or not self.synced:
            log.info(
                "kube: %s: not served by the API (404: not installed); counted as none, "
                "listed again every %g s",
                self.resource.plural,
                self.not_served_retry,
            )
            self.sink.replace({})  # once: the retries that find nothing change nothing
        self.served = False
        self.resource_version = ""
        self._synced()

    def _synced(self) -> None:
        self._delay = self.backoff[0]
        self.last_error = ""
        if not self.synced:
            self.synced = True
            self.synced_event.set()

    async def watch(self) -> None:
        """One WATCH from the last resourceVersion, applying events until it ends."""
        seconds = random.randint(*self.watch_seconds)
        params = self._params()
        params.update(
            watch="true",
            allowWatchBookmarks="true",
            timeoutSeconds=str(seconds),
            resourceVersion=self.resource_version,
        )
        self.stats.watches += 1
        try:
            async with self.client.stream(self.resource.path, params, seconds + 60.0) as body:
                await self._consume(body)
        except ApiError as exc:
            if exc.status == 410:
                raise _Gone from exc
            raise

    async def _consume(self, body: AsyncIterator[bytes]) -> None:
        """Apply a watch's events as they come; after a failure, read on to the end of the
        body (so the HTTP stream is closed in order, within 5 s) and raise it."""
        failure: ApiError | None = None
        splitter = LineSplitter()
        with trio.CancelScope() as drain:
            async for chunk in body:
                if failure is not None:
                    continue
                try:
                    for event in splitter.feed(chunk):
                        self._apply(event)
                except ApiError as exc:
                    failure = exc
                    drain.deadline = trio.current_time() + 5.0
        if failure is not None:
            raise failure
        for event in splitter.end():
            self._apply(event)

    def _apply(self, event: Mapping[str, Any]) -> None:
        """Apply one watch event; ``ApiError`` for an ERROR event (410: list again)."""
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise ApiError(0, "BadEvent", f"watch event {kind} without an object")
        if kind == "ERROR":
            code = obj.get("code")
            status = code if isinstance(code, int) else 500
            raise ApiError(status, str(obj.get("reason") or ""), str(obj.get("message") or ""))
        meta = _meta(obj)
        version = meta.get("resourceVersion")
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            self.stats.events += 1
            key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            record = None if kind == "DELETED" else self.trim(obj)
            if record is None:
                self.sink.remove(key)
            else:
                self.sink.upsert(key, record)
        else:
            raise ApiError(0, "BadEvent", f"unknown watch event type {kind!r}")
        if isinstance(version, str) and version:
            self.resource_version = version
        self._delay = self.backoff[0]


@dataclass
class Store(Generic[R]):
    """A plain ``Sink``: the records by key, and a count of changes."""

    records: dict[ObjectKey, R] = field(default_factory=dict)
    changes: int = 0

    def replace(self, records: dict[ObjectKey, R]) -> None:
        self.records = records
        self.changes += 1

    def upsert(self, key: ObjectKey, record: R) -> None:
        self.records[key] = record
        self.changes += 1

    def remove(self, key: ObjectKey) -> None:
        if self.records.pop(key, None) is not None:
            self.changes += 1


# -- One watch per kind for the whole process ------------------------------------------


class SharedWatch(Generic[R]):
    """One reflector whose records every subscriber with the same key receives.

    Its task is a trio system task, so it outlives the configuration whose
    plugin started it: across a reload the new plugin subscribes (and gets
    the records at once, already synced) before the old one leaves, and
    nothing is listed again. The task stops when the last subscriber leaves.
    """

    def __init__(self, key: tuple[Any, ...], reflector_of: Callable[[Sink[R]], Reflector[R]]):
        self.key = key
        self.records: dict[ObjectKey, R] = {}
        self.subscribers: list[Sink[R]] = []
        self.reflector = reflector_of(self)
        self._scope = trio.CancelScope()

    # The reflector's sink: keep the records, pass every change on.

    def replace(self, records: dict[ObjectKey, R]) -> None:
        self.records = records
        for sink in list(self.subscribers):
            sink.replace(dict(records))  # each its own: a sink may keep and change it

    def upsert(self, key: ObjectKey, record: R) -> None:
        self.records[key] = record
        for sink in list(self.subscribers):
            sink.upsert(key, record)

    def remove(self, key: ObjectKey) -> None:
        self.records.pop(key, None)
        for sink in list(self.subscribers):
            sink.remove(key)

    async def _run(self) -> None:
        with self._scope:
            try:
                await self.reflector.run()
            except Exception:  # a bug: never let it end the process's run
                log.exception("kube: watch of %s failed", self.reflector.resource.plural)


class Subscription:
    """A plugin's hold on shared watches; ``close`` when the plugin shuts down."""

    def __init__(self) -> None:
        self.watches: list[tuple[SharedWatch[Any], Sink[Any]]] = []

    @property
    def reflectors(self) -> list[Reflector[Any]]:
        return [watch.reflector for watch, _ in self.watches]

    def synced(self) -> bool:
        """True once every watch has been listed (and for ever after)."""
        return bool(self.watches) and all(w.reflector.synced for w, _ in self.watches)

    async def wait_synced(self) -> None:
        for watch, _ in self.watches:
            await watch.reflector.synced_event.wait()

    def close(self) -> None:
        hub = _HUB.get()
        for watch, sink in self.watches:
            if sink in watch.subscribers:
                watch.subscribers.remove(sink)
            if not watch.subscribers:
                watch._scope.cancel()
                hub.watches.pop(watch.key, None)
                hub.release(watch.reflector.client)
        self.watches.clear()


class _Hub:
    """The watches and clients of one trio run (the process, in a server)."""

    def __init__(self) -> None:
        self.watches: dict[tuple[Any, ...], SharedWatch[Any]] = {}
        self.clients: dict[tuple[Connection, str], tuple[ApiClient, int]] = {}

    def client(self, conn: Connection, user_agent: str) -> ApiClient:
        key = (conn, user_agent)
        found = self.clients.get(key)
        client = found[0] if found is not None else ApiClient(conn, user_agent=user_agent)
        self.clients[key] = (client, (found[1] if found is not None else 0) + 1)
        return client

    def release(self, client: ApiClient) -> None:
        for key, (held, count) in list(self.clients.items()):
            if held is client:
                if count > 1:
                    self.clients[key] = (held, count - 1)
                else:
                    del self.clients[key]
                    trio.lowlevel.spawn_system_task(held.aclose)


_HUB: trio.lowlevel.RunVar[_Hub] = trio.lowlevel.RunVar("pycorefile.kube hub")


def subscribe(
    subscription: Subscription,
    conn: Connection,
    resource: Resource,
    trim: Callable[[Mapping[str, Any]], R | None],
    sink: Sink[R],
    *,
    label_selector: str | None = None,
    field_selector: str | None = None,
    user_agent: str = "pycorefile",
) -> SharedWatch[R]:
    """Receive ``resource``'s records in ``sink``, from the process's one watch of it.

    Subscribers with the same connection, resource, selectors and ``trim``
    share one LIST/WATCH; a later one gets the current records at once
    (``sink.replace``) when the watch has synced. Call from trio (``startup``).
    """
    try:
        hub = _HUB.get()
    except LookupError:
        hub = _Hub()
        _HUB.set(hub)
    key = (conn, resource, label_selector, field_selector, trim, user_agent)
    watch = hub.watches.get(key)
    if watch is None:
        client = hub.client(conn, user_agent)

        def reflector_of(shared: Sink[R]) -> Reflector[R]:
            return Reflector(
                client,
                resource,
                trim,
                shared,
                label_selector=label_selector,
                field_selector=field_selector,
            )

        watch = SharedWatch(key, reflector_of)
        hub.watches[key] = watch
        trio.lowlevel.spawn_system_task(watch._run, name=f"kube watch {resource.plural}")
    elif watch.reflector.synced:
        sink.replace(dict(watch.records))
    watch.subscribers.append(sink)
    subscription.watches.append((watch, sink))
    return watch
