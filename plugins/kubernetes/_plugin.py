"""The kubernetes plugin: cluster DNS answered from the Kubernetes API."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import dns.message
import dns.name
import dns.rcode
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
from pycorefile.plugin import DataChanges
from pycorefile.wire import OUR_PAYLOAD, PreparedReply, name_to_text
from pycorefile.zones import match_zone

from ._answers import (
    Answer,
    Lookup,
    NameError_,
    Record,
    address_from_reverse,
    is_reverse,
    name_wire,
    parse_name,
    reverse_name,
)
from ._index import (
    ANY_SERVICE,
    NAMESPACES,
    PODS,
    RELISTED,
    STATIC,
    ClusterIndex,
    Dependency,
)
from ._parse import KubernetesConfig, parse_kubernetes

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile.kubernetes")

MAX_PREPARED = 100_000
"""Prepared replies kept at most (all are dropped when there would be more)."""
_HEADER = struct.Struct(">HHHHHH")
_RR = struct.Struct(">HHIH")
_TO_QUESTION = b"\xc0\x0c"
"""An owner name that is the question's: a pointer to it."""
RESOLV_CONF = "/etc/resolv.conf"
USER_AGENT = "pycorefile/kubernetes"
SHARED_KEY = "kubernetes.plugins"


class KubernetesPlugin(Plugin):
    """Answers ``cluster.local`` (and reverse zones) from Services, EndpointSlices and Pods."""

    def __init__(
        self,
        config: KubernetesConfig,
        local_ips: tuple[str, ...] = (),
        search: tuple[str, ...] = (),
        changes: DataChanges | None = None,
    ) -> None:
        self.config = config
        self.index = ClusterIndex()
        self.lookup = Lookup(config, self.index, local_ips)
        self.search = search
        """This server's own resolv.conf search domains (the tail of autopath's path)."""
        self.subscription: kube.Subscription | None = None
        self._reporting: list[KubernetesPlugin] = [self]
        """Every kubernetes plugin of this configuration; the first reports the metrics."""
        self._prepared: dict[bytes, PreparedReply] = {}
        """Finished replies by question (``Request.key`` less its DO and CD bits)."""
        self._dependents: dict[Dependency, set[bytes]] = {}
        self._followed: set[str] = set()
        """Names whose answers followed a CNAME in the zone: announced at any Service change."""
        self._forward_zones = tuple(z for z in config.zones if not is_reverse(z))
        self.changes = changes if changes is not None else DataChanges()
        self.index.listeners.append(self._changed)
        self._zone_wires = tuple((z, dns.name.from_text(z).to_wire() or b"") for z in config.zones)

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> KubernetesPlugin:
        config = parse_kubernetes(directives, ctx)
        for warning in config.warnings:
            log.warning("plugin/kubernetes: %s", warning)
        if config.pods == "verified" and config.connection is None:
            raise SetupError("pods verified needs a cluster", directives[0])
        plugin = cls(config, _local_ips(ctx.listen_hosts), _resolv_conf_search(), ctx.data_changes)
        plugin._reporting = ctx.shared.setdefault(SHARED_KEY, [])
        plugin._reporting.append(plugin)
        return plugin

    # -- Watching -----------------------------------------------------------------

    def _subscribe(self) -> kube.Subscription:
        """The watches this configuration needs, shared by the process (``kube.subscribe``)."""
        config, index = self.config, self.index
        connection = config.connection
        assert connection is not None
        labels = config.labels
        held = kube.Subscription()

        def watch(resource: kube.Resource, trim: Any, sink: Any, **selectors: str | None) -> None:
            kube.subscribe(
                held, connection, resource, trim, sink, user_agent=USER_AGENT, **selectors
            )

        watch(kube.SERVICES, kube.trim_service, index.service_sink, label_selector=labels)
        watch(
            kube.NAMESPACES,
            kube.trim_namespace,
            index.namespace_sink,
            label_selector=config.namespace_labels,
        )
        if not config.noendpoints:
            watch(
                kube.ENDPOINT_SLICES,
                kube.trim_endpoint_slice,
                index.slice_sink,
                label_selector=labels,
            )
        if config.pods == "verified":
            watch(
                kube.PODS,
                kube.trim_pod,
                index.pod_sink,
                label_selector=labels,
                field_selector=kube.POD_FIELD_SELECTOR,
            )
        return held

    @property
    def reflectors(self) -> list[kube.Reflector[Any]]:
        """The reflectors this plugin's watches run on (shared with other plugins)."""
        return self.subscription.reflectors if self.subscription is not None else []

    async def startup(self) -> None:
        """Subscribe and wait for the first sync, at most ``startup_timeout`` (as CoreDNS)."""
        self.subscription = self._subscribe()
        with trio.move_on_after(self.config.startup_timeout) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.subscription.wait_synced)
                waited = 0
                while not self.ready():
                    await trio.sleep(0.1)
                    waited += 1
                    if waited % 5 == 0:
                        log.info(
                            "plugin/kubernetes: waiting for Kubernetes API before starting server"
                        )
        if scope.cancelled_caught:
            log.warning("plugin/kubernetes: starting server with unsynced Kubernetes API")

    async def shutdown(self) -> None:
        if self.subscription is not None:
            self.subscription.close()

    def ready(self) -> bool:
        """True once every watched kind has been listed; stays True through API outages."""
        return self.subscription is not None and self.subscription.synced()

    # -- Serving ------------------------------------------------------------------

    def handle(self, request: Request) -> Result:
        # Only names of our zones are ever prepared: a hit needs no name as text.
        prepared = self._prepared.get(request.key[:-2])
        if prepared is not None:
            return prepared.render(request.wire, request.name_end, request.edns, request.do)
        name = request.name
        zone = match_zone(name, self.config.zones)
        if zone is None:
            return self.next.handle(request)
        qname = name_to_text(request.qname_wire)
        zone_as_asked = qname[len(qname) - len(zone) :] if zone != "." else "."
        answer = self.lookup.answer(qname, name, request.qtype, zone_as_asked)
        if answer.refused:
            return request.error(dns.rcode.REFUSED)
        if answer.name_error:
            fallthrough = self.config.fallthrough
            if fallthrough is not None and fallthrough.through(name):
                return self.next.handle(request)
            if not self.ready():
                return self._reply(
                    request, dns.rcode.SERVFAIL, [], [self.lookup.soa(zone_as_asked)]
                )
            answer.records = []
        elif answer.chase is not None:
            return self._chase(request, answer, zone_as_asked)
        if answer.records:
            wire = self._wire(request, dns.rcode.NOERROR, answer.records, [], answer.extra)
        else:
            rcode = dns.rcode.NXDOMAIN if answer.name_error else dns.rcode.NOERROR
            wire = self._wire(request, rcode, [], [self.lookup.soa(zone_as_asked)])
        prepared = PreparedReply(wire)
        self._keep(request.key[:-2], prepared, self._depends_on(name, zone, answer))
        return prepared.render(request.wire, request.name_end, request.edns, request.do)

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        found = self._prepared.get(key[:-2])
        return None if found is None else found.render(wire, name_end, edns, do)

    # -- Prepared replies and what they depend on ---------------------------------

    def _keep(self, key: bytes, prepared: PreparedReply, depends: Dependency) -> None:
        if len(self._prepared) >= MAX_PREPARED:
            self._forget_all()
        self._prepared[key] = prepared
        self._dependents.setdefault(depends, set()).add(key)

    def _depends_on(self, name: str, zone: str, answer: Answer) -> Dependency:
        """What a reply was made from: a change of it drops the reply.

        A Service name depends on that Service (and its endpoints); a reverse
        name on its IP; a pod name on the pods. What follows a CNAME in the
        zone, and the apex (its serial), depend on any Service change.
        Namespaces change rarely: a change of one drops every prepared reply.
        """
        if answer.followed:
            self._followed.add(name)
            return ANY_SERVICE
        if is_reverse(name):
            ip = address_from_reverse(name)
            return ("ip", ip) if ip else STATIC
        try:
            query = parse_name(name, zone)
        except NameError_:
            return STATIC
        if query.kind == "pod":
            return PODS
        if query.service:
            return ("service", query.namespace, query.service)
        return ANY_SERVICE if not query.kind else STATIC

    def _changed(self, changes: Sequence[Dependency]) -> None:
        """The index tells what changed: drop the replies made from it, and announce the
        names whose answers may differ now (a cache or autopath in front forgets them)."""
        names: set[str] = set()
        below: set[str] = set()
        for change in changes:
            if change in (NAMESPACES, RELISTED):
                self._forget_all()
                below.update(self.config.zones)
                continue
            for depends in (change, ANY_SERVICE) if change != PODS else (change,):
                for key in self._dependents.pop(depends, ()):
                    self._prepared.pop(key, None)
            if change == PODS:
                below.update(f"pod.{zone}" for zone in self._forward_zones)
            elif change[0] == "service":
                _, namespace, service = change
                below.update(f"{service}.{namespace}.svc.{zone}" for zone in self._forward_zones)
                names.update(self._followed)
            elif change[0] == "ip" and (reverse := reverse_name(change[1])):
                names.add(reverse)
        self.changes.announce(names, below=below, source=self.name)

    def _forget_all(self) -> None:
        self._prepared.clear()
        self._dependents.clear()
        self._followed.clear()

    # -- Replies as bytes -----------------------------------------------------------

    def _wire(
        self,
        request: Request,
        rcode: int,
        answer: list[Record],
        authority: list[Record],
        additional: list[Record] = (),  # type: ignore[assignment]
    ) -> bytes:
        """A complete reply, without OPT (``PreparedReply`` adds the client's)."""
        flags = 0x8400 | (request.flags & 0x0100) | rcode  # QR, AA, the query's RD
        head = _HEADER.pack(request.id, flags, 1, len(answer), len(authority), len(additional))
        qname_lower = request.name
        parts = [head, request.wire[12 : request.name_end + 4]]
        for section in (answer, authority, additional):
            for owner, ttl, rdtype, rdata in section:
                own = _TO_QUESTION if owner.lower() == qname_lower else name_wire(owner)
                parts.append(own + _RR.pack(rdtype, 1, ttl, len(rdata)) + rdata)
        return b"".join(parts)

    def _reply(
        self, request: Request, rcode: int, answer: list[Record], authority: list[Record]
    ) -> bytes:
        prepared = PreparedReply(self._wire(request, rcode, answer, authority))
        return prepared.render(request.wire, request.name_end, request.edns, request.do)

    def _chase(self, request: Request, answer: Answer, zone: str) -> Result:
        """An ExternalName outside our zones: our CNAMEs, then what the rest of the chain says."""
        assert answer.chase is not None
        try:
            asked = request.derive(answer.chase)
        except ValueError:
            return self._reply(request, dns.rcode.NOERROR, [], [self.lookup.soa(zone)])

        def merge(reply: Reply) -> Reply:
            message = (
                reply
                if isinstance(reply, dns.message.Message)
                else dns.message.from_wire(reply, ignore_trailing=True)
            )
            ours = self._wire(request, dns.rcode.NOERROR, answer.records, [])
            out = dns.message.from_wire(ours)
            out.answer.extend(message.answer)
            if request.edns:
                out.use_edns(0, payload=OUR_PAYLOAD)
            return out

        def failed(exc: Exception) -> Reply:
            if not isinstance(exc, PluginError | trio.TooSlowError):
                raise exc
            return self._reply(request, dns.rcode.NOERROR, [], [self.lookup.soa(zone)])

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
        """CoreDNS's request counter, and the watches' state; once for the configuration
        (the watches are shared by its kubernetes plugins: the first one reports them all)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self._reporting[0] is not self:
            return []
        reflectors: dict[int, kube.Reflector[Any]] = {}
        for plugin in self._reporting:
            for reflector in plugin.reflectors:
                reflectors.setdefault(id(reflector), reflector)
        clients = {id(r.client): r.client for r in reflectors.values()}
        requests = CounterMetricFamily(
            "coredns_kubernetes_rest_client_requests",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            labels=["code", "method", "host"],
        )
        for client in clients.values():
            for (code, method), count in sorted(client.requests.items()):
                requests.add_metric([code, method, client.host], count)
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
        lists = CounterMetricFamily(
            "pycorefile_kubernetes_lists",
            "Complete LISTs of a resource (the first one, and after 410 Gone).",
            labels=["resource"],
        )
        errors = CounterMetricFamily(
            "pycorefile_kubernetes_api_errors",
            "Failed LIST or WATCH requests, by resource.",
            labels=["resource"],
        )
        for reflector in reflectors.values():
            plural = reflector.resource.plural
            synced.add_metric([plural], 1.0 if reflector.synced else 0.0)
            events.add_metric([plural], reflector.stats.events)
            lists.add_metric([plural], reflector.stats.lists)
            errors.add_metric([plural], reflector.stats.errors)
        return [requests, synced, events, lists, errors]


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
