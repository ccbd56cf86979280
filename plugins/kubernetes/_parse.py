"""``kubernetes [ZONES...] { ... }``: from Corefile lines to a frozen configuration (pure).

The connection settings are resolved here too (the kubeconfig read, the
in-cluster environment checked), so a cluster that cannot be reached by
configuration is a setup error with the Corefile's position, as in CoreDNS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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

DEFAULT_TTL = 5
MAX_TTL = 3600
DEFAULT_STARTUP_TIMEOUT = 5.0
PODS_MODES = ("disabled", "insecure", "verified")


@dataclass(frozen=True)
class KubernetesConfig:
    """What one ``kubernetes`` block says."""

    zones: tuple[str, ...]
    primary_zone: str
    """The first non-reverse zone: PTR targets are named in it."""
    connection: kube.Connection | None = None
    """None only for a configuration built without a cluster (tests of the parser)."""
    namespaces: frozenset[str] = frozenset()
    namespace_labels: str | None = None
    labels: str | None = None
    pods: str = "disabled"
    endpoint_pod_names: bool = False
    ttl: int = DEFAULT_TTL
    noendpoints: bool = False
    ignore_empty_service: bool = False
    fallthrough: Fallthrough | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    api_qps: float = 0.0
    api_burst: int = 0
    api_max_inflight: int = 0
    warnings: tuple[str, ...] = field(default=(), compare=False)


def parse_kubernetes(
    directives: Sequence[Directive], ctx: SetupContext, *, connect: bool = True
) -> KubernetesConfig:
    """Read the block's ``kubernetes`` directive; ``connect`` False skips the connection."""
    d = directives[0]
    zones = tuple(parse_zones(d.args, ctx, d))
    primary = next((z for z in zones if not _is_reverse(z)), None)
    if primary is None:
        raise SetupError("non-reverse zone name must be used", d)
    values: dict[str, object] = {}
    namespaces: set[str] = set()
    warnings: list[str] = []
    endpoint: Directive | None = None
    tls: tuple[str, str, str] | None = None
    kubeconfig: tuple[str, str | None] | None = None
    for opt in d.block or ():
        name = opt.name
        if name == "endpoint_pod_names":
            check_args(opt, 0, 0)
            values["endpoint_pod_names"] = True
        elif name == "pods":
            check_args(opt, 1, 1)
            if opt.args[0] not in PODS_MODES:
                raise SetupError(
                    f"wrong value for pods: {opt.args[0]},  must be one of: "
                    "disabled, verified, insecure",
                    opt,
                    0,
                )
            values["pods"] = opt.args[0]
        elif name == "namespaces":
            check_args(opt, 1)
            namespaces.update(opt.args)
        elif name == "endpoint":
            check_args(opt, 1)
            endpoint = opt
            if len(opt.args) > 1:
                warnings.append(
                    "Multiple endpoints have been deprecated, only the first specified "
                    f"endpoint '{opt.args[0]}' is used"
                )
        elif name == "tls":
            check_args(opt, 3, 3)
            tls = (opt.args[0], opt.args[1], opt.args[2])
        elif name in ("labels", "namespace_labels"):
            check_args(opt, 1)
            text = " ".join(opt.args)
            try:
                values[name] = kube.check_selector(text)
            except ValueError as exc:
                what = "label" if name == "labels" else "namespace_label"
                raise SetupError(
                    f"unable to parse {what} selector value: '{text}': {exc}", opt, 0
                ) from None
        elif name == "fallthrough":
            values["fallthrough"] = Fallthrough.parse(opt)
        elif name == "ttl":
            check_args(opt, 1)
            try:
                ttl = int(opt.args[0])
            except ValueError:
                raise SetupError(
                    f'strconv.Atoi: parsing "{opt.args[0]}": invalid syntax', opt, 0
                ) from None
            if not 0 <= ttl <= MAX_TTL:
                raise SetupError(f"ttl must be in range [0, 3600]: {ttl}", opt, 0)
            values["ttl"] = ttl
        elif name == "noendpoints":
            check_args(opt, 0, 0)
            values["noendpoints"] = True
        elif name == "ignore":
            check_args(opt, 1)
            if opt.args[0] != "empty_service":
                raise SetupError(f"unable to parse ignore value: '{opt.args[0]}'", opt, 0)
            values["ignore_empty_service"] = True
        elif name == "kubeconfig":
            check_args(opt, 1, 2)
            kubeconfig = (opt.args[0], opt.args[1] if len(opt.args) == 2 else None)
            values["_kubeconfig_directive"] = opt
        elif name == "startup_timeout":
            check_args(opt, 1)
            values["startup_timeout"] = parse_duration(opt.args[0], opt, 0)
        elif name in ("apiserver_qps", "apiserver_burst", "apiserver_max_inflight"):
            check_args(opt, 1, 1)
            values[name] = _non_negative(opt, name == "apiserver_qps")
        elif name in ("multicluster", "zonal"):
            raise SetupError(f"'{name}' is not supported by this server", opt)
        else:
            raise SetupError(f"unknown property '{name}'", opt)
    if namespaces and "namespace_labels" in values:
        raise SetupError("namespaces and namespace_labels cannot both be set", d)
    connection = None
    if connect:
        connection = _connection(d, endpoint, tls, kubeconfig, values)
    return KubernetesConfig(
        zones=zones,
        primary_zone=primary,
        connection=connection,
        namespaces=frozenset(namespaces),
        namespace_labels=_opt_str(values.get("namespace_labels")),
        labels=_opt_str(values.get("labels")),
        pods=str(values.get("pods", "disabled")),
        endpoint_pod_names=bool(values.get("endpoint_pod_names", False)),
        ttl=int(values.get("ttl", DEFAULT_TTL)),  # type: ignore[call-overload]
        noendpoints=bool(values.get("noendpoints", False)),
        ignore_empty_service=bool(values.get("ignore_empty_service", False)),
        fallthrough=values.get("fallthrough"),  # type: ignore[arg-type]
        startup_timeout=float(values.get("startup_timeout", DEFAULT_STARTUP_TIMEOUT)),  # type: ignore[arg-type]
        api_qps=float(values.get("apiserver_qps", 0.0)),  # type: ignore[arg-type]
        api_burst=int(values.get("apiserver_burst", 0)),  # type: ignore[call-overload]
        api_max_inflight=int(values.get("apiserver_max_inflight", 0)),  # type: ignore[call-overload]
        warnings=tuple(warnings),
    )


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _non_negative(opt: Directive, real: bool) -> float:
    text = opt.args[0]
    try:
        value = float(text) if real else int(text)
    except ValueError:
        raise SetupError(f"invalid {opt.name} {text!r}", opt, 0) from None
    if value < 0:
        raise SetupError(f"{opt.name} must be >= 0", opt, 0)
    return value


def _connection(
    d: Directive,
    endpoint: Directive | None,
    tls: tuple[str, str, str] | None,
    kubeconfig: tuple[str, str | None] | None,
    values: dict[str, object],
) -> kube.Connection:
    """Where the API is: kubeconfig wins over endpoint; neither means in-cluster."""
    try:
        return kube.connect(kubeconfig, endpoint.args[0] if endpoint is not None else None, tls)
    except kube.ConfigError as exc:
        at = values.get("_kubeconfig_directive")
        where = at if isinstance(at, Directive) else endpoint or d
        raise SetupError(str(exc), where, 0 if where is not d else None) from None


def _is_reverse(zone: str) -> bool:
    return zone.endswith(("in-addr.arpa.", "ip6.arpa."))
