"""The kubernetes plugin: cluster DNS answered from the Kubernetes API."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import dns.message
import dns.name
import dns.rcode
import dns.rrset
import trio

from pycorefile import (
    Directive,
    Plugin,
    PluginError,
    Reply,
    Request,
    Result,
    SetupContext,
    SetupError,
    kube,
    pass_on,
)
from pycorefile.wire import PreparedReply
from pycorefile.zones import match_zone

from ._answers import Answer, Lookup, Record
from ._index import ClusterIndex
from ._parse import KubernetesConfig, parse_kubernetes

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile.kubernetes")

MAX_PREPARED = 50_000
"""Prepared replies kept at most (all are dropped at the next change of the cluster)."""
RESOLV_CONF = "/etc/resolv.conf"


class KubernetesPlugin(Plugin):
    """Answers ``cluster.local`` (and reverse zones) from Services, EndpointSlices and Pods."""

    def __init__(
        self,
        config: KubernetesConfig,
        local_ips: tuple[str, ...] = (),
        search: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.index = ClusterIndex()
        self.lookup = Lookup(config, self.index, local_ips)
        self.search = search
        """This server's own resolv.conf search domains (the tail of autopath's path)."""
        self.client: kube.ApiClient | None = None
        self.reflectors: list[kube.Reflector[Any]] = []
        self._prepared: dict[bytes, PreparedReply] = {}
        self._prepared_generation = -1
        self._zone_wires = tuple((z, dns.name.from_text(z).to_wire() or b"") for z in config.zones)

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> KubernetesPlugin:
        config = parse_kubernetes(directives, ctx)
        for warning in config.warnings:
            log.warning("plugin/kubernetes: %s", warning)
        if config.pods == "verified" and config.connection is None:
            raise SetupError("pods verified needs a cluster", directives[0])
        return cls(config, _local_ips(ctx.listen_hosts), _resolv_conf_search())

    # -- Watching -----------------------------------------------------------------

    def _make_reflectors(self, client: kube.ApiClient) -> list[kube.Reflector[Any]]:
        config, index = self.config, self.index
        labels = config.labels
        reflectors: list[kube.Reflector[Any]] = [
            kube.Reflector(
                client, kube.SERVICES, kube.trim_service, index.service_sink, label_selector=labels
            ),
            kube.Reflector(
                client,
                kube.NAMESPACES,
                kube.trim_namespace,
                index.namespace_sink,
                label_selector=config.namespace_labels,
            ),
        ]
        if not config.noendpoints:
            reflectors.append(
                kube.Reflector(
                    client,
                    kube.ENDPOINT_SLICES,
                    kube.trim_endpoint_slice,
                    index.slice_sink,
                    label_selector=labels,
                )
            )
        if config.pods == "verified":
            reflectors.append(
                kube.Reflector(
                    client,
                    kube.PODS,
                    kube.trim_pod,
                    index.pod_sink,
                    label_selector=labels,
                    field_selector=kube.POD_FIELD_SELECTOR,
                )
            )
        return reflectors

    async def startup(self) -> None:
        """Connect and wait for the first sync, at most ``startup_timeout`` (as CoreDNS)."""
        connection = self.config.connection
        assert connection is not None
        self.client = kube.ApiClient(connection, user_agent="pycorefile/kubernetes")
        self.reflectors = self._make_reflectors(self.client)
        with trio.move_on_after(self.config.startup_timeout) as scope:
            async with trio.open_nursery() as nursery:
                for reflector in self.reflectors:
                    nursery.start_soon(self._first_list, reflector)
                waited = 0
                while not self.ready():
                    await trio.sleep(0.1)
                    waited += 1
                    if waited % 5 == 0:
                        log.info(
                            "plugin/kubernetes: waiting for Kubernetes API before starting server"
                        )
                nursery.cancel_scope.cancel()
        if scope.cancelled_caught:
            log.warning("plugin/kubernetes: starting server with unsynced Kubernetes API")

    async def _first_list(self, reflector: kube.Reflector[Any]) -> None:
        try:
            await reflector.list()
        except Exception as exc:  # run() lists again, with backoff
            reflector.stats.errors += 1
            reflector.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "plugin/kubernetes: listing %s: %s", reflector.resource.plural, reflector.last_error
            )

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for reflector in self.reflectors:
                    nursery.start_soon(reflector.run)
        finally:
            if self.client is not None:
                with trio.CancelScope(shield=True):
                    await self.client.aclose()

    def ready(self) -> bool:
        """True once every watched kind has been listed; stays True through API outages."""
        return bool(self.reflectors) and all(r.synced for r in self.reflectors)

    # -- Serving ------------------------------------------------------------------

    def handle(self, request: Request) -> Result:
        name = request.name
        zone = match_zone(name, self.config.zones)
        if zone is None:
            return self.next.handle(request)
        index = self.index
        if self._prepared_generation != index.generation:
            self._prepared.clear()
            self._prepared_generation = index.generation
        prepared = self._prepared.get(request.key[:-2])
        if prepared is not None:
            return prepared.render(request.wire, request.name_end, request.edns, request.do)
        qname = request.qname.to_text()
        zone_as_asked = qname[len(qname) - len(zone) :] if zone != "." else "."
        answer = self.lookup.answer(qname, name, request.qtype, zone_as_asked)
        if answer.refused:
            return request.error(dns.rcode.REFUSED)
        if answer.name_error:
            fallthrough = self.config.fallthrough
            if fallthrough is not None and fallthrough.through(name):
                return self.next.handle(request)
            if not self.ready():
                return self._negative(request, dns.rcode.SERVFAIL, zone_as_asked)
            return self._keep(request, self._negative(request, dns.rcode.NXDOMAIN, zone_as_asked))
        if answer.chase is not None:
            return self._chase(request, answer, zone_as_asked)
        if not answer.records:
            return self._keep(request, self._negative(request, dns.rcode.NOERROR, zone_as_asked))
        return self._keep(request, self._positive(request, answer.records, answer.extra))

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        if self._prepared_generation != self.index.generation:
            return None
        found = self._prepared.get(key[:-2])
        return None if found is None else found.render(wire, name_end, edns, do)

    def _keep(self, request: Request, reply: dns.message.Message) -> bytes:
        prepared = PreparedReply.from_message(reply)
        if len(self._prepared) >= MAX_PREPARED:
            self._prepared.clear()
        self._prepared[request.key[:-2]] = prepared
        return prepared.render(request.wire, request.name_end, request.edns, request.do)

    def _negative(self, request: Request, rcode: int, zone: str) -> dns.message.Message:
        reply = request.reply(rcode, authoritative=True)
        _add(reply.authority, [self.lookup.soa(zone)])
        return reply

    def _positive(
        self, request: Request, records: list[Record], extra: list[Record]
    ) -> dns.message.Message:
        reply = request.reply(dns.rcode.NOERROR, authoritative=True)
        _add(reply.answer, records)
        _add(reply.additional, extra)
        return reply

    def _chase(self, request: Request, answer: Answer, zone: str) -> Result:
        """An ExternalName outside our zones: our CNAMEs, then what the rest of the chain says."""
        assert answer.chase is not None
        try:
            asked = request.derive(answer.chase)
        except ValueError:
            return self._negative(request, dns.rcode.NOERROR, zone)

        def merge(reply: Reply) -> Reply:
            message = (
                reply
                if isinstance(reply, dns.message.Message)
                else dns.message.from_wire(reply, ignore_trailing=True)
            )
            out = self._positive(request, answer.records, [])
            for rrset in message.answer:
                out.answer.append(rrset)
            return out

        def failed(exc: Exception) -> Reply:
            if not isinstance(exc, PluginError | trio.TooSlowError):
                raise exc
            return self._negative(request, dns.rcode.NOERROR, zone)

        return pass_on(self.next, asked, merge, failed)

    # -- autopath @kubernetes ---------------------------------------------------

    def search_path_for(self, request: Request) -> Sequence[str] | None:
        """The client's search path from its pod (``pods verified``), as CoreDNS's AutoPath.

        None (no autopath) when the name is not in our zones, pods are not
        verified, or no pod has the client's IP; else the first pod's
        ``NS.svc.ZONE``, ``svc.ZONE``, ``ZONE``, then this server's own
        resolv.conf search domains.
        """
        if self.config.pods != "verified":
            return None
        zone = match_zone(request.name, self.config.zones)
        if zone is None:
            return None
        pods = self.index.pods_with_ip(request.client[0])
        if not pods:
            return None
        if zone == ".":
            head = [f"{pods[0].namespace}.svc.", "svc."]
        else:
            head = [f"{pods[0].namespace}.svc.{zone}", f"svc.{zone}", zone]
        return (*head, *self.search)

    # -- Metrics -----------------------------------------------------------------

    def metrics(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        synced = GaugeMetricFamily(
            "pycorefile_kubernetes_synced",
            "1 when the kind has been listed from the Kubernetes API.",
            labels=["resource"],
        )
        events = CounterMetricFamily(
            "pycorefile_kubernetes_watch_events",
            "Watch events applied, by resource.",
            labels=["resource"],
        )
        relists = CounterMetricFamily(
            "pycorefile_kubernetes_lists",
            "Complete LISTs of a resource (the first one, and after 410 Gone).",
            labels=["resource"],
        )
        errors = CounterMetricFamily(
            "pycorefile_kubernetes_api_errors",
            "Failed LIST or WATCH requests, by resource.",
            labels=["resource"],
        )
        for reflector in self.reflectors:
            plural = reflector.resource.plural
            synced.add_metric([plural], 1.0 if reflector.synced else 0.0)
            events.add_metric([plural], reflector.stats.events)
            relists.add_metric([plural], reflector.stats.lists)
            errors.add_metric([plural], reflector.stats.errors)
        return [synced, events, relists, errors]


def _add(section: list[dns.rrset.RRset], records: list[Record]) -> None:
    """Append records, one RRset per owner and type in order of first appearance."""
    sets: dict[tuple[str, int], dns.rrset.RRset] = {}
    for owner, ttl, rdata in records:
        key = (owner.lower(), rdata.rdtype)
        rrset = sets.get(key)
        if rrset is None:
            rrset = dns.rrset.RRset(dns.name.from_text(owner), rdata.rdclass, rdata.rdtype)
            rrset.update_ttl(ttl)
            sets[key] = rrset
            section.append(rrset)
        rrset.add(rdata, ttl)


def _local_ips(hosts: Sequence[str]) -> tuple[str, ...]:
    """The addresses the server block listens on, for ``ns.dns.ZONE``; every interface
    address the host name resolves to when it listens on all of them."""
    out = [h for h in hosts if h not in ("", "0.0.0.0", "::")]
    if not out:
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_UDP)
            out = [str(info[4][0]) for info in infos]
        except OSError:
            out = []
    return tuple(dict.fromkeys(ip for ip in out if ip))


def _resolv_conf_search() -> tuple[str, ...]:
    try:
        with open(RESOLV_CONF, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ()
    search: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "search":
            search = fields[1:]
        elif fields and fields[0] == "domain":
            search = fields[1:2]
    return tuple(s.lower().rstrip(".") + "." for s in search if s.strip("."))
