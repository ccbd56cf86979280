"""What the autopath tests share: names, the upstream's records, a resolv.conf, fixtures.

The test modules import the fixtures they use by name (pytest finds them in
the module's namespace): ``from tests.plugins.autopath_fixtures import resolv,
upstream``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import dns.message
import dns.rdatatype
import pytest

from pycorefile import Server
from pycorefile._config import Config
from pycorefile.testing import Upstream
from pycorefile_plugins.autopath import AutopathPlugin

PP = "productpage.ns1.svc.cluster.local."
S0 = "ns1.svc.cluster.local."
EXT = "www.external.test."
DB = "db.example.internal."
REVIEWS = "reviews.ns2.svc.cluster.local."

UPSTREAM_RECORDS = {
    ("www.external.test.", "A"): ["192.0.2.9"],
    ("db.example.internal.", "A"): ["192.0.2.10"],
    ("db.example.internal.", "AAAA"): ["2001:db8::10"],
}
"""What the upstream behind forward knows: the names outside the mesh."""

RESOLV_CONF = "nameserver 127.0.0.1\nsearch example.internal corp.test\noptions ndots:5\n"
"""The resolv.conf of ``autopath @meshhosts``-less set-ups reading the search path from a file."""


def records(msg: dns.message.Message) -> list[tuple[str, str, str]]:
    """The answer section as (owner as sent, type, rdata) rows."""
    return [
        (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rdata.to_text())
        for rrset in msg.answer
        for rdata in rrset
    ]


def cname(owner: str, target: str) -> tuple[str, str, str]:
    return (owner, "CNAME", target)


def config_of(server: Server) -> Config:
    """The configuration a running server serves."""
    assert server.config is not None
    return server.config


def autopath_of(server: Server) -> AutopathPlugin:
    """The autopath plugin of a running server's only block."""
    (plugin,) = config_of(server).find("autopath")
    assert isinstance(plugin, AutopathPlugin)
    return plugin


@asynccontextmanager
async def running_upstream(host: str = "127.0.0.2") -> AsyncIterator[Upstream]:
    """An upstream on ``host`` that knows ``UPSTREAM_RECORDS``."""
    async with Upstream(records=dict(UPSTREAM_RECORDS), host=host).running() as up:
        yield up


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with running_upstream() as up:
        yield up


@pytest.fixture
def resolv(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text(RESOLV_CONF)
    return path
