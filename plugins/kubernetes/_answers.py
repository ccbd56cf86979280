"""The Kubernetes DNS specification over a ``ClusterIndex``: names to records (pure, no I/O).

The logic follows CoreDNS's plugin/kubernetes and plugin/backend_lookup.go:
a name is parsed (``parse_name``), looked up as Services, endpoints or pods
(``lookup``: a list of ``Target``, or ``NameError``), and turned into the
records of the asked type (``answer``). NXDOMAIN, NODATA and SERVFAIL are
decided by the plugin from what comes back here.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import socket
import struct
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from pycorefile.kube import EndpointAddress, ServiceRecord

from ._index import ClusterIndex
from ._parse import KubernetesConfig

DNS_SCHEMA_VERSION = "1.1.0"
DNS_VERSION_TTL = 28800
MAX_CNAME_CHAIN = 10

IN = dns.rdataclass.IN
T_A, T_AAAA, T_TXT, T_CNAME = 1, 28, 16, 5
T_PTR, T_MX, T_SRV, T_SOA, T_NS = 12, 15, 33, 6, 2
T_AXFR, T_IXFR = 252, 251

Record = tuple[str, int, int, bytes]
"""(owner name, TTL, type, rdata in wire form): one resource record of a reply."""


class NameError_(Exception):
    """The name does not exist (CoreDNS's errNoItems, errNsNotExposed, errInvalidRequest)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One thing a name stands for (CoreDNS's msg.Service): an IP, or a name for a CNAME."""

    host: str
    port: int
    name: str
    """The record's own DNS name (an SRV target), e.g. ``web.ns.svc.cluster.local.``."""
    ttl: int

    @property
    def family(self) -> int:
        """4 or 6 for an address, 0 for a name (a CNAME target)."""
        return _family(self.host)


def _family(host: str) -> int:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return 0


@dataclass(slots=True)
class Query:
    """A name parsed against the Kubernetes schema (CoreDNS's recordRequest)."""

    port: str = ""
    protocol: str = ""
    endpoint: str = ""
    service: str = ""
    namespace: str = ""
    kind: str = ""
    """``svc``, ``pod``, or empty for the apex, ``svc.zone`` and ``pod.zone``."""


def parse_name(name: str, zone: str) -> Query:
    """``[_port._proto.|endpoint.]service.namespace.svc|pod.zone``; NameError_ for other shapes."""
    base = name[: len(name) - len(zone)].rstrip(".") if zone != "." else name.rstrip(".")
    query = Query()
    if base in ("", "svc", "pod"):
        return query
    labels = base.split(".")
    query.kind = labels.pop()
    if query.kind not in ("svc", "pod"):
        raise NameError_
    if labels:
        query.namespace = labels.pop()
    if labels:
        query.service = labels.pop()
    if len(labels) == 1:
        query.endpoint = labels[0]
    elif len(labels) == 2:
        query.protocol = labels[1].removeprefix("_")
        query.port = labels[0].removeprefix("_")
    elif labels:
        raise NameError_
    return query


def is_reverse(name: str) -> bool:
    return name.endswith(("in-addr.arpa.", "ip6.arpa."))


def address_from_reverse(name: str) -> str:
    """The IP a complete reverse name stands for, or ``""``."""
    labels = name.rstrip(".").split(".")
    complete = (name.endswith(".in-addr.arpa.") and len(labels) == 6) or (
        name.endswith(".ip6.arpa.") and len(labels) == 34
    )
    if not complete:
        return ""
    try:
        return str(ipaddress.ip_address(dns.reversename.to_address(dns.name.from_text(name))))
    except (ValueError, dns.exception.DNSException):
        return ""


def reverse_name(ip: str) -> str:
    """The lowercased reverse name of an IP (``1.0.0.10.in-addr.arpa.``); ``""`` for no IP."""
    try:
        return dns.reversename.from_address(ip).to_text().lower()
    except (dns.exception.DNSException, ValueError):
        return ""


