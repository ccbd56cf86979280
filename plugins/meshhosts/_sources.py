"""Reading the mesh host sources: NameTable files and Kubernetes/Istio manifests.

Pure functions: the only I/O is reading the files they are given (and listing
the directories they are given). Each file becomes plain records; merging the
records of every file into one host table is ``_table``'s job, because a
Service and the EndpointSlices or ServiceEntries that go with it may live in
different files.

Errors are ``SourceError`` with the file, the line and the reason, so a broken
file can be logged as ``file:line: reason`` while the last good table keeps
serving. Reading a file raises nothing else, whatever the file holds: a file
is read only up to a size limit, YAML aliases (and the anchors they need)
and deep nesting are refused before anything is expanded, and any other
failure of a parser becomes a ``SourceError`` too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from pycorefile import files
from pycorefile.files import FileError, FileMissing, Stamps

SOURCE_SUFFIXES = (".json", ".yaml", ".yml")
"""Files picked up from a directory."""

ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
"""Versions of ``networking.istio.io`` whose ServiceEntry we read."""

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_HOST = re.compile(r"(?:\*\.)?(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")
"""Host names as the table takes them (lowercased, without the final dot)."""
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"

MAX_FILE_SIZE = 64 * 1024 * 1024
"""The default limit on one file's size (``max_file_size``): a bigger file is refused."""
MAX_DEPTH = 500
"""How deeply a YAML file may nest collections (JSON: as deep as its parser goes, about 1000)."""


@dataclass(frozen=True)
class ServiceEntryHost:
    """One host of an Istio ServiceEntry that has no ``spec.addresses``.

    meshhosts hands every such host to the allocator (the autoalloc plugin),
    which decides from these fields which ones get a virtual address pair.
    """

    host: str
    namespace: str
    name: str
    created: str
    resolution: str
    wildcard: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    explicit_addresses: tuple[str, ...] = ()


SourceError = FileError
"""A file that cannot be used, with where and why: ``file:line: reason``."""

SourceMissing = FileMissing
"""A file or directory that is not there (yet): absent rather than broken."""


# -- Records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameRecord:
    """One host of a NameTable (``{"table": {HOST: {...}}}``)."""

    host: str
    ips: tuple[str, ...]
    registry: str
    shortname: str
    namespace: str
    alt_hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """A Kubernetes v1 Service, reduced to what names and addresses need."""

    name: str
    namespace: str
    cluster_ips: tuple[str, ...]
    headless: bool
    external_name: str
    publish_not_ready: bool
    export_to: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    """One endpoint of an EndpointSlice."""

    addresses: tuple[str, ...]
    ready: bool
    terminating: bool
    hostname: str


@dataclass(frozen=True, slots=True)
class SliceRecord:
    """A ``discovery.k8s.io/v1`` EndpointSlice owned by a Service."""

    service: str
    namespace: str
    endpoints: tuple[EndpointRecord, ...]


@dataclass(frozen=True, slots=True)
class ServiceEntryRecord:
    """An Istio ServiceEntry."""

    name: str
    namespace: str
    created: str
    labels: Mapping[str, str]
    hosts: tuple[str, ...]
    addresses: tuple[str, ...]
    """Usable IPs of ``spec.addresses`` (/32 and /128 CIDRs become IPs)."""
    has_addresses: bool
    """True when ``spec.addresses`` was not empty (even if only wider CIDRs)."""
    resolution: str
    endpoint_ips: tuple[str, ...]
    export_to: tuple[str, ...]
    status_addresses: tuple[tuple[str, str], ...] = ()
    """``status.addresses`` as (host, IP): what the control plane (istiod) allocated.
    An entry without a ``host`` is given to the entry's only host (dropped if it has several)."""

    def allocated_by_control_plane(self) -> dict[str, tuple[str, ...]]:
        """Host → the status addresses it answers: only for an entry that has no
        ``spec.addresses`` and a resolution other than NONE (the entries istiod allocates
        for), and only for hosts the entry still lists. Empty otherwise."""
        if self.has_addresses or self.resolution == "NONE" or not self.status_addresses:
            return {}
        out: dict[str, dict[str, None]] = {}
        for host, ip in self.status_addresses:
            if host in self.hosts:
                out.setdefault(host, {})[ip] = None
        return {host: tuple(ips) for host, ips in out.items()}


