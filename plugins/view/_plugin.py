"""The view plugin: a server block serves only the queries its expressions admit."""

from __future__ import annotations

from collections.abc import Sequence

from pycorefile import Directive, Plugin, Request, SetupContext

from ._env import QueryEnvironment
from ._parse import ViewConfig, parse_view


class ViewPlugin(Plugin):
    """Not a link of the chain: a filter the server applies when it routes a query."""

    serves_queries = False

    def __init__(self, config: ViewConfig) -> None:
        self.config = config
        self._evaluators = config.evaluators

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ViewPlugin:
        plugin = cls(parse_view(directives))
        ctx.filter_queries(plugin.admits, view=plugin.config.name)
        return plugin

    def admits(self, request: Request) -> bool:
        """True when every expression of the view holds for ``request``."""
        env = QueryEnvironment(request)
        return all(evaluate(env) for evaluate in self._evaluators)
