"""pycorefile.zones: addresses as hosts lines give them."""

from __future__ import annotations

import pytest

from pycorefile.zones import host_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("::FFFF:10.0.0.1", "10.0.0.1"),  # IPv4-mapped: the IPv4 address, as Go's To4
        ("fe80::1%eth0", "fe80::1"),  # the zone index is not part of the address
        ("2001:DB8:0::1", "2001:db8::1"),
        ("example.org", None),
        ("10.0.0.256", None),
        ("", None),
    ],
)
def test_host_address(text: str, expected: str | None) -> None:
    found = host_address(text)
    assert (None if found is None else str(found)) == expected
