"""The ``meshhosts`` directive: from Corefile lines to a frozen configuration (pure)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pycorefile import (
    Directive,
    Fallthrough,
    SetupContext,
    SetupError,
    check_args,
    kube,
    parse_duration,
    parse_zones,
)
from pycorefile.zones import host_address

from ._kube import KubeSourceConfig
from ._sources import MAX_FILE_SIZE, normalize_host
from ._table import InlineEntry

DEFAULT_TTL = 30
DEFAULT_RELOAD = 5.0
DEFAULT_DOMAIN = "cluster.local."
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
CLIENT_NAMESPACE = "@client"
"""``namespace @client``: each client's namespace, from the pod that has its address."""
_ONCE = (
    "namespace",
    "domain",
    "ttl",
    "reload",
    "fallthrough",
    "resolv_conf",
    "max_file_size",
    "kubernetes",
    "kubeconfig",
    "endpoint",
    "labels",
    "startup_timeout",
)
_KUBE_OPTIONS = ("kubeconfig", "endpoint", "namespaces", "labels", "startup_timeout")
DEFAULT_STARTUP_TIMEOUT = 5.0
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


@dataclass(frozen=True)
class MeshHostsConfig:
    """What one ``meshhosts`` block says."""

    zones: tuple[str, ...] = (".",)
    files: tuple[str, ...] = ()
    inline: tuple[InlineEntry, ...] = ()
    namespace: str = ""
    client_namespace: bool = False
    """The workload's namespace is each client's own (``namespace @client``, node-local)."""
    domain: str = DEFAULT_DOMAIN
    ttl: int = DEFAULT_TTL
    reload: float = DEFAULT_RELOAD
    fallthrough: Fallthrough | None = None
    resolv_conf: str = DEFAULT_RESOLV_CONF
    max_file_size: int = MAX_FILE_SIZE
    """Bytes one file may have; a bigger file is a failed load."""
    source: str = "Corefile"
    """Where the directive is (``FILE:LINE``), for log messages."""
    kubernetes: KubeSourceConfig | None = None
    """The ``kubernetes`` source: watch the API (None: files and inline lines only)."""
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    """How long the start waits for the API's first LIST of every kind."""


def parse_meshhosts(
    directives: Sequence[Directive],
    ctx: SetupContext,
    environ: Mapping[str, str] | None = None,
    *,
    connect: bool = True,
) -> MeshHostsConfig:
    """Read ``meshhosts [ZONES...] { ... }`` (once per server block).

    ``environ`` is where ``namespace env VAR`` looks (the process environment
    by default). ``connect`` False skips resolving the API's connection (tests
    of the parser).
    """
    d = directives[0]
    zones = tuple(parse_zones(d.args, ctx, d))
    files: list[str] = []
    inline: list[InlineEntry] = []
    seen: set[str] = set()
    values: dict[str, object] = {}
    kube_options: dict[str, Directive] = {}
    namespaces: set[str] = set()
    for opt in d.block or ():
        name = opt.name
        if name in _ONCE:
            if name in seen:
                raise SetupError(f"'{name}' given twice", opt)
            seen.add(name)
        address = _address(name)
        if address is not None:
            inline.append(_inline(opt, address))
        elif name == "file":
            check_args(opt, 1)
            files.extend(opt.args)
        elif name == "namespace":
            check_args(opt, 1, 2)
            if list(opt.args) == [CLIENT_NAMESPACE]:
                values["client_namespace"] = True
            else:
                values["namespace"] = _namespace(opt, os.environ if environ is None else environ)
        elif name == "domain":
            check_args(opt, 1, 1)
            try:
                values["domain"] = normalize_host(opt.args[0])
            except ValueError as exc:
                raise SetupError(f"invalid domain: {exc}", opt, 0) from None
        elif name == "ttl":
            check_args(opt, 1, 1)
            values["ttl"] = _ttl(opt)
        elif name == "reload":
            check_args(opt, 1, 1)
            values["reload"] = parse_duration(opt.args[0], opt, 0)
        elif name == "fallthrough":
            values["fallthrough"] = Fallthrough.parse(opt)
        elif name == "resolv_conf":
            check_args(opt, 1, 1)
            values["resolv_conf"] = opt.args[0]
        elif name == "max_file_size":
            check_args(opt, 1, 1)
            values["max_file_size"] = _size(opt)
        elif name == "kubernetes":
            check_args(opt, 0, 0)
            kube_options[name] = opt
        elif name in _KUBE_OPTIONS:
            kube_options[name] = opt
            if name == "kubeconfig":
                check_args(opt, 1, 2)
            elif name == "endpoint":
                check_args(opt, 1, 1)
            elif name == "namespaces":
                check_args(opt, 1)
                for i, arg in enumerate(opt.args):
                    namespaces.add(_valid_namespace(arg, opt, i, "namespaces: "))
            elif name == "labels":
                check_args(opt, 1)
                text = " ".join(opt.args)
                try:
                    values["labels"] = kube.check_selector(text)
                except ValueError as exc:
                    raise SetupError(
                        f"unable to parse label selector value: '{text}': {exc}", opt, 0
                    ) from None
            else:
                check_args(opt, 1, 1)
                values["startup_timeout"] = parse_duration(opt.args[0], opt, 0)
        else:
            raise SetupError(f"unknown property '{name}'", opt)
    kubernetes = None
    if kube_options and "kubernetes" not in kube_options:
        stray = next(iter(kube_options.values()))
        raise SetupError(f"'{stray.name}' needs the 'kubernetes' option (the API source)", stray)
    if "kubernetes" in kube_options and connect:
        kubernetes = KubeSourceConfig(
            _connection(kube_options),
            frozenset(namespaces),
            str(values["labels"]) if "labels" in values else None,
            pods="namespace" not in values and bool(values.get("client_namespace")),
        )
    fallthrough = values.get("fallthrough")
    assert fallthrough is None or isinstance(fallthrough, Fallthrough)
    return MeshHostsConfig(
        zones=zones,
        files=tuple(files),
        inline=tuple(inline),
        namespace=str(values.get("namespace", "")),
        client_namespace=bool(values.get("client_namespace", False)),
        domain=str(values.get("domain", DEFAULT_DOMAIN)),
        ttl=int(values.get("ttl", DEFAULT_TTL)),  # type: ignore[call-overload]
        reload=float(values.get("reload", DEFAULT_RELOAD)),  # type: ignore[arg-type]
        fallthrough=fallthrough,
        resolv_conf=str(values.get("resolv_conf", DEFAULT_RESOLV_CONF)),
        max_file_size=int(values.get("max_file_size", MAX_FILE_SIZE)),  # type: ignore[call-overload]
        source=f"{d.file}:{d.line}",
        kubernetes=kubernetes,
        startup_timeout=float(values.get("startup_timeout", DEFAULT_STARTUP_TIMEOUT)),  # type: ignore[arg-type]
    )


