"""Finding plugins (entry points) and ordering them (the fixed order list)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from .plugin import Plugin

ENTRY_POINT_GROUP = "pycorefile.plugins"

ORDER: tuple[str, ...] = (
    # Like CoreDNS's plugin.cfg (all of it, in its order) plus our own plugins
    # (OWN_PLUGINS): first is outermost. Position in the chain comes from here,
    # never from the Corefile. Names not built in are harmless; they keep
    # CoreDNS's positions for plugins someone may add later.
    "root", "metadata", "geoip", "cancel", "proxyproto", "quic", "grpc_server", "https",
    "https3", "timeouts", "multisocket", "reload", "nsid", "bufsize", "bind", "debug",
    "trace", "ready", "health", "pprof", "shed", "prometheus", "errors", "log", "dnstap",
    "local", "dns64", "any", "chaos", "loadbalance", "tsig", "rewrite", "autopath", "acl",
    "cache", "header", "dnssec", "tls", "minimal", "template", "transfer", "hosts",
    "autoalloc", "meshhosts", "route53", "azure", "clouddns", "k8s_external", "kubernetes",
    "file", "auto", "secondary", "etcd", "loop", "forward", "grpc", "erratic", "whoami",
    "on", "sign", "view", "nomad",
)  # fmt: skip

OWN_PLUGINS: frozenset[str] = frozenset({"autoalloc", "meshhosts"})
"""Plugins of ``ORDER`` that are pycorefile's own, not CoreDNS's."""

COMPATIBILITY_DOC = "docs/compatibility.md"
"""Where each CoreDNS plugin's state in pycorefile is listed."""


def coredns_plugins() -> tuple[str, ...]:
    """CoreDNS's plugins (its plugin.cfg), in chain order."""
    return tuple(name for name in ORDER if name not in OWN_PLUGINS)


def unknown_directive(name: str) -> str:
    """The error for a directive no installed plugin has, naming CoreDNS plugins we lack."""
    if name in ORDER and name not in OWN_PLUGINS:
        return (
            f"Unknown directive '{name}': a CoreDNS plugin that pycorefile does not have "
            f"(see {COMPATIBILITY_DOC})"
        )
    return f"Unknown directive '{name}'"


class RegistryError(Exception):
    """Two packages register the same directive, or a plugin cannot be loaded."""


@dataclass
class PluginEntry:
    """A registered plugin: its directive name, where it comes from, how to load it."""

    name: str
    value: str
    package: str
    entry_point: EntryPoint | None = None
    cls: type[Plugin] | None = None

    def load(self) -> type[Plugin]:
        """Import the plugin class (once) and stamp its directive name on it."""
        if self.cls is None:
            if self.entry_point is None:
                raise RegistryError(f"plugin {self.name} has no entry point")
            try:
                loaded = self.entry_point.load()
            except Exception as exc:
                raise RegistryError(
                    f"plugin {self.name} ({self.value}, from {self.package}) failed to load: {exc}"
                ) from exc
            if not (isinstance(loaded, type) and issubclass(loaded, Plugin)):
                raise RegistryError(f"plugin {self.name} ({self.value}) is not a Plugin subclass")
            loaded.name = self.name
            self.cls = loaded
        return self.cls


class Registry:
    """Every plugin found through the ``pycorefile.plugins`` entry points."""

    def __init__(self, entries: dict[str, PluginEntry]) -> None:
        self.entries = entries
        self._order: list[str] | None = None

    @classmethod
    def discover(cls) -> Registry:
        entries: dict[str, PluginEntry] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            package = ep.dist.name if ep.dist is not None else "?"
            entry = PluginEntry(ep.name, ep.value, package, ep)
            old = entries.get(ep.name)
            if old is not None and old.value != ep.value:
                raise RegistryError(
                    f"two plugins are named {ep.name!r}: {old.value} from package "
                    f"{old.package} and {ep.value} from package {package}"
                )
            entries[ep.name] = entry
        return cls(entries)

    @classmethod
    def from_classes(cls, classes: Mapping[str, type[Plugin]], package: str = "test") -> Registry:
        """A registry of given classes (tests, embedding)."""
        return cls({}).with_classes(classes, package)

    def with_classes(self, classes: Mapping[str, type[Plugin]], package: str = "") -> Registry:
        """This registry plus plugin classes that are not installed as entry points.

        Each class is placed by its ``before``/``after`` attribute, as an
        installed third-party plugin; a name that is already registered is
        replaced (keeping a built-in's place in ``ORDER``).
        """
        entries = dict(self.entries)
        for name, plugin_cls in classes.items():
            if not (isinstance(plugin_cls, type) and issubclass(plugin_cls, Plugin)):
                raise RegistryError(f"plugin {name} ({plugin_cls!r}) is not a Plugin subclass")
            plugin_cls.name = name
            entries[name] = PluginEntry(
                name,
                f"{plugin_cls.__module__}:{plugin_cls.__qualname__}",
                package or plugin_cls.__module__.partition(".")[0],
                None,
                plugin_cls,
            )
        return type(self)(entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str) -> type[Plugin]:
        return self.entries[name].load()

    def order(self) -> list[str]:
        """Every registered plugin in chain order, outermost first."""
        if self._order is None:
            full = list(ORDER)
            pending = sorted(name for name in self.entries if name not in ORDER)
            # Place third-party plugins next to the plugin they name; one may
            # name another third-party plugin, so loop until all are placed.
            while pending:
                still = []
                for name in pending:
                    cls = self.get(name)
                    before = cls.after is None
                    anchor = cls.before or cls.after or "forward"
                    if anchor not in full:
                        if anchor in self.entries:
                            still.append(name)
                            continue
                        raise RegistryError(
                            f"plugin {name} wants to run {'before' if before else 'after'} "
                            f"{anchor!r}, which is not a known plugin"
                        )
                    idx = full.index(anchor)
                    full.insert(idx if before else idx + 1, name)
                if len(still) == len(pending):
                    raise RegistryError(f"plugins {', '.join(still)} name each other as anchors")
                pending = still
            self._order = [name for name in full if name in self.entries]
        return self._order
