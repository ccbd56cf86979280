"""prometheus: CoreDNS's metrics, names and labels unchanged, on ``/metrics``."""

from ._metrics import DURATION_BUCKETS, SIZE_BUCKETS, Counters, Observer, rcode_name
from ._plugin import DEFAULT_ADDRESS, MetricsState, PrometheusPlugin, parse_prometheus

__all__ = [
    "DEFAULT_ADDRESS",
    "DURATION_BUCKETS",
    "SIZE_BUCKETS",
    "Counters",
    "MetricsState",
    "Observer",
    "PrometheusPlugin",
    "parse_prometheus",
    "rcode_name",
]
