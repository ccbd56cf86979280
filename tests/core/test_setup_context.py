"""What a plugin's setup context tells it about its server block: the plugins after it."""

from __future__ import annotations

from collections.abc import Sequence

from pycorefile import Directive, Plugin, Request, Result, SetupContext
from pycorefile._app import default_registry, load_config
from pycorefile._registry import Registry


class ProbePlugin(Plugin):
    """Keeps its setup context; passes every query on."""

    before = "cache"

    def __init__(self, ctx: SetupContext) -> None:
        self.ctx = ctx

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ProbePlugin:
        return cls(ctx)

    def handle(self, request: Request) -> Result:
        return self.next.handle(request)


def registry() -> Registry:
    base = default_registry()
    classes = {name: base.get(name) for name in base.entries}
    classes["probe"] = ProbePlugin
    return Registry.from_classes(classes)


# The directives out of chain order; health and prometheus serve no queries.
COREFILE = """\
example.org:1053 {
    forward . 127.0.0.1:5300
    prometheus :0
    probe
    cache
    health :0
    errors
    acl {
        allow
    }
}
example.net:1053 {
    probe
    whoami
}
"""


def test_plugins_after_lists_the_rest_of_the_chain_in_order() -> None:
    config = load_config(COREFILE, registry=registry(), dns_port=1053)
    org, net = config.blocks
    probe, other = (
        next(p for p in block.plugins if isinstance(p, ProbePlugin)) for block in (org, net)
    )
    assert isinstance(probe, ProbePlugin) and isinstance(other, ProbePlugin)
    ctx = probe.ctx

    def after(plugin: Plugin) -> list[str]:
        return [p.name for p in ctx.plugins_after(plugin)]

    assert list(ctx.plugins) == [
        "health", "prometheus", "errors", "acl", "probe", "cache", "forward"
    ]  # fmt: skip
    assert after(probe) == ["cache", "forward"]
    (errors,) = config.find("errors")
    assert after(errors) == ["acl", "probe", "cache", "forward"]
    (forward,) = config.find("forward")
    assert after(forward) == []
    (health,) = config.find("health")
    assert after(health) == []  # not in the chain
    # Each block's context knows its own plugins only.
    assert after(other) == []
    assert [p.name for p in other.ctx.plugins_after(other)] == ["whoami"]


def test_data_changes_are_one_per_configuration() -> None:
    """Every block of a configuration sees one DataChanges; a new configuration a new one."""
    config = load_config(COREFILE, registry=registry(), dns_port=1053)
    org, net = (
        next(p for p in block.plugins if isinstance(p, ProbePlugin)) for block in config.blocks
    )
    assert org.ctx.data_changes is net.ctx.data_changes
    assert org.ctx.data_changes.generation == 0
    again = load_config(COREFILE, registry=registry(), dns_port=1053)
    probe = next(p for p in again.blocks[0].plugins if isinstance(p, ProbePlugin))
    assert probe.ctx.data_changes is not org.ctx.data_changes
