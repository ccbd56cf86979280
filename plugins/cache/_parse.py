"""From the ``cache`` directive to a frozen configuration (no sockets, no server).

The syntax, defaults and error texts are CoreDNS's (``plugin/cache/setup.go``)
wherever CoreDNS has one; the few departures are listed in the README.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from pycorefile import Directive, SetupContext, SetupError, check_args, parse_duration
from pycorefile.zones import ZoneError, normalize_zones

DEFAULT_CAPACITY = 9984
"""Entries per kind: CoreDNS's 256 shards of 39 entries."""
SUCCESS_MAX_TTL = 3600
DENIAL_MAX_TTL = 1800
MIN_TTL = 5
SERVFAIL_TTL = 5.0
SERVFAIL_TTL_LIMIT = 300.0
"""RFC 2308 section 7.1: SERVFAIL may not be cached for more than five minutes."""
PREFETCH_DURATION = 60.0
PREFETCH_PERCENTAGE = 10
STALE_DURATION = 3600.0
STALE_RESPONSE_TTL = 30
"""RFC 8767 section 4 recommends 30 seconds; CoreDNS sends 0."""
FAILURE_RECHECK_LIMIT = 300.0
MAX_RESPONSE_TTL = 2**32 - 1
"""A TTL is a 32-bit field (CoreDNS refuses a larger stale response TTL too)."""

_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class KindSettings:
    """Capacity and TTL bounds of one kind of entry (success or denial)."""

    capacity: int
    max_ttl: int
    min_ttl: int = MIN_TTL


@dataclass(frozen=True)
class PrefetchSettings:
    """``prefetch AMOUNT [DURATION [PERCENTAGE%]]``."""

    amount: int
    """Hits (with no gap of ``duration`` or more) that make an entry popular."""
    duration: float = PREFETCH_DURATION
    percentage: int = PREFETCH_PERCENTAGE
    """Refresh once the remaining TTL is at most this share of the original."""


@dataclass(frozen=True)
class StaleSettings:
    """``serve_stale``: answering from expired entries (RFC 8767)."""

    duration: float = STALE_DURATION
    """How long after expiry an entry may still be served."""
    verify: bool = False
    """``verify``: ask upstream first; ``immediate`` (False): answer stale, refresh behind."""
    verify_timeout: float = 0.0
    """How long ``verify`` waits for upstream; 0 waits as long as the query may."""
    response_ttl: int = STALE_RESPONSE_TTL
    """The TTL of every record of a stale answer."""
    failure_recheck: float = 0.0
    """After a failed refresh, how long stale answers are given without asking again."""
    prefer_positive: bool = False
    """``serve_stale_policy prefer_positive``: a stale answer beats a fresh denial."""


@dataclass(frozen=True)
class CacheConfig:
    """What one ``cache`` directive asks for."""

    zones: tuple[str, ...]
    success: KindSettings = KindSettings(DEFAULT_CAPACITY, SUCCESS_MAX_TTL)
    denial: KindSettings = KindSettings(DEFAULT_CAPACITY, DENIAL_MAX_TTL)
    prefetch: PrefetchSettings | None = None
    serve_stale: StaleSettings | None = None
    servfail_ttl: float = SERVFAIL_TTL
    """Seconds a SERVFAIL (or NOTIMP) reply is kept; 0 keeps none."""
    disable_success: tuple[str, ...] = field(default=())
    """Zones whose successful replies are never stored."""
    disable_denial: tuple[str, ...] = field(default=())
    """Zones whose denials (and SERVFAILs) are never stored."""
    keepttl: bool = False
    """Serve the TTLs as stored instead of counting them down."""


