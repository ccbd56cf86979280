"""From ``forward`` directives to frozen configurations (no sockets, no server).

Syntax, defaults and error texts follow CoreDNS's ``plugin/forward/setup.go``
wherever CoreDNS has one; the departures are listed in the README.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import dns.rcode

from pycorefile import Directive, SetupError, check_args, parse_duration
from pycorefile.zones import ZoneError, in_zone, normalize_zone, normalize_zones

MAX_UPSTREAMS = 15
DNS_PORT = 53
TLS_PORT = 853
DEFAULT_EXPIRE = 10.0
DEFAULT_MAX_FAILS = 2
DEFAULT_HEALTH_CHECK = 0.5
DEFAULT_READ_TIMEOUT = 2.0
POLICIES = ("random", "round_robin", "sequential")

_INTEGER = re.compile(r"[+-]?\d+")
_UNSUPPORTED = {
    "max_age": "connection lifetimes other than 'expire'",
    "doh_method": "DNS over HTTPS",
    "next_on_nodata": "'next_on_nodata'",
    "source_address": "choosing the source address",
    "resolver": "upstreams given as host names",
}


@dataclass(frozen=True)
class UpstreamAddress:
    """One TO: an IP address and port, plain DNS or DNS over TLS."""

    host: str
    """The IP address as text, without brackets (an IPv6 scope ``%eth0`` kept)."""
    port: int
    tls: bool = False
    server_name: str | None = None
    """The TLS name given in the address itself (``tls://9.9.9.9%dns.quad9.net``)."""

    @property
    def label(self) -> str:
        """``host:port`` (``[v6]:port``): the ``to`` label of the metrics."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host


@dataclass(frozen=True)
class TlsSettings:
    """``tls [CERT KEY [CA]]`` or ``tls CA``: the client side of DNS over TLS."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    def context(self) -> ssl.SSLContext:
        """An SSL context verifying the upstream (TLS 1.2 at least), as configured."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert and self.key:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


@dataclass(frozen=True)
class HealthSettings:
    """``health_check DURATION [no_rec] [domain NAME]``."""

    interval: float = DEFAULT_HEALTH_CHECK
    recursion: bool = True
    """RD in the probe (``no_rec`` clears it)."""
    domain: str = "."


@dataclass(frozen=True)
class ForwardConfig:
    """What one ``forward FROM TO...`` directive asks for."""

    zone: str
    upstreams: tuple[UpstreamAddress, ...]
    ignored: tuple[str, ...] = ()
    """``except``: names below these zones are not forwarded (FROM itself always is)."""
    force_tcp: bool = False
    prefer_udp: bool = False
    expire: float = DEFAULT_EXPIRE
    max_fails: int = DEFAULT_MAX_FAILS
    tls: TlsSettings = TlsSettings()
    tls_servername: str | None = None
    policy: str = "random"
    health: HealthSettings = HealthSettings()
    max_concurrent: int = 0
    """0: no limit."""
    next_rcodes: frozenset[int] = frozenset()
    failover_rcodes: frozenset[int] = frozenset()
    failfast: bool = False
    """``failfast_all_unhealthy_upstreams``."""
    read_timeout: float = DEFAULT_READ_TIMEOUT
    """How long one try waits for its reply."""
    max_connect_attempts: int = 0
    """Tries per query; 0: two per upstream, within the overall deadline."""
    max_idle_conns: int = 0
    """Idle TCP/TLS connections kept per upstream; 0: no limit."""
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    """Built at setup from ``tls`` when some upstream is ``tls://``."""
    directive: Directive | None = field(default=None, compare=False, repr=False)
    upstream_args: tuple[int, ...] = field(default=(), compare=False, repr=False)
    """For each upstream, the index of the directive argument it came from."""

    def covers(self, name: str) -> bool:
        """True when the lowercased FQDN ``name`` is to be forwarded by this directive."""
        if not in_zone(name, self.zone):
            return False
        if name == self.zone:
            return True
        return not any(in_zone(name, ignored) for ignored in self.ignored)


def parse_forward(
    directives: Sequence[Directive],
    *,
    listen_ports: Iterable[int] = (),
    listen_hosts: Iterable[str] = (),
) -> tuple[ForwardConfig, ...]:
    """Every ``forward`` directive of a block, in Corefile order.

    ``listen_ports`` and ``listen_hosts`` describe where this block serves
    (empty hosts: every address); an upstream that is one of them is the
    server itself, a loop, and refused here.
    """
    configs = tuple(parse_one(d) for d in directives)
    ports = {p for p in listen_ports if p}
    hosts = list(listen_hosts)
    for config in configs:
        for index, upstream in enumerate(config.upstreams):
            if not upstream.tls and upstream.port in ports and is_own_address(upstream.host, hosts):
                raise SetupError(
                    f"forwarding loop: upstream {upstream.label} is this server's own "
                    f"address, queries would come back to it",
                    config.directive,
                    config.upstream_args[index] if config.upstream_args else None,
                )
    return configs


def is_own_address(host: str, listen_hosts: Sequence[str]) -> bool:
    """True when packets to ``host`` reach a socket bound to one of ``listen_hosts``.

    With no listen hosts the server is bound to every address: the loopback
    and unspecified addresses then certainly reach it.
    """
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if not listen_hosts:
        return addr.is_unspecified or str(addr) in ("127.0.0.1", "::1")
    for listen in listen_hosts:
        try:
            bound = ipaddress.ip_address(listen.split("%", 1)[0])
        except ValueError:
            continue
        if bound == addr or (bound.is_unspecified and bound.version == addr.version):
            return True
    return False


def parse_one(d: Directive) -> ForwardConfig:
    """One ``forward FROM TO... { options }`` directive."""
    if len(d.args) < 2:
        raise SetupError(
            f"Wrong argument count or unexpected line ending after '{d.name}'", d, None
        )
    zone = parse_from(d)
    upstreams: list[UpstreamAddress] = []
    sources: list[int] = []
    empty: int | None = None
    for i, arg in enumerate(d.args[1:], start=1):
        found = parse_to(arg, d, i)
        if not found and empty is None:
            empty = i  # a resolv.conf without nameservers: skipped, as CoreDNS does
        for upstream in found:
            if upstream not in upstreams:
                upstreams.append(upstream)
                sources.append(i)
    if not upstreams:
        if empty is not None:
            raise SetupError(
                f"no valid upstream addresses found: no nameservers in '{d.args[empty]}'",
                d,
                empty,
            )
        raise SetupError("no valid upstream addresses found", d, 1)
    if len(upstreams) > MAX_UPSTREAMS:
        raise SetupError(f"more than {MAX_UPSTREAMS} TOs configured", d, 1)

    config = ForwardConfig(
        zone=zone, upstreams=tuple(upstreams), directive=d, upstream_args=tuple(sources)
    )
    for option in d.block or ():
        config = _apply_option(option, config)

    if config.tls_servername is not None and any(u.server_name for u in upstreams):
        raise SetupError(
            "a TLS server name in an upstream address conflicts with tls_servername", d, 1
        )
    if any(u.tls for u in upstreams):
        try:
            config = replace(config, ssl_context=config.tls.context())
        except (OSError, ssl.SSLError) as exc:
            raise SetupError(f"tls: {exc}", d, None) from None
    return config


def parse_from(d: Directive) -> str:
    """FROM, a directive's first argument, normalised (forward and grpc take it)."""
    try:
        zones = normalize_zones([d.args[0]])
    except ZoneError:
        raise SetupError(f"unable to normalize '{d.args[0]}'", d, 0) from None
    # A CIDR standing for several reverse zones: CoreDNS keeps the first.
    return zones[0]


def parse_to(
    arg: str, d: Directive | None = None, index: int | None = None
) -> list[UpstreamAddress]:
    """One TO argument: an address (``IP``, ``IP:PORT``, ``[V6]:PORT``, ``dns://``,
    ``tls://``) or a resolv.conf file, whose nameservers are used on port 53 (a file
    without any gives none)."""
    scheme = "dns"
    rest = arg
    if "://" in arg:
        scheme, rest = arg.split("://", 1)
        scheme = scheme.lower()
        if scheme == "https":
            raise SetupError("DNS over HTTPS (https://) upstreams are not supported", d, index)
        if scheme not in ("dns", "tls"):
            raise SetupError(
                f"'{scheme}' is not supported as a destination protocol in forward", d, index
            )
    tls = scheme == "tls"
    try:
        return [parse_address(rest, tls)]
    except ValueError as exc:
        problem = str(exc)
    if scheme == "dns" and "://" not in arg and (os.sep in arg or os.path.isfile(arg)):
        return parse_resolv_conf(arg, d, index)
    raise SetupError(problem, d, index)


def parse_address(text: str, tls: bool = False) -> UpstreamAddress:
    """``IP``, ``IP:PORT``, ``[V6]``, ``[V6]:PORT``, and for TLS ``IP%NAME[:PORT]``."""
    default_port = TLS_PORT if tls else DNS_PORT
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"not an IP address or file: '{text}'")
        host = text[1:end]
        after = text[end + 1 :]
        if after:
            if not after.startswith(":"):
                raise ValueError(f"not an IP address or file: '{text}'")
            port_text = after[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text
    name: str | None = None
    if tls and "%" in host:
        host, name = host.split("%", 1)
        if not name:
            raise ValueError(f"empty TLS server name in '{text}'")
    host_only = host.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host_only)
    except ValueError:
        raise ValueError(f"not an IP address or file: '{text}'") from None
    if ip.version == 4 and "%" in host:
        raise ValueError(f"not an IP address or file: '{text}'")
    port = default_port
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"invalid port in '{text}'")
        port = int(port_text)
    canonical = str(ip) + (host[len(host_only) :] if "%" in host else "")
    return UpstreamAddress(canonical, port, tls, name)


