"""cache: the Corefile directive alone, without a server."""

from __future__ import annotations

import pytest

from pycorefile import CorefileError, Directive, SetupContext, SetupError, load_config
from pycorefile._registry import Registry
from pycorefile.corefile import ServerBlock, ZoneKey
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.cache import (
    CacheConfig,
    CachePlugin,
    KindSettings,
    PrefetchSettings,
    StaleSettings,
    parse_cache,
)


def ctx(*zones: str) -> SetupContext:
    zones = zones or (".",)
    block = ServerBlock(zones, (), "Corefile", 1)
    return SetupContext(block=block, keys=tuple(ZoneKey("dns", z, 53) for z in zones))


def cache(*args: str, options: tuple[tuple[str, ...], ...] | None = None) -> Directive:
    block = None
    if options is not None:
        block = tuple(Directive(o[0], o[1:], "Corefile", 3 + i, 9) for i, o in enumerate(options))
    return Directive("cache", args, "Corefile", 2, 5, block)


def parse(*args: str, options: tuple[tuple[str, ...], ...] | None = None) -> CacheConfig:
    return parse_cache([cache(*args, options=options)], ctx())


def test_defaults_are_coredns_s() -> None:
    config = parse()
    assert config == CacheConfig((".",))
    assert config.success == KindSettings(9984, 3600, 5)
    assert config.denial == KindSettings(9984, 1800, 5)
    assert config.servfail_ttl == 5.0
    assert config.prefetch is None and config.serve_stale is None and not config.keepttl


def test_zones_default_to_the_block() -> None:
    config = parse_cache([cache()], ctx("example.org.", "example.net."))
    assert config.zones == ("example.org.", "example.net.")


@pytest.mark.parametrize(
    ("args", "zones", "max_ttls"),
    [
        (("30",), (".",), (30, 30)),
        (("Example.ORG",), ("example.org.",), (3600, 1800)),
        (("30", "example.org", "10.0.0.0/8"), ("example.org.", "10.in-addr.arpa."), (30, 30)),
    ],
)
def test_ttl_and_zones(
    args: tuple[str, ...], zones: tuple[str, ...], max_ttls: tuple[int, int]
) -> None:
    config = parse(*args)
    assert config.zones == zones
    assert (config.success.max_ttl, config.denial.max_ttl) == max_ttls


def test_every_option() -> None:
    config = parse(
        "600",
        options=(
            ("success", "5000", "1200", "10"),
            ("denial", "2500"),
            ("prefetch", "10", "2m", "20%"),
            ("serve_stale", "2h", "verify", "500ms", "15", "1m"),
            ("serve_stale_policy", "prefer_positive"),
            ("servfail", "10s"),
            ("disable", "success", "Example.ORG"),
            ("disable", "success", "example.net"),
            ("disable", "denial"),
            ("keepttl",),
        ),
    )
    assert config.success == KindSettings(5000, 1200, 10)
    assert config.denial == KindSettings(2500, 600, 5)
    assert config.prefetch == PrefetchSettings(10, 120.0, 20)
    assert config.serve_stale == StaleSettings(7200.0, True, 0.5, 15, 60.0, True)
    assert config.servfail_ttl == 10.0
    assert config.disable_success == ("example.org.", "example.net.")
    assert config.disable_denial == (".",)
    assert config.keepttl


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), StaleSettings()),
        (("30m",), StaleSettings(duration=1800.0)),
        (("1h", "IMMEDIATE", "0"), StaleSettings(response_ttl=0)),
        (("1h", "immediate", "10s", "30s"), StaleSettings(response_ttl=10, failure_recheck=30)),
        (("1h", "verify"), StaleSettings(verify=True)),
        (("0", "verify", "1s", "5"), StaleSettings(0.0, True, 1.0, 5)),
    ],
)
def test_serve_stale_forms(args: tuple[str, ...], expected: StaleSettings) -> None:
    assert parse(options=(("serve_stale", *args),)).serve_stale == expected