def _connection(options: Mapping[str, Directive]) -> kube.Connection:
    """Where the API is: ``kubeconfig`` wins over ``endpoint``; neither is in-cluster."""
    kubeconfig, endpoint = options.get("kubeconfig"), options.get("endpoint")
    try:
        return kube.connect(
            (kubeconfig.args[0], kubeconfig.args[1] if len(kubeconfig.args) == 2 else None)
            if kubeconfig is not None
            else None,
            endpoint.args[0] if endpoint is not None else None,
        )
    except kube.ConfigError as exc:
        where = kubeconfig or endpoint or options["kubernetes"]
        raise SetupError(str(exc), where, 0 if where.args else None) from None


def _namespace(opt: Directive, environ: Mapping[str, str]) -> str:
    """``namespace NAME``, ``namespace env VAR`` or ``namespace file PATH``, validated.

    The pod's own namespace reaches a container as an environment variable
    (``POD_NAMESPACE`` from the downward API's ``fieldRef: metadata.namespace``)
    or as a file (a downward API volume, or the service account's
    ``namespace`` file); both are read once, when the Corefile is loaded.
    """
    if len(opt.args) == 1:
        return _valid_namespace(opt.args[0], opt, 0, "")
    how, where = opt.args
    if how == "env":
        value = environ.get(where)
        if value is None:
            raise SetupError(f"namespace env {where}: the variable is not set", opt, 1)
        return _valid_namespace(value, opt, 1, f"namespace env {where}: ")
    if how == "file":
        try:
            with open(where, encoding="utf-8") as f:
                value = f.read(256)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise SetupError(f"namespace file {where}: cannot read: {reason}", opt, 1) from None
        return _valid_namespace(value, opt, 1, f"namespace file {where}: ")
    raise SetupError(
        f"namespace takes NAME, env VARIABLE, file PATH or {CLIENT_NAMESPACE}, not {how!r}", opt, 0
    )


def _valid_namespace(text: str, opt: Directive, arg: int, where: str) -> str:
    namespace = text.strip().lower()
    if (
        not namespace
        or len(namespace) > 63
        or not all(c.isascii() and (c.isalnum() or c == "-") for c in namespace)
    ):
        raise SetupError(f"{where}invalid namespace {text.strip()!r}", opt, arg)
    return namespace


def _address(text: str) -> str | None:
    """The canonical address when an option name is an IP (an inline line), else None."""
    ip = host_address(text)
    return None if ip is None else str(ip)


def _inline(opt: Directive, address: str) -> InlineEntry:
    if not opt.args:
        raise SetupError(f"inline entry {opt.name} needs at least one name", opt)
    if opt.block is not None:
        raise SetupError("an inline entry takes no block", opt)
    names = []
    for i, arg in enumerate(opt.args):
        try:
            names.append(normalize_host(arg))
        except ValueError as exc:
            raise SetupError(str(exc), opt, i) from None
    return InlineEntry(address, tuple(names))


def _ttl(opt: Directive) -> int:
    try:
        ttl = int(opt.args[0])
    except ValueError:
        raise SetupError("ttl needs a number of seconds", opt, 0) from None
    if not 0 <= ttl <= 65535:
        raise SetupError("ttl provided is invalid (0 to 65535 seconds)", opt, 0)
    return ttl


def _size(opt: Directive) -> int:
    """``max_file_size``: bytes, or a number followed by K, M or G (1024, 1024², 1024³)."""
    text = opt.args[0].strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
    number = text[: len(text) - len(unit)]
    if not (number.isascii() and number.isdigit() and len(number) <= 15) or int(number) <= 0:
        raise SetupError("max_file_size needs a positive size: BYTES, or with K, M or G", opt, 0)
    return int(number) * _SIZE_UNITS[unit]
