"""cache: CoreDNS's cache plugin, answered from stored wire bytes."""

from ._classify import Category, classify, stored_form
from ._parse import CacheConfig, KindSettings, PrefetchSettings, StaleSettings, parse_cache
from ._plugin import CachePlugin
from ._store import Entry, Shelf

__all__ = [
    "CacheConfig",
    "CachePlugin",
    "Category",
    "Entry",
    "KindSettings",
    "PrefetchSettings",
    "Shelf",
    "StaleSettings",
    "classify",
    "parse_cache",
    "stored_form",
]