@pytest.mark.parametrize(
    ("args", "options", "message", "where"),
    [
        (("0",), None, "cache TTL can not be zero or negative: 0", (2, 0)),
        (("-5",), None, "cache TTL can not be zero or negative: -5", (2, 0)),
        (("30", "a..b"), None, "zone is not a valid domain name", (2, 1)),
        (
            (),
            (("success",),),
            "Wrong argument count or unexpected line ending after 'success'",
            (3, None),
        ),
        ((), (("success", "many"),), 'strconv.Atoi: parsing "many": invalid syntax', (3, 0)),
        ((), (("success", "0"),), "cache capacity must be positive: 0", (3, 0)),
        ((), (("success", "10", "0"),), "cache TTL can not be zero or negative: 0", (3, 1)),
        ((), (("denial", "10", "x"),), 'strconv.Atoi: parsing "x": invalid syntax', (3, 1)),
        ((), (("denial", "10", "60", "-1"),), "cache min TTL can not be negative: -1", (3, 2)),
        ((), (("denial", "1", "2", "3", "4"),), "Wrong argument count", (3, 3)),
        ((), (("prefetch",),), "Wrong argument count", (3, None)),
        ((), (("prefetch", "-1"),), "prefetch amount should be positive: -1", (3, 0)),
        ((), (("prefetch", "1", "soon"),), "invalid duration 'soon'", (3, 1)),
        (
            (),
            (("prefetch", "1", "1m", "50"),),
            "last character of percentage should be `%`, but is: '0'",
            (3, 2),
        ),
        (
            (),
            (("prefetch", "1", "1m", "5%"),),
            r"percentage should fall in range \[10, 90\]: 5",
            (3, 2),
        ),
        (
            (),
            (("prefetch", "1", "1m", "95%"),),
            r"percentage should fall in range \[10, 90\]: 95",
            (3, 2),
        ),
        ((), (("prefetch", "1", "1m", "x%"),), 'strconv.Atoi: parsing "x": invalid syntax', (3, 2)),
        ((), (("serve_stale", "-1h"),), "invalid negative duration for serve_stale", (3, 0)),
        (
            (),
            (("serve_stale", "1h", "later"),),
            "invalid value for serve_stale refresh mode: later",
            (3, 1),
        ),
        (
            (),
            (("serve_stale", "1h", "immediate", "1.5s"),),
            "response TTL must be a whole number of seconds",
            (3, 2),
        ),
        (
            (),
            (("serve_stale", "1h", "immediate", "5", "6m"),),
            "failure recheck cannot exceed 5 minutes",
            (3, 3),
        ),
        ((), (("serve_stale", "1h", "immediate", "5", "1m", "x"),), "Wrong argument count", (3, 4)),
        (
            (),
            (("serve_stale", "1h", "verify", "1s", "5", "1m", "x"),),
            "Wrong argument count",
            (3, 5),
        ),
        (
            (),
            (("serve_stale_policy", "prefer_positive"),),
            "serve_stale_policy requires serve_stale",
            (3, None),
        ),
        (
            (),
            (("serve_stale",), ("serve_stale_policy", "newest")),
            "invalid serve_stale_policy: newest",
            (4, 0),
        ),
        ((), (("servfail",),), "Wrong argument count", (3, None)),
        ((), (("servfail", "-1s"),), "invalid negative ttl for servfail", (3, 0)),
        (
            (),
            (("servfail", "6m"),),
            "caching SERVFAIL responses over 5 minutes is not permitted",
            (3, 0),
        ),
        ((), (("disable",),), "Wrong argument count", (3, None)),
        ((), (("disable", "all"),), 'cache type for disable must be "success" or "denial"', (3, 0)),
        ((), (("disable", "denial", "a..b"),), "invalid disabled zone: a..b", (3, 1)),
        ((), (("keepttl", "yes"),), "Wrong argument count", (3, 0)),
        ((), (("positive", "10"),), "unknown property 'positive'", (3, None)),
    ],
)
def test_setup_errors(
    args: tuple[str, ...],
    options: tuple[tuple[str, ...], ...] | None,
    message: str,
    where: tuple[int, int | None],
) -> None:
    with pytest.raises(SetupError, match=message) as info:
        parse(*args, options=options)
    error = info.value
    assert error.directive is not None
    assert (error.directive.line, error.arg) == where


REGISTRY = Registry.from_classes({"bind": BindPlugin, "cache": CachePlugin})


def test_errors_point_at_the_corefile() -> None:
    text = ".:53 {\n    cache 30 {\n        servfail 10m\n    }\n}\n"
    with pytest.raises(CorefileError) as info:
        load_config(text, registry=REGISTRY)
    assert str(info.value).startswith(
        "Corefile:3:18 - plugin/cache: caching SERVFAIL responses over 5 minutes is not permitted"
    )


def test_once_per_server_block() -> None:
    text = ".:53 {\n    cache\n    cache 30\n}\n"
    with pytest.raises(CorefileError, match="can only be used once per Server Block"):
        load_config(text, registry=REGISTRY)


def test_server_label_follows_bind() -> None:
    config = load_config(".:1053 {\n    bind 127.0.0.1\n    cache\n}\n", registry=REGISTRY)
    (plugin,) = config.find("cache")
    assert isinstance(plugin, CachePlugin)
    assert plugin.server_label == "dns://127.0.0.1:1053"
    assert plugin.zones_label == "."