def endpoint_hostname(address: EndpointAddress, pod_names: bool) -> str:
    """An endpoint's name: its hostname, its pod's name (``endpoint_pod_names``), or its
    IP dashed (``10-1-0-2``)."""
    if address.hostname:
        return address.hostname
    if pod_names and address.target_name:
        return address.target_name
    if "." in address.ip:
        return address.ip.replace(".", "-")
    if ":" in address.ip:
        dashed = address.ip.replace(":", "-")
        return dashed + "0" if dashed.endswith("-") else dashed
    return ""


@dataclass
class Answer:
    """What a query gets: records, or a name error; maybe a CNAME to chase outside the zone."""

    records: list[Record] = field(default_factory=list)
    extra: list[Record] = field(default_factory=list)
    name_error: bool = False
    refused: bool = False
    chase: str | None = None
    followed: bool = False
    """A CNAME in the zone was followed: the answer depends on more than the name asked."""
    """A name outside our zones to ask the rest of the chain for; its answer follows ``records``."""


class Lookup:
    """The answers of one plugin instance over the index it keeps."""

    def __init__(self, config: KubernetesConfig, index: ClusterIndex, local_ips: tuple[str, ...]):
        self.config = config
        self.index = index
        self.local_ips = local_ips
        self.ttl = config.ttl

    # -- Names to targets ----------------------------------------------------------

    def namespace_exposed(self, namespace: str) -> bool:
        allowed = self.config.namespaces
        if allowed and namespace not in allowed:
            return False
        return namespace in self.index.namespaces

    def targets(self, name: str, zone: str) -> list[Target]:
        """CoreDNS's Records: what a name of the zone stands for; NameError_ when nothing."""
        query = parse_name(name, zone)
        if not query.kind:
            return []
        if is_reverse(name):
            raise NameError_
        if not self.namespace_exposed(query.namespace):
            raise NameError_
        if query.kind == "pod":
            return self._pods(query, zone)
        return self._services(query, zone)

    def _pods(self, query: Query, zone: str) -> list[Target]:
        mode = self.config.pods
        if mode == "disabled":
            raise NameError_
        podname = query.service
        if not podname:
            return []
        owner = f"{podname}.{query.namespace}.pod.{zone}"
        if podname.count("-") == 3 and "--" not in podname:
            ip = podname.replace("-", ".")
        else:
            ip = podname.replace("-", ":")
        if mode == "insecure":
            if not _family(ip):
                raise NameError_
            return [Target(ip, 0, owner, self.ttl)]
        found = [
            Target(ip, 0, owner, self.ttl)
            for pod in self.index.pods_with_ip(ip)
            if pod.ip == ip and pod.namespace == query.namespace
        ]
        if not found:
            raise NameError_
        return found

    def _ready_addresses(self, service: ServiceRecord) -> int:
        return sum(len(s.addresses) for s in self.index.slices_for(service.namespace, service.name))

    def _services(self, query: Query, zone: str) -> list[Target]:
        if not query.service:
            return []
        service = self.index.service(query.namespace, query.service)
        if service is None:
            raise NameError_
        config = self.config
        ttl = self.ttl
        owner = f"{service.name}.{service.namespace}.svc.{zone}"
        if (
            config.ignore_empty_service
            and service.type != "ExternalName"
            and not service.headless
            and self._ready_addresses(service) == 0
        ):
            raise NameError_
        found: list[Target] = []
        if service.type == "ExternalName":
            if query.endpoint or query.port or query.protocol:
                raise NameError_
            if _family(service.external_name):
                raise NameError_
            return [Target(service.external_name, 0, owner, ttl)]
        if service.headless or query.endpoint:
            for piece in self.index.slices_for(service.namespace, service.name):
                for address in piece.addresses:
                    hostname = endpoint_hostname(address, config.endpoint_pod_names)
                    if query.endpoint and query.endpoint != hostname.lower():
                        continue
                    for port in piece.ports:
                        if _port_matches(query, port.name, port.protocol):
                            found.append(Target(address.ip, port.port, f"{hostname}.{owner}", ttl))
            if not found:
                raise NameError_
            return found
        matched = False
        for port in service.ports:
            if not _port_matches(query, port.name, port.protocol):
                continue
            matched = True
            for ip in service.cluster_ips:
                found.append(Target(ip, port.port, owner, ttl))
        if not matched:
            raise NameError_
        return found

    # -- Targets to records ----------------------------------------------------------

    def answer(self, qname: str, name: str, qtype: int, zone: str) -> Answer:
        """The reply to ``qname`` (as asked; ``name`` lowercased), of ``zone`` (as asked)."""
        lower_zone = zone.lower()
        try:
            if qtype in (T_A, T_AAAA):
                return self._address(qname, name, qtype, zone, lower_zone, [])
            if qtype == T_TXT:
                return self._txt(qname, name, zone)
            if qtype == T_CNAME:
                found = self.targets(name, lower_zone)
                if found and not found[0].family:
                    target = found[0]
                    return Answer([(qname, target.ttl, T_CNAME, name_wire(target.host))])
                return Answer()
            if qtype == T_PTR:
                return self._ptr(qname, name, lower_zone)
            if qtype == T_MX:
                self.targets(name, lower_zone)
                return Answer()
            if qtype == T_SRV:
                return self._srv(qname, name, zone, lower_zone)
            if qtype == T_SOA:
                return Answer([self.soa(zone)] if name == lower_zone else [])
            if qtype in (T_AXFR, T_IXFR):
                return Answer(refused=True)
            if qtype == T_NS and name == lower_zone:
                return self._ns(qname, zone)
            # Any other type: NODATA where an A query would find the name, else NXDOMAIN.
            self._address(qname, name, T_A, zone, lower_zone, [])
            return Answer()
        except NameError_:
            return Answer(name_error=True)

    def _address(
        self, qname: str, name: str, qtype: int, zone: str, lower_zone: str, chain: list[str]
    ) -> Answer:
        """A/AAAA records; ``chain`` holds the CNAME targets followed so far (lowercased)."""
        if name == lower_zone:
            found: list[Target] = []
        elif name == "ns.dns." + lower_zone:
            found = [t for t in self._ns_targets(zone)]
        else:
            found = self.targets(name, lower_zone)
        out = Answer()
        family = 4 if qtype == T_A else 6
        seen: set[str] = set()
        for target in found:
            kind = target.family
            if kind == family and target.host not in seen:
                seen.add(target.host)
                out.records.append((qname, target.ttl, qtype, address_wire(target.host, kind)))
            elif kind == 0:
                host = _fqdn(target.host)
                if host.lower() == name:
                    continue
                cname: Record = (qname, target.ttl, T_CNAME, name_wire(host))
                lower_host = host.lower()
                if len(chain) > MAX_CNAME_CHAIN or lower_host in chain:
                    continue
                if lower_host == lower_zone or lower_host.endswith("." + lower_zone):
                    out.followed = True
                    try:
                        inner = self._address(
                            host, lower_host, qtype, zone, lower_zone, [*chain, lower_host]
                        )
                    except NameError_:
                        continue
                    if inner.records or inner.chase:
                        out.records.append(cname)
                        out.records.extend(inner.records)
                        out.chase = inner.chase
                    continue
                out.records.append(cname)
                out.chase = host
        return out

    def _txt(self, qname: str, name: str, zone: str) -> Answer:
        lower_zone = zone.lower()
        if name == "dns-version." + lower_zone:
            return Answer([(qname, DNS_VERSION_TTL, T_TXT, _TXT_VERSION)])
        if self.targets(name, lower_zone):
            return Answer()
        raise NameError_

    def _srv(self, qname: str, name: str, zone: str, lower_zone: str) -> Answer:
        if name == "ns.dns." + lower_zone:
            found = self._ns_targets(zone)
        else:
            found = [t for t in self.targets(name, lower_zone) if t.family]
        out = Answer()
        if not found:
            return out
        weight = max(1, math.floor(100.0 / (100 * len(found)) * 100))
        seen_srv: set[tuple[str, int]] = set()
        seen_address: set[tuple[str, str]] = set()
        for target in found:
            if target.port == -1:
                continue
            port = target.port & 0xFFFF
            if (target.name.lower(), port) not in seen_srv:
                seen_srv.add((target.name.lower(), port))
                out.records.append(
                    (
                        qname,
                        target.ttl,
                        T_SRV,
                        _SRV_HEAD.pack(0, weight, port) + name_wire(target.name),
                    )
                )
            if (target.name.lower(), target.host) not in seen_address:
                seen_address.add((target.name.lower(), target.host))
                rdata = address_wire(target.host, target.family)
                out.extra.append((target.name, target.ttl, _TYPE_OF[target.family], rdata))
        return out

    def _ptr(self, qname: str, name: str, lower_zone: str) -> Answer:
        ip = address_from_reverse(name)
        if not ip:
            self.targets(name, lower_zone)
            return Answer()
        primary = self.config.primary_zone
        allowed = self.config.namespaces
        hosts: list[str] = []
        for key in self.index.service_by_ip.get(ip, ()):
            if allowed and not self.namespace_exposed(key[0]):
                continue
            hosts = [f"{key[1]}.{key[0]}.svc.{primary}"]
            break
        if not hosts:
            for piece in self.index.slices_with_ip(ip):
                if not piece.service or (allowed and not self.namespace_exposed(piece.namespace)):
                    continue
                for address in piece.addresses:
                    if address.ip == ip:
                        hostname = endpoint_hostname(address, self.config.endpoint_pod_names)
                        host = f"{hostname}.{piece.service}.{piece.namespace}.svc.{primary}"
                        if host not in hosts:
                            hosts.append(host)
        if not hosts:
            raise NameError_
        return Answer([(qname, self.ttl, T_PTR, name_wire(host)) for host in hosts])

    def _ns_targets(self, zone: str) -> list[Target]:
        """Our own addresses, named ``ns.dns.ZONE`` (CoreDNS names its Service when an
        endpoint holds a local IP; see the README's differences)."""
        owner = f"ns.dns.{zone}"
        return [Target(ip, 0, owner, self.ttl) for ip in self.local_ips]

    def _ns(self, qname: str, zone: str) -> Answer:
        out = Answer()
        targets = self._ns_targets(zone)
        if targets:
            out.records.append((qname, self.ttl, T_NS, name_wire(targets[0].name)))
        for target in targets:
            rdata = address_wire(target.host, target.family)
            out.extra.append((target.name, self.ttl, _TYPE_OF[target.family], rdata))
        return out

    def soa(self, zone: str) -> Record:
        """The zone's SOA (authority of every negative answer)."""
        ttl = self.ttl
        serial = self.index.modified & 0xFFFFFFFF
        rdata = (
            name_wire(f"ns.dns.{zone}")
            + name_wire(f"hostmaster.{zone}")
            + _SOA_TIMES.pack(serial, 7200, 1800, 86400, ttl)
        )
        return (zone, min(ttl, 300), T_SOA, rdata)