def parse_cache(directives: Sequence[Directive], ctx: SetupContext) -> CacheConfig:
    """Read the ``cache`` directive of one server block."""
    d = directives[0]
    args = list(d.args)
    ttl: int | None = None
    first_zone = 0
    if args and _INTEGER.fullmatch(args[0]):
        # A leading number is the maximum TTL of both kinds; anything else is a zone.
        ttl = int(args[0])
        if ttl <= 0:
            raise SetupError(f"cache TTL can not be zero or negative: {ttl}", d, 0)
        args = args[1:]
        first_zone = 1
    zones = _zones(args, d, first_zone) if args else tuple(ctx.zones)
    config = CacheConfig(zones)
    if ttl is not None:
        config = replace(
            config,
            success=replace(config.success, max_ttl=ttl),
            denial=replace(config.denial, max_ttl=ttl),
        )
    policy: Directive | None = None
    for option in d.block or ():
        name = option.name
        if name == "success":
            config = replace(config, success=_kind(option, config.success))
        elif name == "denial":
            config = replace(config, denial=_kind(option, config.denial))
        elif name == "prefetch":
            config = replace(config, prefetch=_prefetch(option))
        elif name == "serve_stale":
            config = replace(config, serve_stale=_serve_stale(option))
        elif name == "serve_stale_policy":
            if policy is not None:
                raise SetupError("serve_stale_policy can only be specified once", option)
            check_args(option, 1, 1)
            if option.args[0].lower() != "prefer_positive":
                raise SetupError(f"invalid serve_stale_policy: {option.args[0]}", option, 0)
            policy = option
        elif name == "servfail":
            check_args(option, 1, 1)
            seconds = _duration(option, 0, "invalid negative ttl for servfail")
            if seconds > SERVFAIL_TTL_LIMIT:
                raise SetupError(
                    "caching SERVFAIL responses over 5 minutes is not permitted", option, 0
                )
            config = replace(config, servfail_ttl=seconds)
        elif name == "disable":
            config = _disable(option, config)
        elif name == "keepttl":
            check_args(option, 0, 0)
            config = replace(config, keepttl=True)
        else:
            raise SetupError(f"unknown property '{name}'", option)
    if policy is not None:
        if config.serve_stale is None:
            raise SetupError("serve_stale_policy requires serve_stale", policy)
        config = replace(config, serve_stale=replace(config.serve_stale, prefer_positive=True))
    return config


def _zones(args: Sequence[str], d: Directive, first: int) -> tuple[str, ...]:
    out: list[str] = []
    for i, arg in enumerate(args):
        try:
            out.extend(normalize_zones([arg]))
        except ZoneError as exc:
            raise SetupError(str(exc), d, first + i) from None
    return tuple(out)


def _atoi(option: Directive, index: int) -> int:
    """An integer argument, refused with Go's ``strconv.Atoi`` text as CoreDNS does."""
    text = option.args[index]
    if not _INTEGER.fullmatch(text):
        raise SetupError(f'strconv.Atoi: parsing "{text}": invalid syntax', option, index)
    return int(text)


def _kind(option: Directive, current: KindSettings) -> KindSettings:
    """``success|denial CAPACITY [TTL] [MINTTL]``."""
    check_args(option, 1, 3)
    capacity = _atoi(option, 0)
    if capacity <= 0:
        raise SetupError(f"cache capacity must be positive: {capacity}", option, 0)
    settings = replace(current, capacity=capacity)
    if len(option.args) > 1:
        ttl = _atoi(option, 1)
        if ttl <= 0:
            raise SetupError(f"cache TTL can not be zero or negative: {ttl}", option, 1)
        settings = replace(settings, max_ttl=ttl)
    if len(option.args) > 2:
        min_ttl = _atoi(option, 2)
        if min_ttl < 0:
            raise SetupError(f"cache min TTL can not be negative: {min_ttl}", option, 2)
        settings = replace(settings, min_ttl=min_ttl)
    return settings


