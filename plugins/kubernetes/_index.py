"""The cluster as DNS reads it: trimmed records and the indexes the answers look up.

Each watched kind has a sink (``kube.Sink``) that keeps its records and the
indexes over them current; ``generation`` counts every change, so answers
prepared from an older state are known to be stale.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

from pycorefile.kube import (
    EndpointSliceRecord,
    NamespaceRecord,
    ObjectKey,
    PodRecord,
    ServiceRecord,
)

R = TypeVar("R")
log = logging.getLogger("pycorefile.kubernetes")

Dependency = tuple[str, ...]
"""What an answer is made from: ``("service", NS, NAME)``, ``("ip", IP)``, or one of below."""
NAMESPACES: Dependency = ("namespaces",)
PODS: Dependency = ("pods",)
ANY_SERVICE: Dependency = ("any service",)
RELISTED: Dependency = ("relisted",)
"""A LIST replaced a whole kind: anything may have changed."""
STATIC: Dependency = ("static",)
"""Made from nothing that changes (an invalid name, ``dns-version``)."""


class ClusterIndex:
    """Services, EndpointSlices, Namespaces and Pods, indexed for lookups by name and IP."""

    def __init__(self) -> None:
        self.services: dict[ObjectKey, ServiceRecord] = {}
        self.service_by_ip: dict[str, dict[ObjectKey, None]] = {}
        self.slices: dict[ObjectKey, EndpointSliceRecord] = {}
        self.slices_of: dict[ObjectKey, dict[ObjectKey, None]] = {}
        """(namespace, service) -> keys of its slices."""
        self.slices_by_ip: dict[str, dict[ObjectKey, None]] = {}
        self.namespaces: set[str] = set()
        self.pods: dict[ObjectKey, PodRecord] = {}
        self.pods_by_ip: dict[str, dict[ObjectKey, None]] = {}
        self.generation = 0
        """Counts changes of anything an answer may read."""
        self.listeners: list[Callable[[Sequence[Dependency]], None]] = []
        """Told what changed (the ``Dependency``s touched), right after each change; after a
        LIST, once with ``RELISTED`` (the changes it made are not told one by one)."""
        self._listing = False
        self.modified = int(time.time())
        """Unix time of the last Service or endpoint change (the SOA serial)."""
        self.service_sink = _Sink(self, self._add_service, self._drop_service)
        self.slice_sink = _Sink(self, self._add_slice, self._drop_slice)
        self.namespace_sink = _Sink(self, self._add_namespace, self._drop_namespace)
        self.pod_sink = _Sink(self, self._add_pod, self._drop_pod)

    def _changed(self, changes: Iterable[Dependency], serial: bool = True) -> None:
        self.generation += 1
        if serial:
            self.modified = int(time.time())
        if self._listing:
            return
        self._tell(list(dict.fromkeys(changes)))

    def _tell(self, changes: list[Dependency]) -> None:
        for listener in self.listeners:
            try:
                listener(changes)
            except Exception:  # a bug: the index itself is already up to date
                log.exception("plugin/kubernetes: a listener failed on a change")

    @contextmanager
    def listed(self) -> Iterator[None]:
        """Around a LIST's changes: told once, as ``RELISTED``, at the end."""
        self._listing = True
        try:
            yield
        finally:
            self._listing = False
            self._tell([RELISTED])

    # -- Services -----------------------------------------------------------------

    def _add_service(self, key: ObjectKey, record: ServiceRecord) -> None:
        old = self.services.get(key)
        if old == record:
            return
        if old is not None:
            self._unindex_service(key, old)
        self.services[key] = record
        for ip in record.cluster_ips:
            if ip != "None":
                self.service_by_ip.setdefault(ip, {})[key] = None
        self._changed(_service_changes(old) + _service_changes(record))

    def _drop_service(self, key: ObjectKey) -> None:
        old = self.services.pop(key, None)
        if old is not None:
            self._unindex_service(key, old)
            self._changed(_service_changes(old))

    def _unindex_service(self, key: ObjectKey, record: ServiceRecord) -> None:
        for ip in record.cluster_ips:
            _unlink(self.service_by_ip, ip, key)

    def service(self, namespace: str, name: str) -> ServiceRecord | None:
        return self.services.get((namespace, name))

    # -- EndpointSlices -----------------------------------------------------------

    def _add_slice(self, key: ObjectKey, record: EndpointSliceRecord) -> None:
        old = self.slices.get(key)
        if old == record:
            return
        if old is not None:
            self._unindex_slice(key, old)
        self.slices[key] = record
        if record.service:
            self.slices_of.setdefault((record.namespace, record.service), {})[key] = None
        for address in record.addresses:
            self.slices_by_ip.setdefault(address.ip, {})[key] = None
        self._changed(_slice_changes(old) + _slice_changes(record))

    def _drop_slice(self, key: ObjectKey) -> None:
        old = self.slices.pop(key, None)
        if old is not None:
            self._unindex_slice(key, old)
            self._changed(_slice_changes(old))

    def _unindex_slice(self, key: ObjectKey, record: EndpointSliceRecord) -> None:
        if record.service:
            _unlink(self.slices_of, (record.namespace, record.service), key)
        for address in record.addresses:
            _unlink(self.slices_by_ip, address.ip, key)

    def slices_for(self, namespace: str, service: str) -> Iterator[EndpointSliceRecord]:
        for key in self.slices_of.get((namespace, service), ()):
            yield self.slices[key]

    def slices_with_ip(self, ip: str) -> Iterator[EndpointSliceRecord]:
        for key in self.slices_by_ip.get(ip, ()):
            yield self.slices[key]

    # -- Namespaces and Pods ------------------------------------------------------

    def _add_namespace(self, key: ObjectKey, record: NamespaceRecord) -> None:
        if record.name not in self.namespaces:
            self.namespaces.add(record.name)
            self._changed((NAMESPACES,), serial=False)

    def _drop_namespace(self, key: ObjectKey) -> None:
        if key[1] in self.namespaces:
            self.namespaces.discard(key[1])
            self._changed((NAMESPACES,), serial=False)

    def _add_pod(self, key: ObjectKey, record: PodRecord) -> None:
        old = self.pods.get(key)
        if old == record:
            return
        if old is not None:
            _unlink(self.pods_by_ip, old.ip, key)
        self.pods[key] = record
        self.pods_by_ip.setdefault(record.ip, {})[key] = None
        self._changed((PODS,), serial=False)

    def _drop_pod(self, key: ObjectKey) -> None:
        old = self.pods.pop(key, None)
        if old is not None:
            _unlink(self.pods_by_ip, old.ip, key)
            self._changed((PODS,), serial=False)

    def pods_with_ip(self, ip: str) -> list[PodRecord]:
        return [self.pods[key] for key in self.pods_by_ip.get(ip, ())]