def _port_matches(query: Query, name: str, protocol: str) -> bool:
    return (not query.port or query.port == name.lower()) and (
        not query.protocol or query.protocol == protocol.lower()
    )


def _fqdn(text: str) -> str:
    """A name made absolute (``a.b`` -> ``a.b.``); the root stays ``.``."""
    return text if text.endswith(".") else text + "."


_SRV_HEAD = struct.Struct(">HHH")
_SOA_TIMES = struct.Struct(">IIIII")
_TYPE_OF = {4: T_A, 6: T_AAAA}
_TXT_VERSION = bytes((len(DNS_SCHEMA_VERSION),)) + DNS_SCHEMA_VERSION.encode()
_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,63}")


@functools.lru_cache(maxsize=65536)
def name_wire(text: str) -> bytes:
    """The uncompressed wire form of a name, letter case kept (``a.b`` and ``a.b.`` alike)."""
    labels = text.rstrip(".").split(".") if text not in ("", ".") else []
    if all(_PLAIN.fullmatch(label) for label in labels):
        return b"".join(bytes((len(label),)) + label.encode() for label in labels) + b"\0"
    wire = dns.name.from_text(_fqdn(text)).to_wire()
    assert wire is not None
    return wire


def address_wire(ip: str, family: int) -> bytes:
    return socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, ip)