@dataclass(frozen=True, slots=True)
class PodRecord:
    """A running Pod: which namespace its addresses belong to (``namespace @client``)."""

    name: str
    namespace: str
    ips: tuple[str, ...]


@dataclass
class Sources:
    """Every record read from a set of files, in file order."""

    names: list[NameRecord] = field(default_factory=list)
    services: list[ServiceRecord] = field(default_factory=list)
    slices: list[SliceRecord] = field(default_factory=list)
    service_entries: list[ServiceEntryRecord] = field(default_factory=list)
    pods: list[PodRecord] = field(default_factory=list)

    def extend(self, other: Sources) -> None:
        self.names.extend(other.names)
        self.services.extend(other.services)
        self.slices.extend(other.slices)
        self.service_entries.extend(other.service_entries)
        self.pods.extend(other.pods)


# -- Files --------------------------------------------------------------------------


def list_files(paths: Sequence[str]) -> list[str]:
    """The files to read: each path itself, or a directory's JSON and YAML files (sorted).

    ``pycorefile.files.list_files`` with the source suffixes: a path named
    ``*.json``, ``*.yaml`` or ``*.yml`` that is a directory is an error.
    """
    return files.list_files(paths, SOURCE_SUFFIXES)


def snapshot(paths: Sequence[str]) -> Stamps:
    """What identifies the current content of the sources (``pycorefile.files.file_stamps``)."""
    return files.file_stamps(paths, SOURCE_SUFFIXES)


def read_sources(paths: Sequence[str], max_size: int = MAX_FILE_SIZE) -> Sources:
    """Read every file of ``paths`` (files or directories); the first error raises.

    Raises SourceError (SourceMissing for a path that is not there) and
    nothing else.
    """
    out = Sources()
    for file in list_files(paths):
        out.extend(read_file(file, max_size))
    return out


def read_file(path: str, max_size: int = MAX_FILE_SIZE) -> Sources:
    """Read one NameTable or manifest file, JSON or YAML (by suffix; else by content).

    Raises SourceError, and nothing else, when the file cannot be used.
    """
    return parse_text(files.read_text(path, max_size, "max_file_size"), path)


def parse_text(text: str, path: str = "<text>") -> Sources:
    """Parse a file's text (JSON when it ends with .json or starts with '{' or '[').

    Raises SourceError, and nothing else, for any text.
    """
    try:
        return _parse_text(text, path)
    except SourceError:
        raise
    except RecursionError:
        raise SourceError(path, 0, "nested too deeply") from None
    except Exception as exc:  # a parser failing in a way of its own: still a broken file
        raise SourceError(path, 0, f"cannot be read: {type(exc).__name__}: {exc}") from None


def _parse_text(text: str, path: str) -> Sources:
    is_json = path.endswith(".json") or (
        not path.endswith((".yaml", ".yml")) and text.lstrip()[:1] in ("{", "[")
    )
    documents = _load_json(text, path) if is_json else _load_yaml(text, path)
    out = Sources()
    try:
        for index, doc in enumerate(documents):
            if doc is not None:
                _read_document(doc, (index,), out)
    except _Invalid as exc:
        raise SourceError(path, _line_of(text, exc.path), exc.reason) from None
    return out


_LONG_NUMBER = re.compile(rf"\d{{{sys.get_int_max_str_digits() + 1}}}")


