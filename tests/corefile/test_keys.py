"""Key normalisation, CIDR reverse zones, duplicates and the RFC 1035 warning (§3.3-3.5)."""

from __future__ import annotations

import pytest

from pycorefile.corefile import (
    CorefileError,
    ZoneKey,
    find_duplicate_keys,
    normalize_keys,
    parse_corefile,
    zone_syntax_warning,
)


def keys_of(key: str, default_port: int = 53) -> list[str]:
    (block,) = parse_corefile(f"{key} {{\n}}\n", env={})
    return [str(z) for z in normalize_keys(block, default_port)]


NORMALISED = [
    (".", ["dns://.:53"]),
    (".:53", ["dns://.:53"]),
    ("example.org", ["dns://example.org.:53"]),
    ("EXAMPLE.ORG", ["dns://example.org.:53"]),
    ("example.org.:1053", ["dns://example.org.:1053"]),
    ("dns://example.org", ["dns://example.org.:53"]),
    ("tls://example.org", ["tls://example.org.:853"]),
    ("quic://example.org", ["quic://example.org.:853"]),
    ("grpc://example.org", ["grpc://example.org.:443"]),
    ("https://example.org", ["https://example.org.:443"]),
    ("https3://example.org", ["https3://example.org.:443"]),
    ("tls://.:5353", ["tls://.:5353"]),
    ("DNS://Example.Org:1053", ["dns://example.org.:1053"]),
    ("example.org:+53", ["dns://example.org.:53"]),
    # everything after the LAST colon is the port if it is a number
    ("example.org,example.com:1053", ["dns://example.org,example.com.:1053"]),
    ("a:b", ["dns://a:b.:53"]),
    # CIDR keys become reverse zones
    ("10.0.0.0/24", ["dns://0.0.10.in-addr.arpa.:53"]),
    ("10.0.0.0/8:53", ["dns://10.in-addr.arpa.:53"]),
    ("10.0.0.1/32", ["dns://1.0.0.10.in-addr.arpa.:53"]),
    ("10.1.2.3/16", ["dns://1.10.in-addr.arpa.:53"]),
    ("0.0.0.0/0", ["dns://in-addr.arpa.:53"]),
    ("10.0.0.0/15", ["dns://0.10.in-addr.arpa.:53", "dns://1.10.in-addr.arpa.:53"]),
    ("2001:db8::/32", ["dns://8.b.d.0.1.0.0.2.ip6.arpa.:53"]),
    (
        "tls://192.168.0.0/23:8853",
        [
            "tls://0.168.192.in-addr.arpa.:8853",
            "tls://1.168.192.in-addr.arpa.:8853",
        ],
    ),
    # not a CIDR: just an odd zone name, as in CoreDNS
    ("10.0.0.0/33", ["dns://10.0.0.0/33.:53"]),
    ("10.0.0.0/24.", ["dns://10.0.0.0/24.:53"]),
    ("10.0.0.0/255.0.0.0", ["dns://10.0.0.0/255.0.0.0.:53"]),
]


@pytest.mark.parametrize(("key", "expected"), NORMALISED)
def test_normalise(key: str, expected: list[str]) -> None:
    assert keys_of(key) == expected


def test_cidr_on_non_octet_boundary_gives_one_zone_per_value() -> None:
    zones = keys_of("10.9.3.0/18")
    assert len(zones) == 64
    assert zones[0] == "dns://0.9.10.in-addr.arpa.:53"
    assert zones[-1] == "dns://63.9.10.in-addr.arpa.:53"


def test_ipv6_cidr_on_non_nibble_boundary() -> None:
    zones = keys_of("2001:db8::/29")
    assert len(zones) == 8
    assert zones[0] == "dns://8.b.d.0.1.0.0.2.ip6.arpa.:53"
    assert zones[-1] == "dns://f.b.d.0.1.0.0.2.ip6.arpa.:53"


def test_expanded_zones_stay_in_key_order() -> None:
    assert keys_of("a 10.0.0.0/15 b") == [
        "dns://a.:53",
        "dns://0.10.in-addr.arpa.:53",
        "dns://1.10.in-addr.arpa.:53",
        "dns://b.:53",
    ]


def test_default_port_applies_only_to_dns_without_a_port() -> None:
    assert keys_of("a a:53 tls://a https://a", default_port=1053) == [
        "dns://a.:1053",
        "dns://a.:53",
        "tls://a.:853",
        "https://a.:443",
    ]


