"""``grpc FROM TO... { except ...; tls ...; tls_servername NAME; policy P; fallthrough }``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from pycorefile import Directive, Fallthrough, SetupError, check_args
from pycorefile.zones import in_zone
from pycorefile_plugins.forward import (
    TlsSettings,
    UpstreamAddress,
    parse_except,
    parse_from,
    parse_policy,
    parse_tls,
    parse_to,
)

MAX_UPSTREAMS = 15


@dataclass(frozen=True)
class GrpcConfig:
    zone: str
    upstreams: tuple[UpstreamAddress, ...]
    ignored: tuple[str, ...] = ()
    tls: TlsSettings | None = None
    tls_servername: str = ""
    policy: str = "random"
    fallthrough: Fallthrough = field(default_factory=Fallthrough)

    def matches(self, name: str) -> bool:
        """True when ``name`` is under FROM and not under an ``except`` name (FROM never is)."""
        if not in_zone(name, self.zone):
            return False
        if name == self.zone:
            return True
        return not any(in_zone(name, ignored) for ignored in self.ignored)


def parse_grpc(directives: Sequence[Directive]) -> GrpcConfig:
    """The block's ``grpc`` directive (once per block), checked as CoreDNS checks it."""
    d = directives[0]
    check_args(d, 2)
    zone = parse_from(d)
    upstreams: list[UpstreamAddress] = []
    for index, arg in enumerate(d.args[1:], start=1):
        text = arg[len("grpc://") :] if arg.lower().startswith("grpc://") else arg
        if "://" in text:
            raise SetupError(f"'{arg.split('://')[0]}' is not supported by grpc", d, index)
        upstreams.extend(parse_to(text, d, index))
    if not upstreams:
        raise SetupError("no upstream addresses", d)
    if len(upstreams) > MAX_UPSTREAMS:
        raise SetupError(f"more than {MAX_UPSTREAMS} TOs configured: {len(upstreams)}", d)
    config = GrpcConfig(zone, tuple(upstreams))
    for option in d.block or ():
        config = _apply(option, config)
    return config


def _apply(option: Directive, config: GrpcConfig) -> GrpcConfig:
    name, args = option.name, option.args
    if name == "except":
        return replace(config, ignored=config.ignored + parse_except(option))
    if name == "tls":
        return replace(config, tls=parse_tls(option))
    if name == "tls_servername":
        check_args(option, 1, 1)
        return replace(config, tls_servername=args[0])
    if name == "policy":
        return replace(config, policy=parse_policy(option))
    if name == "fallthrough":
        return replace(config, fallthrough=Fallthrough.parse(option))
    raise SetupError(f"unknown property '{name}'", option)