def _load_json(text: str, path: str) -> list[Any]:
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as exc:
        raise SourceError(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise SourceError(path, 0, "invalid JSON: nested too deeply") from None
    except ValueError:
        # The one other ValueError of json: a number Python will not convert.
        found = _LONG_NUMBER.search(text)
        line = text.count("\n", 0, found.start()) + 1 if found else 0
        raise SourceError(path, line, f"invalid JSON: {_too_long_number()}") from None


def _too_long_number() -> str:
    return f"a number of more than {sys.get_int_max_str_digits()} digits"


def _load_yaml(text: str, path: str) -> list[Any]:
    # A file being rewritten in place is first empty, then cut mid-line: YAML
    # would read either as a (smaller) valid table. Refuse both, so the last
    # good table keeps serving; write `table: {}` for a table that is empty.
    if not text.strip():
        raise SourceError(path, 1, "empty file (an empty table is written `table: {}`)")
    if not text.endswith("\n"):
        raise SourceError(
            path, text.count("\n") + 1, "incomplete: no newline at the end (still being written?)"
        )
    try:
        return list(yaml.load_all(text, Loader=MeshYamlLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        reason = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise SourceError(path, line, f"invalid YAML: {reason or 'syntax error'}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        reason = str(exc).split("\n", 1)[0]  # without yaml's "in <unicode string>"
        raise SourceError(path, line, f"invalid YAML: {reason}") from None
    except yaml.YAMLError as exc:
        raise SourceError(path, 0, f"invalid YAML: {exc}") from None


# -- YAML without aliases -------------------------------------------------------------

_YamlBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when PyYAML was built with it (10x faster), else the Python one."""


class MeshYamlLoader(_YamlBase):  # type: ignore[valid-type, misc]
    """PyYAML's safe loader, composing nodes itself to refuse what a mesh file never needs.

    - **Aliases** (``*name``) and the anchors they point to (``&name``): an
      alias is a reference, and a few hundred bytes of aliases to aliases
      (the "billion laughs") expand to billions of nodes in whatever walks
      the result. The event that names one is refused before any node is
      built from it.
    - **Nesting deeper than MAX_DEPTH**: libyaml's composer recurses in C for
      each level and overflows the stack (the process dies) on a file nested
      100,000 deep. This composer keeps its own stack and stops at the limit.
    - **Values Python cannot make**: a date like ``2024-02-30`` or an integer
      longer than Python converts are refused with their line instead of
      raising a bare ValueError.

    The events still come from libyaml; only composing (one object per node)
    is done here, at about a third more time for a whole load.
    """

    def check_node(self) -> bool:
        if self.check_event(yaml.StreamStartEvent):
            self.get_event()
        return not self.check_event(yaml.StreamEndEvent)

    def get_node(self) -> yaml.Node | None:
        if self.check_event(yaml.StreamEndEvent):
            return None
        return self._compose_document()

    def get_single_node(self) -> yaml.Node | None:
        self.get_event()  # stream start
        document = None if self.check_event(yaml.StreamEndEvent) else self._compose_document()
        if not self.check_event(yaml.StreamEndEvent):
            raise yaml.composer.ComposerError(
                None, None, "expected a single document", self.get_event().start_mark
            )
        self.get_event()  # stream end
        return document

    def _compose_document(self) -> yaml.Node:
        get_event, resolve = self.get_event, self.resolve
        scalar, mapping, sequence = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode
        scalar_event, mapping_start = yaml.ScalarEvent, yaml.MappingStartEvent
        ends = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
        get_event()  # document start
        root: yaml.Node | None = None
        open_nodes: list[yaml.CollectionNode] = []
        keys: list[yaml.Node | None] = []  # per open node, a key waiting for its value
        while root is None or open_nodes:
            event = get_event()
            kind = type(event)
            if kind in ends:
                open_nodes.pop().end_mark = event.end_mark
                keys.pop()
                continue
            if kind is yaml.AliasEvent or event.anchor is not None:
                raise yaml.composer.ComposerError(
                    None, None, "aliases and anchors (*name, &name) are not accepted",
                    event.start_mark,
                )  # fmt: skip
            node: yaml.Node
            tag = event.tag
            if kind is scalar_event:
                if tag is None or tag == "!":
                    tag = resolve(scalar, event.value, event.implicit)
                node = scalar(tag, event.value, event.start_mark, event.end_mark, event.style)
            else:
                if len(open_nodes) >= MAX_DEPTH:
                    raise yaml.composer.ComposerError(
                        None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark
                    )
                node_class = mapping if kind is mapping_start else sequence
                if tag is None or tag == "!":
                    tag = resolve(node_class, None, event.implicit)
                node = node_class(tag, [], event.start_mark, None, event.flow_style)
            if open_nodes:
                parent = open_nodes[-1]
                key = keys[-1]
                if type(parent) is sequence:
                    parent.value.append(node)
                elif key is None:
                    keys[-1] = node
                else:
                    parent.value.append((key, node))
                    keys[-1] = None
            else:
                root = node
            if kind is not scalar_event:
                open_nodes.append(node)  # type: ignore[arg-type]
                keys.append(None)
        get_event()  # document end
        return root


def _refuse_unreadable(what: str, construct: Any) -> Any:
    """A constructor that turns the ValueError of a value Python cannot make into a
    YAML error at the value's line."""

    def checked(loader: SafeConstructor, node: yaml.ScalarNode) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, OverflowError) as exc:
            reason = _too_long_number() if what == "number" else f"{exc}"
            raise ConstructorError(
                None, None, f"cannot read {_clip(node.value)} as a {what}: {reason}",
                node.start_mark,
            ) from None  # fmt: skip

    return checked


def _clip(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


MeshYamlLoader.add_constructor(
    "tag:yaml.org,2002:timestamp",
    _refuse_unreadable("date", SafeConstructor.construct_yaml_timestamp),
)
MeshYamlLoader.add_constructor(
    "tag:yaml.org,2002:int", _refuse_unreadable("number", SafeConstructor.construct_yaml_int)
)


# -- Documents ----------------------------------------------------------------------

_Path = tuple[str | int, ...]


class _Invalid(Exception):
    """A document that parses but does not mean anything usable, and where."""

    def __init__(self, path: _Path, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def _read_document(doc: Any, path: _Path, out: Sources) -> None:
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            _read_document(item, (*path, i), out)
        return
    if not isinstance(doc, dict):
        raise _Invalid(path, f"expected a mapping (a NameTable or a manifest), got {_kind(doc)}")
    kind = doc.get("kind")
    if kind is None and "table" in doc:
        _read_name_table(doc, path, out)
        return
    if kind is None:
        raise _Invalid(path, "neither a NameTable ('table') nor a manifest ('kind')")
    kind = _string(kind, (*path, "kind"))
    api = _string(doc.get("apiVersion", ""), (*path, "apiVersion"))
    group, _, version = api.rpartition("/")
    if kind == "List" or (kind.endswith("List") and "items" in doc):
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise _Invalid((*path, "items"), f"expected a list, got {_kind(items)}")
        for i, item in enumerate(items):
            _read_document(item, (*path, "items", i), out)
    elif kind == "Service" and api == "v1":
        out.services.append(_read_service(doc, path))
    elif kind == "EndpointSlice" and group == "discovery.k8s.io":
        if version not in ("v1", "v1beta1"):
            raise _Invalid((*path, "apiVersion"), f"unsupported EndpointSlice version {api}")
        record = _read_slice(doc, path)
        if record is not None:
            out.slices.append(record)
    elif kind == "Pod" and api == "v1":
        pod = _read_pod(doc, path)
        if pod is not None:
            out.pods.append(pod)
    elif kind == "ServiceEntry" and group == "networking.istio.io":
        if version not in ISTIO_VERSIONS:
            raise _Invalid((*path, "apiVersion"), f"unsupported ServiceEntry version {api}")
        out.service_entries.append(_read_service_entry(doc, path))
    # Any other kind (Deployment, ConfigMap, a Knative Service...) is not ours:
    # skipped, so a whole `kubectl get -o yaml` dump can be given as it is.


def _read_name_table(doc: Mapping[str, Any], path: _Path, out: Sources) -> None:
    table = doc.get("table") or {}
    tpath = (*path, "table")
    if not isinstance(table, dict):
        raise _Invalid(tpath, f"'table' must map host names to entries, got {_kind(table)}")
    for host, info in table.items():
        hpath = (*tpath, str(host))
        if not isinstance(host, str) or not host:
            raise _Invalid(tpath, f"host names must be non-empty strings, got {host!r}")
        if info is None:
            info = {}
        if not isinstance(info, dict):
            raise _Invalid(hpath, f"entry of {host} must be a mapping, got {_kind(info)}")
        alt_key = "altHosts" if "altHosts" in info else "alt_hosts"
        out.names.append(
            NameRecord(
                host=_host(host, hpath),
                ips=tuple(_ip(v, p) for v, p in _strings(info.get("ips"), (*hpath, "ips"))),
                registry=_string(info.get("registry", ""), (*hpath, "registry")),
                shortname=_string(info.get("shortname", ""), (*hpath, "shortname")).lower(),
                namespace=_string(info.get("namespace", ""), (*hpath, "namespace")).lower(),
                alt_hosts=tuple(
                    _host(v, p) for v, p in _strings(info.get(alt_key), (*hpath, alt_key))
                ),
            )
        )


def _read_service(doc: Mapping[str, Any], path: _Path) -> ServiceRecord:
    name, namespace, meta = _metadata(doc, path)
    spec = _mapping(doc.get("spec"), (*path, "spec"))
    spath = (*path, "spec")
    svc_type = _string(spec.get("type", "ClusterIP"), (*spath, "type"))
    external = ""
    if svc_type == "ExternalName":
        external = _host(spec.get("externalName"), (*spath, "externalName"))
        if external.startswith("*."):
            raise _Invalid((*spath, "externalName"), "externalName cannot be a wildcard")
    ips: list[str] = []
    headless = False
    if spec.get("clusterIPs"):
        raw = list(_strings(spec.get("clusterIPs"), (*spath, "clusterIPs")))
    elif spec.get("clusterIP"):
        raw = [(_string(spec["clusterIP"], (*spath, "clusterIP")), (*spath, "clusterIP"))]
    else:
        raw = []
    for value, vpath in raw:
        if value == "None":
            headless = True
        elif value:
            ips.append(_ip(value, vpath))
    annotations = _mapping(meta.get("annotations"), (*path, "metadata", "annotations"))
    export = str(annotations.get(EXPORT_TO_ANNOTATION) or "")
    return ServiceRecord(
        name=name,
        namespace=namespace,
        cluster_ips=tuple(dict.fromkeys(ips)) if not external else (),
        headless=headless and not external,
        external_name=external,
        publish_not_ready=spec.get("publishNotReadyAddresses") is True,
        export_to=tuple(p.strip() for p in export.split(",") if p.strip()),
    )


def _read_slice(doc: Mapping[str, Any], path: _Path) -> SliceRecord | None:
    _, namespace, meta = _metadata(doc, path)
    labels = _mapping(meta.get("labels"), (*path, "metadata", "labels"))
    service = labels.get(SERVICE_NAME_LABEL)
    if not service:
        return None  # a slice no Service owns: nothing to attach it to
    address_type = _string(doc.get("addressType", "IPv4"), (*path, "addressType"))
    if address_type not in ("IPv4", "IPv6"):
        return None  # FQDN slices name hosts, not addresses
    endpoints: list[EndpointRecord] = []
    epath = (*path, "endpoints")
    raw = doc.get("endpoints") or []
    if not isinstance(raw, list):
        raise _Invalid(epath, f"expected a list, got {_kind(raw)}")
    for i, ep in enumerate(raw):
        ppath = (*epath, i)
        ep = _mapping(ep, ppath)
        conditions = _mapping(ep.get("conditions"), (*ppath, "conditions"))
        hostname = ep.get("hostname") or ""
        endpoints.append(
            EndpointRecord(
                addresses=tuple(
                    _ip(v, p) for v, p in _strings(ep.get("addresses"), (*ppath, "addresses"))
                ),
                # The API says an unknown (absent) readiness is to be read as ready.
                ready=conditions.get("ready") is not False,
                terminating=conditions.get("terminating") is True,
                hostname=_label(hostname, (*ppath, "hostname")) if hostname else "",
            )
        )
    return SliceRecord(str(service).lower(), namespace, tuple(endpoints))


def _read_pod(doc: Mapping[str, Any], path: _Path) -> PodRecord | None:
    """A Pod whose addresses are its own: None for one that has ended, is being deleted,
    or uses the node's network (its address is the node's, shared by every such pod)."""
    name, namespace, meta = _metadata(doc, path)
    spec = _mapping(doc.get("spec"), (*path, "spec"))
    status = _mapping(doc.get("status"), (*path, "status"))
    if spec.get("hostNetwork") is True or meta.get("deletionTimestamp"):
        return None
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    ips: list[str] = []
    raw = status.get("podIPs") or []
    if not isinstance(raw, list):
        raise _Invalid((*path, "status", "podIPs"), f"expected a list, got {_kind(raw)}")
    for i, item in enumerate(raw):
        ipath = (*path, "status", "podIPs", i)
        ips.append(_ip(_string(_mapping(item, ipath).get("ip") or "", (*ipath, "ip")), ipath))
    if not ips and status.get("podIP"):
        ips.append(_ip(_string(status["podIP"], (*path, "status", "podIP")), (*path, "status")))
    if not ips:
        return None
    return PodRecord(name, namespace, tuple(dict.fromkeys(ips)))


def _read_service_entry(doc: Mapping[str, Any], path: _Path) -> ServiceEntryRecord:
    name, namespace, meta = _metadata(doc, path)
    spath = (*path, "spec")
    spec = _mapping(doc.get("spec"), spath)
    hosts = tuple(_host(v, p) for v, p in _strings(spec.get("hosts"), (*spath, "hosts")))
    if not hosts:
        raise _Invalid((*spath, "hosts"), "a ServiceEntry needs at least one host")
    addresses: list[str] = []
    raw_addresses = list(_strings(spec.get("addresses"), (*spath, "addresses")))
    for value, vpath in raw_addresses:
        ip = _address_or_cidr(value, vpath)
        if ip is not None:
            addresses.append(ip)
    endpoint_ips: list[str] = []
    eps = spec.get("endpoints") or []
    if not isinstance(eps, list):
        raise _Invalid((*spath, "endpoints"), f"expected a list, got {_kind(eps)}")
    for i, ep in enumerate(eps):
        ep = _mapping(ep, (*spath, "endpoints", i))
        address = str(ep.get("address") or "")
        # A host name or a unix socket is not an address DNS can give.
        with contextlib.suppress(ValueError):
            endpoint_ips.append(_normal_ip(address))
    labels = _mapping(meta.get("labels"), (*path, "metadata", "labels"))
    export = spec.get("exportTo") or []
    created = meta.get("creationTimestamp") or ""
    status = _read_status_addresses(doc, path, hosts)
    return ServiceEntryRecord(
        name=name,
        namespace=namespace,
        created=_timestamp(created),
        labels={str(k): _label_value(v) for k, v in labels.items()},
        hosts=hosts,
        addresses=tuple(dict.fromkeys(addresses)),
        has_addresses=bool(raw_addresses),
        resolution=_string(spec.get("resolution") or "NONE", (*spath, "resolution")).upper(),
        endpoint_ips=tuple(dict.fromkeys(endpoint_ips)),
        export_to=tuple(str(x) for x in export) if isinstance(export, list) else (),
        status_addresses=status,
    )


def _read_status_addresses(
    doc: Mapping[str, Any], path: _Path, hosts: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """``status.addresses`` ({value, host} each) as (host FQDN, IP) pairs.

    istiod writes them (its address allocator); a file exported from the
    cluster carries them too. A value that is not an IP is refused like any
    other wrong field; a CIDR of one address becomes that address.
    """
    spath = (*path, "status")
    status = _mapping(doc.get("status"), spath)
    raw = status.get("addresses") or []
    apath = (*spath, "addresses")
    if not isinstance(raw, list):
        raise _Invalid(apath, f"expected a list, got {_kind(raw)}")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        ipath = (*apath, i)
        item = _mapping(item, ipath)
        value = _string(item.get("value") or "", (*ipath, "value"))
        ip = _address_or_cidr(value, (*ipath, "value")) if value else None
        if ip is None:
            continue
        host_value = item.get("host")
        if host_value:
            host = _host(host_value, (*ipath, "host"))
        elif len(hosts) == 1:
            host = hosts[0]
        else:
            continue  # several hosts and no saying which: nobody's address
        out.append((host, ip))
    return tuple(dict.fromkeys(out))


# -- Field helpers ------------------------------------------------------------------


def _metadata(doc: Mapping[str, Any], path: _Path) -> tuple[str, str, Mapping[str, Any]]:
    mpath = (*path, "metadata")
    meta = _mapping(doc.get("metadata"), mpath)
    name = meta.get("name")
    if not name:
        raise _Invalid(mpath, f"a {doc.get('kind')} needs metadata.name")
    namespace = meta.get("namespace") or "default"
    return (
        _label(name, (*mpath, "name")),
        _label(namespace, (*mpath, "namespace")),
        meta,
    )


def _mapping(value: Any, path: _Path) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping, got {_kind(value)}")
    return value


def _string(value: Any, path: _Path) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid(path, f"expected a string, got {_kind(value)}")


def _strings(value: Any, path: _Path) -> Iterator[tuple[str, _Path]]:
    """Each string of a list with its path (nothing for a missing list)."""
    if value is None:
        return
    if not isinstance(value, list):
        raise _Invalid(path, f"expected a list, got {_kind(value)}")
    for i, item in enumerate(value):
        yield _string(item, (*path, i)), (*path, i)


def _normal_ip(text: str) -> str:
    """An address in canonical text; an IPv4-mapped IPv6 address becomes IPv4 (as hosts does).

    Raises ValueError when ``text`` is not an address. (``socket`` rather than
    ``ipaddress``: ten times faster, and tables hold tens of thousands.)
    """
    text = text.strip()
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if packed[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed)


def _ip(value: str, path: _Path) -> str:
    try:
        return _normal_ip(value)
    except ValueError:
        raise _Invalid(path, f"{value!r} is not an IP address") from None


def _address_or_cidr(value: str, path: _Path) -> str | None:
    """A ServiceEntry address: an IP, or a CIDR (single-host ones become that IP)."""
    if "/" not in value:
        return _ip(value, path)
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise _Invalid(path, f"{value!r} is neither an IP address nor a CIDR") from None
    if net.num_addresses == 1:
        return _normal_ip(str(net.network_address))
    return None  # a range is for routing, not something a name resolves to


def _host(value: Any, path: _Path) -> str:
    """A host name, lowercased, fully qualified; ``*`` only as the whole first label."""
    text = _string(value, path).strip().lower()
    if text.endswith("."):
        text = text[:-1]
    if len(text) <= 253 and _HOST.fullmatch(text):
        return text + "."
    if not text:
        raise _Invalid(path, "empty host name")
    if len(text) > 253:
        raise _Invalid(path, f"host name {text!r} is longer than 253 characters")
    raise _Invalid(path, f"{text!r} is not a valid host name")


def normalize_host(text: str) -> str:
    """A host name as the table keys it (lowercased FQDN); ValueError when it is not one."""
    try:
        return _host(text, ())
    except _Invalid as exc:
        raise ValueError(exc.reason) from None


def read_search_domains(path: str) -> list[str]:
    """The ``search`` (or ``domain``) domains of a resolv.conf, lowercased FQDNs.

    The last ``search``/``domain`` line wins, as in glibc. A missing or
    unreadable file gives no domains.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return []
    domains: list[str] = []
    for line in lines:
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] in ("search", "domain"):
            domains = []
            for field_ in fields[1:]:
                try:
                    domains.append(normalize_host(field_))
                except ValueError:
                    continue
    return list(dict.fromkeys(d for d in domains if d != "."))


def _label(value: Any, path: _Path) -> str:
    """A Kubernetes name or namespace (one DNS label), lowercased."""
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if not text or len(text) > 63 or not _label_ok(text):
        raise _Invalid(path, f"{value!r} is not a valid name (one DNS label)")
    return text


def _label_ok(label: str) -> bool:
    return _LABEL.fullmatch(label) is not None


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _timestamp(value: Any) -> str:
    """A creationTimestamp as RFC 3339 text (YAML may have made it a datetime already)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _line_of(text: str, path: _Path) -> int:
    """The line (1-based) of the node at ``path`` (document index first), best effort.

    Only used when reporting an error: the file is composed again with node
    positions (JSON is read as the YAML it almost always is).
    """
    try:
        docs = list(yaml.compose_all(text, Loader=MeshYamlLoader))
    except yaml.YAMLError:
        return 1
    index = path[0]
    if not isinstance(index, int) or index >= len(docs) or docs[index] is None:
        return 1
    node: yaml.Node = docs[index]
    for step in path[1:]:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(step):
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value)
        ):
            child = node.value[step]
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1
