"""The ready plugin: ``/ready`` is 200 once every plugin of its blocks can answer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pycorefile import Directive, Plugin, SetupContext, SetupError, check_args
from pycorefile.http import HttpRequest, HttpResponse
from pycorefile.plugin import parse_address, parse_http_address
from pycorefile_plugins.health import STOPPING_KEY

log = logging.getLogger("pycorefile")

DEFAULT_ADDRESS = ":8181"
PATH = "/ready"
GROUPS_KEY = "ready.groups"
MONITOR_UNTIL_READY = "until-ready"
MONITOR_CONTINUOUSLY = "continuously"


@dataclass(frozen=True)
class ReadyConfig:
    address: str = DEFAULT_ADDRESS
    monitor: str = MONITOR_UNTIL_READY
    """``until-ready``: a plugin once ready is not asked again; ``continuously``: always ask."""


def parse_ready(directives: Sequence[Directive]) -> ReadyConfig:
    """``ready [ADDRESS] { monitor until-ready|continuously }``."""
    d = directives[0]
    check_args(d, 0, 1)
    address = parse_http_address(d, 0) if d.args else DEFAULT_ADDRESS
    monitor = MONITOR_UNTIL_READY
    for option in d.block or ():
        if option.name != "monitor":
            raise SetupError(f"unknown property '{option.name}'", option)
        check_args(option, 1, 1)
        monitor = option.args[0]
        if monitor not in (MONITOR_UNTIL_READY, MONITOR_CONTINUOUSLY):
            raise SetupError(
                f"monitor must be '{MONITOR_UNTIL_READY}' or '{MONITOR_CONTINUOUSLY}', "
                f"not '{monitor}'",
                option,
                0,
            )
    return ReadyConfig(address, monitor)


@dataclass
class ReadyGroup:
    """Every block of one configuration whose ``ready`` uses the same address."""

    shared: dict[str, object]
    blocks: list[tuple[SetupContext, bool]] = field(default_factory=list)
    """(block, continuously) pairs."""
    _were_ready: set[int] = field(default_factory=set)

    def waiting_on(self) -> list[str]:
        """The sorted names of the plugins not ready yet."""
        names: set[str] = set()
        for ctx, continuously in self.blocks:
            for name, plugin in list(ctx.plugins.items()):
                if not continuously and id(plugin) in self._were_ready:
                    continue
                try:
                    ok = plugin.ready()
                except Exception:
                    log.exception("plugin/%s: readiness check failed", name)
                    ok = False
                if not ok:
                    names.add(name)
                elif not continuously:
                    self._were_ready.add(id(plugin))
        return sorted(names)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if self.shared.get(STOPPING_KEY):
            return HttpResponse(503, b"Shutting down")
        todo = self.waiting_on()
        if not todo:
            return HttpResponse(200, b"OK")
        text = ",".join(todo)
        log.info("plugin/ready: Still waiting on: %r", text)
        return HttpResponse(503, text.encode())


class ReadyPlugin(Plugin):
    """Serves ``/ready``: 200 ``OK`` when every plugin of the blocks using this
    address reports ``ready()``, else 503 and the names still waited on; 503
    ``Shutting down`` once the server is stopping (lameduck included)."""

    serves_queries = False

    def __init__(self, config: ReadyConfig, group: ReadyGroup) -> None:
        self.config = config
        self.group = group

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ReadyPlugin:
        config = parse_ready(directives)
        groups = ctx.shared.setdefault(GROUPS_KEY, {})
        assert isinstance(groups, dict)
        where = parse_address(config.address, 0)
        group = groups.get(where)
        if group is None:
            group = groups[where] = ReadyGroup(ctx.shared)
        group.blocks.append((ctx, config.monitor == MONITOR_CONTINUOUSLY))
        ctx.http_route(config.address, PATH, group.handle)
        return cls(config, group)

    async def before_stop(self) -> None:
        self.group.shared[STOPPING_KEY] = True