def test_zone_key_fields() -> None:
    (block,) = parse_corefile("tls://Example.ORG:8853 {\n}\n", env={})
    assert normalize_keys(block) == [ZoneKey("tls", "example.org.", 8853)]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("a:", 'expecting data after last colon: "a:"'),
        (":53", "zone is not a valid domain name:  (empty zone; write .:PORT for the root zone)"),
        ("a..b", "zone is not a valid domain name: a..b"),
        (".a", "zone is not a valid domain name: .a"),
        ("x" * 64 + ".org", f"zone is not a valid domain name: {'x' * 64}.org"),
        # 255 characters pass, but the fully qualified form (256) is checked too
        ("a." * 127 + "b", "specified zone is too long: 256 > 255"),
        ("0::/8", "invalid CIDR 0::/8"),
        ("::1/128", "invalid CIDR ::1/128"),
        ("udp://x", "unknown scheme 'udp' in udp://x"),
        ("unix:///run/dns.sock", "unix:// keys are not supported"),
        (".:70000", "invalid port 70000 in .:70000: must be between 0 and 65535"),
        (".:-1", "invalid port -1 in .:-1"),
    ],
)
def test_key_errors(key: str, message: str) -> None:
    (block,) = parse_corefile(f"ok.example  {key} {{\n}}\n", "cf", env={})
    with pytest.raises(CorefileError) as info:
        normalize_keys(block)
    err = info.value
    assert err.message.startswith(message)
    assert (err.file, err.line, err.column) == ("cf", 1, 13)
    assert str(err).splitlines()[1:] == [f"ok.example  {key} {{", " " * 12 + "^"]


def test_a_zone_longer_than_255_characters() -> None:
    (block,) = parse_corefile(("a" * 60 + ".") * 4 + "a" * 20 + " {\n}\n", env={})
    with pytest.raises(CorefileError, match="specified zone is too long: 264 > 255"):
        normalize_keys(block)


def test_duplicate_keys_name_both_places() -> None:
    text = "example.org {\n}\n\n  EXAMPLE.org.:53 {\n}\n"
    with pytest.raises(CorefileError) as info:
        find_duplicate_keys(parse_corefile(text, "cf", env={}))
    assert str(info.value).splitlines() == [
        "cf:4:3 - cannot serve dns://example.org.:53 - it is already defined at cf:1",
        "  EXAMPLE.org.:53 {",
        "  ^",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "a a {\n}",
        "a {\n}\ndns://a:53 {\n}",
        "10.0.0.0/24 0.0.10.in-addr.arpa {\n}",
        "10.0.0.0/15 1.10.in-addr.arpa. {\n}",
    ],
)
def test_duplicates(text: str) -> None:
    with pytest.raises(CorefileError, match="it is already defined"):
        find_duplicate_keys(parse_corefile(text, env={}))


@pytest.mark.parametrize(
    "text",
    [
        "a a:1053 {\n}",
        "a tls://a {\n}",
        "a {\n}\nb {\n}",
        "10.0.0.0/24 10.0.1.0/24 {\n}",
    ],
)
def test_not_duplicates(text: str) -> None:
    find_duplicate_keys(parse_corefile(text, env={}))


def test_duplicate_check_uses_the_default_port() -> None:
    blocks = parse_corefile("a {\n}\na:1053 {\n}\n", env={})
    find_duplicate_keys(blocks)
    with pytest.raises(CorefileError):
        find_duplicate_keys(blocks, default_port=1053)


@pytest.mark.parametrize(
    ("zone", "warns"),
    [
        (".", False),
        ("example.org.", False),
        ("Ex-1.org.", False),
        ("a.b-c.d9.", False),
        ("0.10.in-addr.arpa.", False),
        ("8.b.d.0.1.0.0.2.ip6.arpa.", False),
        ("example.org", True),  # not fully qualified
        ("_tcp.example.org.", True),
        ("1a.example.", True),
        ("a-.example.", True),
        ("a_b.", True),
        ("example.org,example.com.", True),
    ],
)
def test_zone_syntax_warning(zone: str, warns: bool) -> None:
    warning = zone_syntax_warning(zone)
    if warns:
        assert warning == f'Warning: Domain "{zone}" does not follow RFC1035 preferred syntax'
    else:
        assert warning is None


def test_zone_syntax_warning_quotes_like_go() -> None:
    assert zone_syntax_warning('a"b\\c\t.') == (
        'Warning: Domain "a\\"b\\\\c\\t." does not follow RFC1035 preferred syntax'
    )
