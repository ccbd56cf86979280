"""autopath: a stub resolver's whole search path answered from its first query.

With ``ndots:5`` and five search domains, a lookup of a name with fewer dots
costs a client up to twelve queries (A and AAAA for each search domain, then
for the name itself). autopath does that search on the server at the first
query and answers with a CNAME to the name that exists, so it takes two.
"""

from ._parse import AutopathConfig, normalize_search, parse_autopath, resolv_conf_search
from ._plugin import AutopathPlugin, SearchPath

__all__ = [
    "AutopathConfig",
    "AutopathPlugin",
    "SearchPath",
    "normalize_search",
    "parse_autopath",
    "resolv_conf_search",
]
