"""hosts: answers from a hosts file and inline lines, as CoreDNS's hosts plugin."""

from ._parse import HostsConfig, HostsMap, parse_hosts, parse_hosts_text
from ._plugin import HostsPlugin, read_hosts_file
from ._table import HostsTable

__all__ = [
    "HostsConfig",
    "HostsMap",
    "HostsPlugin",
    "HostsTable",
    "parse_hosts",
    "parse_hosts_text",
    "read_hosts_file",
]
