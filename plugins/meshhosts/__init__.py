"""meshhosts: the mesh host table (Services, ServiceEntries, NameTables), answered locally."""

from ._parse import MeshHostsConfig, parse_meshhosts
from ._plugin import Allocator, ClientNamespaceMeshHosts, MeshHostsPlugin
from ._sources import ServiceEntryHost, SourceError
from ._table import HostEntry, InlineEntry, MeshTable

__all__ = [
    "Allocator",
    "ClientNamespaceMeshHosts",
    "HostEntry",
    "InlineEntry",
    "MeshHostsConfig",
    "MeshHostsPlugin",
    "MeshTable",
    "ServiceEntryHost",
    "SourceError",
    "parse_meshhosts",
]
