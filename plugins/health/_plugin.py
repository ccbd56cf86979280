"""The health plugin: ``/health`` answers 200 OK while the process runs, lameduck on exit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from pycorefile import (
    Directive,
    Plugin,
    SetupContext,
    SetupError,
    check_args,
    parse_duration,
)
from pycorefile.http import HttpRequest, HttpResponse
from pycorefile.plugin import go_duration, parse_http_address

log = logging.getLogger("pycorefile")

DEFAULT_ADDRESS = ":8080"
PATH = "/health"
STOPPING_KEY = "server.stopping"
"""Set in ``SetupContext.shared`` once the server is shutting down (ready answers 503)."""


@dataclass(frozen=True)
class HealthConfig:
    address: str = DEFAULT_ADDRESS
    lameduck: float = 0.0
    """Seconds to keep serving after being asked to stop."""


def parse_health(directives: Sequence[Directive]) -> HealthConfig:
    """``health [ADDRESS] { lameduck DURATION }``."""
    d = directives[0]
    check_args(d, 0, 1)
    address = parse_http_address(d, 0) if d.args else DEFAULT_ADDRESS
    lameduck = 0.0
    for option in d.block or ():
        if option.name != "lameduck":
            raise SetupError(f"unknown property '{option.name}'", option)
        check_args(option, 1, 1)
        lameduck = parse_duration(option.args[0], option, 0)
    return HealthConfig(address, lameduck)


async def _ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, b"OK")


class HealthPlugin(Plugin):
    """Serves ``/health``; with ``lameduck``, delays exit while still answering queries.

    The endpoint says the process is alive: it answers 200 ``OK`` for as long
    as the server runs, lameduck included, as CoreDNS's does.
    """

    serves_queries = False

    def __init__(self, config: HealthConfig, shared: dict[str, object]) -> None:
        self.config = config
        self.shared = shared

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> HealthPlugin:
        config = parse_health(directives)
        ctx.http_route(config.address, PATH, _ok)
        return cls(config, ctx.shared)

    async def before_stop(self) -> None:
        self.shared[STOPPING_KEY] = True
        if self.config.lameduck > 0:
            duration = go_duration(self.config.lameduck)
            log.info("plugin/health: Going into lameduck mode for %s", duration)
            await trio.sleep(self.config.lameduck)
