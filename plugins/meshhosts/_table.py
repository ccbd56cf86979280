"""The host table: every source merged into host → addresses, registry, namespace, names.

Pure: records in (from ``_sources``, the Corefile's inline lines and the
allocator's answer), a ``MeshTable`` out. The merge follows the reference
NameTable builder: a Kubernetes entry for a host wins over any ServiceEntry
or inline entry for the same host; entries of other registries for one host
are merged (addresses appended, duplicates dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ._sources import EndpointRecord, ServiceEntryHost, Sources

KUBERNETES = "Kubernetes"
EXTERNAL = "External"

Allocations = Mapping[str, tuple[str, str]]
"""Host → (IPv4, IPv6), as the allocator returns it."""


@dataclass(frozen=True, slots=True)
class InlineEntry:
    """``ADDRESS NAME...`` from the Corefile block (names lowercased, fully qualified)."""

    address: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HostEntry:
    """One host of the table and what it answers."""

    host: str
    """Lowercased FQDN with the trailing dot; ``*.`` first for a wildcard."""
    addresses: tuple[str, ...]
    """IPv4 and IPv6 mixed, in source order, no duplicates."""
    registry: str = EXTERNAL
    shortname: str = ""
    namespace: str = ""
    alt_hosts: tuple[str, ...] = ()
    cname: str = ""
    """Target of an ExternalName Service (then ``addresses`` is empty)."""

    @property
    def wildcard(self) -> bool:
        return self.host.startswith("*.")


@dataclass(frozen=True)
class MeshTable:
    """The merged table: host → entry, plus what was allocated (for the record)."""

    entries: dict[str, HostEntry]
    allocated: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)


def host_key(host: str) -> str:
    """How the allocator names a host: lowercased, no trailing dot."""
    return host.strip().rstrip(".").lower()


def visible(export_to: Sequence[str], owner_namespace: str, own_namespace: str) -> bool:
    """Istio's ``exportTo``: may a workload in ``own_namespace`` see this object?

    Empty means everywhere; ``*`` everywhere; ``.`` the object's own namespace;
    ``~`` nowhere; otherwise the listed namespaces. Without a configured own
    namespace everything is visible.
    """
    if not own_namespace or not export_to:
        return True
    return any(
        x == "*" or x == own_namespace or (x == "." and owner_namespace == own_namespace)
        for x in export_to
    )


def service_entry_hosts(sources: Sources) -> list[ServiceEntryHost]:
    """Every host of every ServiceEntry without ``spec.addresses``: the allocator's input.

    All of them, visible here or not, so the allocator's decisions do not
    depend on the namespace of the workload it runs beside. Hosts the control
    plane has allocated for (``status.addresses``, in any entry) are left out:
    they answer istiod's addresses, and a second allocator must not give them
    another pair.
    """
    controlled = control_plane_hosts(sources)
    out: list[ServiceEntryHost] = []
    for se in sources.service_entries:
        if se.has_addresses:
            continue
        for host in se.hosts:
            if host in controlled:
                continue
            out.append(
                ServiceEntryHost(
                    host=host_key(host),
                    namespace=se.namespace,
                    name=se.name,
                    created=se.created,
                    resolution=se.resolution,
                    wildcard=host.startswith("*."),
                    labels=se.labels,
                    explicit_addresses=(),
                )
            )
    return out


def control_plane_hosts(sources: Sources) -> set[str]:
    """Hosts (FQDN form) that answer addresses the control plane allocated (``status``)."""
    out: set[str] = set()
    for se in sources.service_entries:
        if se.status_addresses:
            out.update(se.allocated_by_control_plane())
    return out


def client_namespaces(sources: Sources) -> dict[str, str]:
    """Pod address → the pod's namespace, for ``namespace @client``.

    An address two pods of different namespaces claim (a reused address
    still listed for an old pod) is left out: no namespace is better than
    another workload's.
    """
    out: dict[str, str] = {}
    ambiguous: set[str] = set()
    for pod in sources.pods:
        for ip in pod.ips:
            known = out.get(ip)
            if known is None:
                out[ip] = pod.namespace
            elif known != pod.namespace:
                ambiguous.add(ip)
    for ip in ambiguous:
        del out[ip]
    return out


def control_plane_rows(sources: Sources) -> list[dict[str, str]]:
    """The control plane's allocations, one row per entry and host, as autoalloc shows its own:
    ``host, namespace, entry, ipv4, ipv6`` (first address of each family; empty if none)."""
    rows: list[dict[str, str]] = []
    for se in sources.service_entries:
        if not se.status_addresses:
            continue
        for host, ips in se.allocated_by_control_plane().items():
            v4 = next((ip for ip in ips if ":" not in ip), "")
            v6 = next((ip for ip in ips if ":" in ip), "")
            rows.append(
                {
                    "host": host_key(host),
                    "namespace": se.namespace,
                    "entry": se.name,
                    "ipv4": v4,
                    "ipv6": v6,
                }
            )
    return rows


def explicit_addresses(sources: Sources, inline: Iterable[InlineEntry] = ()) -> set[str]:
    """Every address the sources name explicitly (the allocator never hands these out).

    ServiceEntry ``status.addresses`` count, all of them, used or stale: an
    address the control plane gave any host is never handed to another.
    """
    out: set[str] = set()
    for rec in sources.names:
        out.update(rec.ips)
    for svc in sources.services:
        out.update(svc.cluster_ips)
    for sl in sources.slices:
        for ep in sl.endpoints:
            out.update(ep.addresses)
    for se in sources.service_entries:
        out.update(se.addresses)
        out.update(se.endpoint_ips)
        out.update(ip for _, ip in se.status_addresses)
    for entry in inline:
        out.add(entry.address)
    return out


class _Merged:
    """Addresses and alt hosts of one non-Kubernetes host, collected from every source."""

    __slots__ = ("addresses", "alt_hosts")

    def __init__(self) -> None:
        self.addresses: dict[str, None] = {}
        self.alt_hosts: dict[str, None] = {}


def build_table(
    sources: Sources,
    inline: Sequence[InlineEntry] = (),
    *,
    domain: str = "cluster.local.",
    namespace: str = "",
    allocations: Allocations | None = None,
) -> MeshTable:
    """Merge the sources into one table (``domain`` is the cluster domain, ``x.`` form)."""
    domain = domain.lower().rstrip(".") + "."
    kube: dict[str, HostEntry] = {}
    other: dict[str, _Merged] = {}
    allocated: dict[str, tuple[str, str]] = {}
    pairs = {host_key(h): pair for h, pair in (allocations or {}).items()}

    def add_other(host: str, addresses: Iterable[str], alt_hosts: Iterable[str] = ()) -> None:
        merged = other.get(host)
        if merged is None:
            merged = other[host] = _Merged()
        merged.addresses.update(dict.fromkeys(addresses))
        merged.alt_hosts.update(dict.fromkeys(alt_hosts))

    _add_services(sources, domain, namespace, kube)
    for rec in sources.names:
        if rec.registry == KUBERNETES:
            if rec.host not in kube and rec.ips:
                kube[rec.host] = HostEntry(
                    rec.host,
                    tuple(dict.fromkeys(rec.ips)),
                    KUBERNETES,
                    rec.shortname,
                    rec.namespace,
                    rec.alt_hosts,
                )
        elif rec.ips:
            add_other(rec.host, rec.ips, rec.alt_hosts)
    controlled = control_plane_hosts(sources)
    for se in sources.service_entries:
        if not visible(se.export_to, se.namespace, namespace):
            continue
        by_control_plane = se.allocated_by_control_plane() if se.status_addresses else {}
        for host in se.hosts:
            addresses: list[str] = list(se.addresses)
            if not addresses and se.resolution == "NONE":
                addresses = list(se.endpoint_ips)
            if host in by_control_plane:
                addresses.extend(by_control_plane[host])
            elif not se.has_addresses and host not in controlled:
                pair = pairs.get(host_key(host))
                if pair is not None:
                    addresses.extend(a for a in pair if a)
                    allocated[host] = pair
            if addresses:
                add_other(host, addresses)
    for entry in inline:
        for name in entry.names:
            add_other(name, (entry.address,))

    entries = dict(kube)
    for host, merged in other.items():
        if host not in entries:
            entries[host] = HostEntry(
                host, tuple(merged.addresses), EXTERNAL, alt_hosts=tuple(merged.alt_hosts)
            )
    return MeshTable(entries, allocated)


def _add_services(
    sources: Sources, domain: str, namespace: str, kube: dict[str, HostEntry]
) -> None:
    """Kubernetes Services (with their EndpointSlices when headless) into ``kube``."""
    slices: dict[tuple[str, str], list[EndpointRecord]] = {}
    for sl in sources.slices:
        slices.setdefault((sl.namespace, sl.service), []).extend(sl.endpoints)
    for svc in sources.services:
        if not visible(svc.export_to, svc.namespace, namespace):
            continue
        host = f"{svc.name}.{svc.namespace}.svc.{domain}"
        if host in kube:
            continue  # the first Kubernetes entry of a host wins
        if svc.external_name:
            kube[host] = HostEntry(
                host, (), KUBERNETES, svc.name, svc.namespace, cname=svc.external_name
            )
            continue
        if not svc.headless:
            if svc.cluster_ips:
                kube[host] = HostEntry(host, svc.cluster_ips, KUBERNETES, svc.name, svc.namespace)
            continue
        addresses: dict[str, None] = {}
        pods: dict[str, dict[str, None]] = {}
        for ep in slices.get((svc.namespace, svc.name), ()):
            if not (ep.ready or (svc.publish_not_ready and not ep.terminating)):
                continue
            addresses.update(dict.fromkeys(ep.addresses))
            if ep.hostname:
                pods.setdefault(ep.hostname, {}).update(dict.fromkeys(ep.addresses))
        # Per-pod names first, so a pod address's PTR names the pod before the Service.
        for pod, pod_addresses in pods.items():
            pod_host = f"{pod}.{host}"
            if pod_host not in kube:
                kube[pod_host] = HostEntry(
                    pod_host, tuple(pod_addresses), KUBERNETES, f"{pod}.{svc.name}", svc.namespace
                )
        # A headless Service with no ready endpoint still exists: its name
        # answers NODATA rather than disappearing.
        kube[host] = HostEntry(host, tuple(addresses), KUBERNETES, svc.name, svc.namespace)


def names_of(entry: HostEntry, domain: str, namespace: str) -> list[str]:
    """Every name an entry answers under: its FQDN, Kubernetes short forms, alt hosts.

    A Kubernetes entry of the cluster domain (``*.svc.DOMAIN.``, label-aware)
    also answers as ``short.ns.``, ``short.ns.svc.`` and, in the workload's own
    namespace, ``short.``; a trailing dot on the source key changes nothing
    (the reference drops such Kubernetes keys silently).
    """
    names = [entry.host]
    if (
        entry.registry == KUBERNETES
        and entry.shortname
        and entry.namespace
        and entry.host.endswith(f".svc.{domain}")
    ):
        short, ns = entry.shortname, entry.namespace
        names.append(f"{short}.{ns}.")
        names.append(f"{short}.{ns}.svc.")
        if ns == namespace:
            names.append(f"{short}.")
    names.extend(entry.alt_hosts)
    return names
