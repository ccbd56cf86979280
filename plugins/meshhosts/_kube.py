"""The ``kubernetes`` source: Services, EndpointSlices, ServiceEntries (and Pods) from the API.

Built on ``pycorefile.kube``, the watch core the *kubernetes* plugin uses: one
LIST then WATCH per kind, re-listed after a 410, backing off through outages,
keeping the last state meanwhile. Each object is turned on arrival into the
same record a manifest file gives (``_sources``' readers, so the file and the
API can never read an object differently) and the JSON is dropped. An object
a reader refuses is logged and left out; it never costs the rest of the
table.

The records of each kind are kept by (namespace, name); ``sources()`` gives a
``Sources`` snapshot for the next table build. Every change calls
``on_change``: the plugin coalesces them into table builds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pycorefile import kube

from ._sources import (
    PodRecord,
    ServiceEntryRecord,
    ServiceRecord,
    SliceRecord,
    Sources,
    _Invalid,
    _read_pod,
    _read_service,
    _read_service_entry,
    _read_slice,
)

log = logging.getLogger("pycorefile")

SERVICE_ENTRIES = kube.Resource("/apis/networking.istio.io/v1/serviceentries", "serviceentries")
"""Istio's ServiceEntries (served as ``networking.istio.io/v1`` since Istio 1.22)."""
USER_AGENT = "pycorefile-meshhosts"

R = TypeVar("R")


@dataclass(frozen=True)
class KubeSourceConfig:
    """What the ``kubernetes`` options of a ``meshhosts`` block say."""

    connection: kube.Connection
    namespaces: frozenset[str] = frozenset()
    """Only objects of these namespaces (empty: all)."""
    labels: str | None = None
    """A label selector for Services, EndpointSlices and ServiceEntries."""
    pods: bool = False
    """Watch Pods too (``namespace @client``: a client's namespace from its address)."""


def _trimmer(kind: str, reader: Callable[[Mapping[str, Any], tuple[Any, ...]], R | None]) -> Any:
    """A ``kube`` trim function from a manifest reader: a refused object is logged, left out."""

    def trim(obj: Mapping[str, Any]) -> R | None:
        try:
            return reader(obj, ())
        except _Invalid as exc:
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            assert isinstance(meta, dict)
            where = "/".join(str(p) for p in exc.path) or "object"
            log.warning(
                "plugin/meshhosts: %s %s/%s left out: %s: %s",
                kind,
                meta.get("namespace", ""),
                meta.get("name", ""),
                where,
                exc.reason,
            )
            return None

    trim.__name__ = f"trim_{kind}"
    return trim


# Module-level, so that every meshhosts block of a process shares one watch per kind.
trim_service: Callable[[Mapping[str, Any]], ServiceRecord | None] = _trimmer(
    "Service", _read_service
)
trim_slice: Callable[[Mapping[str, Any]], SliceRecord | None] = _trimmer(
    "EndpointSlice", _read_slice
)
trim_service_entry: Callable[[Mapping[str, Any]], ServiceEntryRecord | None] = _trimmer(
    "ServiceEntry", _read_service_entry
)
trim_pod: Callable[[Mapping[str, Any]], PodRecord | None] = _trimmer("Pod", _read_pod)


class KindSink(Generic[R]):
    """One kind's records, as a ``kube.Sink``; objects outside ``namespaces`` are ignored."""

    def __init__(self, namespaces: frozenset[str], changed: Callable[[], None]) -> None:
        self.namespaces = namespaces
        self.changed = changed
        self.records: dict[kube.ObjectKey, R] = {}
        self.synced = False

    def _wanted(self, key: kube.ObjectKey) -> bool:
        return not self.namespaces or key[0] in self.namespaces

    def replace(self, records: dict[kube.ObjectKey, R]) -> None:
        if self.namespaces:
            records = {k: v for k, v in records.items() if k[0] in self.namespaces}
        self.records = dict(records)
        self.synced = True
        self.changed()

    def upsert(self, key: kube.ObjectKey, record: R) -> None:
        if self._wanted(key):
            self.records[key] = record
            self.changed()

    def remove(self, key: kube.ObjectKey) -> None:
        if self.records.pop(key, None) is not None:
            self.changed()


class KubeSource:
    """The watches of one ``meshhosts`` block and what they hold now."""

    def __init__(self, config: KubeSourceConfig, on_change: Callable[[], None]) -> None:
        self.config = config
        self.on_change = on_change
        ns = config.namespaces
        self.services: KindSink[ServiceRecord] = KindSink(ns, self._changed)
        self.slices: KindSink[SliceRecord] = KindSink(ns, self._changed)
        self.service_entries: KindSink[ServiceEntryRecord] = KindSink(ns, self._changed)
        self.pods: KindSink[PodRecord] = KindSink(ns, self._changed)
        self.subscription: kube.Subscription | None = None
        self.changes = 0

    def _changed(self) -> None:
        self.changes += 1
        self.on_change()

    def start(self) -> None:
        """Subscribe to the process's watches (call from trio, in ``startup``)."""
        held = kube.Subscription()
        conn, labels = self.config.connection, self.config.labels

        def watch(resource: kube.Resource, trim: Any, sink: Any, **selectors: str | None) -> Any:
            return kube.subscribe(
                held, conn, resource, trim, sink, user_agent=USER_AGENT, **selectors
            )

        watch(kube.SERVICES, trim_service, self.services, label_selector=labels)
        watch(kube.ENDPOINT_SLICES, trim_slice, self.slices, label_selector=labels)
        watch(SERVICE_ENTRIES, trim_service_entry, self.service_entries, label_selector=labels)
        if self.config.pods:
            watch(kube.PODS, trim_pod, self.pods, field_selector=kube.POD_FIELD_SELECTOR)
        self.subscription = held

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None

    def synced(self) -> bool:
        """Every kind listed once (and for ever after: an outage keeps the last state).

        A cluster without Istio has no ServiceEntry kind: ``pycorefile.kube``
        counts its 404 as listed and empty (and lists again now and then).
        """
        kinds: list[KindSink[Any]] = [self.services, self.slices, self.service_entries]
        if self.config.pods:
            kinds.append(self.pods)
        return all(k.synced for k in kinds)

    def sources(self) -> Sources:
        """What the watches hold now, as the records a build takes (in key order: stable)."""
        return Sources(
            services=[self.services.records[k] for k in sorted(self.services.records)],
            slices=[self.slices.records[k] for k in sorted(self.slices.records)],
            service_entries=[
                self.service_entries.records[k] for k in sorted(self.service_entries.records)
            ],
            pods=[self.pods.records[k] for k in sorted(self.pods.records)],
        )