def _service_changes(record: ServiceRecord | None) -> list[Dependency]:
    if record is None:
        return []
    ips = [("ip", ip) for ip in record.cluster_ips if ip != "None"]
    return [("service", record.namespace, record.name), *ips]


def _slice_changes(record: EndpointSliceRecord | None) -> list[Dependency]:
    if record is None:
        return []
    return [("service", record.namespace, record.service)] + [
        ("ip", address.ip) for address in record.addresses
    ]


def _unlink(index: dict[R, dict[ObjectKey, None]], value: R, key: ObjectKey) -> None:
    keys = index.get(value)
    if keys is not None:
        keys.pop(key, None)
        if not keys:
            del index[value]


class _Sink(Generic[R]):
    """A ``kube.Sink`` over one kind's add and drop functions."""

    def __init__(
        self,
        index: ClusterIndex,
        add: Callable[[ObjectKey, R], None],
        drop: Callable[[ObjectKey], None],
    ) -> None:
        self._index = index
        self._add = add
        self._drop = drop
        self._keys: set[ObjectKey] = set()

    def replace(self, records: dict[ObjectKey, R]) -> None:
        """A new LIST: what it lacks is deleted, the rest added or updated in place."""
        with self._index.listed():
            for key in self._keys - records.keys():
                self.remove(key)
            for key, record in records.items():
                self.upsert(key, record)

    def upsert(self, key: ObjectKey, record: R) -> None:
        self._keys.add(key)
        self._add(key, record)

    def remove(self, key: ObjectKey) -> None:
        self._keys.discard(key)
        self._drop(key)