def _prefetch(option: Directive) -> PrefetchSettings:
    """``prefetch AMOUNT [[DURATION] [PERCENTAGE%]]``."""
    check_args(option, 1, 3)
    amount = _atoi(option, 0)
    if amount < 0:
        raise SetupError(f"prefetch amount should be positive: {amount}", option, 0)
    settings = PrefetchSettings(amount)
    if len(option.args) > 1:
        settings = replace(settings, duration=parse_duration(option.args[1], option, 1))
    if len(option.args) > 2:
        text = option.args[2]
        if not text.endswith("%"):
            last = text[-1:] or " "
            raise SetupError(
                f"last character of percentage should be `%`, but is: '{last}'", option, 2
            )
        digits = text[:-1]
        if not _INTEGER.fullmatch(digits):
            raise SetupError(f'strconv.Atoi: parsing "{digits}": invalid syntax', option, 2)
        percentage = int(digits)
        if not 10 <= percentage <= 90:
            raise SetupError(f"percentage should fall in range [10, 90]: {percentage}", option, 2)
        settings = replace(settings, percentage=percentage)
    return settings


def _serve_stale(option: Directive) -> StaleSettings:
    """``serve_stale [DURATION] [immediate [TTL [RECHECK]] | verify [TIMEOUT [TTL [RECHECK]]]]``."""
    args = option.args
    check_args(option, 0, 5)
    settings = StaleSettings()
    if not args:
        return settings
    settings = replace(
        settings, duration=_duration(option, 0, "invalid negative duration for serve_stale")
    )
    if len(args) == 1:
        return settings
    mode = args[1].lower()
    if mode not in ("immediate", "verify"):
        raise SetupError(f"invalid value for serve_stale refresh mode: {mode}", option, 1)
    rest = 2
    if mode == "verify":
        settings = replace(settings, verify=True)
        if len(args) > 2:
            timeout = _duration(option, 2, "invalid negative timeout for serve_stale verify")
            settings = replace(settings, verify_timeout=timeout)
            rest = 3
    elif len(args) > 4:
        check_args(option, 0, 4)
    if len(args) > rest:
        settings = replace(settings, response_ttl=_whole_seconds(option, rest))
    if len(args) > rest + 1:
        recheck = _duration(option, rest + 1, "invalid negative failure recheck for serve_stale")
        if recheck > FAILURE_RECHECK_LIMIT:
            raise SetupError(
                "serve_stale failure recheck cannot exceed 5 minutes", option, rest + 1
            )
        settings = replace(settings, failure_recheck=recheck)
    return settings


def _whole_seconds(option: Directive, index: int) -> int:
    """A TTL given as ``30`` or ``30s``: whole seconds only."""
    text = option.args[index]
    if _INTEGER.fullmatch(text):
        value = float(text)
    else:
        value = _duration(option, index, "invalid negative response TTL for serve_stale")
    if value < 0:
        raise SetupError("invalid negative response TTL for serve_stale", option, index)
    if value != math.floor(value):
        raise SetupError(
            f"serve_stale response TTL must be a whole number of seconds: {text}", option, index
        )
    if value > MAX_RESPONSE_TTL:
        raise SetupError("serve_stale response TTL exceeds the DNS TTL range", option, index)
    return int(value)


def _duration(option: Directive, index: int, negative: str) -> float:
    """A Go duration; a negative one gets CoreDNS's own message."""
    text = option.args[index]
    if text.startswith("-"):
        if parse_duration(text[1:], option, index) > 0:
            raise SetupError(negative, option, index)
        return 0.0
    return parse_duration(text, option, index)


def _disable(option: Directive, config: CacheConfig) -> CacheConfig:
    """``disable success|denial [ZONES...]``: never store that kind for those zones."""
    check_args(option, 1)
    kind = option.args[0]
    zones: list[str] = []
    for i, arg in enumerate(option.args[1:], start=1):
        try:
            zones.extend(normalize_zones([arg]))
        except ZoneError:
            raise SetupError(f"invalid disabled zone: {arg}", option, i) from None
    if not zones:
        zones = ["."]
    if kind == "success":
        return replace(config, disable_success=_merge(config.disable_success, zones))
    if kind == "denial":
        return replace(config, disable_denial=_merge(config.disable_denial, zones))
    raise SetupError('cache type for disable must be "success" or "denial"', option, 0)


def _merge(old: tuple[str, ...], new: list[str]) -> tuple[str, ...]:
    return old + tuple(z for z in new if z not in old)