def parse_resolv_conf(
    path: str, d: Directive | None = None, index: int | None = None
) -> list[UpstreamAddress]:
    """The ``nameserver`` lines of a resolv.conf file, each on port 53 (none: empty)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise SetupError(
            f"not an IP address or file: '{path}' ({exc.strerror})", d, index
        ) from None
    found: list[UpstreamAddress] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            address = parse_address(words[1].strip("[]"))
        except ValueError:
            continue
        found.append(UpstreamAddress(address.host, DNS_PORT))
    return found


def parse_except(option: Directive) -> tuple[str, ...]:
    """``except IGNORED_NAMES...``: the names, normalised (forward and grpc take it)."""
    check_args(option, 1)
    ignored = []
    for i, arg in enumerate(option.args):
        try:
            ignored.append(normalize_zone(arg))
        except ZoneError:
            raise SetupError(f"unable to normalize '{arg}'", option, i) from None
    return tuple(ignored)


def parse_policy(option: Directive) -> str:
    """``policy random|round_robin|sequential`` (forward and grpc take it)."""
    check_args(option, 1, 1)
    if option.args[0] not in POLICIES:
        raise SetupError(f"unknown policy '{option.args[0]}'", option, 0)
    return option.args[0]


def _apply_option(option: Directive, config: ForwardConfig) -> ForwardConfig:
    """The configuration with one block option applied (raises SetupError)."""
    name = option.name
    args = option.args
    if name == "except":
        return replace(config, ignored=config.ignored + parse_except(option))
    if name == "force_tcp":
        check_args(option, 0, 0)
        return replace(config, force_tcp=True)
    if name == "prefer_udp":
        check_args(option, 0, 0)
        return replace(config, prefer_udp=True)
    if name == "failfast_all_unhealthy_upstreams":
        check_args(option, 0, 0)
        return replace(config, failfast=True)
    if name == "expire":
        check_args(option, 1, 1)
        return replace(config, expire=parse_duration(args[0], option, 0))
    if name == "read_timeout":
        check_args(option, 1, 1)
        timeout = parse_duration(args[0], option, 0)
        if timeout <= 0:
            raise SetupError("read_timeout must be positive", option, 0)
        return replace(config, read_timeout=timeout)
    if name == "max_fails":
        return replace(config, max_fails=_non_negative(option))
    if name == "max_concurrent":
        return replace(config, max_concurrent=_non_negative(option))
    if name == "max_connect_attempts":
        return replace(config, max_connect_attempts=_non_negative(option))
    if name == "max_idle_conns":
        return replace(config, max_idle_conns=_non_negative(option))
    if name == "tls":
        return replace(config, tls=parse_tls(option))
    if name == "tls_servername":
        check_args(option, 1, 1)
        return replace(config, tls_servername=args[0])
    if name == "policy":
        return replace(config, policy=parse_policy(option))
    if name == "health_check":
        return replace(config, health=_parse_health(option))
    if name == "next":
        return replace(config, next_rcodes=_parse_rcodes(option))
    if name == "failover":
        return replace(config, failover_rcodes=_parse_rcodes(option))
    if name in _UNSUPPORTED:
        raise SetupError(f"'{name}' is not supported ({_UNSUPPORTED[name]})", option)
    raise SetupError(f"unknown property '{name}'", option)


def parse_tls(option: Directive) -> TlsSettings:
    """``tls``, ``tls CA``, ``tls CERT KEY`` or ``tls CERT KEY CA``; the files must exist."""
    check_args(option, 0, 3)
    args = option.args
    for i, path in enumerate(args):
        if not os.path.isfile(path):
            raise SetupError(f"tls: no such file: '{path}'", option, i)
    if len(args) == 1:
        return TlsSettings(ca=args[0])
    if len(args) >= 2:
        return TlsSettings(args[0], args[1], args[2] if len(args) == 3 else None)
    return TlsSettings()


def _parse_rcodes(option: Directive) -> frozenset[int]:
    """Rcode names (any letter case) of ``next`` and ``failover``."""
    check_args(option, 1)
    rcodes = set()
    for i, arg in enumerate(option.args):
        try:
            rcode = dns.rcode.from_text(arg.upper())
        except Exception:
            raise SetupError(f"'{arg}' is not a valid rcode", option, i) from None
        if option.name == "failover" and rcode == dns.rcode.NOERROR:
            raise SetupError("NoError cannot be used in failover", option, i)
        rcodes.add(int(rcode))
    return frozenset(rcodes)


def _non_negative(option: Directive) -> int:
    text = option.args[0]
    if not _INTEGER.fullmatch(text):
        raise SetupError(f"invalid {option.name} '{text}': not a number", option, 0)
    value = int(text)
    if value < 0:
        raise SetupError(f"{option.name} can't be negative: {value}", option, 0)
    return value


def _parse_health(option: Directive) -> HealthSettings:
    check_args(option, 1)
    args = option.args
    interval = parse_duration(args[0], option, 0)
    if interval <= 0:
        raise SetupError("health_check: the interval must be positive", option, 0)
    recursion = True
    domain = "."
    i = 1
    while i < len(args):
        word = args[i]
        if word == "no_rec":
            recursion = False
        elif word == "domain":
            if i + 1 >= len(args):
                raise SetupError(
                    "Wrong argument count or unexpected line ending after 'domain'", option, i
                )
            i += 1
            try:
                domain = normalize_zone(args[i])
            except ZoneError:
                raise SetupError("health_check: invalid domain name", option, i) from None
        else:
            raise SetupError(f"health_check: unknown option {word}", option, i)
        i += 1
    return HealthSettings(interval, recursion, domain)
