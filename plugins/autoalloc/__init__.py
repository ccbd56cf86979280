"""autoalloc: stable virtual IPv4/IPv6 pairs for ServiceEntry hosts that have no address."""

from ._allocator import (
    ENABLE_LABEL,
    HASHED,
    NO_NEW,
    SCHEMES,
    SEQUENTIAL,
    AllocationState,
    Allocator,
    HostEntry,
    Outcome,
    Pool,
    Record,
    ineligibility,
)
from ._parse import AutoAllocConfig, parse_autoalloc
from ._plugin import MISSING_MESHHOSTS, AllocationService, AutoAllocPlugin
from ._state import StateError

__all__ = [
    "ENABLE_LABEL",
    "HASHED",
    "MISSING_MESHHOSTS",
    "NO_NEW",
    "SCHEMES",
    "SEQUENTIAL",
    "AllocationService",
    "AllocationState",
    "Allocator",
    "AutoAllocConfig",
    "AutoAllocPlugin",
    "HostEntry",
    "Outcome",
    "Pool",
    "Record",
    "StateError",
    "ineligibility",
    "parse_autoalloc",
]
